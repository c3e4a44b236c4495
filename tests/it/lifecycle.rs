//! Readiness, drain and reload: in-process, and SIGTERM on the real binary.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::client::admin_get;
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

const ADMIN: &str = "\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A tunnel with its TLS session up and no request sent yet.
async fn open_tls(proxy: SocketAddr, host: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let net = aws_net();
    let (status, _, _, stream) = connect_raw(proxy, &connect_request(&format!("{host}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200, "{status}");
    tls_over(stream, host, &net.ca_der)
        .await
        .expect("TLS through the tunnel")
}

#[tokio::test]
async fn readiness_flips_at_start_and_at_drain_while_open_tunnels_finish() {
    let net = aws_net();
    let mut proxy = TestProxy::start(&(scenario_config(net, PrivateDns::On) + ADMIN)).await;
    let admin = proxy.admin.expect("admin listener");
    proxy.handle.wait_started().await;
    assert_eq!(admin_get(admin, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let open = open_tls(proxy.addr, &host).await;

    proxy.begin_stop().await;
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    // The application beside the proxy may still be calling out: new connections are served.
    let late = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&late, CUSTOM_DOMAIN).await.expect("served while draining").status,
        200
    );
    drop(late);
    // The tunnel opened before the signal completes its request.
    let (code, _) = get_over_tls(open, &host).await;
    assert_eq!(code, 200);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn drain_timeout_cuts_what_remains() {
    let net = aws_net();
    let toml = scenario_config(net, PrivateDns::On).replace(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"5s\"\ndrain_timeout = \"100ms\"",
    );
    let mut proxy = TestProxy::start(&toml).await;
    let mut open = open_tls(proxy.addr, CUSTOM_DOMAIN).await;
    proxy.begin_stop().await;
    let handle = proxy.handle.clone();
    proxy.stop().await;
    // The proxy cut the tunnel it still held when drain_timeout passed.
    let mut buf = [0u8; 16];
    assert!(
        matches!(open.read(&mut buf).await, Ok(0) | Err(_)),
        "tunnel still open after the drain"
    );
    assert_eq!(handle.open_connections(), 0);
    assert!(
        metric(
            &handle.metrics_text(),
            "splitway_tunnels_total",
            &[("end", "cancelled")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn reload_adds_a_route_rejects_a_broken_file_and_keeps_open_tunnels() {
    let net = aws_net();
    let dir = std::env::temp_dir().join(format!("splitway-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("splitway.toml");
    let full = scenario_config(net, PrivateDns::On);
    // Start without the custom-domain route: with Private DNS on, that domain lands on the
    // VPC endpoint and its certificate does not match.
    let without = full.replace(
        &format!("hosts = [\"{CUSTOM_DOMAIN}\", \"{CUSTOM_DOMAIN_2}\"]"),
        "hosts = [\"unused.example\"]",
    );
    std::fs::write(&path, &without).unwrap();
    let proxy = TestProxy::start(&without).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let err = get(&client, CUSTOM_DOMAIN)
        .await
        .expect_err("certificate mismatch before the reload");
    assert!(
        crate::support::client::is_name_mismatch(&err),
        "{}",
        describe_chain(&err)
    );
    let private = execute_api_host(PRIVATE_API_ID, REGION);
    let open = open_tls(proxy.addr, &private).await;

    std::fs::write(&path, &full).unwrap();
    splitway::reload::reload_file(&proxy.handle, &path).expect("valid config reloads");
    let reloaded = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&reloaded, CUSTOM_DOMAIN)
            .await
            .expect("route added by the reload")
            .served_by,
        "public-us-east-1"
    );

    std::fs::write(&path, "[[route]]\nhosts = [\"x.example\"]\nresolver = \"missing\"\n").unwrap();
    let err = splitway::reload::reload_file(&proxy.handle, &path)
        .expect_err("broken config is rejected")
        .to_string();
    assert!(err.contains("splitway.toml:3") && err.contains("missing"), "{err}");
    let fresh = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&fresh, CUSTOM_DOMAIN).await.expect("running config kept").status,
        200
    );

    let (code, body) = get_over_tls(open, &private).await;
    assert_eq!(code, 200, "a tunnel opened before the reloads still works: {body}");
    let m = proxy.handle.metrics_text();
    assert_eq!(
        metric(&m, "splitway_config_reloads_total", &[("result", "ok")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "splitway_config_reloads_total", &[("result", "error")]),
        1.0,
        "{m}"
    );
    drop((client, reloaded, fresh));
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

/// Lines of the binary's JSON log, as they come.
async fn next_line_with(lines: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> serde_json::Value {
    let wait = async {
        while let Some(line) = lines.recv().await {
            if line.contains(needle) {
                return serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line {line:?}: {e}"));
            }
        }
        panic!("the process ended before logging {needle:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the log"))
}

#[tokio::test]
async fn sigterm_drains_an_open_tunnel_then_exits_zero() {
    let net = aws_net();
    let dir = std::env::temp_dir().join(format!("splitway-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("splitway.toml");
    std::fs::write(&path, scenario_config(net, PrivateDns::On) + ADMIN).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_splitway"))
        .args(["run", "--config", path.to_str().unwrap(), "--log-format", "json"])
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start splitway");
    let (tx, mut lines) = mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = tx.send(line);
        }
    });
    let serving = next_line_with(&mut lines, "splitway serving").await;
    let listen: SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = serving["admin"].as_str().unwrap().parse().unwrap();
    next_line_with(&mut lines, "\"ready\"").await;

    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let open = open_tls(listen, &host).await;
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    next_line_with(&mut lines, "draining").await;
    assert_eq!(admin_get(admin, "/readyz").await.0, 503);
    let (code, _) = get_over_tls(open, &host).await;
    assert_eq!(code, 200, "the open tunnel completes its request during the drain");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
