//! The one place a `ProxyError` becomes an HTTP response ([`error_response`], RFC 9209
//! `Proxy-Status`), and the same answer written by hand on a connection hyper does not hold.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::error::ProxyError;

/// How long an error answer written by hand may take to leave.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers `e` on a connection hyper does not hold, written out by hand with
/// [`error_response`]'s status, headers and body, and shuts the connection down when `close`
/// or when the error itself ends it (a malformed request). Bounded, so a client that does not
/// read cannot hold the connection. `true` when the connection stays open for what the client
/// sends next.
pub(crate) async fn write_refusal(stream: &mut tokio::net::TcpStream, e: &ProxyError, close: bool) -> bool {
    use tokio::io::AsyncWriteExt;
    let resp = error_response(e);
    let close = close || resp.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
    let bytes = error_head(&resp, &error_body(e), close);
    let written = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        if close {
            stream.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    !close && matches!(written, Ok(Ok(())))
}

/// An error response and its body as bytes on the wire; `connection: close` when `close`.
fn error_head(resp: &Response<Body>, body: &str, close: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let status = resp.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in resp.headers().iter().filter(|(n, _)| *n != header::CONNECTION) {
        let _ = write!(head, "{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes()));
    }
    let _ = write!(head, "content-length: {}\r\n", body.len());
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// The one place a `ProxyError` becomes an HTTP response.
pub(crate) fn error_response(e: &ProxyError) -> Response<Body> {
    let body = error_body(e);
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&e.proxy_status_header()) {
        h.insert("proxy-status", v);
    }
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if e.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static(crate::auth::CHALLENGE),
        );
    } else if e.status().is_client_error() && e.status() != StatusCode::FORBIDDEN {
        // A malformed request leaves the connection in an unknown state.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The one-line plain-text body of every error splitway answers.
fn error_body(e: &ProxyError) -> String {
    format!("splitway: {}\n", e.describe())
}
