//! Bad input on the proxy listener, table-driven: raw bytes in, the exact status out, the
//! `Proxy-Status` error type (a head hyper could not parse included: splitway checks the first
//! head itself), what the body says is wrong, and the connection closed exactly where it must be. Then the first
//! flight of a tunnel: pipelined with the CONNECT, without SNI, over the cap. (A hello in
//! 1-byte segments or tiny records and non-TLS bytes are in sni_pinning.rs.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsConnector;

use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::raw::{assert_refused, closed, exchange, read_reply};
use crate::support::*;
use tokio::net::TcpStream;

/// What the proxy must do with one input.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // read through Debug: the table compares descriptions
enum Want {
    /// splitway's own refusal (status, Proxy-Status type); `close` says whether the
    /// connection must then end, else it must serve a second request.
    Refused(u16, &'static str, bool),
    /// An error status without `Proxy-Status` (what hyper answers on its own to a head it
    /// cannot parse), then a close. No case wants it: splitway checks the first head itself.
    Bare(u16),
    /// No response at all, then a close.
    Dropped,
    /// `200`: a tunnel opened.
    Tunnel,
}
use Want::*;

struct Case {
    name: String,
    bytes: Vec<u8>,
    want: Want,
    /// What the refusal's body must say is wrong (a substring distinguishing the case).
    reason: &'static str,
    /// Refusals pipelined after the first, on the same connection, in order: the reason
    /// each body must say.
    then: Vec<&'static str>,
}

/// A refused `CONNECT` always ends its connection (RFC 9110 §9.3.6: what the client sent
/// after it may be tunnel bytes, never a next request), whatever the case says of keep-alive.
fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>, want: Want) -> Case {
    let bytes = bytes.into();
    let want = match want {
        Refused(status, kind, _) if bytes.starts_with(b"CONNECT ") => Refused(status, kind, true),
        want => want,
    };
    Case {
        name: name.into(),
        bytes,
        want,
        reason: "",
        then: vec![],
    }
}

impl Case {
    fn says(mut self, reason: &'static str) -> Case {
        self.reason = reason;
        self
    }

    fn then(mut self, reasons: &[&'static str]) -> Case {
        self.then = reasons.to_vec();
        self
    }
}

/// The exact number of cases in the table: a case lost or added is noticed.
const CASES: usize = 78;

fn connect(target: &str, extra: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n")
}

fn get(url: &str, extra: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
}

fn headers(n: usize) -> String {
    (0..n).map(|i| format!("X-H{i}: v\r\n")).collect()
}

const BAD_REQUEST: u16 = 400;

/// Request lines and heads that do not parse: splitway's 400, not hyper's bare one.
fn malformed(p: u16) -> Vec<Case> {
    vec![
        case(
            "garbage line",
            "GARBAGE\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "method only",
            "GET\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "unknown version",
            "GET / HTTP/9.9\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid HTTP version)"),
        case(
            "HTTP/2.0 CONNECT",
            format!("CONNECT {CUSTOM_DOMAIN}:{p} HTTP/2.0\r\n\r\n"),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid HTTP version)"),
        case(
            "trailing token",
            "GET / HTTP/1.1 extra\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid new line)"),
        case(
            "binary",
            b"\x00\x01\x02\x03\r\n\r\n".to_vec(),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "double space",
            "GET  / HTTP/1.1\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "bad method token",
            "G@T / HTTP/1.1\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "header without colon",
            "GET / HTTP/1.1\r\nHost example.com\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid header name)"),
        case(
            "empty header name",
            "GET / HTTP/1.1\r\n: v\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid header name)"),
        case(
            "space in header name",
            "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid header name)"),
        case(
            "NUL in header value",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n".to_vec(),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid header value)"),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid header name)"),
        case(
            "NUL in target",
            b"GET http://a\x00b/ HTTP/1.1\r\n\r\n".to_vec(),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("not valid HTTP/1.1 (invalid token)"),
        case(
            "bad content-length",
            get("http://x/", "Content-Length: abc\r\n"),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("Content-Length is not a number"),
        case(
            "two content-lengths",
            get("http://x/", "Content-Length: 1\r\nContent-Length: 2\r\n"),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("two different Content-Length values"),
        case(
            "transfer-encoding not ending in chunked",
            get("http://x/", "Transfer-Encoding: gzip\r\n"),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("Transfer-Encoding does not end in chunked"),
        case(
            "TLS ClientHello to the proxy port",
            tls_record_prefix(),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("this is a TLS ClientHello, but splitway is a plain-HTTP proxy"),
        case("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Dropped),
        case(
            "CONNECT with an unclosed bracket",
            connect(&format!("[::1:{p}"), ""),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("` is not a URI"),
        case(
            "absolute URL with a bad IPv6 host",
            "GET http://[::1/ HTTP/1.1\r\n\r\n",
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("request target `http://[::1/` is not a URI"),
        case(
            "unbracketed IPv6",
            connect(&format!("::1:{p}"), ""),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("` is not a URI"),
    ]
}

/// A TLS handshake record header, as a client configured with `https://` proxy URL sends.
fn tls_record_prefix() -> Vec<u8> {
    let mut b = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03];
    b.extend_from_slice(&[0u8; 32]);
    b.extend_from_slice(b"\r\n\r\n");
    b
}

/// CONNECT targets that are not host:port on an allowed port.
fn bad_connect(p: u16) -> Vec<Case> {
    let bad = |name: &str, target: String| case(name, connect(&target, ""), Refused(400, "http_request_error", true));
    vec![
        bad("no port", CUSTOM_DOMAIN.into()).says("missing port in `api.mydomain.com`"),
        bad("empty port", format!("{CUSTOM_DOMAIN}:")).says("missing port in `api.mydomain.com:`"),
        bad("port 0", format!("{CUSTOM_DOMAIN}:0")).says("port `0` out of range 1-65535"),
        bad("port 65536", format!("{CUSTOM_DOMAIN}:65536")).says("port `65536` out of range 1-65535"),
        bad("negative port", format!("{CUSTOM_DOMAIN}:-1")).says("invalid port `-1`"),
        bad("port with letters", format!("{CUSTOM_DOMAIN}:44a")).says("invalid port `44a`"),
        bad("userinfo", format!("user:pw@{CUSTOM_DOMAIN}:{p}")).says("userinfo is not allowed in a request target"),
        bad("bracket without port", "[::1]".into()).says("missing port in `[::1]`"),
        bad("IPv6 brackets, port glued", format!("[::1]{p}")).says("invalid IPv6 literal `[::1]"),
        bad("not an address in brackets", format!("[not-an-ip]:{p}")).says("invalid IPv6 literal `not-an-ip`"),
        bad("empty label", format!("a..b:{p}")).says("invalid host name `a..b`"),
        bad("name over 253 bytes", format!("{}.com:{p}", "a".repeat(260)))
            .says("host name is 264 bytes long, over 253"),
        bad("label over 63 bytes", format!("{}.com:{p}", "a".repeat(64))).says("invalid host name `aaaa"),
        case(
            "path after the port",
            connect(&format!("{CUSTOM_DOMAIN}:{p}/path"), ""),
            Refused(BAD_REQUEST, "http_request_error", true),
        )
        .says("/path` is not a URI"),
        case(
            "absolute URL as CONNECT target",
            connect(&format!("http://{CUSTOM_DOMAIN}:{p}"), ""),
            Refused(400, "http_request_error", true),
        )
        .says("CONNECT target `http://api.mydomain.com:"),
        case(
            "asterisk",
            "CONNECT * HTTP/1.1\r\n\r\n",
            Refused(400, "http_request_error", true),
        )
        .says("CONNECT target `*` is not host:port"),
        case(
            "lowercase connect is another method",
            format!("connect {CUSTOM_DOMAIN}:{p} HTTP/1.1\r\n\r\n"),
            Refused(400, "http_request_error", true),
        )
        .says("`connect api.mydomain.com:"),
    ]
}

/// Targets that parse but are refused by policy (403): a refused CONNECT closes.
fn refused(p: u16, own: u16) -> Vec<Case> {
    let denied = |name: &str, req: String, kind| case(name, req, Refused(403, kind, false));
    vec![
        denied(
            "port not in connect_ports",
            connect(&format!("{CUSTOM_DOMAIN}:8443"), ""),
            "http_request_denied",
        )
        .says("CONNECT to port 8443 is not allowed"),
        denied(
            "deny route",
            connect(&format!("blocked.example:{p}"), ""),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
        denied(
            "IPv6 literal on a deny route",
            connect(&format!("[::1]:{p}"), ""),
            "http_request_denied",
        )
        .says("route `no-loopback-v6` denies [::1]"),
        denied(
            "metadata address",
            connect(&format!("169.254.169.254:{p}"), ""),
            "destination_ip_prohibited",
        )
        .says("every address of 169.254.169.254 is in [proxy] deny_destinations"),
        denied(
            "IPv4-mapped metadata",
            connect(&format!("[::ffff:169.254.169.254]:{p}"), ""),
            "destination_ip_prohibited",
        )
        .says("every address of [::ffff:169.254.169.254] is in [proxy] deny_destinations"),
        denied(
            "IPv4-compatible metadata",
            connect(&format!("[::169.254.169.254]:{p}"), ""),
            "destination_ip_prohibited",
        )
        .says("every address of [::a9fe:a9fe] is in [proxy] deny_destinations"),
        denied(
            "NAT64 metadata",
            connect(&format!("[64:ff9b::a9fe:a9fe]:{p}"), ""),
            "destination_ip_prohibited",
        )
        .says("every address of [64:ff9b::a9fe:a9fe] is in [proxy] deny_destinations"),
        denied(
            "6to4 metadata",
            connect(&format!("[2002:a9fe:a9fe::1]:{p}"), ""),
            "destination_ip_prohibited",
        )
        .says("every address of [2002:a9fe:a9fe::1] is in [proxy] deny_destinations"),
        denied(
            "the proxy itself, forwarded",
            get(&format!("http://127.0.0.1:{own}/"), ""),
            "destination_ip_prohibited",
        )
        .says("is this proxy's own listener; the request would loop"),
        denied(
            "the proxy itself, mapped",
            get(&format!("http://[::ffff:127.0.0.1]:{own}/"), ""),
            "destination_ip_prohibited",
        )
        .says("[::ffff:127.0.0.1]:"),
        denied(
            "metadata, forwarded",
            get("http://169.254.169.254/latest/meta-data/", ""),
            "destination_ip_prohibited",
        )
        .says("every address of 169.254.169.254 is in [proxy] deny_destinations"),
        denied(
            "deny route, forwarded",
            get("http://blocked.example/", ""),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
        denied(
            "Host header disagrees: the target wins",
            format!("CONNECT blocked.example:{p} HTTP/1.1\r\nHost: {CUSTOM_DOMAIN}:{p}\r\n\r\n"),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
        denied(
            "exactly 100 header fields",
            connect(&format!("blocked.example:{p}"), &headers(99)),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
        denied(
            "a 60 KiB header",
            connect(
                &format!("blocked.example:{p}"),
                &format!("X-Big: {}\r\n", "a".repeat(60 * 1024)),
            ),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
        denied(
            "bare LF line ends",
            format!("CONNECT blocked.example:{p} HTTP/1.1\nHost: x\n\n"),
            "http_request_denied",
        )
        .says("route `blocked` denies blocked.example"),
    ]
}

/// Absolute-form and other non-CONNECT requests.
fn not_forwardable() -> Vec<Case> {
    let bad = |name: &str, req: String| case(name, req, Refused(400, "http_request_error", true));
    vec![
        bad("https URL", get(&format!("https://{CUSTOM_DOMAIN}/"), "")).says("scheme `https` cannot be forwarded"),
        bad("ftp URL", get("ftp://x/file", "")).says("scheme `ftp` cannot be forwarded"),
        bad("ws URL", get("ws://x/", "")).says("scheme `ws` cannot be forwarded"),
        bad("userinfo in URL", get("http://user:pw@x/", "")).says("userinfo is not allowed in a request target"),
        bad("port 0 in URL", get("http://x:0/", "")).says("port `0` out of range 1-65535"),
        bad("port 99999 in URL", get("http://x:99999/", "")).says("port `99999` out of range 1-65535"),
        bad("empty label in URL", get("http://a..b/", "")).says("invalid host name `a..b`"),
        bad("origin-form", "GET /path HTTP/1.1\r\nHost: x\r\n\r\n".into())
            .says("`GET /path` is neither CONNECT nor an absolute http:// URL"),
        bad("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into())
            .says("`OPTIONS *` is neither CONNECT nor an absolute http:// URL"),
        case(
            "TRACE",
            format!("TRACE http://{CUSTOM_DOMAIN}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Refused(405, "http_request_error", true),
        )
        .says("method TRACE is not allowed through the proxy"),
    ]
}

/// Limits on the head: 431 with Proxy-Status.
fn oversized(p: u16) -> Vec<Case> {
    vec![
        case(
            "101 header fields",
            connect(&format!("blocked.example:{p}"), &headers(100)),
            Refused(431, "http_request_error", true),
        )
        .says("request head too large"),
        case(
            "1000 header fields",
            connect(&format!("blocked.example:{p}"), &headers(1000)),
            Refused(431, "http_request_error", true),
        )
        .says("request head too large"),
        case(
            "a 70 KiB header",
            connect(
                &format!("blocked.example:{p}"),
                &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)),
            ),
            Refused(431, "http_request_error", true),
        )
        .says("request head too large"),
        case(
            "a 70 KiB URL",
            format!("GET http://x/{} HTTP/1.1\r\n\r\n", "a".repeat(70 * 1024)),
            Refused(431, "http_request_error", true),
        )
        .says("request head too large"),
    ]
}

/// Bodies and framing around CONNECT and forwarded requests.
fn framing(p: u16) -> Vec<Case> {
    let blocked = format!("blocked.example:{p}");
    vec![
        case(
            "HTTP/1.0 CONNECT without Host",
            format!("CONNECT {CUSTOM_DOMAIN}:{p} HTTP/1.0\r\n\r\n"),
            Tunnel,
        ),
        case(
            "HTTP/1.1 CONNECT without Host",
            format!("CONNECT {CUSTOM_DOMAIN}:{p} HTTP/1.1\r\n\r\n"),
            Tunnel,
        ),
        case(
            "CONNECT with Content-Length",
            connect(&blocked, "Content-Length: 5\r\n") + "hello",
            Refused(403, "http_request_denied", false),
        )
        .says("route `blocked` denies blocked.example"),
        case(
            "CONNECT with chunked body",
            connect(&blocked, "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n",
            Refused(403, "http_request_denied", false),
        )
        .says("route `blocked` denies blocked.example"),
        case(
            "Content-Length with Transfer-Encoding",
            get(
                "http://blocked.example/",
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            ) + "0\r\n\r\n",
            Refused(403, "http_request_denied", true),
        )
        .says("route `blocked` denies blocked.example"),
        case(
            "invalid chunk size",
            get("http://blocked.example/", "Transfer-Encoding: chunked\r\n") + "ZZ\r\nxx\r\n",
            Refused(403, "http_request_denied", true),
        )
        .says("route `blocked` denies blocked.example"),
        case(
            "chunk longer than declared",
            get("http://blocked.example/", "Transfer-Encoding: chunked\r\n") + "2\r\nabcdef\r\n0\r\n\r\n",
            Refused(403, "http_request_denied", true),
        )
        .says("route `blocked` denies blocked.example"),
        case(
            "pipelined refusals are answered in order",
            get("http://blocked.example/", "")
                + &get("http://blocked.example/again", "")
                + &get(&format!("http://[::1]:{p}/"), ""),
            Refused(403, "http_request_denied", false),
        )
        .says("route `blocked` denies blocked.example")
        .then(&[
            "route `blocked` denies blocked.example",
            "route `no-loopback-v6` denies [::1]",
        ]),
        case(
            "nothing pipelined after a refused CONNECT is answered",
            connect(&blocked, "") + &connect(&format!("{CUSTOM_DOMAIN}:8443"), ""),
            Refused(403, "http_request_denied", true),
        )
        .says("route `blocked` denies blocked.example"),
    ]
}

fn extra_routes() -> &'static str {
    "\n[[route]]\nname = \"blocked\"\nhosts = [\"blocked.example\"]\ndeny = true\n\n[[route]]\nname = \"no-loopback-v6\"\nhosts = [\"::1\"]\ndeny = true\n"
}

/// What the proxy did, in the terms of [`Want`].
async fn observe(proxy: &TestProxy, c: &Case) -> String {
    let (reply, mut stream) = exchange(proxy.addr, &c.bytes).await;
    let Some(status) = reply.status else {
        return if closed(&mut stream).await {
            format!("{:?}", Dropped)
        } else {
            "no response, still open".into()
        };
    };
    let Some(ps) = reply.header("proxy-status") else {
        if status == 200 {
            return format!("{:?}", Tunnel);
        }
        let close = closed(&mut stream).await;
        return if close {
            format!("{:?}", Bare(status))
        } else {
            format!("bare {status}, still open")
        };
    };
    let kind = ps
        .strip_prefix("splitway; error=")
        .and_then(|r| r.split(';').next())
        .unwrap_or(ps)
        .to_owned();
    assert!(
        reply.body.starts_with("splitway: ") && reply.body.ends_with('\n'),
        "{}: {reply:?}",
        c.name
    );
    if !reply.body.contains(c.reason) {
        return format!("{status} {kind} saying {:?}, not {:?}", reply.body, c.reason);
    }
    for (i, reason) in c.then.iter().enumerate() {
        let next = read_reply(&mut stream).await;
        if next.status != Some(status) || !next.body.contains(reason) {
            return format!("pipelined reply {} was {next:?}, not {status} saying {reason:?}", i + 2);
        }
    }
    let close = if reply.header("connection") == Some("close") {
        assert!(
            closed(&mut stream).await,
            "{}: `connection: close` but the connection stayed open",
            c.name
        );
        true
    } else {
        // Kept alive: a second request on it is answered, unless the rest of the first
        // request (an invalid body) made hyper close it after all.
        let again = format!("CONNECT blocked.example:{} HTTP/1.1\r\n\r\n", aws_net().port);
        let _ = within(HANG_SECS, "a second request sent", stream.write_all(again.as_bytes())).await;
        match read_reply(&mut stream).await.status {
            Some(403) => false,
            None => true,
            other => panic!("{}: second request answered {other:?}", c.name),
        }
    };
    format!("{:?}", Refused(status, leak(kind), close))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn hardening_bad_input_table() {
    let net = aws_net();
    let proxy = TestProxy::start(&(scenario_config(net, PrivateDns::On) + extra_routes())).await;
    let (p, own) = (net.port, proxy.addr.port());
    let cases: Vec<Case> = [
        malformed(p),
        bad_connect(p),
        refused(p, own),
        not_forwardable(),
        oversized(p),
        framing(p),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(cases.len(), CASES, "cases in the table");
    for c in &cases {
        let refused = matches!(c.want, Refused(..));
        assert_eq!(
            refused,
            !c.reason.is_empty(),
            "{}: a refusal says its reason, nothing else does",
            c.name
        );
    }
    let mut wrong = Vec::new();
    for c in &cases {
        let seen = observe(&proxy, c).await;
        if seen != format!("{:?}", c.want) {
            wrong.push(format!("{}: want {:?}, got {seen}", c.name, c.want));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    assert_eq!(metric(&m, "splitway_panics_total", &[]), 0.0, "{m}");
    // Every http_request_error refusal is counted once, those of heads hyper never saw too.
    let wanted = cases
        .iter()
        .filter(|c| matches!(c.want, Refused(_, "http_request_error", _)))
        .count();
    let counted: f64 = ["connect", "forward"]
        .iter()
        .map(|kind| {
            let labels = [("kind", *kind), ("route", "none"), ("outcome", "http_request_error")];
            metric(&m, "splitway_requests_total", &labels)
        })
        .sum();
    assert_eq!(counted, wanted as f64, "{m}");
    proxy.stop().await;
}

/// A client that pipelines: its first write carries the CONNECT head and the start of the
/// TLS handshake together; it reads the proxy's `200` head before handing reads to TLS.
struct Pipelined {
    inner: tokio::net::TcpStream,
    head: Option<Vec<u8>>,
    pending: Vec<u8>,
    response_read: bool,
}

impl AsyncWrite for Pipelined {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(head) = self.head.take() {
            self.pending = [head.as_slice(), buf].concat();
            let n = buf.len();
            return match self.as_mut().poll_drain(cx) {
                Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(n)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            };
        }
        std::task::ready!(self.as_mut().poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Pipelined {
    fn poll_drain(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let this = &mut *self;
            let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &this.pending))?;
            this.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Pipelined {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // The CONNECT response head, byte by byte, so no tunnel byte is swallowed.
        let mut seen = Vec::new();
        while !self.response_read {
            let mut one = [0u8; 1];
            let mut b = ReadBuf::new(&mut one);
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut b))?;
            if b.filled().is_empty() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            seen.push(one[0]);
            if seen.ends_with(b"\r\n\r\n") {
                assert!(
                    seen.starts_with(b"HTTP/1.1 200"),
                    "{:?}",
                    String::from_utf8_lossy(&seen)
                );
                self.response_read = true;
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[tokio::test]
async fn hardening_client_hello_pipelined_with_the_connect_head_reaches_the_upstream() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let inner = within(
        HANG_SECS,
        "connect to the proxy",
        tokio::net::TcpStream::connect(proxy.addr),
    )
    .await
    .expect("connect");
    inner.set_nodelay(true).expect("nodelay");
    let head = connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port));
    // The response head is read one byte per poll; the proxy's 200 is small, so this only
    // works if the 200 arrives before TLS needs the server's reply: which is the point.
    let stream = Pipelined {
        inner,
        head: Some(head),
        pending: vec![],
        response_read: false,
    };
    let config = Arc::new(crate::support::pki::client_config(&net.ca_der));
    let name = ServerName::try_from(CUSTOM_DOMAIN.to_owned()).expect("name");
    let handshake = TlsConnector::from(config).connect(name, stream);
    let tls = within(HANG_SECS, "a TLS handshake through a pipelined CONNECT", handshake)
        .await
        .expect("handshake through a pipelined CONNECT");
    assert_eq!(get_over_tls(tls, CUSTOM_DOMAIN).await.0, 200);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_tls12_client_hello_without_sni_passes_a_pinned_tunnel() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let (status, _, _, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(net.ca_der.clone()).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = false;
    let name = ServerName::try_from(CUSTOM_DOMAIN.to_owned()).expect("name");
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, stream);
    let tls = within(HANG_SECS, "a TLS 1.2 handshake without SNI", handshake)
        .await
        .expect("SPEC: a hello with no SNI passes");
    assert_eq!(get_over_tls(tls, CUSTOM_DOMAIN).await.0, 200);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_client_hello_over_the_cap_closes_the_tunnel() {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    for announced in [20_000usize, 16 * 1024 + 1] {
        let (status, _, _, mut stream) =
            connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
        assert_eq!(status_of(&status), 200);
        // One handshake record whose ClientHello announces more than the 16 KiB cap.
        let len = announced.to_be_bytes();
        let hello = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, len[5], len[6], len[7], 0x03, 0x03];
        within(HANG_SECS, "an oversized hello sent", stream.write_all(&hello))
            .await
            .expect("write");
        assert!(closed(&mut stream).await, "{announced}: the tunnel must close");
    }
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let rejected = crate::support::metrics::metric(
        &m,
        "splitway_sni_rejections_total",
        &[("reason", "client_hello_too_large")],
    );
    assert_eq!(rejected, 2.0, "{m}");
    proxy.stop().await;
}

/// A `CONNECT` after another request on a kept-alive connection goes through hyper's
/// upgrade; it tunnels, pins SNI and counts like a connection's first `CONNECT`.
#[tokio::test]
async fn hardening_a_connect_after_another_request_tunnels_through_hyper() {
    let net = aws_net();
    let proxy = TestProxy::start(&(scenario_config(net, PrivateDns::On) + extra_routes())).await;
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    for (sni, want) in [(CUSTOM_DOMAIN, "tunnel"), ("other.example", "SNI refusal")] {
        let (refused, mut stream) = exchange(proxy.addr, get("http://blocked.example/", "").as_bytes()).await;
        assert_refused(
            &refused,
            403,
            "http_request_denied",
            "route `blocked` denies blocked.example",
        );
        within(
            HANG_SECS,
            "the CONNECT sent",
            stream.write_all(&connect_request(&target)),
        )
        .await
        .expect("send");
        let opened = read_reply(&mut stream).await;
        assert_eq!(opened.status, Some(200), "the CONNECT, for a {want}: {opened:?}");
        let config = Arc::new(crate::support::pki::client_config(&net.ca_der));
        let name = ServerName::try_from(sni.to_owned()).expect("name");
        let handshake = within(
            HANG_SECS,
            "a TLS handshake in hyper's tunnel",
            TlsConnector::from(config).connect(name, stream),
        )
        .await;
        match want {
            "tunnel" => assert_eq!(get_over_tls(handshake.expect("handshake"), CUSTOM_DOMAIN).await.0, 200),
            _ => assert!(
                handshake.is_err(),
                "a hello naming {sni} must not reach {CUSTOM_DOMAIN}"
            ),
        }
    }
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let mismatched = metric(&m, "splitway_sni_rejections_total", &[("reason", "sni_mismatch")]);
    assert_eq!(mismatched, 1.0, "{m}");
    proxy.stop().await;
}

/// A refused `CONNECT` ends its connection, whatever the client asked and wherever it came
/// (a connection's first request, or after another one through hyper), and nothing the client
/// pipelined after it is run as a request: the client cannot tell tunnel bytes from a next
/// request (RFC 9110 §9.3.6). A counting origin proves the pipelined request never left.
#[tokio::test]
async fn hardening_a_refused_connect_closes_and_runs_nothing_pipelined_after_it() {
    let net = aws_net();
    let origin = crate::support::origin::Recorder::start(std::net::IpAddr::from([127, 12, 0, 77])).await;
    let smuggled = get(&format!("http://{}/smuggled", origin.addr()), "");
    let proxy = TestProxy::start(&(scenario_config(net, PrivateDns::On) + extra_routes())).await;
    let blocked = format!("blocked.example:{}", net.port);
    let unreachable = format!("refused.example:{}", net.port);
    // (through hyper: a refused request first, so the CONNECT is hyper's; the CONNECT head)
    for (through_hyper, head) in [
        (false, format!("CONNECT {blocked} HTTP/1.0\r\n\r\n")),
        (false, connect(&blocked, "Connection: close\r\n")),
        (false, connect(&blocked, "Connection: keep-alive\r\n")),
        (false, connect(&unreachable, "")),
        (true, connect(&blocked, "")),
    ] {
        let before = if through_hyper {
            get("http://blocked.example/", "")
        } else {
            String::new()
        };
        let bytes = format!("{before}{head}{smuggled}");
        let mut stream = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy.addr))
            .await
            .expect("connect");
        within(HANG_SECS, "send", stream.write_all(bytes.as_bytes()))
            .await
            .expect("send");
        if through_hyper {
            let reply = read_reply(&mut stream).await;
            assert_eq!(reply.status, Some(403), "the request before the CONNECT: {reply:?}");
        }
        let reply = read_reply(&mut stream).await;
        assert!(matches!(reply.status, Some(403 | 502)), "{head:?}: {reply:?}");
        assert_eq!(reply.header("connection"), Some("close"), "{head:?}: {reply:?}");
        assert!(closed(&mut stream).await, "{head:?}: the connection must end");
    }
    assert_eq!(
        origin.seen().accepted,
        0,
        "a request pipelined after a refused CONNECT was run"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
