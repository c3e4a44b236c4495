//! Operations: metrics that count exactly the traffic sent, readiness at start and drain,
//! reloads (good, broken, with a tunnel open), and SIGTERM on the real binary.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

/// Counts the bytes a client sends and receives through a tunnel.
struct Counting {
    inner: TcpStream,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.received
            .fetch_add((buf.filled().len() - before) as u64, Ordering::SeqCst);
        poll
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.sent.fetch_add(n as u64, Ordering::SeqCst);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One tunnel, one TLS GET with `Connection: close`; returns (client sent, client received)
/// counted after the CONNECT exchange, i.e. the tunnel's bytes.
async fn one_tunnel(proxy: &TestProxy, host: &str) -> (u64, u64) {
    let net = aws_net();
    let (status, _, _, stream) = connect_raw(proxy.addr, &connect_request(&format!("{host}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200);
    let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counting = Counting {
        inner: stream,
        sent: sent.clone(),
        received: received.clone(),
    };
    let config = Arc::new(crate::support::pki::client_config(&net.ca_der));
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, counting);
    let mut tls = within(HANG_SECS, format!("a TLS handshake with {host}"), handshake)
        .await
        .expect("handshake");
    let (code, _) = get_over_tls(&mut tls, host).await;
    assert_eq!(code, 200);
    // Read to the server's close so every byte the upstream sent has been counted.
    let mut rest = Vec::new();
    let to_close = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest);
    let _ = within(HANG_SECS, "the server to close", to_close).await;
    drop(tls);
    (sent.load(Ordering::SeqCst), received.load(Ordering::SeqCst))
}

#[tokio::test]
async fn metrics_count_exactly_the_traffic_sent() {
    let net = aws_net();
    let toml = scenario_config(net, PrivateDns::On)
        + "\n[[route]]\nname = \"blocked\"\nhosts = [\"blocked.example\"]\ndeny = true\n";
    let proxy = TestProxy::start(&toml).await;
    let (mut up, mut down) = (0, 0);
    for _ in 0..2 {
        let (s, r) = one_tunnel(&proxy, CUSTOM_DOMAIN).await;
        up += s;
        down += r;
    }
    let (status, _, _, _) = connect_raw(proxy.addr, &connect_request(&format!("blocked.example:{}", net.port))).await;
    assert_eq!(status_of(&status), 403);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let route = ("route", "custom-domains");
    assert_eq!(
        metric(
            &m,
            "splitway_requests_total",
            &[("kind", "connect"), route, ("outcome", "ok")]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "splitway_requests_total",
            &[("route", "blocked"), ("outcome", "http_request_denied")]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "splitway_tunnels_total", &[route, ("end", "closed")]),
        2.0,
        "{m}"
    );
    assert_eq!(metric(&m, "splitway_tunnels_open", &[route]), 0.0);
    assert_eq!(
        metric(
            &m,
            "splitway_bytes_total",
            &[route, ("direction", "client_to_upstream")]
        ),
        up as f64,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "splitway_bytes_total",
            &[route, ("direction", "upstream_to_client")]
        ),
        down as f64,
        "{m}"
    );
    assert_eq!(metric(&m, "splitway_connect_duration_seconds_count", &[route]), 2.0);
    assert_eq!(metric(&m, "splitway_connections_open", &[]), 0.0);
    // Metric labels never carry host names.
    assert!(!m.contains(CUSTOM_DOMAIN) && !m.contains("blocked.example"), "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn sni_rejections_are_counted() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let (status, _, _, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200);
    let _ = tls_over(stream, CUSTOM_DOMAIN_2, &net.ca_der)
        .await
        .expect_err("mismatched SNI");
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let route = ("route", "custom-domains");
    assert_eq!(
        metric(
            &m,
            "splitway_sni_rejections_total",
            &[route, ("reason", "sni_mismatch")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "splitway_tunnels_total", &[route, ("end", "sni_rejected")]),
        1.0,
        "{m}"
    );
    proxy.stop().await;
}
