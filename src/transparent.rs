//! The `[transparent]` listener: connections iptables `REDIRECT`ed to it, for applications
//! that never read `HTTPS_PROXY`.
//!
//! The original destination comes from `SO_ORIGINAL_DST`; the ClientHello is read without
//! consuming it and the connection is routed by its SNI exactly as `CONNECT SNI:port` would be
//! (same route table, connector, deny list; metrics with `kind="transparent"`; the canonical
//! line). Plain HTTP is recognised by its first bytes and forwarded by its `Host` header
//! ([`http`]). Without a name, `[transparent] no_sni` decides.

mod http;
pub(crate) mod original_dst;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::NoSni;
use crate::error::ProxyError;
use crate::metrics::{Outcome, RequestKind};
use crate::outcome::{Exchange, How};
use crate::proxy::tunnel::{Client, Rejection, Tunnel, read_client_hello};
use crate::proxy::{self, ConnCtx, NO_ROUTE};
use crate::routes::Route;
use crate::runtime::Runtime;
use crate::target::{Host, Target};

/// Binds `listen`; on `127.0.0.1`, also `[::1]` on the same port (where ip6tables `REDIRECT`
/// sends IPv6), when the host has IPv6 loopback.
pub(crate) fn bind(listen: SocketAddr, threads: usize) -> std::io::Result<Bound> {
    let (first, mut siblings) = crate::upstream::socket::bind_group(listen, threads)?;
    let mut listeners = vec![first];
    if listen.ip() == std::net::Ipv4Addr::LOCALHOST {
        // The port bound above: the same as `listen`'s unless that was 0.
        let port = listeners[0].local_addr()?.port();
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        match crate::upstream::socket::bind_group(v6, threads) {
            Ok((l, more)) => {
                listeners.push(l);
                siblings.extend(more);
            }
            Err(e) => tracing::debug!(addr = %v6, error = %e, "no IPv6 transparent listener"),
        }
    }
    Ok((listeners, siblings))
}

/// The transparent listeners on the caller's runtime, and their siblings for the other
/// threads (`server::Limits::threads`).
pub(crate) type Bound = (Vec<TcpListener>, Vec<std::net::TcpListener>);

/// One redirected connection, in `span`, from its first flight to its close: routed like
/// `CONNECT SNI:port`, then the same tunnel a `CONNECT` gets; plain HTTP goes to the proxy's
/// forwarding. Not an `async fn`: its arguments then live once in the task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments in the task"
)]
pub(crate) fn serve_connection(
    stream: TcpStream,
    ctx: ConnCtx,
    header_timeout: Duration,
    span: tracing::Span,
) -> impl Future<Output = ()> {
    async move {
        let guard = ctx.guard().clone();
        // Boxed, and a statement of its own, as on the proxy listener: nothing of the routing
        // is held while the tunnel idles.
        let routed = Box::pin(route(stream, &ctx, header_timeout).instrument(span));
        if let Some(Some((mut tunnel, mut client))) = guard.until_cancelled(routed).await {
            // No span while it idles: its close makes the connection's span again to log in.
            tunnel.serve(&mut client, None).await;
        }
    }
}

/// Why a redirected connection was closed before it was routed.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no original destination (SO_ORIGINAL_DST); only iptables REDIRECT should reach this listener")]
    NoOriginalDst(#[source] std::io::Error),
    #[error(
        "not redirected: the client connected to the transparent listener itself; only iptables REDIRECT should reach it"
    )]
    NotRedirected,
    #[error(transparent)]
    Proxy(ProxyError),
    #[error("first flight: {}", .0.as_str())]
    FirstFlight(Rejection),
    #[error("no SNI or not TLS, and [transparent] no_sni = \"refuse\"")]
    NoName,
}

impl Refused {
    /// The `outcome` label.
    fn outcome(&self) -> Outcome {
        match self {
            Self::NoOriginalDst(_) | Self::NotRedirected => Outcome::NoOriginalDst,
            Self::Proxy(e) => e.outcome(),
            Self::FirstFlight(r) => Outcome::FirstFlight(r.reason()),
            Self::NoName => Outcome::NoSni,
        }
    }
}

/// Reads the first flight and routes it: the tunnel to run, or `None` when the connection was
/// refused, or served as plain HTTP.
async fn route(mut stream: TcpStream, ctx: &ConnCtx, header_timeout: Duration) -> Option<(Tunnel, Client)> {
    let exchange = Exchange::start(RequestKind::Transparent, ctx.who().clone())
        .with_policy(ctx.runtime().policies.for_client(ctx.who(), None));
    let original = match original_dst::original_dst(&stream) {
        Ok(a) => a,
        Err(e) => return closed(ctx, exchange, None, None, &Refused::NoOriginalDst(e)),
    };
    let exchange = exchange.redirected(original);
    // Not redirected: a client that connected to the listener itself (on 0.0.0.0, at one of
    // this host's addresses) has its own address as the "original" destination. It would be
    // an open proxy that skips [proxy] auth, and a loop.
    if stream.local_addr().is_ok_and(|local| local == original) {
        return closed(ctx, exchange, None, None, &Refused::NotRedirected);
    }
    let rt = ctx.runtime();
    if rt.connector.is_own(original) {
        let e = ProxyError::LoopToSelf {
            route: NO_ROUTE.into(),
            host: original.to_string(),
            addr: original,
        };
        return closed(ctx, exchange, None, None, &Refused::Proxy(e));
    }
    let mut first = Vec::new();
    let sni = match read_client_hello(&mut stream, &mut first, ctx.client_hello_timeout()).await {
        // ECH (an encrypted ClientHello): the outer SNI is the provider's public name, not
        // the server's, so there is no usable name.
        Ok((_, true)) => None,
        Ok((sni, false)) => sni,
        Err(Rejection::NotTls) if http::sniff(&mut stream, &mut first, header_timeout).await => {
            let at = by_address(original);
            if let Err(e) = rt.check_transparent_http_port(&at) {
                return closed(ctx, exchange, Some(&at), None, &Refused::Proxy(e));
            }
            http::serve(ctx, stream, first, original, header_timeout).await;
            return None;
        }
        Err(Rejection::NotTls) => None,
        Err(r) => return closed(ctx, exchange, None, None, &Refused::FirstFlight(r)),
    };
    let target = match target(rt, sni.as_deref(), original) {
        Ok(t) => t,
        Err(r) => return closed(ctx, exchange, None, None, &r),
    };
    let (route, connected) = proxy::connect_for(ctx, &exchange, &target).await;
    let (upstream_stream, upstream) = match connected {
        Ok(c) => c,
        Err(e) => return closed(ctx, exchange, Some(&target), Some(&route), &Refused::Proxy(e)),
    };
    exchange.answered(ctx.guard().metrics(), &route, &upstream);
    let method = if first.first() == Some(&TLS_HANDSHAKE) {
        "TLS"
    } else {
        "TCP"
    };
    let tunnel = Tunnel::redirected(ctx, exchange, method, (target, route), (upstream_stream, upstream), sni);
    // The first flight read so far goes upstream first, as a CONNECT's early bytes do.
    Some((tunnel, Client::Tcp(stream, Bytes::from(first))))
}

/// The SNI name at the original port, or (without one) what `no_sni` says; a port
/// `[proxy] connect_ports` does not list is refused, as a CONNECT to it would be.
fn target(rt: &Runtime, sni: Option<&str>, original: SocketAddr) -> Result<Target, Refused> {
    let target = match sni {
        Some(name) => {
            Target::parse_host_port(name, original.port()).map_err(|e| Refused::Proxy(ProxyError::BadTarget(e)))?
        }
        None => match no_sni(rt) {
            NoSni::Original => by_address(original),
            NoSni::Refuse => return Err(Refused::NoName),
        },
    };
    rt.check_connect_port(&target).map_err(Refused::Proxy)?;
    Ok(target)
}

/// The original destination as a target, routed by the table's IP routes.
fn by_address(original: SocketAddr) -> Target {
    Target {
        host: Host::Ip(original.ip().to_canonical()),
        port: original.port(),
    }
}

fn no_sni(rt: &Runtime) -> NoSni {
    rt.config.transparent.as_ref().map_or(NoSni::Original, |t| t.no_sni)
}

/// Counts and logs a connection closed without being relayed.
fn closed<T>(
    ctx: &ConnCtx,
    exchange: Exchange,
    target: Option<&Target>,
    route: Option<&Route>,
    r: &Refused,
) -> Option<T> {
    let detail = crate::error::chain(r);
    let status = match r {
        Refused::Proxy(e) => e.status().as_u16(),
        _ => 0,
    };
    let how = How::Refused {
        status,
        outcome: r.outcome(),
        detail: &detail,
    };
    (exchange.ended("-", how))
        .target(target)
        .route(route)
        .finish(ctx.guard().metrics());
    None
}

/// TLSPlaintext.type `handshake` (RFC 8446 §5.1): the first byte of a TLS first flight.
const TLS_HANDSHAKE: u8 = 22;
