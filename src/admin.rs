//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the `splitway health` client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::Prefixed;
use crate::metrics::{self, Metrics};
pub use crate::ready::{BackoffView, Readiness};
pub use crate::runtime::Check;

/// How long an admin client may take to send a request head (slowloris guard); probes and
/// scrapers send theirs in one write. It is also the idle timeout of a kept-alive admin
/// connection: hyper starts the timer as soon as it waits for the next head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections open at once; one more is closed at once. Probes and a scraper or two
/// need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// hyper's smallest allowed read buffer: an admin request is a request line and a few headers.
const MAX_BUF_BYTES: usize = 8 * 1024;
/// Pause after a failed accept (EMFILE and friends) so the loop does not spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT: &str = "text/plain; charset=utf-8";

/// The admin `/debug/route?host=` hook: explains (and probes) a host, as JSON; `None` while
/// `[admin] debug` is off (then the path is 404). It gets the `host=` value, if any.
pub type DebugRoute = Arc<
    dyn Fn(Option<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(StatusCode, String)>> + Send>>
        + Send
        + Sync,
>;

/// Serves `GET /healthz` (200 `ok` while the process serves), `GET /readyz` (200 `ready`, or
/// 503 with the state) and `GET /metrics` (the Prometheus text of `metrics`); `HEAD` too
/// (RFC 9110 §9.3.2). Any other path is 404, any other method on these paths 405.
///
/// Runs until `shutdown` is cancelled; every connection task has ended when it returns.
/// Requests are logged at debug only: probes come every few seconds and would drown the log.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    debug: Option<DebugRoute>,
    proxy_from: Arc<[ipnet::IpNet]>,
    shutdown: CancellationToken,
) {
    let admin = Arc::new(Admin { metrics, ready, debug });
    let tracker = TaskTracker::new();
    // The admin port's own small budget, apart from the proxy's `max_connections`: held-open
    // admin connections can never take the descriptors the proxy needs.
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let (admin, shutdown, from) = (admin.clone(), shutdown.clone(), proxy_from.clone());
                    drop(tracker.spawn(async move {
                        if let Some(stream) = behind_header(stream, peer, &from).await {
                            connection(stream, admin, shutdown).await;
                        }
                        drop(slot);
                    }));
                }
                Err(_) => {
                    // Closed at once: a probe that finds the admin port full retries.
                    tracing::debug!(%peer, max = MAX_CONNECTIONS, "admin connection refused: too many open");
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// The connection after the PROXY header a load balancer's health check may send (an AWS NLB
/// sends one on every health check connection once its target group has proxy protocol on,
/// whichever port it checks): read from `from` only, and only when the proxy listener takes
/// PROXY protocol (`from` empty: none is read). `None`: a malformed header, closed.
async fn behind_header(mut stream: TcpStream, peer: SocketAddr, from: &[ipnet::IpNet]) -> Option<Prefixed> {
    use crate::server::proxy_header::{Arrival, read};
    if from.is_empty() {
        return Some(Prefixed::new(Bytes::new(), stream));
    }
    let optional = crate::config::ProxyProtocol::Optional;
    match read(&mut stream, peer, optional, from, HEADER_READ_TIMEOUT).await {
        Arrival::Serve(_, rest) | Arrival::Local(rest) => Some(Prefixed::new(rest.freeze(), stream)),
        Arrival::Close(why) => {
            tracing::debug!(%peer, reason = why.map(|w| w.as_str()), "admin connection: PROXY header refused");
            None
        }
    }
}

/// One admin connection, keep-alive included, until the client leaves or `shutdown`.
async fn connection(stream: Prefixed, admin: Arc<Admin>, shutdown: CancellationToken) {
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.respond(&req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    // On shutdown the connection is dropped, not gracefully closed: the admin listener stops
    // last, when the process is about to exit, and a probe that loses its answer retries.
    tokio::select! {
        result = conn => if let Err(e) = result {
            tracing::debug!(error = %e, "admin connection ended with an error");
        },
        () = shutdown.cancelled() => {}
    }
}

/// What every admin request reads.
struct Admin {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    debug: Option<DebugRoute>,
}

impl Admin {
    async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let verbose = query.split('&').any(|kv| kv == "verbose" || kv.starts_with("verbose="));
        let response = match path {
            "/healthz" | "/readyz" | "/metrics" | "/debug/route"
                if !matches!(*req.method(), Method::GET | Method::HEAD) =>
            {
                let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
                // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
            "/healthz" => response(StatusCode::OK, TEXT, "ok\n"),
            "/readyz" if verbose => {
                let status = if self.ready.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                response(status, JSON, self.ready.verbose())
            }
            "/readyz" if self.ready.is_ready() => response(StatusCode::OK, TEXT, "ready\n"),
            "/readyz" if self.ready.lifecycle() == "running" => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready:\n{}\n", self.ready.failing()),
            ),
            "/readyz" => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("{}\n", self.ready.lifecycle()),
            ),
            "/debug/route" => {
                let host = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("host="))
                    .filter(|h| !h.is_empty());
                let answer = match &self.debug {
                    Some(debug) => debug(host.map(str::to_owned)).await,
                    None => None,
                };
                match answer {
                    Some((status, body)) if status.is_success() => response(status, JSON, body),
                    Some((status, body)) => response(status, TEXT, body),
                    None => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
                }
            }
            "/metrics" => response(StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.encode()),
            _ => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        };
        tracing::debug!(method = %req.method(), path, status = response.status().as_u16(), "admin request");
        response
    }
}

const JSON: &str = "application/json";

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probe and scrape answers describe this instant; nothing on the way should keep them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why `splitway health` failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("admin listener {addr} is not answering (is splitway running with [admin] listen = \"{addr}\"?)")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener {addr} answered `{status}` for /healthz")]
    Unhealthy { addr: SocketAddr, status: String },
    #[error("admin listener {0} did not answer within 2s")]
    Timeout(SocketAddr),
}

/// GETs `/healthz` on the admin listener; Ok when it answers 200.
pub async fn health(addr: SocketAddr) -> Result<(), HealthError> {
    let io = |source| HealthError::Io { addr, source };
    let probe = async {
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: splitway\r\nConnection: close\r\n\r\n")
            .await
            .map_err(io)?;
        let mut head = Vec::new();
        s.read_to_end(&mut head).await.map_err(io)?;
        let status = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if status.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(HealthError::Unhealthy { addr, status })
        }
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .unwrap_or(Err(HealthError::Timeout(addr)))
}

pub(crate) mod debug;

#[cfg(test)]
mod tests;
