//! Parent proxies seen from outside: `check` and `explain` show the chain, `/readyz?verbose`
//! checks each parent, and the real binary's password (from the environment) appears in no
//! output, no log line (at debug level) and no error body.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::support::client::admin_get;
use crate::support::parent::{Behaviour, TestParent, down_parent};
use crate::support::proxy::{PrivateDns, TestProxy, proxy_section, resolver_sections};
use crate::support::*;

const PASSWORD: &str = "pw-7Hq2-never-printed";
const PASSWORD_VAR: &str = "SPLITWAY_TEST_PARENT_PASSWORD";

fn ip(d: u8) -> IpAddr {
    IpAddr::from([127, 60, 1, d])
}

fn config(net: &AwsNet, parents: &str, admin: bool) -> String {
    let admin = if admin {
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        r#"{proxy}{admin}{resolvers}
[[route]]
name = "corp-egress"
hosts = ["{CUSTOM_DOMAIN}"]
resolver = "public"
via = {parents}
via_password_env = "{PASSWORD_VAR}"
"#,
        proxy = proxy_section(net),
        resolvers = resolver_sections(net, PrivateDns::On),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("splitway-parent-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

async fn splitway(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_splitway"))
        .args(args)
        .env_clear()
        .env(PASSWORD_VAR, PASSWORD)
        .output()
        .await
        .expect("run splitway")
}

#[tokio::test]
async fn check_and_explain_show_the_chain_with_user_stars_never_the_password() {
    let net = aws_net();
    let parent = TestParent::start(ip(1), net, Behaviour::Relay { auth: None }).await;
    let path = write(
        "check.toml",
        &config(net, &format!("\"http://alice@{}\"", parent.addr), false),
    );
    let out = splitway(&["check", "--config", path.to_str().unwrap()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = format!(
        "through http://alice:***@{} (CONNECT the resolved address)",
        parent.addr
    );
    assert!(stdout.contains(&shown), "{stdout}");
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    let out = splitway(&["explain", &target, "--config", path.to_str().unwrap()]).await;
    let explained = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "connect to: http://alice:***@{}, then CONNECT {PUBLIC_ENDPOINT_IP}:{}",
        parent.addr, net.port
    );
    assert!(explained.contains(&line), "{explained}");
    for text in [&stdout, &explained, &String::from_utf8_lossy(&out.stderr)] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
    // `--probe` opens TLS along splitway's route: through the parent, to the public endpoint.
    let ca = write("ca.pem", &net.ca_pem);
    let args = [
        "explain",
        &target,
        "--config",
        path.to_str().unwrap(),
        "--probe",
        "--ca-file",
        ca.to_str().unwrap(),
        "--json",
    ];
    let out = splitway(&args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ours = e["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["path"] == "splitway")
        .cloned();
    let ours = ours.unwrap_or_else(|| panic!("no splitway probe: {e}"));
    assert_eq!(ours["address"], parent.addr.to_string(), "{e}");
    assert_eq!(
        (ours["covers_host"].as_bool(), ours["http_status"].as_u64()),
        (Some(true), Some(200)),
        "{e}"
    );
    let asked = format!("CONNECT {PUBLIC_ENDPOINT_IP}:{} HTTP/1.1", net.port);
    assert!(
        parent.received().iter().any(|r| r.line == asked),
        "{:?}",
        parent.received()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
}

#[tokio::test]
async fn readyz_verbose_checks_each_parent() {
    let net = aws_net();
    let up = TestParent::start(ip(2), net, Behaviour::Relay { auth: None }).await;
    let down = down_parent(ip(3)).await;
    let with_password = config(net, &format!("[\"http://{}\", \"http://{down}\"]", up.addr), true);
    let toml = with_password.replace(&format!("via_password_env = \"{PASSWORD_VAR}\"\n"), "");
    assert_ne!(toml, with_password, "the password key was removed");
    let proxy = TestProxy::start(&toml).await;
    proxy.handle.wait_started().await;
    let failing = proxy.handle.check_dependencies().await;
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(
        (failing[0].kind, failing[0].name.as_str()),
        ("parent", down.to_string().as_str())
    );
    let (status, body) = admin_get(proxy.admin.expect("admin"), "/readyz?verbose").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let check = |name: String| {
        v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name.as_str())
            .cloned()
    };
    let ok = check(up.addr.to_string()).expect("the live parent is checked");
    assert_eq!(
        (ok["kind"].as_str(), ok["ok"].as_bool()),
        (Some("parent"), Some(true)),
        "{body}"
    );
    let bad = check(down.to_string()).expect("the dead parent is checked");
    assert_eq!(bad["ok"], false, "{body}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("refused the connection"),
        "{body}"
    );
    proxy.stop().await;
}

/// The real binary at debug level: a tunnel through a parent that wants the credentials, one
/// it rejects, and nothing on stderr or in the error body carries the password.
#[tokio::test]
async fn the_password_is_in_no_log_line_and_no_error_body() {
    let net = aws_net();
    let good_auth = format!("Basic {}", base64_of(&format!("alice:{PASSWORD}")));
    let strict = TestParent::start(
        ip(4),
        net,
        Behaviour::Relay {
            auth: Some(good_auth.clone()),
        },
    )
    .await;
    let path = write(
        "run.toml",
        &config(net, &format!("\"http://alice@{}\"", strict.addr), false),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_splitway"))
        .args(["run", "--config", path.to_str().unwrap(), "--log-format", "json"])
        .env_clear()
        .env(PASSWORD_VAR, PASSWORD)
        .env("SPLITWAY_LOG", "debug")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start splitway");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    let listen = loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
            .await
            .expect("splitway logs in time")
            .expect("read stderr");
        assert!(n > 0, "splitway exited: {log}");
        log.push_str(&line);
        if line.contains("splitway serving") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            break v["listen"]
                .as_str()
                .expect("listen")
                .parse::<SocketAddr>()
                .expect("address");
        }
    };
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    let (status, _, _, s) = connect_raw(listen, &connect_request(&target)).await;
    assert_eq!(status_of(&status), 200, "{status}");
    let tls = tls_over(s, CUSTOM_DOMAIN, &net.ca_der)
        .await
        .expect("TLS through the parent");
    let (code, _) = get_over_tls(tls, CUSTOM_DOMAIN).await;
    assert_eq!(code, 200);
    assert_eq!(
        strict.received()[0].header("proxy-authorization"),
        Some(good_auth.as_str())
    );

    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(30), stderr.read_to_string(&mut log))
        .await
        .expect("splitway exits and closes stderr")
        .expect("read stderr");
    assert!(
        log.contains("tunnel closed") && log.contains(&strict.addr.to_string()),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "the password leaked into the log:\n{log}");
    assert!(!log.contains(&good_auth), "the credentials leaked into the log:\n{log}");
}

#[tokio::test]
async fn a_rejected_password_is_not_in_the_error_body() {
    let net = aws_net();
    let rejecting = TestParent::start(
        ip(6),
        net,
        Behaviour::Relay {
            auth: Some("Basic other".into()),
        },
    )
    .await;
    let dir = std::env::temp_dir().join(format!("splitway-parent-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("password file");
    let with_env = config(net, &format!("\"http://alice@{}\"", rejecting.addr), false);
    let toml = with_env.replace(
        &format!("via_password_env = \"{PASSWORD_VAR}\""),
        &format!("via_password_file = \"{}\"", file.display()),
    );
    assert_ne!(toml, with_env, "the password comes from the file");
    let proxy = TestProxy::start(&toml).await;
    let (status, headers, body, s) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 502, "{status}");
    let ps = header(&headers, "proxy-status").expect("Proxy-Status");
    assert!(
        ps.starts_with("splitway; error=http_request_denied; received-status=407;"),
        "{ps}"
    );
    assert!(
        body.contains("route `corp-egress`") && body.contains("user `alice`"),
        "{body}"
    );
    let everything = format!("{status}{headers:?}{body}");
    assert!(!everything.contains(PASSWORD) && !everything.contains(&base64_of(&format!("alice:{PASSWORD}"))));
    drop(s);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

/// RFC 4648 base64, for the credentials the parent expects.
/// RFC 7617's Basic token for `s`, by the base64 crate (an independent encoder from splitway's).
fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
