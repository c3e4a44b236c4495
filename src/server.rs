//! The accept loop: connection limit, HTTP/1.1 with upgrades and head limits, tracking of every
//! connection and tunnel for the drain on shutdown, panic containment per task.

mod fds;
pub mod head;
pub mod proxy_header;
mod threads;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{ClientIo, ConnGuard, OpenCount, Prefixed, contain};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::outcome::Exchange;
pub(crate) use crate::outcome::Listener;
use crate::policy::Identity;
use crate::proxy::{self, ConnCtx, Next};
use crate::ready::Readiness;
use crate::runtime::{Current, Runtime};
use crate::transparent;
pub use fds::raise_open_file_limit;
use threads::Threads;
pub use threads::block_on_serving;
use tracing::Instrument;

/// How long a client may take to send a request head (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) use crate::conn::{MAX_HEAD_BYTES, MAX_HEADERS};

/// Limits the config file does not expose. The defaults are the production values; the
/// library API ([`crate::Proxy::bind_with`]) lets tests shorten the timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// `proxy::tunnel::CLIENT_HELLO_TIMEOUT`.
    pub client_hello_timeout: Duration,
    /// Threads that accept and serve client connections, each on a single-threaded runtime of
    /// its own with its own listeners (`SO_REUSEPORT`): a connection lives on the thread that
    /// accepted it. One (the default): the caller's runtime only. The binary runs as many as
    /// `SPLITWAY_THREADS` says, one by default.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            client_hello_timeout: crate::proxy::tunnel::CLIENT_HELLO_TIMEOUT,
            threads: 1,
        }
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    runtime: Arc<Current>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    draining: CancellationToken,
    /// Client connections open now (a tunnel keeps its connection open).
    open: Arc<OpenCount>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    limits: Limits,
    /// The listeners' bound addresses, which the connector never connects to.
    own: Vec<std::net::SocketAddr>,
}

impl Shared {
    pub(crate) fn new(runtime: Runtime, metrics: Arc<Metrics>, limits: Limits, own: Vec<std::net::SocketAddr>) -> Self {
        let max = runtime.config.proxy.max_connections;
        Self {
            runtime: Arc::new(Current::new(Arc::new(runtime))),
            limit: Arc::new(Semaphore::new(max)),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            draining: CancellationToken::new(),
            open: Arc::new(OpenCount::default()),
            metrics,
            ready: Arc::new(Readiness::new()),
            limits,
            own,
        }
    }

    /// The metrics registry of this proxy.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Readiness: `/readyz`'s state and dependency checks.
    pub(crate) fn ready(&self) -> &Arc<Readiness> {
        &self.ready
    }

    /// Client connections open now, and a wait for none to be open.
    pub(crate) fn open(&self) -> &OpenCount {
        &self.open
    }

    /// The tasks of every client connection and tunnel (the drain waits on it).
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancelled when the drain begins.
    pub(crate) fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// The listeners' bound addresses.
    pub(crate) fn own(&self) -> &[std::net::SocketAddr] {
        &self.own
    }

    /// Replaces the runtime for new connections and the next request of kept-alive ones;
    /// open tunnels and requests in flight keep theirs.
    pub(crate) fn set_runtime(&self, next: Arc<Runtime>) {
        self.runtime.store(next);
    }

    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load()
    }

    /// Where each request reads the runtime it runs on.
    pub(crate) fn current(&self) -> &Arc<Current> {
        &self.runtime
    }
}

/// Accepts on the proxy listener and the transparent ones until `shutdown`, then drains:
/// keeps serving (new connections included) until no client connection is left or
/// `drain_timeout` passes, then cuts what remains (each tunnel cut is counted in
/// `splitway_tunnels_cut_at_shutdown_total`). With `drain_delay`, the listeners accept for that
/// long after `shutdown` and then close; the connections open then get `drain_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    transparent: Vec<TcpListener>,
    siblings: Vec<(std::net::TcpListener, Listener)>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let listeners =
        std::iter::once((listener, Listener::Proxy)).chain(transparent.into_iter().map(|l| (l, Listener::Transparent)));
    // Aborted when the drain is over: until then every listener accepts.
    let mut accepting = JoinSet::new();
    for (listener, kind) in listeners {
        accepting.spawn(accept_loop(listener, kind, shared.clone()));
    }
    let others = Threads::start(siblings, &shared);
    shutdown.await;
    shared.ready.set_draining();
    shared.draining.cancel();
    let (drain_delay, drain_timeout) = {
        let p = &shared.runtime().config.proxy;
        (p.drain_delay, p.drain_timeout)
    };
    if !drain_delay.is_zero() {
        // Behind a load balancer: its deregistration takes a while, during which it still
        // sends new connections here. Then the listeners close and the drain proper begins.
        tracing::info!(
            ?drain_delay,
            "draining: accepting for drain_delay, then closing the listeners"
        );
        tokio::time::sleep(drain_delay).await;
        accepting.shutdown().await;
        others.stop_accepting();
    }
    shared.tracker.close();
    tracing::info!(
        ?drain_timeout,
        "draining: serving until every client connection is closed"
    );
    if tokio::time::timeout(drain_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.tracker.len(),
            "drain_timeout reached: closing what remains"
        );
        shared.cancel.cancel();
        shared.tracker.wait().await;
    }
    accepting.abort_all();
    others.finish().await;
}

/// How long an accept loop pauses after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The one accept loop, for every listener.
async fn accept_loop(listener: TcpListener, kind: Listener, shared: Arc<Shared>) {
    // `tcp_keepalive` lives on the listener (set at bind), which every socket it accepts
    // inherits when its handshake completes; a reload that changes it reaches the listener at
    // the next accept, and that socket directly (any already in the backlog keep the old one).
    let mut keepalive = shared.runtime().config.proxy.tcp_keepalive;
    let mut spare = fds::Spare::new();
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let runtime = shared.runtime();
                let now = runtime.config.proxy.tcp_keepalive;
                if now != keepalive {
                    keepalive = now;
                    crate::upstream::socket::keepalive_listener(&listener, now);
                    crate::upstream::socket::keepalive(&stream, now);
                }
                accept(&shared, kind, runtime, stream, client);
            }
            // No descriptor for `accept`, which takes one before it looks at the backlog. The
            // spare frees one: a connection waiting then is refused (it could not be served:
            // its upstream needs a descriptor too); with none waiting, the listener's
            // readiness is cleared, and the loop waits for the next connection.
            Err(e) if fds::exhausted(&e) && spare.release() => {
                if let Some(waiting) = fds::accept_waiting(&listener).await {
                    match waiting {
                        Ok((stream, client)) => {
                            refuse(&shared, kind, stream, ProxyError::OutOfDescriptors);
                            tracing::warn!(listener = kind.as_str(), %client, "connection refused: out of file descriptors");
                        }
                        Err(e) => tracing::warn!(listener = kind.as_str(), error = %e, "accept failed"),
                    }
                }
                spare.restore();
            }
            Err(e) => {
                // EMFILE and friends leave the connection in the backlog: retrying at once
                // would spin a core until a descriptor is freed. Without its spare, the loop
                // takes one back first, for the next connection at the limit.
                tracing::warn!(listener = kind.as_str(), error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                spare.restore();
            }
        }
    }
}

/// Refuses an accepted connection with `e`, counted: a proxy client gets the error response
/// it can read; a redirected one expected its upstream, not an HTTP answer, and is closed.
fn refuse(shared: &Arc<Shared>, kind: Listener, stream: TcpStream, e: ProxyError) {
    shared.metrics.connection_rejected();
    if kind == Listener::Proxy {
        shared.tracker.spawn(contain(
            async move {
                let mut stream = stream;
                proxy::write_refusal(&mut stream, &e, true).await;
            },
            "refusal",
            shared.metrics.clone(),
        ));
    }
}

/// Serves or refuses one accepted connection on `runtime` (the current one), in a span of its
/// own.
fn accept(
    shared: &Arc<Shared>,
    kind: Listener,
    runtime: Arc<Runtime>,
    stream: TcpStream,
    client: std::net::SocketAddr,
) {
    // TCP_NODELAY: inherited from the listener (set at bind).
    let Some(guard) = admit(shared) else {
        refuse(
            shared,
            kind,
            stream,
            ProxyError::ConnectionLimit(runtime.config.proxy.max_connections),
        );
        return;
    };
    let limits = shared.limits;
    let ctx = ConnCtx::new(
        Identity::direct(client),
        shared.draining.clone(),
        runtime,
        shared.current().clone(),
        guard.clone(),
        limits.client_hello_timeout,
    );
    // One span per client connection: every event of it (hyper's, the tunnel's) carries it.
    let span = crate::outcome::conn_span(&Identity::direct(client), kind);
    match kind {
        Listener::Proxy => guard.spawn("connection", serve_connection(stream, ctx, limits, span)),
        Listener::Transparent => guard.spawn(
            "transparent",
            transparent::serve_connection(stream, ctx, limits.header_read_timeout, span),
        ),
    }
}

/// Counts a new client connection in (permit, open count, tracker); `None` over
/// `max_connections` (logged; the caller counts the refusal, answers or closes).
pub(crate) fn admit(shared: &Arc<Shared>) -> Option<Arc<ConnGuard>> {
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        let max = shared.runtime().config.proxy.max_connections;
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
/// its arguments (the span too) go into the boxed first request, and the task's own state
/// holds only what a tunnel needs while it idles (every idle tunnel is one such task).
fn serve_connection(stream: TcpStream, ctx: ConnCtx, limits: Limits, span: tracing::Span) -> impl Future<Output = ()> {
    let guard = ctx.guard().clone();
    // Boxed: none of the first request's state (head, connect, answer) is held while a tunnel
    // idles, and its arguments are freed with it.
    let first = Box::pin(first_request(stream, ctx, limits).instrument(span));
    async move {
        let Some(mut next) = guard.until_cancelled(first).await else {
            return;
        };
        match next {
            // By reference: the tunnel is held here once, not again in its future. No span
            // while it idles: its close makes the connection's span again to log in.
            Next::Tunnel(ref mut tunnel, ref mut client) => tunnel.serve(client, None).await,
            // Boxed: a tunnel's task holds no room for hyper's state.
            Next::Hyper(prefix, stream, ctx, span, header_read_timeout) => {
                Box::pin(serve_http(prefix, stream, ctx, header_read_timeout).instrument(span)).await
            }
            Next::Closed => {}
        }
    }
}

/// Reads the PROXY header (when the listener takes one) and the first head, and serves the
/// head when it is a `CONNECT`; any other request is hyper's.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments in the connection's state"
)]
fn first_request(mut stream: TcpStream, mut ctx: ConnCtx, limits: Limits) -> impl Future<Output = Next> {
    async move {
        let Some(read) = proxy_header::arrive(&mut stream, &mut ctx, limits.header_read_timeout).await else {
            return Next::Closed;
        };
        match head::read_first(&mut stream, read, limits.header_read_timeout).await {
            head::First::Head(prefix, Some(connect)) => proxy::serve_connect(&ctx, connect, prefix, stream).await,
            head::First::Head(prefix, None) => Next::Hyper(
                prefix,
                stream,
                ctx,
                tracing::Span::current(),
                limits.header_read_timeout,
            ),
            head::First::Refuse(kind, e) => {
                let detail = e.describe();
                (Exchange::start(kind, ctx.who().clone()).refused("", &e, &detail)).finish(ctx.guard().metrics());
                proxy::write_refusal(&mut stream, &e, true).await;
                Next::Closed
            }
            head::First::Close => Next::Closed,
        }
    }
}

/// hyper's HTTP/1.1 connection, after `prefix` (bytes already read from `stream`).
async fn serve_http(prefix: Bytes, stream: TcpStream, ctx: ConnCtx, header_read_timeout: Duration) {
    let guard = ctx.guard().clone();
    // The first head passed head.rs with these same limits; on a kept-alive connection hyper
    // judges the later heads and answers one over them itself (431, then closes), a malformed
    // one with 400. `max_header_size` is the exact cap on a complete head; `max_buf_size`
    // alone only stops a head still incomplete at the limit. The header timer needs `timer`.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_read_timeout))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle tunnel's memory is mostly its connection's task (a tokio task cell holding this
    /// future, rounded up to 128 bytes): the first request's state, its arguments and hyper's
    /// room are boxed away, and the span too, so the task holds the tunnel, its relay and
    /// little else (in a release build 1,024 bytes, a 1,280-byte task; 1,312 and 1,536 when
    /// the first request's arguments and the span stayed in the task).
    #[tokio::test]
    async fn a_connection_task_holds_little_beyond_its_tunnel() {
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::new(crate::config::Config::embedded(), metrics.clone()).expect("embedded config");
        let shared = Arc::new(Shared::new(runtime, metrics.clone(), Limits::default(), Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // A client socket, not an upstream: a test's own connection to its own listener.
        let _client = tokio::net::TcpSocket::new_v4()
            .expect("socket")
            .connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let guard = admit(&shared).expect("admitted");
        let ctx = ConnCtx::new(
            Identity::direct(peer),
            shared.draining.clone(),
            shared.runtime(),
            shared.current().clone(),
            guard,
            Limits::default().client_hello_timeout,
        );
        let task = contain(
            serve_connection(
                stream,
                ctx,
                Limits::default(),
                crate::outcome::conn_span(&Identity::direct(peer), Listener::Proxy),
            ),
            "connection",
            metrics,
        );
        let size = std::mem::size_of_val(&task);
        let tunnel = std::mem::size_of::<proxy::tunnel::Tunnel>() + std::mem::size_of::<proxy::tunnel::Client>();
        assert!(
            size <= tunnel + 560,
            "a connection's task is {size} bytes ({tunnel} of them its tunnel)"
        );
    }
}
