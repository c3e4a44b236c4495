//! The admin listener over real loopback sockets, with raw HTTP/1.1 requests.

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

use super::*;
use crate::test_util::within;

/// An admin listener on 127.0.0.1:0 with its own metrics and readiness.
struct Running {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start() -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, metrics.clone(), ready.clone(), None, shutdown.clone()));
    Running {
        addr,
        metrics,
        ready,
        shutdown,
        task,
    }
}

#[derive(Debug)]
struct Reply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` with `Connection: close` and reads the whole answer.
async fn send(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = within("connect", TcpStream::connect(addr)).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    within("write request", s.write_all(req.as_bytes()))
        .await
        .expect("write request");
    let mut raw = String::new();
    within("read response", s.read_to_string(&mut raw))
        .await
        .expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path).await
}

/// Reads one response on a kept-alive connection: the head, then `content-length` bytes.
async fn read_one(r: &mut BufReader<TcpStream>) -> (String, String) {
    let mut status = String::new();
    within("status line", r.read_line(&mut status))
        .await
        .expect("status line");
    let mut len = 0;
    loop {
        let mut line = String::new();
        within("header line", r.read_line(&mut line))
            .await
            .expect("header line");
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().expect("numeric content-length");
        }
    }
    let mut body = vec![0; len];
    within("body", r.read_exact(&mut body)).await.expect("body");
    (
        status.trim_end().to_owned(),
        String::from_utf8(body).expect("utf-8 body"),
    )
}

#[tokio::test]
async fn healthz_answers_ok() {
    let admin = start().await;
    let r = get(admin.addr, "/healthz").await;
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.body, "ok\n");
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn readyz_follows_starting_ready_draining() {
    let admin = start().await;
    let r = get(admin.addr, "/readyz").await;
    assert_eq!(
        (r.status.as_str(), r.body.as_str()),
        ("HTTP/1.1 503 Service Unavailable", "starting\n")
    );

    admin.ready.set_ready();
    let r = get(admin.addr, "/readyz").await;
    assert_eq!((r.status.as_str(), r.body.as_str()), ("HTTP/1.1 200 OK", "ready\n"));

    admin.ready.set_draining();
    let r = get(admin.addr, "/readyz").await;
    assert_eq!(
        (r.status.as_str(), r.body.as_str()),
        ("HTTP/1.1 503 Service Unavailable", "draining\n")
    );

    // /healthz stays 200 while draining: the process still serves.
    assert_eq!(get(admin.addr, "/healthz").await.status, "HTTP/1.1 200 OK");
}

#[test]
fn readiness_only_moves_forward() {
    let r = Readiness::new();
    assert_eq!((r.lifecycle(), r.is_ready()), ("starting", false));
    r.set_ready();
    assert_eq!((r.lifecycle(), r.is_ready()), ("running", true));
    r.set_draining();
    assert_eq!((r.lifecycle(), r.is_ready()), ("draining", false));
    r.set_ready();
    assert_eq!((r.lifecycle(), r.is_ready()), ("draining", false));

    let early = Readiness::new();
    early.set_draining();
    early.set_ready();
    assert_eq!(early.lifecycle(), "draining");
}

#[tokio::test]
async fn metrics_serves_the_registry_with_its_content_type() {
    let admin = start().await;
    admin.metrics.panic_caught();
    let r = get(admin.addr, "/metrics").await;
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.header("content-type"), Some(metrics::CONTENT_TYPE));
    assert!(r.body.contains("# TYPE splitway_panics_total counter\n"), "{}", r.body);
    assert!(r.body.lines().any(|l| l == "splitway_panics_total 1"), "{}", r.body);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let admin = start().await;
    let r = get(admin.addr, "/nope").await;
    assert_eq!(
        (r.status.as_str(), r.body.as_str()),
        ("HTTP/1.1 404 Not Found", "not found\n")
    );
    assert_eq!(get(admin.addr, "/healthz/").await.status, "HTTP/1.1 404 Not Found");

    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = send(admin.addr, "POST", path).await;
        assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed", "{path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{path}");
    }
    assert_eq!(
        send(admin.addr, "DELETE", "/metrics").await.status,
        "HTTP/1.1 405 Method Not Allowed"
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let admin = start().await;
    let r = send(admin.addr, "HEAD", "/healthz").await;
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(r.body, "");
}

#[tokio::test]
async fn a_query_string_does_not_change_the_route() {
    let admin = start().await;
    admin.ready.set_ready();
    assert_eq!(get(admin.addr, "/readyz?probe=1").await.body, "ready\n");
}

#[tokio::test]
async fn verbose_readiness_is_json_with_the_checks() {
    let admin = start().await;
    admin.ready.set_ready();
    let failing = Check {
        kind: "resolver",
        name: "public".into(),
        ok: false,
        reason: Some("no answer".into()),
    };
    admin.ready.set_checks(vec![failing]);
    let r = get(admin.addr, "/readyz?verbose").await;
    assert_eq!(r.status, "HTTP/1.1 503 Service Unavailable");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["lifecycle"], "running");
    assert_eq!(v["ready"], false);
    assert!(v.get("state").is_none(), "the old field name: {v}");
    assert_eq!(v["checks"][0]["reason"], "no answer");
    assert_eq!(
        get(admin.addr, "/readyz").await.body,
        "not ready:\nresolver public: no answer\n"
    );
}

#[tokio::test]
async fn a_connection_serves_several_requests() {
    let admin = start().await;
    let mut conn = BufReader::new(
        within("connect", TcpStream::connect(admin.addr))
            .await
            .expect("connect"),
    );
    for (path, want) in [("/healthz", "ok\n"), ("/readyz", "starting\n"), ("/healthz", "ok\n")] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
        within("write", conn.get_mut().write_all(req.as_bytes()))
            .await
            .expect("write");
        assert_eq!(read_one(&mut conn).await.1, want, "{path}");
    }
}

#[tokio::test]
async fn the_health_client_agrees_with_the_listener() {
    let admin = start().await;
    assert!(within("the health check", health(admin.addr)).await.is_ok());
    admin.ready.set_draining();
    let draining = within("the health check", health(admin.addr)).await;
    assert!(draining.is_ok(), "draining is not unhealthy");
}

#[tokio::test]
async fn shutdown_ends_the_server_and_its_open_connections() {
    let admin = start().await;
    // An idle kept-alive connection, and one caught half-way through its next request head.
    let mut idle = BufReader::new(
        within("connect", TcpStream::connect(admin.addr))
            .await
            .expect("connect"),
    );
    let mut partial = BufReader::new(
        within("connect", TcpStream::connect(admin.addr))
            .await
            .expect("connect"),
    );
    for conn in [&mut idle, &mut partial] {
        let request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
        within("write", conn.get_mut().write_all(request)).await.expect("write");
        assert_eq!(read_one(conn).await.1, "ok\n");
    }
    within("write", partial.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHo"))
        .await
        .expect("write");

    admin.shutdown.cancel();
    within("serve returns without panicking", admin.task)
        .await
        .expect("serve returns without panicking");

    // serve waited for its connection tasks, so both sockets are closed by now: EOF or reset.
    for conn in [&mut idle, &mut partial] {
        let mut buf = [0; 64];
        let read = within("the connection to close", conn.read(&mut buf)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "connection still open: {read:?}");
    }
}

/// A kept-alive admin connection that has been answered once (so it holds a slot).
async fn held(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut conn = BufReader::new(within("connect", TcpStream::connect(addr)).await.expect("connect"));
    within(
        "write",
        conn.get_mut()
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"),
    )
    .await
    .expect("write");
    assert_eq!(read_one(&mut conn).await.1, "ok\n");
    conn
}

#[tokio::test]
async fn held_open_connections_cannot_take_more_than_the_admin_budget() {
    let admin = start().await;
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        open.push(held(admin.addr).await);
    }
    // One more is accepted by the kernel and closed by the listener without an answer.
    let mut extra = within("connect", TcpStream::connect(admin.addr))
        .await
        .expect("connect");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = within("the refused connection to close", extra.read_to_end(&mut rest)).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "over the budget: closed, no answer; got {rest:?}"
    );
    // A slot freed is a slot for the next probe.
    drop(open.pop());
    let answered = crate::test_util::poll_until("a freed admin slot", || async {
        let mut s = TcpStream::connect(admin.addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.ok()?;
        raw.starts_with("HTTP/1.1 200").then_some(raw)
    })
    .await;
    assert!(answered.ends_with("ok\n"), "{answered}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let admin = start().await;
    let mut conn = held(admin.addr).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // Bounded by `within`: only a connection that is never closed trips it.
    let read = within("the idle admin connection to close", conn.read_to_end(&mut rest)).await;
    assert!(read.is_ok_and(|n| n == 0), "closed without another answer: {rest:?}");
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT / 2,
        "closed by the idle timer, not at once"
    );
}
