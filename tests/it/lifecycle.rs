//! Readiness, drain and reload: in-process, and SIGTERM on the real binary.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::bin::Running;
use crate::support::client::admin_get;
use crate::support::config::{ConfigBuilder, Route, strings};
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::raw::{closed, exchange, read_reply, sockets};
use crate::support::tmp::TempFile;
use crate::support::*;

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
    let mut proxy = TestProxy::start(&ConfigBuilder::scenario(net, PrivateDns::On).admin().build()).await;
    let admin = proxy.admin.expect("admin listener");
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
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

/// With several serving threads (`SPLITWAY_THREADS` in the binary), every thread's listener shares
/// the port, accepts and serves; another proxy cannot take the port; and the drain waits for
/// the connections of every thread.
#[tokio::test]
async fn every_serving_thread_accepts_serves_and_drains() {
    if crate::support::require("ss (iproute2)", crate::support::tool("ss", "-V")).is_none() {
        return;
    }
    let net = aws_net();
    let builder = ConfigBuilder::scenario(net, PrivateDns::On);
    let limits = splitway::Limits {
        threads: 3,
        ..splitway::Limits::default()
    };
    let mut proxy = TestProxy::start_with(&builder.build(), limits).await;
    let listening = sockets("listening", "sport", proxy.addr.port());
    assert_eq!(listening.lines().count(), 3, "one listener a thread:\n{listening}");

    let taken =
        splitway::Config::from_toml(&builder.proxy_str("listen", proxy.addr).build(), "second.toml").expect("config");
    let second = within(HANG_SECS, "a second proxy to bind", splitway::Proxy::bind(taken)).await;
    let e = second
        .err()
        .map(|e| format!("{e:?}"))
        .expect("a second proxy took the port");
    assert!(e.contains("AddrInUse"), "{e}");

    // The kernel spreads connections over the three listeners by their addresses: with 24,
    // every thread gets some (a thread that did not accept would leave its share hanging).
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let mut opened = Vec::new();
    for _ in 0..24 {
        opened.push(open_tls(proxy.addr, &host).await);
    }
    proxy.begin_stop().await;
    for open in opened {
        let (code, _) = get_over_tls(open, &host).await;
        assert_eq!(code, 200);
    }
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn drain_timeout_cuts_what_remains() {
    let net = aws_net();
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .proxy_str("drain_timeout", "100ms")
        .build();
    let mut proxy = TestProxy::start(&toml).await;
    let mut open = open_tls(proxy.addr, CUSTOM_DOMAIN).await;
    proxy.begin_stop().await;
    let handle = proxy.handle.clone();
    proxy.stop().await;
    // The proxy cut the tunnel it still held when drain_timeout passed.
    let mut buf = [0u8; 16];
    let read = within(HANG_SECS, "the drained tunnel to close", open.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "tunnel still open after the drain: {read:?}"
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
    let full = scenario_config(net, PrivateDns::On);
    // Start without the custom-domain route: with Private DNS on, that domain lands on the
    // VPC endpoint and its certificate does not match.
    let without = ConfigBuilder::scenario(net, PrivateDns::On)
        .route_key("custom-domains", "hosts", strings(["unused.example"]))
        .build();
    let path = TempFile::new("splitway.toml", &without);
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

    path.rewrite(&full);
    splitway::reload::reload_file(&proxy.handle, &path).expect("valid config reloads");
    let reloaded = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&reloaded, CUSTOM_DOMAIN)
            .await
            .expect("route added by the reload")
            .served_by,
        "public-us-east-1"
    );

    path.rewrite("[[route]]\nhosts = [\"x.example\"]\nresolver = \"missing\"\n");
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

#[tokio::test]
async fn sigterm_drains_an_open_tunnel_then_exits_zero() {
    let net = aws_net();
    let mut child = Running::start(&ConfigBuilder::scenario(net, PrivateDns::On).admin().build()).await;
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let open = open_tls(child.listen, &host).await;
    child.signal("TERM").await;
    child.next_log("draining").await;
    assert_eq!(admin_get(child.admin(), "/readyz").await.0, 503);
    let (code, _) = get_over_tls(open, &host).await;
    assert_eq!(code, 200, "the open tunnel completes its request during the drain");
    assert_eq!(child.wait().await.code(), Some(0));
}

#[tokio::test]
async fn plain_http_responses_carry_connection_close_during_the_drain() {
    let net = aws_net();
    let origin = crate::support::origin::keep_alive_origin("127.77.0.6".parse().unwrap()).await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .route(
            Route::new("origin")
                .hosts(["origin.test"])
                .key("addresses", strings([origin])),
        )
        .build();
    let mut proxy = TestProxy::start(&toml).await;
    let request = b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n";
    let (before, mut stream) = exchange(proxy.addr, request).await;
    assert_eq!((before.status, before.body.as_str()), (Some(200), "ok\n"), "{before:?}");
    assert_eq!(
        before.header("connection"),
        None,
        "kept alive before the drain: {before:?}"
    );

    proxy.begin_stop().await;
    // The same keep-alive connection, one more request: answered, and told to go.
    within(HANG_SECS, "a request sent during the drain", stream.write_all(request))
        .await
        .expect("send during the drain");
    let during = read_reply(&mut stream).await;
    assert_eq!((during.status, during.body.as_str()), (Some(200), "ok\n"), "{during:?}");
    assert_eq!(during.header("connection"), Some("close"), "{during:?}");
    assert!(
        closed(&mut stream).await,
        "the proxy closes the connection after the response"
    );
    drop(stream);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
