//! The real binary: `check` and `explain` on configs that point at the emulated network.

use std::process::Output;

use crate::support::bin::run as splitway;
use crate::support::config::ConfigBuilder;
use crate::support::proxy::{PrivateDns, scenario_config};
use crate::support::tmp::TempFile;
use crate::support::*;

/// `toml` in a temporary file of its own, removed when the returned guard drops.
pub(crate) fn write_config(name: &str, toml: &str) -> TempFile {
    TempFile::new(name, toml)
}

#[tokio::test]
async fn check_prints_the_route_table() {
    let path = write_config("check-ok.toml", &scenario_config(aws_net(), PrivateDns::On));
    let out = splitway(&["check", "--config", path.arg()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "custom-domains",
        "private-apis-us-west-2",
        "resolve via `public`",
        "connect vpce-",
        "default",
        "cache_size 10000",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn check_on_a_bad_file_names_file_line_route_and_key() {
    let bad = "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"custom-domains\"\nhosts = [\"api.mydomain.com\"]\nresolver = \"publik\"\n\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n";
    let path = write_config("check-bad.toml", bad);
    let out = splitway(&["check", "--config", path.arg()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "{}:7: route `custom-domains`: key `resolver`: unknown resolver `publik`",
        path.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in {stderr}");
}

#[tokio::test]
async fn check_on_a_missing_file_says_what_to_do() {
    let out = splitway(&["check", "--config", "/nonexistent/splitway.toml"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    // The cause (the OS error) is printed once, after what splitway was doing.
    assert_eq!(
        stderr,
        "error: /nonexistent/splitway.toml: cannot read the config file (pass --config FILE or set \
         SPLITWAY_CONFIG): No such file or directory (os error 2)\n"
    );
}

async fn explain_json(path: &std::path::Path, host: &str) -> serde_json::Value {
    let target = format!("{host}:{}", aws_net().port);
    let out = splitway(&[
        "explain",
        &target,
        "--config",
        path.to_str().expect("utf-8 path"),
        "--json",
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("explain --json prints JSON")
}

#[tokio::test]
async fn explain_shows_each_scenario_and_what_the_system_resolver_would_do() {
    let net = aws_net();
    let path = write_config("explain.toml", &scenario_config(net, PrivateDns::On));
    let at = |ip: std::net::IpAddr| format!("{ip}:{}", net.port);
    // (host, route, connect_to, system answer, differs)
    let cases = [
        (
            CUSTOM_DOMAIN.to_owned(),
            "custom-domains",
            at(PUBLIC_ENDPOINT_IP),
            VPCE_IP,
            true,
        ),
        (
            execute_api_host(PUBLIC_API_ID, REGION),
            "public-api-ids",
            at(PUBLIC_ENDPOINT_IP),
            VPCE_IP,
            true,
        ),
        (
            execute_api_host(PRIVATE_API_ID, REGION),
            "private-apis",
            at(VPCE_IP),
            VPCE_IP,
            false,
        ),
        (
            execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION),
            "private-apis-us-west-2",
            at(WEST_VPCE_IP),
            WEST_PUBLIC_ENDPOINT_IP,
            true,
        ),
    ];
    for (host, route, connect_to, system, differs) in cases {
        let e = explain_json(&path, &host).await;
        assert_eq!(e["route"], route, "{host}: {e}");
        assert_eq!(e["connect_to"], connect_to.as_str(), "{host}: {e}");
        assert_eq!(e["system"]["addresses"][0], system.to_string(), "{host}: {e}");
        assert_eq!(e["differs"], differs, "{host}: {e}");
    }
    // The custom domain's lookup shows the CNAME chain and TTL.
    let e = explain_json(&path, CUSTOM_DOMAIN).await;
    assert_eq!(e["lookups"][0]["resolver"], "public");
    assert_eq!(e["lookups"][0]["cnames"][0], APIGW_DOMAIN);
    assert!(e["lookups"][0]["ttl_secs"].as_u64().is_some_and(|t| t > 0), "{e}");
}

#[tokio::test]
async fn explain_text_says_the_system_path_differs() {
    let net = aws_net();
    let path = write_config("explain-text.toml", &scenario_config(net, PrivateDns::On));
    let out = splitway(&["explain", CUSTOM_DOMAIN, "--config", path.arg()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "route:      custom-domains".to_owned(),
        format!("CNAME {APIGW_DOMAIN}"),
        format!("connect to: {PUBLIC_ENDPOINT_IP}:443"),
        format!("system:     {CUSTOM_DOMAIN} -> CNAME {APIGW_DOMAIN} -> {VPCE_IP}"),
        "elsewhere".to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[tokio::test]
async fn explain_a_denied_host_and_an_unknown_name() {
    let net = aws_net();
    let toml = scenario_config(net, PrivateDns::Off)
        + "\n[[route]]\nname = \"no-metadata\"\nhosts = [\"169.254.169.254\"]\ndeny = true\n";
    let path = write_config("explain-deny.toml", &toml);
    let e = explain_json(&path, "169.254.169.254").await;
    assert_eq!(e["route"], "no-metadata");
    assert!(e["error"].as_str().is_some_and(|s| s.contains("denies")), "{e}");
    let e = explain_json(&path, "nope.mydomain.com").await;
    assert_eq!(e["route"], "default");
    assert!(e["connect_to"].is_null(), "{e}");
    assert!(e["error"].as_str().is_some_and(|s| s.contains("no address")), "{e}");
}

/// `splitway explain TARGET --config CONFIG --probe --ca-file CA [extra…]`.
async fn explain_probe(target: &str, config: &std::path::Path, ca: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "explain",
        target,
        "--config",
        config.to_str().unwrap(),
        "--probe",
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    splitway(&args).await
}

#[tokio::test]
async fn explain_probe_diagnoses_the_system_path_and_confirms_splitways() {
    let net = aws_net();
    let path = write_config("probe.toml", &scenario_config(net, PrivateDns::On));
    let ca = write_config("probe-ca.pem", &net.ca_pem);
    let probe = |host: String| {
        let (path, ca) = (path.to_path_buf(), ca.to_path_buf());
        async move {
            let target = format!("{host}:{}", aws_net().port);
            let out = explain_probe(&target, &path, &ca, &["--json"]).await;
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            let by_path = |p: &str| {
                e["probes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["path"] == p)
                    .cloned()
                    .unwrap_or_else(|| panic!("no {p} probe: {e}"))
            };
            (by_path("splitway"), by_path("system"))
        }
    };
    // Custom domain: the system path lands on the VPC endpoint, whose certificate does not cover it.
    let (ours, system) = probe(CUSTOM_DOMAIN.to_owned()).await;
    assert_eq!(
        (
            ours["covers_host"].as_bool(),
            ours["trusted"].as_bool(),
            ours["http_status"].as_u64()
        ),
        (Some(true), Some(true), Some(200)),
        "{ours}"
    );
    assert_eq!(system["covers_host"], false, "{system}");
    assert_eq!(system["address"], format!("{VPCE_IP}:{}", net.port));
    assert!(
        system["sans"].as_array().unwrap().iter().all(|s| s != CUSTOM_DOMAIN),
        "{system}"
    );
    // Public API ID: the certificate covers it on both paths, but the VPC endpoint answers 403.
    let (ours, system) = probe(execute_api_host(PUBLIC_API_ID, REGION)).await;
    assert_eq!(ours["http_status"], 200, "{ours}");
    assert_eq!(
        (system["covers_host"].as_bool(), system["http_status"].as_u64()),
        (Some(true), Some(403)),
        "{system}"
    );
    // Private API ID: both paths reach the VPC endpoint and work.
    let (ours, system) = probe(execute_api_host(PRIVATE_API_ID, REGION)).await;
    assert_eq!(
        (ours["http_status"].as_u64(), system["http_status"].as_u64()),
        (Some(200), Some(200))
    );
}

#[tokio::test]
async fn explain_probe_text_names_the_failure() {
    let net = aws_net();
    let path = write_config("probe-text.toml", &scenario_config(net, PrivateDns::On));
    let ca = write_config("probe-text-ca.pem", &net.ca_pem);
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    let out = explain_probe(&target, &path, &ca, &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("probe:      splitway") && text.contains("covers the host, GET / -> HTTP 200"),
        "{text}"
    );
    assert!(
        text.contains("probe:      system") && text.contains("does NOT cover the host"),
        "{text}"
    );
}

#[tokio::test]
async fn check_and_explain_show_private_custom_domains() {
    let net = aws_net();
    let preset = crate::aws_private_domains::private_domains_preset(Some("us-east-1a"));
    let toml = ConfigBuilder::with_resolvers(net, PrivateDns::On).aws(preset).build();
    let path = write_config("private-domains.toml", &toml);
    let out = splitway(&["check", "--config", path.arg()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        format!("aws-private-domains      [{PRIVATE_DOMAIN}] -> connect {VPCE_ZONAL} then {VPCE} via `system`"),
        format!("aws-private-domains-us-west-2 [{WEST_PRIVATE_DOMAIN}] -> connect {WEST_VPCE} via `system`"),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
    // explain: the zonal endpoint name is looked up and connected to; the system resolver
    // does not know the name at all.
    let e = explain_json(&path, PRIVATE_DOMAIN).await;
    assert_eq!(e["route"], "aws-private-domains", "{e}");
    assert_eq!(e["lookups"][0]["name"], VPCE_ZONAL, "{e}");
    assert_eq!(e["connect_to"], format!("{VPCE_ZONAL_IP}:{}", net.port), "{e}");
    assert!(e["system"]["error"].is_string(), "{e}");
    // --probe: the endpoint presents a certificate covering the domain and serves it.
    let ca = write_config("private-domains-ca.pem", &net.ca_pem);
    let target = format!("{PRIVATE_DOMAIN}:{}", net.port);
    let out = explain_probe(&target, &path, &ca, &["--json"]).await;
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ours = &e["probes"][0];
    assert_eq!(
        (&ours["path"], &ours["covers_host"], &ours["http_status"]),
        (&"splitway".into(), &true.into(), &200.into()),
        "{e}"
    );
    let e = explain_json(&path, WEST_PRIVATE_DOMAIN).await;
    assert_eq!(
        (&e["route"], &e["connect_to"]),
        (
            &serde_json::json!("aws-private-domains-us-west-2"),
            &serde_json::json!(format!("{WEST_VPCE_IP}:{}", net.port))
        ),
        "{e}"
    );
}

#[tokio::test]
async fn check_and_explain_show_the_address_backoff() {
    let net = aws_net();
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .proxy("address_backoff", "\"45s\"")
        .build();
    let path = write_config("backoff.toml", &toml);
    let out = splitway(&["check", "--config", path.arg()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = "address_backoff 45s (an upstream address that timed out or refused is tried after the others)";
    assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    assert_eq!(explain_json(&path, &host).await["address_backoff"], "45s");
    let out = splitway(&["explain", &host, "--config", path.arg()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = "backoff:    no address in backoff (address_backoff 45s)";
    assert!(text.contains(want), "missing {want:?} in:\n{text}");

    let bad = write_config(
        "backoff-bad.toml",
        "[proxy]\naddress_backoff = \"soon\"\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n",
    );
    let out = splitway(&["check", "--config", bad.arg()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2: invalid value: string \"soon\", expected a duration",
            bad.display()
        )),
        "{stderr}"
    );
}

/// `SPLITWAY_THREADS` that is not a number of threads stops `run` before it binds, saying what
/// to give.
#[tokio::test]
async fn run_refuses_a_bad_thread_count() {
    for bad in ["0", "many", "5000"] {
        let out = crate::support::bin::run_with_env(&["run"], &[("SPLITWAY_THREADS", bad)]).await;
        assert_eq!(out.status.code(), Some(1), "SPLITWAY_THREADS={bad}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: SPLITWAY_THREADS=`{bad}`: give a whole number of threads from 1 to 1024, `auto` (one a CPU), or unset it (one)\n"
            )
        );
    }
}
