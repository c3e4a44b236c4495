//! Plain-HTTP forwarding of absolute-form requests: origin-form upstream, `Host` from the
//! target, hop-by-hop fields stripped both ways, `Via`, pooled keep-alive upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::proxy::{PrivateDns, TestProxy, proxy_section, resolver_sections};
use crate::support::*;

/// A plain HTTP origin that answers with the request line and headers it received.
struct Echo {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn start_echo(ip: &str) -> Echo {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind echo");
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(echo)));
        }
    });
    Echo { addr, connections }
}

async fn echo(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = format!("{} {}\n", req.method(), req.uri());
    for (name, value) in req.headers() {
        body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    let resp = Response::builder()
        .header("connection", "x-hop")
        .header("x-hop", "must not reach the client")
        .header("keep-alive", "timeout=5")
        .header("x-end", "reaches the client")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(resp)
}

fn config(echo: &Echo) -> String {
    proxy_section(aws_net())
        + &resolver_sections(aws_net(), PrivateDns::On)
        + &format!(
            "\n[[route]]\nname = \"echo\"\nhosts = [\"echo.test\"]\naddresses = [\"{}\"]\n",
            echo.addr.ip()
        )
}

#[tokio::test]
async fn forwards_with_origin_form_host_and_no_hop_by_hop_fields() {
    let echo = start_echo("127.12.0.1").await;
    let proxy = TestProxy::start(&config(&echo)).await;
    let port = echo.addr.port();
    let request = format!(
        "GET http://echo.test:{port}/path?q=1 HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Foo\r\n\
         X-Foo: secret\r\nProxy-Connection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Keep: yes\r\n\r\n"
    );
    let (status, headers, body, stream) = connect_raw(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&status), 200, "{status}\n{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "GET /path?q=1", "origin-form upstream: {body}");
    assert!(lines.contains(&format!("host: echo.test:{port}").as_str()), "{body}");
    assert!(lines.contains(&"x-keep: yes"), "{body}");
    assert!(lines.contains(&"via: 1.1 splitway"), "{body}");
    for gone in [
        "x-foo",
        "proxy-connection",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(&format!("{gone}:"))),
            "{gone} forwarded: {body}"
        );
    }
    assert_eq!(header(&headers, "x-end"), Some("reaches the client"));
    assert_eq!(header(&headers, "x-hop"), None, "response hop-by-hop field forwarded");
    assert_eq!(header(&headers, "keep-alive"), None);
    assert_eq!(header(&headers, "via"), Some("1.1 splitway"));
    drop(stream);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn keep_alive_client_reuses_pooled_upstream_connection() {
    let echo = start_echo("127.12.0.2").await;
    let proxy = TestProxy::start(&config(&echo)).await;
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", proxy.addr))
                .unwrap()
                .no_proxy(None),
        )
        .build()
        .unwrap();
    for i in 0..5 {
        let url = format!("http://echo.test:{}/n/{i}", echo.addr.port());
        let resp = client.get(&url).send().await.expect("forwarded");
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        assert!(body.starts_with(&format!("GET /n/{i}\n")), "{body}");
    }
    assert_eq!(echo.connections.load(Ordering::SeqCst), 1, "upstream connection pooled");
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn forward_refusals() {
    let echo = start_echo("127.12.0.3").await;
    let toml = config(&echo) + "\n[[route]]\nname = \"blocked\"\nhosts = [\"blocked.example\"]\ndeny = true\n";
    let proxy = TestProxy::start(&toml).await;
    let cases: &[(&str, u16, &str)] = &[
        (
            "GET http://blocked.example/ HTTP/1.1\r\nHost: blocked.example\r\n\r\n",
            403,
            "http_request_denied",
        ),
        (
            "GET https://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n",
            400,
            "http_request_error",
        ),
        (
            "GET ftp://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n",
            400,
            "http_request_error",
        ),
        (
            "TRACE http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n",
            405,
            "http_request_error",
        ),
        (
            "GET http://nope.mydomain.com/ HTTP/1.1\r\nHost: nope.mydomain.com\r\n\r\n",
            502,
            "dns_error",
        ),
    ];
    for (request, want, error) in cases {
        let (status, headers, body, _) = connect_raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&status), *want, "{request}: {body}");
        let ps = header(&headers, "proxy-status").unwrap_or_default();
        assert!(ps.starts_with(&format!("splitway; error={error};")), "{request}: {ps}");
    }
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
