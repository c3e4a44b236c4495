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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::NoSni;
use crate::conn::ConnGuard;
use crate::error::ProxyError;
use crate::metrics::{Outcome, RequestKind, TunnelEnd};
use crate::outcome::{self, Ended, How};
use crate::proxy::pipe::{self, Activity, PipeEnd};
use crate::proxy::tunnel::{Rejection, read_client_hello};
use crate::proxy::{self, NO_ROUTE};
use crate::routes::Route;
use crate::runtime::{Current, Runtime};
use crate::server::Shared;
use crate::upstream::connect::Upstream;
use crate::upstream::deny::DenyList;
use crate::upstream::target::{Host, Target};
use tracing::Instrument;

/// How long an accept loop pauses after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Binds `listen`; on `127.0.0.1`, also `[::1]` on the same port (where ip6tables `REDIRECT`
/// sends IPv6), when the host has IPv6 loopback.
pub(crate) async fn bind(listen: SocketAddr) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = vec![TcpListener::bind(listen).await?];
    if listen.ip() == std::net::Ipv4Addr::LOCALHOST {
        // The port bound above: the same as `listen`'s unless that was 0.
        let port = listeners[0].local_addr()?.port();
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        match TcpListener::bind(v6).await {
            Ok(l) => listeners.push(l),
            Err(e) => tracing::debug!(addr = %v6, error = %e, "no IPv6 transparent listener"),
        }
    }
    Ok(listeners)
}

/// Accepts on every listener until the returned set is dropped or aborted; each connection
/// is tracked like a proxy connection (connection limit, drain).
pub(crate) fn serve(listeners: Vec<TcpListener>, shared: Arc<Shared>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for listener in listeners {
        let shared = shared.clone();
        set.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, client)) => accept(&shared, stream, client),
                    Err(e) => {
                        // EMFILE leaves the connection in the backlog: do not spin on it.
                        tracing::warn!(error = %e, "transparent accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            }
        });
    }
    set
}

fn accept(shared: &Arc<Shared>, stream: TcpStream, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(guard) = crate::server::admit(shared) else {
        return;
    };
    let conn = Conn {
        client,
        runtime: shared.runtime(),
        current: shared.current().clone(),
        guard: guard.clone(),
        own: DenyList::new(vec![], shared.own().to_vec()),
        hello_timeout: shared.limits().client_hello_timeout,
        header_timeout: shared.limits().header_read_timeout,
        draining: shared.draining().clone(),
        started: Instant::now(),
    };
    let span = tracing::info_span!("conn", client = %client, listener = "transparent");
    let task = async move {
        let guard = conn.guard.clone();
        guard.until_cancelled(conn.run(stream)).await;
    };
    guard.spawn("transparent", task.instrument(span));
}

/// One redirected connection.
struct Conn {
    client: SocketAddr,
    /// The runtime the connection was accepted on (a TLS or TCP relay keeps it).
    runtime: Arc<Runtime>,
    /// Where each plain-HTTP request reads its runtime (reloads replace it).
    current: Arc<Current>,
    guard: Arc<ConnGuard>,
    own: DenyList,
    hello_timeout: Duration,
    header_timeout: Duration,
    /// Cancelled when the proxy starts draining (plain-HTTP answers then close the connection).
    draining: tokio_util::sync::CancellationToken,
    started: Instant,
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

impl Conn {
    async fn run(self, mut stream: TcpStream) {
        let original = match original_dst::original_dst(&stream) {
            Ok(a) => a,
            Err(e) => return self.refused(None, None, None, &Refused::NoOriginalDst(e)),
        };
        // Not redirected: a client that connected to the listener itself (on 0.0.0.0, at one
        // of this host's addresses) has its own address as the "original" destination. It
        // would be an open proxy that skips [proxy] auth, and a loop.
        if stream.local_addr().is_ok_and(|local| local == original) {
            return self.refused(Some(original), None, None, &Refused::NotRedirected);
        }
        if self.own.is_own(original) {
            let e = ProxyError::LoopToSelf {
                route: NO_ROUTE.into(),
                host: original.to_string(),
                addr: original,
            };
            return self.refused(Some(original), None, None, &Refused::Proxy(e));
        }
        let mut first = Vec::new();
        let sni = match read_client_hello(&mut stream, &mut first, self.hello_timeout).await {
            // ECH (an encrypted ClientHello): the outer SNI is the provider's public name, not
            // the server's, so there is no usable name.
            Ok((_, true)) => None,
            Ok((sni, false)) => sni,
            Err(Rejection::NotTls) if http::sniff(&mut stream, &mut first, self.header_timeout).await => {
                let at = Target {
                    host: Host::Ip(original.ip().to_canonical()),
                    port: original.port(),
                };
                if let Err(e) = self.runtime.check_transparent_http_port(&at) {
                    return self.refused(Some(original), Some(&at), None, &Refused::Proxy(e));
                }
                return http::serve(self, stream, first, original).await;
            }
            Err(Rejection::NotTls) => None,
            Err(r) => return self.refused(Some(original), None, None, &Refused::FirstFlight(r)),
        };
        let target = match self.target(sni.as_deref(), original) {
            Ok(t) => t,
            Err(r) => return self.refused(Some(original), None, None, &r),
        };
        let (route, connected) = proxy::connect_for(&self.runtime, &target).await;
        let (upstream_stream, upstream) = match connected {
            Ok(c) => c,
            Err(e) => return self.refused(Some(original), Some(&target), Some(&route), &Refused::Proxy(e)),
        };
        let method = if first.first() == Some(&TLS_HANDSHAKE) {
            "TLS"
        } else {
            "TCP"
        };
        let r = Relayed {
            original,
            target,
            route,
            upstream,
            sni,
            method,
        };
        self.relay(stream, upstream_stream, first, r).await;
    }

    /// The SNI name at the original port, or (without one) what `no_sni` says; a port
    /// `[proxy] connect_ports` does not list is refused, as a CONNECT to it would be.
    fn target(&self, sni: Option<&str>, original: SocketAddr) -> Result<Target, Refused> {
        let target = match sni {
            Some(name) => {
                Target::parse_host_port(name, original.port()).map_err(|e| Refused::Proxy(ProxyError::BadTarget(e)))?
            }
            None => self.by_address(original)?,
        };
        self.runtime.check_connect_port(&target).map_err(Refused::Proxy)?;
        Ok(target)
    }

    /// `no_sni = "original"`: the original destination, routed by the table's IP routes.
    fn by_address(&self, original: SocketAddr) -> Result<Target, Refused> {
        match self.no_sni() {
            NoSni::Original => Ok(Target {
                host: Host::Ip(original.ip().to_canonical()),
                port: original.port(),
            }),
            NoSni::Refuse => Err(Refused::NoName),
        }
    }

    fn no_sni(&self) -> NoSni {
        self.runtime
            .config
            .transparent
            .as_ref()
            .map_or(NoSni::Original, |t| t.no_sni)
    }

    async fn relay(self, mut client: TcpStream, mut upstream: TcpStream, first: Vec<u8>, r: Relayed) {
        let metrics = self.guard.metrics();
        let name = &r.route.name;
        outcome::answered(metrics, RequestKind::Transparent, &r.route, &r.upstream);
        metrics.tunnel_opened(name);
        let activity = Activity::default();
        activity
            .client_to_upstream
            .fetch_add(first.len() as u64, Ordering::Relaxed);
        let end = if upstream.write_all(&first).await.is_err() {
            PipeEnd::Error(std::io::ErrorKind::BrokenPipe)
        } else {
            drop(first);
            let idle = self.runtime.config.proxy.idle_timeout;
            pipe::run(&mut client, &mut upstream, idle, &activity).await
        };
        let end = match end {
            PipeEnd::Closed => TunnelEnd::Closed,
            PipeEnd::Idle => TunnelEnd::Idle,
            PipeEnd::Error(_) => TunnelEnd::Error,
        };
        let (up, down) = (
            activity.client_to_upstream.load(Ordering::Relaxed),
            activity.upstream_to_client.load(Ordering::Relaxed),
        );
        Ended {
            original: Some(r.original),
            target: Some(&r.target),
            route: Some(&r.route),
            upstream: Some(&r.upstream),
            sni: r.sni.as_deref(),
            took: self.started.elapsed(),
            ..Ended::new(
                RequestKind::Transparent,
                self.client,
                r.method,
                How::Tunnel {
                    end,
                    rejected: None,
                    up,
                    down,
                },
            )
        }
        .finish(metrics);
    }

    /// Counts and logs a connection closed without being relayed.
    fn refused(&self, original: Option<SocketAddr>, target: Option<&Target>, route: Option<&Route>, r: &Refused) {
        let detail = crate::error::chain(r);
        let status = match r {
            Refused::Proxy(e) => e.status().as_u16(),
            _ => 0,
        };
        Ended {
            original,
            target,
            route,
            took: self.started.elapsed(),
            ..Ended::new(
                RequestKind::Transparent,
                self.client,
                "-",
                How::Refused {
                    status,
                    outcome: r.outcome(),
                    detail: &detail,
                },
            )
        }
        .finish(self.guard.metrics());
    }
}

/// What a relayed connection was routed by and to.
struct Relayed {
    original: SocketAddr,
    target: Target,
    route: Arc<Route>,
    upstream: Upstream,
    sni: Option<String>,
    /// `TLS`, or `TCP` for a first flight that is not TLS (routed by its address).
    method: &'static str,
}

/// TLSPlaintext.type `handshake` (RFC 8446 §5.1): the first byte of a TLS first flight.
const TLS_HANDSHAKE: u8 = 22;
