//! Faults between the proxy and its upstreams, injected by a relay (support/relay.rs):
//! refusals, a connect that never completes, slow and sliced paths, resets mid-tunnel,
//! half-closes both ways, and a client that vanishes mid-ClientHello.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use splitway::config::DEFAULT_CONNECT_TIMEOUT;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::config::{ConfigBuilder, Route, strings};
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::relay::{Fault, Relay};
use crate::support::*;

const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1));
/// The name whose route goes through the relay; the endpoint behind serves CUSTOM_DOMAIN.
const VIA_RELAY: &str = CUSTOM_DOMAIN;

/// The scenario, with CUSTOM_DOMAIN's route pinned to `upstream` (e.g. a relay) and extra
/// `[proxy]` keys.
fn config_to(upstream: SocketAddr) -> ConfigBuilder {
    ConfigBuilder::scenario(aws_net(), PrivateDns::On).replace_route(
        Route::new("custom-domains")
            .hosts([CUSTOM_DOMAIN])
            .key("addresses", strings([upstream])),
    )
}

async fn relay(fault: Fault) -> Relay {
    let net = aws_net();
    Relay::start(RELAY_IP, net.endpoint_addr(PUBLIC_ENDPOINT_IP), fault).await
}

async fn connect_status(proxy: &TestProxy, host: &str) -> (u16, Vec<(String, String)>, String, TcpStream) {
    let (status, headers, body, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{host}:{}", aws_net().port))).await;
    (status_of(&status), headers, body, stream)
}

fn proxy_status(headers: &[(String, String)]) -> &str {
    header(headers, "proxy-status")
        .and_then(|p| p.strip_prefix("splitway; error="))
        .and_then(|p| p.split(';').next())
        .unwrap_or("")
}

#[tokio::test]
async fn hardening_an_upstream_that_refuses_is_502_connection_refused() {
    let closed_port = TcpListener::bind((RELAY_IP, 0))
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = TestProxy::start(&config_to(closed_port).build()).await;
    let (status, headers, body, _) = connect_status(&proxy, VIA_RELAY).await;
    assert_eq!((status, proxy_status(&headers)), (502, "connection_refused"), "{body}");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

/// A listener whose accept queue is full and never drained: Linux drops further SYNs, so a
/// connect to it neither succeeds nor fails — a blackholed connect, on loopback, unprivileged.
async fn syn_blackhole() -> (SocketAddr, Vec<TcpStream>, TcpListener) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(RELAY_IP, 0)).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    // Fill the queue; the probe's timeout is a hang guard for the one connect that stalls.
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
        fillers.push(s);
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    (addr, fillers, listener)
}

#[tokio::test]
async fn hardening_a_connect_that_never_completes_is_504_connection_timeout() {
    let (addr, _fillers, _listener) = syn_blackhole().await;
    let configured = Duration::from_millis(300);
    let proxy = TestProxy::start(&config_to(addr).proxy_str("connect_timeout", "300ms").build()).await;
    let started = Instant::now();
    let (status, headers, body, _) = connect_status(&proxy, VIA_RELAY).await;
    let took = started.elapsed();
    assert_eq!((status, proxy_status(&headers)), (504, "connection_timeout"), "{body}");
    assert!(body.contains("300ms"), "{body}");
    // The configured value is the one in force: the 504 comes after it and well before the
    // 5 s default (a loose bound, not a timing measurement).
    assert!(
        took >= configured && took < DEFAULT_CONNECT_TIMEOUT / 2,
        "504 after {took:?}; configured {configured:?}, default {DEFAULT_CONNECT_TIMEOUT:?}"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_tls_passes_through_slow_and_sliced_paths() {
    let net = aws_net();
    for fault in [
        Fault::Slice(1),
        Fault::Slice(7),
        Fault::Delay(Duration::from_millis(20)),
    ] {
        let relay = relay(fault).await;
        let proxy = TestProxy::start(&config_to(relay.addr()).build()).await;
        let (status, _, _, stream) = connect_status(&proxy, VIA_RELAY).await;
        assert_eq!(status, 200, "{fault:?}");
        let tls = tls_over(stream, VIA_RELAY, &net.ca_der)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(get_over_tls(tls, VIA_RELAY).await.0, 200, "{fault:?}");
        proxy.assert_no_leaks().await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn hardening_an_upstream_reset_mid_tunnel_closes_the_client_and_counts_an_error() {
    let net = aws_net();
    let relay = relay(Fault::Pass).await;
    let proxy = TestProxy::start(&config_to(relay.addr()).build()).await;
    let (status, _, _, stream) = connect_status(&proxy, VIA_RELAY).await;
    assert_eq!(status, 200);
    let tls = tls_over(stream, VIA_RELAY, &net.ca_der).await.expect("TLS");
    relay.reset_all();
    proxy.expect_tunnel_end(tls, "custom-domains", "error").await;
}

#[tokio::test]
async fn hardening_a_blackholed_upstream_ends_at_the_idle_timeout() {
    let net = aws_net();
    let relay = relay(Fault::Blackhole).await;
    let proxy = TestProxy::start(&config_to(relay.addr()).proxy_str("idle_timeout", "200ms").build()).await;
    let (status, _, _, stream) = connect_status(&proxy, VIA_RELAY).await;
    assert_eq!(status, 200);
    let err = tls_over(stream, VIA_RELAY, &net.ca_der)
        .await
        .expect_err("nothing ever answers");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    proxy.assert_no_leaks().await;
    assert_eq!(
        metric(
            &proxy.handle.metrics_text(),
            "splitway_tunnels_total",
            &[("end", "idle")]
        ),
        1.0
    );
    proxy.stop().await;
}

/// Writes a banner and half-closes; then reads what the client sends until its half-close.
async fn banner_server() -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind((RELAY_IP, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"banner").await.expect("banner");
        s.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[tokio::test]
async fn hardening_half_closes_propagate_both_ways() {
    let (server, got) = banner_server().await;
    let relay = Relay::start(RELAY_IP, server, Fault::Pass).await;
    // An IP-literal CONNECT: routed by address, no SNI pinning, any bytes pass.
    let toml = ConfigBuilder::scenario(aws_net(), PrivateDns::On)
        .proxy("connect_ports", format!("[{}]", relay.addr().port()))
        .build();
    let proxy = TestProxy::start(&toml).await;
    let (status, _, _, mut stream) = connect_raw(proxy.addr, &connect_request(&relay.addr().to_string())).await;
    assert_eq!(status_of(&status), 200);
    let mut banner = Vec::new();
    within(HANG_SECS, "the upstream's half-close", stream.read_to_end(&mut banner))
        .await
        .expect("read to the upstream's half-close");
    assert_eq!(banner, b"banner");
    // Our direction is still open after theirs closed.
    within(
        HANG_SECS,
        "a write after the upstream half-closed",
        stream.write_all(b"reply"),
    )
    .await
    .expect("write after the upstream half-closed");
    within(HANG_SECS, "our half-close", stream.shutdown())
        .await
        .expect("half-close");
    let got = within(HANG_SECS, "the upstream to read to our half-close", got).await;
    assert_eq!(got.expect("server result"), b"reply");
    drop(stream);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    assert_eq!(metric(&m, "splitway_tunnels_total", &[("end", "closed")]), 1.0, "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_a_client_vanishing_mid_client_hello_leaves_nothing() {
    let proxy = TestProxy::start(&scenario_config(aws_net(), PrivateDns::On)).await;
    for cut in [1, 5, 9] {
        let (status, _, _, mut stream) = connect_status(&proxy, CUSTOM_DOMAIN).await;
        assert_eq!(status, 200);
        // A record header announcing a 512-byte hello, and only the first bytes of it.
        let hello = [&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc][..], &[0u8; 64]].concat();
        within(HANG_SECS, "a partial hello sent", stream.write_all(&hello[..cut]))
            .await
            .expect("partial hello");
        drop(stream);
    }
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    assert_eq!(
        metric(&m, "splitway_sni_rejections_total", &[("reason", "client_closed")]),
        3.0,
        "{m}"
    );
    proxy.stop().await;
}
