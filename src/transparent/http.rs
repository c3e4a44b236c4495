//! Plain HTTP on the transparent listener: recognised by its first bytes, routed by its
//! `Host` header at the original port, and forwarded as absolute-form requests are
//! ([`crate::proxy::forward`]: same routes, connector and pooled client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Conn, Refused};
use crate::config::NoSni;
use crate::conn::Prefixed;
use crate::error::ProxyError;
use crate::metrics::RequestKind;
use crate::outcome::{Ended, How};
use crate::proxy::{self, Body, forward};
use crate::server::{MAX_HEAD_BYTES, MAX_HEADERS};
use crate::upstream::target::{Host, Target};

/// RFC 9110 §9 methods (and PATCH, RFC 5789): what plain HTTP starts with.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];
/// Longest method above plus its space.
const LONGEST: usize = 8;

/// Reads until the first bytes decide whether this is an HTTP/1 request line.
pub(super) async fn sniff(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let n = buf.len().min(LONGEST);
        if METHODS.iter().any(|m| buf.starts_with(m)) {
            return true;
        }
        if !METHODS.iter().any(|m| m.starts_with(&buf[..n])) || buf.len() >= LONGEST {
            return false;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Serves the connection's requests with hyper, each forwarded by its `Host`.
pub(super) async fn serve(conn: Conn, stream: TcpStream, first: Vec<u8>, original: SocketAddr) {
    let header_timeout = conn.header_timeout;
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move {
            let mut resp = request(&conn, original, req).await;
            if conn.draining.is_cancelled() {
                // Draining: let keep-alive clients go, as the proxy listener does.
                resp.headers_mut()
                    .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(Prefixed::new(Bytes::from(first), stream)), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "transparent HTTP connection ended with an error");
    }
}

async fn request(conn: &Conn, original: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    // The runtime current now: a reload reaches a kept-alive connection at its next request.
    let rt = conn.current.load();
    if req.method() == http::Method::TRACE {
        let e = ProxyError::MethodNotAllowed("TRACE".into());
        conn.refused(Some(original), None, None, &Refused::Proxy(e.clone()));
        return proxy::error_response(&e);
    }
    let target = match target_of(conn, &req, original) {
        Ok(t) => t,
        Err(r) => {
            conn.refused(Some(original), None, None, &r);
            let e = match r {
                Refused::Proxy(e) => e,
                _ => ProxyError::BadRequest("no Host header and [transparent] no_sni = \"refuse\"".into()),
            };
            return proxy::error_response(&e);
        }
    };
    if let Err(e) = rt.check_transparent_http_port(&target) {
        conn.refused(Some(original), Some(&target), None, &Refused::Proxy(e.clone()));
        return proxy::error_response(&e);
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // The pooled client connects by the URI's authority: the absolute form of the request.
    match Uri::builder()
        .scheme("http")
        .authority(target.to_string())
        .path_and_query(path.as_str())
        .build()
    {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return proxy::error_response(&ProxyError::BadRequest(format!("bad request target `{path}`"))),
    }
    let method = req.method().clone();
    match forward::forward(&rt.client, &target, req).await {
        (route, Ok(resp)) => {
            Ended {
                original: Some(original),
                target: Some(&target),
                route: Some(&route),
                path: Some(&path),
                took: started.elapsed(),
                ..Ended::new(
                    RequestKind::Transparent,
                    conn.client,
                    method.as_str(),
                    How::Forwarded {
                        status: resp.status().as_u16(),
                    },
                )
            }
            .finish(conn.guard.metrics());
            resp
        }
        (route, Err(e)) => {
            conn.refused(Some(original), Some(&target), Some(&route), &Refused::Proxy(e.clone()));
            proxy::error_response(&e)
        }
    }
}

/// The `Host` header at the original port; without one, what `no_sni` says.
fn target_of(conn: &Conn, req: &Request<Incoming>, original: SocketAddr) -> Result<Target, Refused> {
    match req.headers().get(header::HOST).map(|h| h.to_str()) {
        Some(Ok(host)) => {
            Target::parse_host_port(host, original.port()).map_err(|e| Refused::Proxy(ProxyError::BadTarget(e)))
        }
        Some(Err(_)) => Err(Refused::Proxy(ProxyError::BadRequest(
            "the Host header is not ASCII".into(),
        ))),
        None => match conn.no_sni() {
            NoSni::Original => Ok(Target {
                host: Host::Ip(original.ip().to_canonical()),
                port: original.port(),
            }),
            NoSni::Refuse => Err(Refused::NoName),
        },
    }
}
