//! One CONNECT tunnel after its upstream connected: SNI pinning, then the byte pipe, then the
//! canonical log line.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ConnCtx;
use super::pipe::{self, Activity, PipeEnd};
use super::sni::{self, Hello};
use crate::config::SniMode;
use crate::conn::ClientIo;
use crate::conn::ConnGuard;
use crate::metrics::{SniReason, TunnelEnd};
use crate::outcome::{Exchange, How};
use crate::routes::Route;
use crate::target::{Host, Target};
use crate::upstream::connect::Upstream;

/// How long a client may take to send its whole ClientHello once the tunnel is open.
pub(crate) const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A tunnel whose upstream is connected and whose `200` is on its way (or, on the
/// transparent listener, whose client never waits for one).
pub(crate) struct Tunnel {
    exchange: Exchange,
    /// `CONNECT`, or on the transparent listener `TLS` / `TCP`.
    method: &'static str,
    target: Target,
    route: Arc<Route>,
    stream: TcpStream,
    upstream: Upstream,
    /// The name the ClientHello must carry, when the route pins SNI. Boxed: an idle tunnel,
    /// pinned or not, holds a pointer for it.
    pin: Option<Box<SniPin>>,
    idle_timeout: Duration,
    /// `[proxy] tcp_keepalive`, set on the upstream socket once the tunnel lasts.
    keepalive: Option<Duration>,
    guard: Arc<ConnGuard>,
    /// The SNI the client sent, once read.
    sni: Option<String>,
}

/// A pinned tunnel's expectation: the ClientHello must name `name` within `hello_timeout`
/// ([`CLIENT_HELLO_TIMEOUT`] unless the embedding program shortened it).
struct SniPin {
    name: String,
    hello_timeout: Duration,
}

impl Tunnel {
    /// The tunnel of a `CONNECT` whose upstream `connected`: its SNI pinned when the route
    /// says so ([`expected_sni`]).
    pub(crate) fn connect(
        ctx: &ConnCtx,
        exchange: Exchange,
        target: Target,
        route: Arc<Route>,
        connected: (TcpStream, Upstream),
    ) -> Self {
        let pin = expected_sni(&route, &target).map(|name| {
            Box::new(SniPin {
                name,
                hello_timeout: ctx.client_hello_timeout,
            })
        });
        Self {
            pin,
            ..Self::new(ctx, exchange, "CONNECT", target, route, connected)
        }
    }

    /// A redirected connection's tunnel (`method` `TLS` or `TCP`), routed by `sni` (or by
    /// address): nothing is left to pin.
    pub(crate) fn redirected(
        ctx: &ConnCtx,
        exchange: Exchange,
        method: &'static str,
        (target, route): (Target, Arc<Route>),
        connected: (TcpStream, Upstream),
        sni: Option<String>,
    ) -> Self {
        Self {
            sni,
            ..Self::new(ctx, exchange, method, target, route, connected)
        }
    }

    fn new(
        ctx: &ConnCtx,
        exchange: Exchange,
        method: &'static str,
        target: Target,
        route: Arc<Route>,
        (stream, upstream): (TcpStream, Upstream),
    ) -> Self {
        Self {
            exchange,
            method,
            target,
            route,
            stream,
            upstream,
            pin: None,
            idle_timeout: ctx.runtime.config.proxy.idle_timeout,
            keepalive: ctx.runtime.config.proxy.tcp_keepalive,
            guard: ctx.guard.clone(),
            sni: None,
        }
    }
}

/// SNI is pinned for names on `sni = "match"` routes; a CONNECT to an IP literal routes by
/// address, so there is no name to pin.
pub(crate) fn expected_sni(route: &Route, target: &Target) -> Option<String> {
    match (&target.host, route.sni) {
        (Host::Name(n), SniMode::Match) => Some(n.clone()),
        _ => None,
    }
}

/// Why the SNI check refused a tunnel (or why a transparent connection's first flight gave
/// no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    Mismatch(String),
    /// The ClientHello is encrypted (ECH): its outer SNI is the provider's public name, not
    /// the CONNECT host, and the inner name cannot be read. Such routes need `sni = "any"`.
    EchOuterSni(String),
    NotTls,
    Malformed,
    TooLarge,
    Timeout,
    ClientGone,
}

impl Rejection {
    pub(crate) fn reason(&self) -> SniReason {
        match self {
            Self::Mismatch(_) => SniReason::SniMismatch,
            Self::EchOuterSni(_) => SniReason::EchOuterSni,
            Self::NotTls => SniReason::NotTls,
            Self::Malformed => SniReason::MalformedClientHello,
            Self::TooLarge => SniReason::ClientHelloTooLarge,
            Self::Timeout => SniReason::ClientHelloTimeout,
            Self::ClientGone => SniReason::ClientClosed,
        }
    }

    pub(crate) fn as_str(&self) -> &'static str {
        self.reason().as_str()
    }
}

/// The client side of a tunnel.
pub(crate) enum Client {
    /// The client's own socket, and the bytes that arrived with the `CONNECT` head: the pipe
    /// waits on readiness and holds no buffer.
    Tcp(TcpStream, Bytes),
    /// Only if hyper's upgrade was not `conn::ClientIo`: every tunnel would then hold a copy
    /// buffer and take the slow path.
    Generic(Option<Upgraded>),
}

impl Tunnel {
    /// The tunnel of a `CONNECT` hyper answered: takes the client back from hyper's upgrade.
    pub(crate) async fn run(mut self, upgrade: OnUpgrade) {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(client = %self.exchange.client(), error = %e, "client left before the tunnel opened");
                return;
            }
        };
        let mut client = match upgraded.downcast::<ClientIo>() {
            Ok(parts) => {
                let (unread, client) = parts.io.into_inner().into_parts();
                // hyper's read-ahead came first; any of the first head's read that hyper left.
                // Even empty, `unread` keeps the whole first-head buffer alive: let it go now.
                let early = if unread.is_empty() {
                    parts.read_buf
                } else {
                    [&parts.read_buf[..], &unread[..]].concat().into()
                };
                Client::Tcp(client, early)
            }
            Err(upgraded) => {
                // Loud in logs, fatal in debug builds, so every tunnel test fails on it.
                tracing::error!("tunnel: hyper's upgrade is not conn::ClientIo; relaying on the generic path");
                debug_assert!(false, "the tunnel's fast-path downcast to conn::ClientIo failed");
                Client::Generic(Some(upgraded))
            }
        };
        self.serve(&mut client, Some(&tracing::Span::current())).await;
    }

    /// Runs the tunnel, its `200` sent, until it closes; then counts and logs it, in `span`
    /// (the connection's; `None`: made again for the line by `Exchange::conn_span`, so an
    /// idle tunnel holds no span). By reference: a connection's task that runs its tunnel then holds
    /// the tunnel once; not an `async fn`, which would hold its arguments twice.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps a second copy of its arguments in the tunnel's state"
    )]
    pub(crate) fn serve<'a>(
        &'a mut self,
        client: &'a mut Client,
        span: Option<&'a tracing::Span>,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let guard = self.guard.clone();
            guard.metrics().tunnel_opened(&self.route.series);
            let activity = Activity::default();
            let end = guard
                .until_cancelled(self.relay(client, &activity))
                .await
                .unwrap_or(Ok(TunnelEnd::Cancelled));
            let metrics = guard.metrics();
            let (up, down) = (
                activity.client_to_upstream.load(Ordering::Relaxed),
                activity.upstream_to_client.load(Ordering::Relaxed),
            );
            let (end, rejected, sni) = match &end {
                Ok(end) => (*end, None, self.sni.as_deref()),
                Err(r @ (Rejection::Mismatch(s) | Rejection::EchOuterSni(s))) => {
                    (TunnelEnd::SniRejected, Some(r.reason()), Some(s.as_str()))
                }
                Err(r) => (TunnelEnd::SniRejected, Some(r.reason()), None),
            };
            let how = How::Tunnel {
                end,
                rejected,
                up,
                down,
            };
            let ended = (self.exchange.ended(self.method, how))
                .target(Some(&self.target))
                .route(Some(&self.route))
                .upstream(&self.upstream)
                .sni(sni);
            let made;
            let span = match span {
                Some(span) => span,
                None => {
                    made = self.exchange.conn_span();
                    &made
                }
            };
            span.in_scope(|| ended.finish(metrics));
        }
    }

    /// SNI check (when pinned), then the byte pipe.
    async fn relay(&mut self, client: &mut Client, activity: &Activity) -> Result<TunnelEnd, Rejection> {
        let end = match client {
            Client::Tcp(client, early) => {
                // Even empty, it may share a whole read buffer: let it go before idling. In a
                // block of its own, so the idle pipe's state holds no room for it either.
                {
                    let early = std::mem::take(early);
                    if let Some(end) = self.preamble(client, &early, activity).await? {
                        return Ok(end);
                    }
                }
                pipe::run(client, &mut self.stream, self.idle_timeout, self.keepalive, activity).await
            }
            Client::Generic(upgraded) => {
                let Some(upgraded) = upgraded.take() else {
                    return Ok(TunnelEnd::Error);
                };
                // Boxed: the fallback's copy buffers and state take no room in every tunnel.
                return Box::pin(self.relay_generic(upgraded, activity)).await;
            }
        };
        Ok(tunnel_end(end))
    }

    /// [`Tunnel::relay`] for a client hyper handed back in another type.
    async fn relay_generic(&mut self, upgraded: Upgraded, activity: &Activity) -> Result<TunnelEnd, Rejection> {
        let mut client = TokioIo::new(upgraded);
        if let Some(end) = self.preamble(&mut client, &[], activity).await? {
            return Ok(end);
        }
        crate::upstream::socket::keepalive(&self.stream, self.keepalive);
        let end = pipe::run_generic(client, &mut self.stream, self.idle_timeout, activity).await;
        Ok(tunnel_end(end))
    }

    /// Reads the ClientHello when SNI is pinned, then forwards it and whatever the client sent
    /// early (`early`: bytes that arrived with the CONNECT head). `Some` ends the tunnel.
    async fn preamble<C>(
        &mut self,
        client: &mut C,
        early: &[u8],
        activity: &Activity,
    ) -> Result<Option<TunnelEnd>, Rejection>
    where
        C: AsyncRead + Unpin,
    {
        let mut first = early.to_vec();
        if let Some(pin) = &self.pin {
            let expected = &pin.name;
            // Boxed: only a pinned tunnel holds the read's state (its timer), and only until
            // the hello is in.
            match Box::pin(read_client_hello(client, &mut first, pin.hello_timeout)).await {
                // GREASE ECH (RFC 9849's outer name equal to the real one) passes like any hello.
                Ok((sni, _)) if sni.as_deref().is_none_or(|s| s == expected) => self.sni = sni,
                Ok((sni, true)) => return Err(Rejection::EchOuterSni(sni.unwrap_or_default())),
                Ok((sni, false)) => return Err(Rejection::Mismatch(sni.unwrap_or_default())),
                Err(r) => return Err(r),
            }
        }
        if !first.is_empty() {
            activity
                .client_to_upstream
                .fetch_add(first.len() as u64, Ordering::Relaxed);
            if self.stream.write_all(&first).await.is_err() {
                return Ok(Some(TunnelEnd::Error));
            }
        }
        Ok(None)
    }
}

fn tunnel_end(end: PipeEnd) -> TunnelEnd {
    match end {
        PipeEnd::Closed => TunnelEnd::Closed,
        PipeEnd::Idle => TunnelEnd::Idle,
        PipeEnd::Error(_) => TunnelEnd::Error,
    }
}

/// Reads until `buf` holds a whole ClientHello (RFC 8446 §4.1.2), which may span several TCP
/// segments and TLS records; returns its SNI and whether it carries an ECH extension. Nothing
/// is consumed: `buf` is forwarded as is.
pub(crate) async fn read_client_hello<R: AsyncRead + Unpin>(
    client: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(Option<String>, bool), Rejection> {
    let deadline = Instant::now() + timeout;
    buf.reserve(1024);
    loop {
        match sni::parse_client_hello(buf, sni::MAX_CLIENT_HELLO) {
            Hello::Complete { sni, ech } => return Ok((sni, ech)),
            Hello::NotTls => return Err(Rejection::NotTls),
            Hello::Malformed => return Err(Rejection::Malformed),
            Hello::TooLarge => return Err(Rejection::TooLarge),
            Hello::Incomplete => {}
        }
        match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Rejection::ClientGone),
            Ok(Ok(_)) => {}
            Err(_) => return Err(Rejection::Timeout),
        }
    }
}
