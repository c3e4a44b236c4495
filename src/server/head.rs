//! The first request head of a client connection, read and checked before hyper sees it.
//!
//! hyper answers a head it cannot parse with a bare `400` or `431` of its own, without the
//! `Proxy-Status` every splitway error carries (RFC 9209). Almost every connection to a
//! forward proxy carries one request (a `CONNECT`), so splitway reads that first head itself,
//! with the same parser (httparse) and limits hyper applies, refuses a bad one with its own
//! status, `Proxy-Status` and a body that says what was wrong, and hands a good one, bytes
//! unchanged, to hyper through `crate::conn::Prefixed`. Later heads on a kept-alive connection are still
//! hyper's to judge.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{MAX_HEAD_BYTES, MAX_HEADERS};
use crate::error::ProxyError;
use crate::metrics::RequestKind;
use crate::proxy::Connect;

/// What the first head came to.
#[derive(Debug)]
pub enum First {
    /// A head hyper would accept: every byte read so far (to be replayed to hyper), and the
    /// `CONNECT` in it when splitway serves it itself (see [`Connect`]).
    Head(Bytes, Option<Connect>),
    /// A head splitway refuses (counted as a CONNECT when it starts like one); the connection
    /// is answered and closed.
    Refuse(RequestKind, ProxyError),
    /// Nothing to answer: the client left, stayed silent past the header timeout, or sent the
    /// HTTP/2 preface to an HTTP/1.1 proxy (hyper closes those without a response too).
    Close,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Reads until the first head is complete, over [`MAX_HEAD_BYTES`], or `timeout` passes.
pub async fn read_first(stream: &mut TcpStream, timeout: Duration) -> First {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return First::Close,
            Ok(Ok(_)) => {}
        }
        if buf.starts_with(H2_PREFACE) {
            return First::Close;
        }
        let kind = || {
            if buf.starts_with(b"CONNECT ") {
                RequestKind::Connect
            } else {
                RequestKind::Forward
            }
        };
        match parse(&buf) {
            Some(Ok(connect)) => return First::Head(buf.freeze(), connect),
            Some(Err(e)) => return First::Refuse(kind(), e),
            None if buf.len() >= MAX_HEAD_BYTES => return First::Refuse(kind(), too_large()),
            None => {
                if buf.capacity() == buf.len() {
                    buf.reserve(buf.len().min(MAX_HEAD_BYTES));
                }
            }
        }
    }
}

fn too_large() -> ProxyError {
    ProxyError::HeadTooLarge(format!(
        "the request head is over {} KiB or {MAX_HEADERS} header fields",
        MAX_HEAD_BYTES / 1024
    ))
}

fn bad(what: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(what.into())
}

/// `None` while the head is incomplete; else whether hyper would take it.
pub fn check(buf: &[u8]) -> Option<Result<(), ProxyError>> {
    parse(buf).map(|r| r.map(drop))
}

/// [`check`], and the [`Connect`] splitway serves itself.
fn parse(buf: &[u8]) -> Option<Result<Option<Connect>, ProxyError>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return None,
        Ok(httparse::Status::Complete(len)) => Ok(len),
        Err(httparse::Error::TooManyHeaders) => Err(too_large()),
        // A TLS handshake record: a client told to use `https://` for this plain-HTTP proxy.
        Err(_) if buf.starts_with(&[0x16, 0x03]) => Err(bad(
            "this is a TLS ClientHello, but splitway is a plain-HTTP proxy: use http://127.0.0.1:PORT in HTTPS_PROXY",
        )),
        Err(e) => Err(bad(format!("the request head is not valid HTTP/1.1 ({e})"))),
    };
    Some(parsed.and_then(|len| semantics(&req, len)))
}

/// What hyper checks after parsing: the target is a URI, and the body framing is unambiguous
/// (RFC 9112 §6.3). A bodiless `CONNECT` comes back as a [`Connect`].
fn semantics(req: &httparse::Request<'_, '_>, len: usize) -> Result<Option<Connect>, ProxyError> {
    let target = req.path.unwrap_or_default();
    let Ok(uri) = http::Uri::try_from(target) else {
        return Err(bad(format!("request target `{}` is not a URI", target.escape_debug())));
    };
    let mut length = None;
    let mut chunked_last = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().map(str::trim);
            let n: u64 = v
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("two different Content-Length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked_last = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    if chunked_last == Some(false) {
        return Err(bad("Transfer-Encoding does not end in chunked"));
    }
    let bodiless = chunked_last.is_none() && length.is_none_or(|n| n == 0);
    if req.method != Some("CONNECT") || !bodiless {
        return Ok(None);
    }
    let mut auth = http::HeaderMap::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("proxy-authorization")
            && let Ok(v) = http::HeaderValue::from_bytes(h.value)
        {
            auth.append(http::header::PROXY_AUTHORIZATION, v);
        }
    }
    Ok(Some(Connect { uri, len, auth }))
}

#[cfg(test)]
mod tests;
