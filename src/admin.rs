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
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{self, Metrics};
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
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;

/// Readiness: not ready until start-up is done; not ready again once draining.
///
/// The states only move forward (starting → running → draining), so a late `set_ready` from
/// start-up cannot undo a drain that a signal already began.
#[derive(Debug)]
pub struct Readiness {
    // A watch rather than an atomic so tests and the drain can wait for a state change.
    state: watch::Sender<u8>,
    /// Results of the latest dependency checks (resolvers, `connect` names).
    checks: std::sync::Mutex<Vec<Check>>,
    /// The `[transparent]` listeners (empty when off), shown by `/readyz?verbose`.
    transparent: std::sync::Mutex<Vec<std::net::SocketAddr>>,
    /// The running connector's addresses in `address_backoff`, shown by `/readyz?verbose`.
    backoffs: std::sync::Mutex<Option<BackoffView>>,
}

/// Reads the addresses in backoff of whatever runtime is current (it changes on reload).
#[derive(Clone)]
pub struct BackoffView(pub Arc<dyn Fn() -> Vec<crate::upstream::backoff::Backoff> + Send + Sync>);

impl std::fmt::Debug for BackoffView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackoffView")
    }
}

/// The admin `/debug/route?host=` hook: explains (and probes) a host, as JSON; `None` while
/// `[admin] debug` is off (then the path is 404). It gets the `host=` value, if any.
pub type DebugRoute = Arc<
    dyn Fn(Option<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(StatusCode, String)>> + Send>>
        + Send
        + Sync,
>;

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Starting: `/readyz` answers 503 until [`Readiness::set_ready`].
    pub fn new() -> Self {
        Self {
            state: watch::Sender::new(STARTING),
            checks: std::sync::Mutex::new(Vec::new()),
            transparent: std::sync::Mutex::new(Vec::new()),
            backoffs: std::sync::Mutex::new(None),
        }
    }

    /// Where `/readyz?verbose` reads the addresses in `address_backoff` from.
    pub fn set_backoffs(&self, view: BackoffView) {
        *self.backoffs.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// Start-up is done: config loaded, proxy listener bound, start-up resolution finished.
    /// Does nothing once draining.
    pub fn set_ready(&self) {
        self.state.send_if_modified(|s| {
            let starting = *s == STARTING;
            if starting {
                *s = RUNNING;
            }
            starting
        });
    }

    /// Shutdown began: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.state.send_replace(DRAINING);
    }

    /// Whether `/readyz` answers 200: started, not draining, every dependency check passing.
    pub fn is_ready(&self) -> bool {
        *self.state.borrow() == RUNNING && self.checks().iter().all(|c| c.ok)
    }

    /// Replaces the dependency check results.
    pub fn set_checks(&self, checks: Vec<Check>) {
        *self.checks.lock().unwrap_or_else(|p| p.into_inner()) = checks;
    }

    /// The latest dependency check results.
    pub fn checks(&self) -> Vec<Check> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the `[transparent]` listeners' addresses.
    pub fn set_transparent(&self, addrs: Vec<std::net::SocketAddr>) {
        *self.transparent.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    fn verbose(&self) -> String {
        let transparent = self.transparent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let transparent = (!transparent.is_empty()).then(|| serde_json::json!({ "listen": transparent }));
        let view = self.backoffs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let body = serde_json::json!({
            "ready": self.is_ready(),
            // Where the process is in its life, apart from whether its checks pass: "running"
            // with "ready": false means started, but a dependency check is failing.
            "lifecycle": self.lifecycle(),
            "checks": self.checks(),
            "transparent": transparent,
            // Not a readiness failure: the other addresses carry the traffic meanwhile.
            "address_backoff": view.map(|v| (v.0)()).unwrap_or_default(),
        });
        format!("{body:#}\n")
    }

    fn failing(&self) -> String {
        let failing: Vec<String> = self
            .checks()
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} {}: {}", c.kind, c.name, c.reason.unwrap_or_default()))
            .collect();
        failing.join("\n")
    }

    /// The lifecycle phase: `"starting"`, `"running"` (start-up done; readiness then also
    /// needs every check to pass) or `"draining"`.
    pub fn lifecycle(&self) -> &'static str {
        match *self.state.borrow() {
            STARTING => "starting",
            RUNNING => "running",
            _ => "draining",
        }
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        let _ = self.state.subscribe().wait_for(|s| *s == DRAINING).await;
    }

    /// Resolves once the state is not `starting` any more.
    pub async fn started(&self) {
        let _ = self.state.subscribe().wait_for(|s| *s != STARTING).await;
    }
}

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
                    let (admin, shutdown) = (admin.clone(), shutdown.clone());
                    drop(tracker.spawn(async move {
                        connection(stream, admin, shutdown).await;
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

/// One admin connection, keep-alive included, until the client leaves or `shutdown`.
async fn connection(stream: TcpStream, admin: Arc<Admin>, shutdown: CancellationToken) {
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

#[cfg(test)]
mod tests;
