//! The accept loop: connection limit, HTTP/1.1 with upgrades and head limits, tracking of every
//! connection and tunnel for the drain on shutdown, panic containment per task.

pub mod head;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Readiness;
use crate::conn::{ClientIo, ConnGuard, Prefixed, contain};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::outcome::Ended;
use crate::proxy::{self, ConnCtx, Next};
use crate::runtime::{Current, Runtime};
use tracing::Instrument;

/// How long a client may take to send a request head (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (RFC 9112 §2.3 leaves the limit to the server); hyper
/// answers `431` beyond it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request head; hyper answers `431` beyond it.
pub const MAX_HEADERS: usize = 100;

/// Limits the config file does not expose. The defaults are the production values; the
/// library API ([`crate::Proxy::bind_with`]) lets tests shorten the timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// `proxy::tunnel::CLIENT_HELLO_TIMEOUT`.
    pub client_hello_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            client_hello_timeout: crate::proxy::tunnel::CLIENT_HELLO_TIMEOUT,
        }
    }
}

/// State shared by the accept loop and every connection.
pub struct Shared {
    runtime: Arc<Current>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    draining: CancellationToken,
    /// Client connections open now (a tunnel keeps its connection open).
    open: Arc<watch::Sender<usize>>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    limits: Limits,
    /// The listeners' bound addresses, which the connector never connects to.
    own: Vec<std::net::SocketAddr>,
}

impl Shared {
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>, limits: Limits, own: Vec<std::net::SocketAddr>) -> Self {
        let max = runtime.config.proxy.max_connections;
        Self {
            runtime: Arc::new(Current::new(Arc::new(runtime))),
            limit: Arc::new(Semaphore::new(max)),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            draining: CancellationToken::new(),
            open: Arc::new(watch::Sender::new(0)),
            metrics,
            ready: Arc::new(Readiness::new()),
            limits,
            own,
        }
    }

    /// The metrics registry of this proxy.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Readiness: `/readyz`'s state and dependency checks.
    pub fn ready(&self) -> &Arc<Readiness> {
        &self.ready
    }

    /// Client connections open now, and a receiver that sees each change.
    pub fn open(&self) -> &Arc<watch::Sender<usize>> {
        &self.open
    }

    /// The tasks of every client connection and tunnel (the drain waits on it).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the drain begins.
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Limits the config file does not set.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The listeners' bound addresses.
    pub fn own(&self) -> &[std::net::SocketAddr] {
        &self.own
    }

    /// Replaces the runtime for new connections and the next request of kept-alive ones;
    /// open tunnels and requests in flight keep theirs.
    pub fn set_runtime(&self, next: Arc<Runtime>) {
        self.runtime.store(next);
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load()
    }

    /// Where each request reads the runtime it runs on.
    pub fn current(&self) -> &Arc<Current> {
        &self.runtime
    }
}

/// Accepts until `shutdown`, then drains: keeps serving (new connections included) until no
/// client connection is left or `drain_timeout` passes, then cuts what remains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                if !accept(&shared, accepted) {
                    // EMFILE leaves the connection in the backlog: retrying at once would spin
                    // a core until a descriptor is freed.
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
    shared.ready.set_draining();
    shared.draining.cancel();
    let drain_timeout = shared.runtime().config.proxy.drain_timeout;
    shared.tracker.close();
    let deadline = tokio::time::sleep(drain_timeout);
    tokio::pin!(deadline);
    tracing::info!(
        ?drain_timeout,
        "draining: serving until every client connection is closed"
    );
    loop {
        tokio::select! {
            () = shared.tracker.wait() => break,
            () = &mut deadline => {
                tracing::warn!(open = shared.tracker.len(), "drain_timeout reached: closing what remains");
                shared.cancel.cancel();
                shared.tracker.wait().await;
                break;
            }
            accepted = listener.accept() => {
                if !accept(&shared, accepted) {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// How long the accept loop pauses after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Serves or refuses one accepted connection; `false` when the accept itself failed.
fn accept(shared: &Arc<Shared>, accepted: std::io::Result<(TcpStream, std::net::SocketAddr)>) -> bool {
    let (stream, client) = match accepted {
        Ok(a) => a,
        Err(e) => {
            // EMFILE and friends: the listener stays up; the client waits in the backlog.
            tracing::warn!(error = %e, "accept failed");
            return false;
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(guard) = admit(shared) else {
        let max = shared.runtime().config.proxy.max_connections;
        shared.tracker.spawn(contain(
            async move {
                let mut stream = stream;
                proxy::answer(&mut stream, &ProxyError::ConnectionLimit(max), true).await;
            },
            "refusal",
            shared.metrics.clone(),
        ));
        return true;
    };
    let limits = shared.limits;
    let ctx = ConnCtx {
        client,
        draining: shared.draining.clone(),
        runtime: shared.runtime(),
        current: shared.current().clone(),
        guard: guard.clone(),
        client_hello_timeout: limits.client_hello_timeout,
    };
    // One span per client connection: every event of it (hyper's, the tunnel's) carries it.
    let span = tracing::info_span!("conn", client = %client);
    guard.spawn("connection", serve_connection(stream, ctx, limits, span));
    true
}

/// Counts a new client connection in (permit, open count, tracker); `None` over
/// `max_connections` (counted and logged; the caller answers or closes).
pub fn admit(shared: &Arc<Shared>) -> Option<Arc<ConnGuard>> {
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        let max = shared.runtime().config.proxy.max_connections;
        shared.metrics.connection_rejected();
        tracing::warn!(max, "connection refused: max_connections reached");
        return None;
    };
    let guard = Arc::new(ConnGuard::new(
        permit,
        shared.tracker.clone(),
        shared.cancel.clone(),
        shared.open.clone(),
        shared.metrics.clone(),
    ));
    Some(guard)
}

/// One client connection, from its first head to its close, in `span`. Not an `async fn`:
/// its arguments then live once in the task, not once more as locals.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments in the task"
)]
fn serve_connection(stream: TcpStream, ctx: ConnCtx, limits: Limits, span: tracing::Span) -> impl Future<Output = ()> {
    async move {
        let guard = ctx.guard.clone();
        // Boxed, and a statement of its own: none of the first request's state (head, connect,
        // answer) is held while a tunnel idles; the task then holds the tunnel alone.
        let first = Box::pin(first_request(stream, &ctx, limits).instrument(span.clone()));
        let Some(mut next) = guard.until_cancelled(first).await else {
            return;
        };
        match next {
            // By reference: the tunnel is held here once, not again in its future. Not
            // instrumented: a tunnel enters its span only to log, not on every message.
            Next::Tunnel(ref mut tunnel, ref mut client) => tunnel.serve(client, &span).await,
            // Boxed: a tunnel's task holds no room for hyper's state.
            Next::Hyper(prefix, stream) => Box::pin(serve_http(prefix, stream, ctx, limits).instrument(span)).await,
            Next::Closed => {}
        }
    }
}

/// Reads the first head and serves it when it is a `CONNECT`; any other request is hyper's.
async fn first_request(mut stream: TcpStream, ctx: &ConnCtx, limits: Limits) -> Next {
    match head::read_first(&mut stream, limits.header_read_timeout).await {
        head::First::Head(prefix, Some(connect)) => proxy::serve_connect(ctx, connect, prefix, stream).await,
        head::First::Head(prefix, None) => Next::Hyper(prefix, stream),
        head::First::Refuse(kind, e) => {
            let detail = e.describe();
            Ended::refused(kind, ctx.client, "", &e, &detail).finish(ctx.guard.metrics());
            proxy::answer(&mut stream, &e, true).await;
            Next::Closed
        }
        head::First::Close => Next::Closed,
    }
}

/// hyper's HTTP/1.1 connection, after `prefix` (bytes already read from `stream`).
async fn serve_http(prefix: Bytes, stream: TcpStream, ctx: ConnCtx, limits: Limits) {
    let guard = ctx.guard.clone();
    // The first head passed head.rs with these same limits; on a kept-alive connection hyper
    // judges the later heads and answers one over them itself (431, then closes), a malformed
    // one with 400. `max_header_size` is the exact cap on a complete head; `max_buf_size`
    // alone only stops a head still incomplete at the limit. The header timer needs `timer`.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(limits.header_read_timeout))
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(
            ClientIo::new(Prefixed::new(prefix, stream)),
            // Each request on the runtime current when it starts: a reload reaches kept-alive
            // connections at their next request.
            service_fn(move |req| proxy::serve(ctx.next_request(), req)),
        )
        .with_upgrades();
    if let Some(Err(e)) = guard.until_cancelled(conn).await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
