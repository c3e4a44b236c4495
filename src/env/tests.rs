use super::*;

fn env_of(toml: &str) -> ClientEnv {
    let config = Config::from_toml(toml, "test.toml").expect("valid test config");
    ClientEnv::new(&config).expect("client settings")
}

const METADATA: [&str; 5] = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::254",
    "fd00:ec2::23",
];

#[test]
fn the_default_listener_gives_every_proxy_variable_in_both_cases() {
    let env = env_of("[proxy]\nlisten = \"127.0.0.1:3128\"\n");
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        assert_eq!(env.get(name), Some("http://127.0.0.1:3128"), "{name}");
    }
    assert_eq!(env.get("NODE_USE_ENV_PROXY"), Some("1"));
    let no_proxy = env.get("NO_PROXY").expect("NO_PROXY");
    assert_eq!(env.get("no_proxy"), Some(no_proxy));
    let entries: Vec<&str> = no_proxy.split(',').collect();
    for host in ["localhost", "127.0.0.1", "::1"].iter().chain(&METADATA) {
        assert!(entries.contains(host), "{host} missing from NO_PROXY {no_proxy}");
    }
    assert_eq!(entries.len(), 8, "each host once: {no_proxy}");
}

#[test]
fn a_wildcard_listener_is_reached_on_loopback() {
    let v4 = env_of("[proxy]\nlisten = \"0.0.0.0:3128\"\n");
    assert_eq!(v4.get("HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
    let v6 = env_of("[proxy]\nlisten = \"[::]:8080\"\n");
    assert_eq!(v6.get("HTTPS_PROXY"), Some("http://[::1]:8080"));
    assert!(
        v6.get("JAVA_TOOL_OPTIONS")
            .unwrap()
            .contains("-Dhttps.proxyHost=::1 -Dhttps.proxyPort=8080")
    );
}

#[test]
fn the_proxy_and_admin_addresses_are_bypassed() {
    let env = env_of("[proxy]\nlisten = \"10.0.0.5:3128\"\n[admin]\nlisten = \"10.0.0.6:9901\"\n");
    assert_eq!(env.get("HTTP_PROXY"), Some("http://10.0.0.5:3128"));
    let no_proxy = env.get("NO_PROXY").unwrap();
    assert!(no_proxy.contains(",10.0.0.5,10.0.0.6,"), "{no_proxy}");
    let java = env.get("JAVA_TOOL_OPTIONS").unwrap();
    assert!(java.contains("|10.0.0.5|10.0.0.6|"), "{java}");
}

#[test]
fn the_jvm_form_has_every_property_and_brackets_ipv6() {
    let env = env_of("[proxy]\nlisten = \"127.0.0.1:3128\"\n");
    assert_eq!(
        env.get("JAVA_TOOL_OPTIONS"),
        Some(
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=3128 -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=3128 \
             -Dhttp.nonProxyHosts=localhost|127.*|[::1]|169.254.169.254|169.254.170.2|169.254.170.23|[fd00:ec2::254]|[fd00:ec2::23]"
        )
    );
}

#[test]
fn credentials_go_in_the_url_percent_encoded() {
    let env = env_of("[proxy]\nlisten = \"127.0.0.1:3128\"\nauth = { username = \"app\", password = \"p@ss:w/rd\" }\n");
    assert_eq!(
        env.get("HTTPS_PROXY"),
        Some("http://app:p%40ss%3Aw%2Frd@127.0.0.1:3128")
    );
}

#[test]
fn port_zero_is_refused_naming_the_file_and_what_to_do() {
    let config = Config::from_toml("[proxy]\nlisten = \"127.0.0.1:0\"\n", "my.toml").unwrap();
    let err = ClientEnv::new(&config).unwrap_err().to_string();
    assert!(err.starts_with("my.toml: [proxy] listen"), "{err}");
    assert!(err.contains("give it a fixed port"), "{err}");
}

#[test]
fn each_format_carries_the_same_values() {
    let env = env_of("[proxy]\nlisten = \"127.0.0.1:3128\"\nauth = { username = \"a\", password = \"it's\" }\n");
    let shell = env.render(Format::Shell);
    assert!(
        shell.contains("export HTTPS_PROXY='http://a:it%27s@127.0.0.1:3128'\n"),
        "{shell}"
    );
    assert!(
        shell.contains("export JAVA_TOOL_OPTIONS='-Dhttps.proxyHost=127.0.0.1 "),
        "{shell}"
    );
    let dotenv = env.render(Format::Dotenv);
    let parsed: Vec<(&str, &str)> = dotenv.lines().map(|l| l.split_once('=').unwrap()).collect();
    assert_eq!(parsed.len(), env.vars().len());
    for ((name, value), (n, v)) in env.vars().iter().zip(&parsed) {
        assert_eq!((*name, value.as_str()), (*n, *v));
    }
    let json: serde_json::Value = serde_json::from_str(&env.render(Format::Json)).unwrap();
    for (name, value) in env.vars() {
        assert_eq!(json[name], value.as_str(), "{name}");
    }
    let k8s = env.render(Format::Kubernetes);
    assert!(
        k8s.starts_with("env:\n  - name: HTTPS_PROXY\n    value: \"http://a:it%27s@127.0.0.1:3128\"\n"),
        "{k8s}"
    );
    assert_eq!(k8s.matches("- name: ").count(), env.vars().len());
}

#[test]
fn shell_quoting_survives_a_single_quote() {
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}
