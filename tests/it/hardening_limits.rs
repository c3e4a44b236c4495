//! Limits: max_connections, the header-read timeout against a slowloris client, the tunnel
//! idle timeout, proxy authentication, and a CONNECT to the proxy itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use splitway::{HEADER_READ_TIMEOUT, Limits};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::config::{ConfigBuilder, Route, strings};
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::raw::{assert_refused, closed, exchange, read_reply};
use crate::support::*;

/// The scenario with a `blocked` deny route.
fn with_blocked() -> ConfigBuilder {
    ConfigBuilder::scenario(aws_net(), PrivateDns::On).route(Route::new("blocked").hosts(["blocked.example"]).deny())
}

async fn tunnel(proxy: SocketAddr, host: &str) -> TcpStream {
    let (status, _, body, stream) = connect_raw(proxy, &connect_request(&format!("{host}:{}", aws_net().port))).await;
    assert_eq!(status_of(&status), 200, "{body}");
    stream
}

#[tokio::test]
async fn hardening_max_connections_refuses_with_503_and_retry_after() {
    let proxy = TestProxy::start(&with_blocked().proxy("max_connections", "2").build()).await;
    let (a, b) = (
        tunnel(proxy.addr, CUSTOM_DOMAIN).await,
        tunnel(proxy.addr, CUSTOM_DOMAIN).await,
    );
    let (reply, mut third) = exchange(
        proxy.addr,
        &connect_request(&format!("{CUSTOM_DOMAIN}:{}", aws_net().port)),
    )
    .await;
    assert_eq!(reply.status, Some(503), "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        reply
            .header("proxy-status")
            .is_some_and(|p| p.starts_with("splitway; error=connection_limit_reached;")),
        "{reply:?}"
    );
    assert!(closed(&mut third).await);
    drop((a, b));
    within(HANG_SECS, "the proxy to be idle", proxy.handle.wait_idle()).await;
    // The permits came back: a new client is served.
    drop(tunnel(proxy.addr, CUSTOM_DOMAIN).await);
    proxy.assert_no_leaks().await;
    assert_eq!(
        metric(&proxy.handle.metrics_text(), "splitway_connections_rejected_total", &[]),
        1.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_slowloris_is_closed_at_the_header_timeout_while_others_are_served() {
    let configured = Duration::from_millis(300);
    let limits = Limits {
        header_read_timeout: configured,
        ..Limits::default()
    };
    let proxy = TestProxy::start_with(&with_blocked().build(), limits).await;
    let started = Instant::now();
    let mut slow = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy.addr))
        .await
        .expect("connect");
    within(
        HANG_SECS,
        "half a head sent",
        slow.write_all(b"CONNECT blocked.example:443 HTTP/1.1\r\nHost: bl"),
    )
    .await
    .expect("half a head");
    // Another client is served meanwhile, more than once.
    for _ in 0..3 {
        let (reply, _) = exchange(
            proxy.addr,
            format!("CONNECT blocked.example:{} HTTP/1.1\r\n\r\n", aws_net().port).as_bytes(),
        )
        .await;
        assert_eq!(reply.status, Some(403));
    }
    // hyper closes the slow client at its header timeout (408 first, or nothing).
    let reply = read_reply(&mut slow).await;
    assert!(matches!(reply.status, None | Some(408)), "{reply:?}");
    assert!(closed(&mut slow).await);
    // The configured timeout is the one in force: the close comes after it and well before
    // the 10 s default (a bound loose enough for any machine, not a timing measurement).
    let took = started.elapsed();
    assert!(
        took >= configured && took < HEADER_READ_TIMEOUT / 2,
        "closed after {took:?}; configured {configured:?}, default {HEADER_READ_TIMEOUT:?}"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_an_idle_tunnel_is_closed_and_counted() {
    let net = aws_net();
    let proxy = TestProxy::start(&with_blocked().proxy_str("idle_timeout", "200ms").build()).await;
    let stream = tunnel(proxy.addr, CUSTOM_DOMAIN).await;
    let tls = tls_over(stream, CUSTOM_DOMAIN, &net.ca_der).await.expect("TLS");
    // Say nothing: the proxy closes the tunnel once it has been silent for idle_timeout.
    proxy.expect_tunnel_end(tls, "custom-domains", "idle").await;
}

#[tokio::test]
async fn hardening_proxy_auth_requires_basic_credentials_and_never_forwards_them() {
    let net = aws_net();
    let origin = crate::support::origin::echo_head_origin().await;
    let toml = with_blocked()
        .proxy("auth", "{ username = \"app\", password = \"s3cret\" }")
        .route(
            Route::new("echo")
                .hosts(["echo.test"])
                .key("addresses", strings([origin])),
        )
        .build();
    let proxy = TestProxy::start(&toml).await;
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    // "app:s3cret" and "app:wrong".
    let (good, bad) = ("Basic YXBwOnMzY3JldA==", "Basic YXBwOndyb25n");
    for creds in [None, Some(bad)] {
        let extra = creds
            .map(|c| format!("Proxy-Authorization: {c}\r\n"))
            .unwrap_or_default();
        let (reply, _) = exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(reply.status, Some(407), "{reply:?}");
        assert_eq!(
            reply.header("proxy-authenticate"),
            Some("Basic realm=\"splitway\", charset=\"UTF-8\"")
        );
        assert!(
            reply
                .header("proxy-status")
                .is_some_and(|p| p.starts_with("splitway; error=http_request_denied;"))
        );
    }
    // Exactly one field: a second is a 400, not another guess, even when one of them is right.
    for head in [
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"),
        "GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n".to_owned(),
    ] {
        let twice = format!("{head}Proxy-Authorization: {bad}\r\nProxy-Authorization: {good}\r\n\r\n");
        let (reply, _) = exchange(proxy.addr, twice.as_bytes()).await;
        assert_refused(&reply, 400, "http_request_error", "more than one Proxy-Authorization");
    }
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {good}\r\n\r\n");
    let (status, _, _, stream) = connect_raw(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&status), 200);
    let tls = tls_over(stream, CUSTOM_DOMAIN, &net.ca_der).await.expect("TLS");
    assert_eq!(get_over_tls(tls, CUSTOM_DOMAIN).await.0, 200);
    let forwarded = format!("GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\nProxy-Authorization: {good}\r\n\r\n");
    let (reply, _) = exchange(proxy.addr, forwarded.as_bytes()).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert!(reply.body.starts_with("GET / HTTP/1.1"), "{}", reply.body);
    assert!(
        !reply.body.to_ascii_lowercase().contains("proxy-authorization"),
        "credentials forwarded: {}",
        reply.body
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_connect_to_the_proxy_itself_is_prohibited() {
    // The proxy's own port must be an allowed CONNECT port for this to be reachable at all.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let toml = with_blocked()
        .proxy_str("listen", format!("127.0.0.1:{port}"))
        .proxy("connect_ports", format!("[{port}]"))
        .build();
    let proxy = TestProxy::start(&toml).await;
    for target in [format!("127.0.0.1:{port}"), format!("[::ffff:127.0.0.1]:{port}")] {
        let (reply, _) = exchange(proxy.addr, &connect_request(&target)).await;
        assert_refused(&reply, 403, "destination_ip_prohibited", "own listener");
    }
    // The unspecified address is never a destination, whatever deny_destinations says.
    for (target, host, addr) in [
        (format!("0.0.0.0:{port}"), "0.0.0.0", "0.0.0.0"),
        (format!("[::]:{port}"), "[::]", "::"),
    ] {
        let (reply, _) = exchange(proxy.addr, &connect_request(&target)).await;
        let reason = format!(
            "{host} leads only to the unspecified address ({addr}), which stands for this host \
             itself and is never a destination; ask for the destination by its own address or name"
        );
        assert_refused(&reply, 403, "destination_ip_prohibited", &reason);
    }
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_a_route_whose_addresses_are_unspecified_says_to_fix_the_route() {
    let port = aws_net().port;
    let toml = with_blocked()
        .route(
            Route::new("nowhere")
                .hosts(["nowhere.example"])
                .key("addresses", strings(["0.0.0.0", "::"])),
        )
        .build();
    let proxy = TestProxy::start(&toml).await;
    let (reply, _) = exchange(proxy.addr, &connect_request(&format!("nowhere.example:{port}"))).await;
    let reason = format!(
        "route `nowhere`: nowhere.example:{port} leads only to the unspecified address (0.0.0.0:{port}, \
         [::]:{port}), which stands for this host itself and is never a destination; give the \
         route's `addresses` the destination's own addresses"
    );
    assert_refused(&reply, 403, "destination_ip_prohibited", &reason);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
