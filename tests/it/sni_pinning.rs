//! SNI pinning: the tunnel stays open only when the ClientHello names the CONNECT host, however
//! the hello is cut into segments and records.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::support::client::handshake_and_get;
use crate::support::config::{ConfigBuilder, Route, quoted, strings};
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

/// Writes at most one byte per call, so every byte of the ClientHello is its own TCP segment
/// (the proxy's client socket has TCP_NODELAY semantics on loopback for tiny writes).
struct OneByteWrites(TcpStream);

impl AsyncRead for OneByteWrites {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneByteWrites {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn open_tunnel(proxy: &TestProxy, host: &str) -> TcpStream {
    let (status, _, body, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{host}:{}", aws_net().port))).await;
    assert_eq!(status_of(&status), 200, "{status} {body}");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A TLS handshake naming `sni` through `stream` (a tunnel pinned to another name) gets no
/// handshake: the proxy closes the tunnel.
async fn assert_tunnel_closed_on(stream: TcpStream, sni: &str) {
    let err = tls_over(stream, sni, &aws_net().ca_der)
        .await
        .expect_err("a mismatched SNI must not get a handshake");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ),
        "the proxy should close the tunnel, got {err:?}"
    );
}

fn tls_config(max_fragment: Option<usize>) -> rustls::ClientConfig {
    let mut config = crate::support::pki::client_config(&aws_net().ca_der);
    config.max_fragment_size = max_fragment;
    config
}

#[tokio::test]
async fn sni_naming_another_host_closes_the_tunnel() {
    let net = aws_net();
    TestProxy::exercise(&scenario_config(net, PrivateDns::On), async |proxy| {
        // CONNECT to the public API, then try to talk TLS to a private API through it.
        let stream = open_tunnel(proxy, &execute_api_host(PUBLIC_API_ID, REGION)).await;
        assert_tunnel_closed_on(stream, &execute_api_host(PRIVATE_API_ID, REGION)).await;
    })
    .await;
}

#[tokio::test]
async fn client_hello_in_one_byte_segments_passes() {
    let net = aws_net();
    TestProxy::exercise(&scenario_config(net, PrivateDns::On), async |proxy| {
        let host = execute_api_host(PRIVATE_API_ID, REGION);
        let stream = OneByteWrites(open_tunnel(proxy, &host).await);
        let (status, body) = handshake_and_get(tls_config(None), stream, &host).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn client_hello_in_many_small_records_passes() {
    let net = aws_net();
    TestProxy::exercise(&scenario_config(net, PrivateDns::On), async |proxy| {
        let host = CUSTOM_DOMAIN.to_owned();
        let stream = open_tunnel(proxy, &host).await;
        // rustls' smallest fragment size: the hello spans many TLS records.
        let (status, body) = handshake_and_get(tls_config(Some(32)), stream, &host).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn non_tls_first_bytes_close_a_pinned_tunnel() {
    let net = aws_net();
    TestProxy::exercise(&scenario_config(net, PrivateDns::On), async |proxy| {
        let mut stream = open_tunnel(proxy, CUSTOM_DOMAIN).await;
        let request = b"GET / HTTP/1.1\r\nHost: api.mydomain.com\r\n\r\n";
        within(HANG_SECS, "the request sent", stream.write_all(request))
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = within(HANG_SECS, "the proxy to close the tunnel", stream.read(&mut buf))
            .await
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "the tunnel must close without relaying: got {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        drop(stream);
    })
    .await;
}

#[tokio::test]
async fn sni_any_route_lets_another_name_through() {
    let net = aws_net();
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .route_key("private-apis", "sni", quoted("any"))
        .build();
    TestProxy::exercise(&toml, async |proxy| {
        // CONNECT names one private API; the TLS inside names another, served by the same endpoint.
        let stream = open_tunnel(proxy, &execute_api_host("zzzzzzzzzz", REGION)).await;
        let host = execute_api_host(PRIVATE_API_ID, REGION);
        let tls = tls_over(stream, &host, &net.ca_der)
            .await
            .expect("sni = any does not pin");
        let (status, _) = get_over_tls(tls, &host).await;
        assert_eq!(status, 200);
    })
    .await;
}

/// A TLS 1.3 ClientHello whose server_name is `outer` and which carries an
/// `encrypted_client_hello` extension (draft-ietf-tls-esni-22 §5), as an ECH client sends it:
/// the real name is inside the encrypted payload.
fn ech_client_hello(outer: &str) -> Vec<u8> {
    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(data.len()).expect("fits").to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }
    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend(vec16(data));
        e
    }
    let mut name = vec![0u8];
    name.extend(vec16(outer.as_bytes()));
    let mut extensions = extension(0, &vec16(&name));
    extensions.extend(extension(43, &[0x02, 0x03, 0x04]));
    let mut ech = vec![0x00, 0x00, 0x01, 0x00, 0x01, 0x2a];
    ech.extend(vec16(&[0xaa; 32]));
    ech.extend(vec16(&[0x5a; 64]));
    extensions.extend(extension(0xfe0d, &ech));
    let mut body = vec![0x03, 0x03];
    body.extend([0x11; 32]);
    body.push(0);
    body.extend(vec16(&[0x13, 0x01]));
    body.extend([1, 0]);
    body.extend(vec16(&extensions));
    let mut handshake = vec![1, 0];
    handshake.extend(vec16(&body));
    let mut record = vec![22, 3, 1];
    record.extend(vec16(&handshake));
    record
}

#[tokio::test]
async fn an_encrypted_client_hello_is_refused_on_a_pinned_route_with_its_own_reason() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let mut stream = open_tunnel(&proxy, CUSTOM_DOMAIN).await;
    let hello = ech_client_hello("cloudflare-ech.com");
    within(HANG_SECS, "the hello sent", stream.write_all(&hello))
        .await
        .expect("write the hello");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("the proxy closes the tunnel within 20 s");
    assert!(matches!(read, Ok(0) | Err(_)), "the tunnel must close, read {read:?}");
    drop(stream);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let rejected = |reason: &str| {
        crate::support::metrics::metric(
            &m,
            "splitway_sni_rejections_total",
            &[("route", "custom-domains"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("ech_outer_sni"), 1.0, "{m}");
    // Counted on first use: no `sni_mismatch` series is the expected "none".
    let mismatch = [("route", "custom-domains"), ("reason", "sni_mismatch")];
    let mismatches = crate::support::metrics::metric_or_zero(&m, "splitway_sni_rejections_total", &mismatch);
    assert_eq!(mismatches, 0.0, "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn grease_ech_naming_the_connect_host_passes_the_pin() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let mut stream = open_tunnel(&proxy, CUSTOM_DOMAIN).await;
    // Browsers without an ECH config send a GREASE extension with the real name outside.
    let hello = ech_client_hello(CUSTOM_DOMAIN);
    within(HANG_SECS, "the hello sent", stream.write_all(&hello))
        .await
        .expect("write the hello");
    // The endpoint gets the (fake) hello and ends the connection; the proxy relays that.
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("the endpoint answers or closes within 20 s");
    drop(stream);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    // Counted on first use: no `sni_rejected` series is the expected "none".
    let ended = crate::support::metrics::metric_or_zero(
        &m,
        "splitway_tunnels_total",
        &[("route", "custom-domains"), ("end", "sni_rejected")],
    );
    assert_eq!(ended, 0.0, "{m}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rejected_client_hello_never_reaches_the_upstream() {
    let net = aws_net();
    let upstream = crate::support::origin::Recorder::start("127.77.0.5".parse().unwrap()).await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .replace_route(
            Route::new("custom-domains")
                .hosts([CUSTOM_DOMAIN])
                .key("addresses", strings([upstream.addr()])),
        )
        .build();
    let proxy = TestProxy::start(&toml).await;
    // The 200 comes after the upstream connection is up: the recorder has accepted it.
    let stream = open_tunnel(&proxy, CUSTOM_DOMAIN).await;
    assert_tunnel_closed_on(stream, CUSTOM_DOMAIN_2).await;
    // The proxy closed its upstream side without writing one byte of the hello.
    let seen = upstream.when_closed(1).await;
    assert_eq!((seen.accepted, seen.bytes), (1, 0), "{seen:?}");
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let route = ("route", "custom-domains");
    let mismatch = [route, ("reason", "sni_mismatch")];
    assert_eq!(metric(&m, "splitway_sni_rejections_total", &mismatch), 1.0, "{m}");
    let rejected = [route, ("end", "sni_rejected")];
    assert_eq!(metric(&m, "splitway_tunnels_total", &rejected), 1.0, "{m}");
    proxy.stop().await;
}
