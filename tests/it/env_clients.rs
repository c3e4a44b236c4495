//! `splitway env` fed to the real clients it is for, on the emulated network: the shell form
//! to curl and to a Go program (`net/http`'s default client), the JSON form to Python
//! requests, the dotenv form to the JDK (through `JAVA_TOOL_OPTIONS`), the kubernetes form, as
//! a container's environment, to Node's `fetch` and its global `http`/`https` agents. Each
//! client must reach an API through the proxy and the proxy's own admin listener directly
//! (`NO_PROXY`): through the proxy that address is refused. Go never proxies loopback, so its
//! test also asks Go's own proxy decision for the metadata endpoints in `NO_PROXY`.

use std::process::Output;

use crate::support::bin;
use crate::support::client::{ca_file, client_or_skip, runs};
use crate::support::config::{ConfigBuilder, quoted};
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::tmp::{TempDir, TempFile};
use crate::support::*;

mod go;
mod node;

/// A proxy on the emulated network, a config file naming its real addresses for `splitway
/// env`, and the URLs a client calls.
struct Setup {
    proxy: TestProxy,
    config: TempFile,
    /// An API reached through the proxy (a custom domain: the public endpoint serves it).
    api: String,
    /// The proxy's own `/healthz`: reachable only when `NO_PROXY` sends it direct.
    healthz: String,
}

async fn setup() -> Setup {
    let net = aws_net();
    let builder = ConfigBuilder::scenario(net, PrivateDns::On).admin();
    let proxy = TestProxy::start(&builder.build()).await;
    let admin = proxy.admin.expect("admin listener");
    let fixed = builder
        .proxy_str("listen", proxy.addr)
        .admin_key("listen", quoted(admin));
    Setup {
        config: TempFile::new("splitway.toml", fixed.build()),
        api: url(CUSTOM_DOMAIN),
        healthz: format!("http://{admin}/healthz"),
        proxy,
    }
}

/// `splitway env --format FORMAT` for the setup's config.
async fn env_output(setup: &Setup, format: &str) -> String {
    let out = bin::run(&["env", "--config", setup.config.arg(), "--format", format]).await;
    assert!(
        out.status.success(),
        "splitway env --format {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs `command` (an empty environment but `PATH`, `HOME` and `extra`) to its exit.
async fn run(program: &str, args: &[&str], extra: &[(String, String)]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear().kill_on_drop(true);
    command.envs(
        ["PATH", "HOME"]
            .into_iter()
            .filter_map(|k| Some((k, std::env::var_os(k)?))),
    );
    command.envs(extra.iter().map(|(k, v)| (k, v)));
    within(HANG_SECS * 3, format!("{program} to exit"), command.output())
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// The two lines every client script prints first: the API's answer, then `/healthz`'s.
/// Returns the lines after them.
fn assert_answers(client: &str, out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("{stdout}\n{stderr}");
    assert!(out.status.success(), "{client} failed:\n{context}");
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_pair(client, &lines, &context);
    lines.into_iter().skip(2).collect()
}

/// `lines` start with the API's answer (from the public endpoint, so through the proxy), then
/// `200 ok` from `/healthz` (reached directly).
fn assert_pair(client: &str, lines: &[String], context: &str) {
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains(r#""endpoint":"public-us-east-1""#)),
        "{client}: the custom domain was not served by the public endpoint through the proxy:\n{context}"
    );
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("200 ok"),
        "{client}: the admin listener (in NO_PROXY) was not reached directly:\n{context}"
    );
}

/// The `env:` list of `--format kubernetes`, as the kubelet hands it to the container.
fn kubernetes_env(yaml: &str) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Spec {
        env: Vec<Var>,
    }
    #[derive(serde::Deserialize)]
    struct Var {
        name: String,
        value: String,
    }
    let spec: Spec = serde_norway::from_str(yaml).expect("YAML");
    spec.env.into_iter().map(|v| (v.name, v.value)).collect()
}

#[tokio::test]
async fn curl_reads_the_shell_form() {
    if !client_or_skip("curl", runs("curl", &["--version"]), "curl") {
        return;
    }
    let setup = setup().await;
    let shell = env_output(&setup, "shell").await;
    let ca = ca_file(aws_net());
    let curl = "curl -q --silent --show-error --max-time 20";
    let script = format!(
        "{shell}{curl} --cacert '{}' '{}' && echo\nset -e\ncode=$({curl} --output /dev/null --write-out '%{{http_code}}' '{h}')\necho \"$code $({curl} '{h}')\"\n",
        ca.display(),
        setup.api,
        h = setup.healthz
    );
    let dir = TempDir::new("env-curl");
    let path = dir.write("client.sh", script);
    let out = run("sh", &[path.to_str().expect("UTF-8 path")], &[]).await;
    assert_answers("curl", &out);
    setup.proxy.stop().await;
}

const PYTHON: &str = r#"
import json, os, sys
import requests
os.environ.update(json.load(open(sys.argv[1])))
r = requests.get(sys.argv[2], verify=sys.argv[3], timeout=20)
print(r.text)
h = requests.get(sys.argv[4], timeout=20)
print(h.status_code, h.text.strip())
"#;

#[tokio::test]
async fn python_requests_reads_the_json_form() {
    let present = runs("python3", &["-c", "import requests"]);
    if !client_or_skip("python3 with requests", present, "python3-requests") {
        return;
    }
    let setup = setup().await;
    let json = env_output(&setup, "json").await;
    let dir = TempDir::new("env-python");
    let (env, script) = (dir.write("env.json", json), dir.write("client.py", PYTHON));
    let ca = ca_file(aws_net());
    let args = [&script, &env].map(|p| p.to_str().expect("UTF-8 path").to_owned());
    let ca = ca.to_str().expect("UTF-8 path");
    let out = run("python3", &[&args[0], &args[1], &setup.api, ca, &setup.healthz], &[]).await;
    assert_answers("python requests", &out);
    setup.proxy.stop().await;
}

const JAVA: &str = r#"
import java.io.*;
import java.net.*;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.*;

public class Client {
    public static void main(String[] a) throws Exception {
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        try (InputStream in = new FileInputStream(a[1])) {
            ks.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, tmf.getTrustManagers(), null);
        HttpsURLConnection api = (HttpsURLConnection) new URL(a[0]).openConnection();
        api.setSSLSocketFactory(tls.getSocketFactory());
        api.setConnectTimeout(20000);
        api.setReadTimeout(20000);
        System.out.println(new String(api.getInputStream().readAllBytes()) + " proxied=" + api.usingProxy());
        HttpURLConnection health = (HttpURLConnection) new URL(a[2]).openConnection();
        health.setConnectTimeout(20000);
        health.setReadTimeout(20000);
        System.out.println(health.getResponseCode() + " " + new String(health.getInputStream().readAllBytes()).trim());
    }
}
"#;

#[tokio::test]
async fn the_jdk_reads_java_tool_options_from_the_dotenv_form() {
    let present = runs("java", &["-version"]);
    if !client_or_skip("java (JDK 11 or later)", present, "default-jdk-headless") {
        return;
    }
    let setup = setup().await;
    let dotenv = env_output(&setup, "dotenv").await;
    // As `docker run --env-file` reads it: NAME=VALUE, the value verbatim to the end of the line.
    let vars: Vec<(String, String)> = dotenv
        .lines()
        .map(|l| l.split_once('=').expect("NAME=VALUE"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = TempDir::new("env-java");
    let source = dir.write("Client.java", JAVA);
    let ca = ca_file(aws_net());
    let args = [
        source.to_str().expect("UTF-8 path"),
        &setup.api,
        ca.to_str().expect("UTF-8 path"),
        &setup.healthz,
    ];
    let out = run("java", &args, &vars).await;
    assert_answers("java", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("proxied=true"),
        "HttpsURLConnection did not use the proxy: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Picked up JAVA_TOOL_OPTIONS: -Dhttps.proxyHost=127.0.0.1"),
        "{stderr}"
    );
    setup.proxy.stop().await;
}

#[tokio::test]
async fn the_kubernetes_form_is_the_json_form_as_a_container_env_list() {
    let setup = setup().await;
    let env = kubernetes_env(&env_output(&setup, "kubernetes").await);
    let json: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&env_output(&setup, "json").await).expect("JSON");
    assert_eq!(env.len(), json.len(), "each variable once");
    let listed: std::collections::BTreeMap<String, String> = env.into_iter().collect();
    assert_eq!(listed, json);
    setup.proxy.stop().await;
}
