//! Plain HTTP on the transparent listener: recognised by its first bytes, routed by its
//! `Host` header at the original port, and forwarded as absolute-form requests are
//! ([`crate::proxy::forward`]: same routes, connector and pooled client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::NoSni;
use crate::conn::{MAX_HEAD_BYTES, MAX_HEADERS, Prefixed};
use crate::error::ProxyError;
use crate::metrics::RequestKind;
use crate::outcome::Exchange;
use crate::proxy::{self, ConnCtx};
use crate::target::Target;

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

/// Serves the connection's requests with hyper, each forwarded by its `Host` through the
/// proxy's one forwarding path, on the runtime current when it starts.
pub(super) async fn serve(
    ctx: &ConnCtx,
    stream: TcpStream,
    first: Vec<u8>,
    original: SocketAddr,
    header_timeout: Duration,
) {
    let ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = ctx.next_request();
        async move {
            let exchange = Exchange::start(RequestKind::Transparent, ctx.who().clone())
                .with_policy(ctx.runtime().policies.for_client(ctx.who(), None))
                .redirected(original);
            let mut resp = proxy::forward_to(&ctx, exchange, req, |req| absolute(&ctx, req, original)).await;
            if ctx.is_draining() {
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

/// The request's target — its `Host` at the original port, or without one what `no_sni`
/// says — on a port the capture rules redirect; the request is rewritten to the absolute
/// form the pooled client connects by.
fn absolute(ctx: &ConnCtx, req: &mut Request<Incoming>, original: SocketAddr) -> Result<Target, ProxyError> {
    let target = match req.headers().get(header::HOST).map(|h| h.to_str()) {
        Some(Ok(host)) => Target::parse_host_port(host, original.port())?,
        Some(Err(_)) => return Err(ProxyError::BadRequest("the Host header is not ASCII".into())),
        None => match super::no_sni(ctx.runtime()) {
            NoSni::Original => super::by_address(original),
            NoSni::Refuse => {
                return Err(ProxyError::BadRequest(
                    "no Host header and [transparent] no_sni = \"refuse\"".into(),
                ));
            }
        },
    };
    ctx.runtime().check_transparent_http_port(&target)?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.to_string())
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest(format!("bad request target `{path}`")))?;
    *req.uri_mut() = uri;
    Ok(target)
}
