//! The one connector every outbound TCP connection goes through: resolve once, drop addresses
//! in `deny_destinations` (`walk.rs`), then Happy Eyeballs (RFC 8305) over exactly those
//! addresses (here); `dial.rs` carries out a route's plan with them.
//!
//! Never re-resolving between the check and the connect is the defence against DNS rebinding.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::backoff::{Backoffs, Cause};
use super::deny::DenyList;
use super::detect::Detection;
use super::dns::{Answer, Resolvers};
use super::eyeballs::{Race, race};
use crate::error::{ProxyError, Unreachable};
use crate::metrics::Metrics;
use crate::routes::Route;
use crate::target::Target;

/// How an upstream connection was reached (for the canonical log line). Made in `upstream`
/// only; the rest of the crate reads it.
#[derive(Debug, Clone)]
pub struct Upstream {
    addr: SocketAddr,
    /// The resolver asked, when a name was resolved.
    resolver: Option<Arc<str>>,
    dns_time: Duration,
    connect_time: Duration,
    /// Boxed: most connections have none of it, and an idle tunnel holds its `Upstream`.
    rare: Option<Box<Rare>>,
}

/// What only some upstream connections have.
#[derive(Debug, Clone, Default)]
struct Rare {
    /// The CNAME that re-planned the lookup (`on_cname`), if one did.
    detected: Option<Arc<str>>,
    /// The parent proxy (`via`, its `host:port`) that carried the connection; `addr` is then
    /// the parent's address.
    parent: Option<Arc<str>>,
    /// What the parent was asked for in its CONNECT.
    asked: Option<String>,
}

impl Upstream {
    /// A connection to one of a route's fixed addresses: nothing was resolved.
    pub(super) fn fixed_at(addr: SocketAddr, connect_time: Duration) -> Self {
        Self {
            addr,
            resolver: None,
            dns_time: Duration::ZERO,
            connect_time,
            rare: None,
        }
    }

    /// Nothing resolved or connected yet (a parent in name mode resolves the target).
    pub(super) fn unresolved() -> Self {
        Self::fixed_at(SocketAddr::from(([0, 0, 0, 0], 0)), Duration::ZERO)
    }

    /// `addr` answered `resolver` (or the `on_cname` rule's, with the CNAME `detected`).
    pub(super) fn resolved(
        addr: SocketAddr,
        resolver: Option<Arc<str>>,
        detected: Option<Arc<str>>,
        dns_time: Duration,
    ) -> Self {
        Self {
            resolver,
            dns_time,
            rare: detected.map(|detected| {
                Box::new(Rare {
                    detected: Some(detected),
                    ..Rare::default()
                })
            }),
            ..Self::fixed_at(addr, Duration::ZERO)
        }
    }

    /// This connection, carried by `parent` (at `addr`, connected after `took`): `asked` is
    /// what its CONNECT asked for (`None` for plain HTTP, which asks nothing).
    pub(super) fn through_parent(
        self,
        parent: Arc<str>,
        addr: SocketAddr,
        took: Duration,
        asked: Option<String>,
    ) -> Self {
        let mut rare = self.rare.unwrap_or_default();
        rare.parent = Some(parent);
        rare.asked = asked;
        Self {
            addr,
            connect_time: self.connect_time + took,
            rare: Some(rare),
            ..self
        }
    }

    /// The same, `took` to connect.
    pub(super) fn connected_in(self, took: Duration) -> Self {
        Self {
            connect_time: took,
            ..self
        }
    }

    /// The address connected to (a parent's, when one carried the connection).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn resolver(&self) -> Option<&str> {
        self.resolver.as_deref()
    }

    /// Time spent resolving, and connecting.
    pub fn setup_time(&self) -> (Duration, Duration) {
        (self.dns_time, self.connect_time)
    }

    pub fn detected(&self) -> Option<&str> {
        self.rare.as_ref()?.detected.as_deref()
    }

    pub fn parent(&self) -> Option<&str> {
        self.rare.as_ref()?.parent.as_deref()
    }

    pub fn asked(&self) -> Option<&str> {
        self.rare.as_ref()?.asked.as_deref()
    }
}

/// The addresses one name resolved to, after the deny filter.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    pub addrs: Vec<SocketAddr>,
    pub answer: Option<Answer>,
    /// Resolved addresses dropped by `deny_destinations`.
    pub denied: Vec<IpAddr>,
    /// The CNAME chain reached an `on_cname` pattern: the addresses are the rule resolver's.
    pub detected: Option<Detection>,
}

/// Resolves and connects for every route.
pub struct Connector {
    resolvers: Arc<Resolvers>,
    metrics: Arc<Metrics>,
    deny: DenyList,
    timeout: Duration,
    /// `[transparent] mark`: SO_MARK on every outbound socket.
    mark: Option<u32>,
    /// `[proxy] tcp_keepalive` for outbound sockets, which their users set (see
    /// [`Connector::keepalive`]).
    keepalive: Option<Duration>,
    /// `[proxy] address_backoff`: addresses that timed out or refused, tried last for a while.
    backoffs: Backoffs,
}

impl Connector {
    pub fn new(resolvers: Arc<Resolvers>, metrics: Arc<Metrics>, deny: Vec<IpNet>, timeout: Duration) -> Self {
        Self {
            resolvers,
            metrics,
            deny: DenyList::new(deny, vec![]),
            timeout,
            mark: None,
            keepalive: None,
            backoffs: Backoffs::new(crate::config::DEFAULT_ADDRESS_BACKOFF),
        }
    }

    /// Sets `address_backoff` (zero: off); a new connector starts with no address in backoff.
    pub fn with_backoff(self, period: Duration) -> Self {
        Self {
            backoffs: Backoffs::new(period),
            ..self
        }
    }

    /// The addresses in backoff (`/readyz?verbose`, `explain`).
    pub fn backoffs(&self) -> &Backoffs {
        &self.backoffs
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The proxy's own listeners: never connected to, whatever the route.
    pub fn with_own(self, own: Vec<SocketAddr>) -> Self {
        Self {
            deny: self.deny.with_own(own),
            ..self
        }
    }

    /// Marks every outbound socket with `SO_MARK` (`[transparent] mark`), so capture rules
    /// can let splitway's own connections through.
    pub fn with_mark(self, mark: Option<u32>) -> Self {
        Self { mark, ..self }
    }

    /// TCP keepalive after `idle` for outbound sockets (`[proxy] tcp_keepalive`).
    pub fn with_keepalive(self, keepalive: Option<Duration>) -> Self {
        Self { keepalive, ..self }
    }

    /// `[proxy] tcp_keepalive`, which a connection's user sets on it: connecting does not,
    /// so a tunnel shorter than a second costs no `setsockopt` for it (`proxy::pipe`).
    pub(crate) fn keepalive(&self) -> Option<Duration> {
        self.keepalive
    }

    /// `connect_timeout`: the budget for resolving and connecting.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn resolvers(&self) -> &Arc<Resolvers> {
        &self.resolvers
    }

    /// Whether `addr` is one of the proxy's own listeners.
    pub(crate) fn is_own(&self, addr: SocketAddr) -> bool {
        self.deny.is_own(addr)
    }

    /// Whether `deny_destinations` covers `ip`, or the IPv4 address it embeds (see
    /// `DenyList::covers`).
    pub fn is_denied(&self, ip: IpAddr) -> bool {
        self.deny.covers(ip)
    }

    pub(super) async fn attempt(
        &self,
        route: &Route,
        target: &Target,
        addrs: &[SocketAddr],
        deadline: Instant,
    ) -> Result<(TcpStream, SocketAddr), ProxyError> {
        // Even a route's explicit `addresses` never lead back into the proxy (that would loop)
        // nor to an unspecified address (this host itself).
        let (own, addrs): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| self.deny.is_own(**a));
        if addrs.is_empty() && !own.is_empty() {
            return Err(ProxyError::LoopToSelf {
                route: route.name.to_string(),
                host: target.to_string(),
                addr: own[0],
            });
        }
        let (nowhere, addrs): (Vec<SocketAddr>, Vec<SocketAddr>) =
            addrs.into_iter().partition(|a| super::deny::unspecified(a.ip()));
        if addrs.is_empty() && !nowhere.is_empty() {
            return Err(ProxyError::UnspecifiedDestination {
                route: route.name.to_string(),
                host: target.to_string(),
                addrs: nowhere.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                fix: "give the route's `addresses` the destination's own addresses",
            });
        }
        let addrs = self.backoffs.order(&addrs);
        let mark = self.mark;
        // TCP keepalive is left to the user of the connection (`keepalive`): a tunnel sets it
        // once it has lasted a while, the forwarding pool at once.
        let connect = move |addr: SocketAddr| super::socket::connect(addr, mark);
        let failures = match race(&addrs, deadline, connect).await {
            Race::Won { stream, addr, slow } => {
                self.backoffs.succeeded(addr);
                for a in slow {
                    self.back_off(route, a, Cause::TimedOut);
                }
                return Ok((stream, addr));
            }
            Race::Lost(failures) => failures,
            Race::TimedOut { unanswered } => {
                for a in unanswered {
                    self.back_off(route, a, Cause::TimedOut);
                }
                return Err(ProxyError::ConnectTimeout {
                    route: route.name.to_string(),
                    host: target.to_string(),
                    after: self.timeout,
                });
            }
        };
        for (addr, e) in &failures {
            match e.kind() {
                io::ErrorKind::ConnectionRefused => self.back_off(route, *addr, Cause::Refused),
                io::ErrorKind::TimedOut => self.back_off(route, *addr, Cause::TimedOut),
                _ => {}
            }
        }
        // No socket to be had is the proxy's fault at its open-file limit, not the route's.
        if failures.iter().any(|(_, e)| crate::error::out_of_descriptors(e)) {
            return Err(ProxyError::OutOfDescriptors);
        }
        let refused = failures
            .iter()
            .find(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused);
        Err(match refused {
            Some((addr, _)) => ProxyError::ConnectionRefused {
                route: route.name.to_string(),
                host: target.to_string(),
                addr: *addr,
            },
            None => ProxyError::Unreachable {
                route: route.name.to_string(),
                host: target.to_string(),
                cause: Unreachable::Attempts(failures.into()),
            },
        })
    }
}

impl Connector {
    /// RFC 8305 §4: `addr` is tried after the others for `address_backoff`; counted when it
    /// was not in backoff already.
    fn back_off(&self, route: &Route, addr: SocketAddr, cause: Cause) {
        if self.backoffs.failed(addr, &route.name, cause) {
            self.metrics.upstream_backoff(&route.name);
            tracing::info!(route = %route.name, %addr, %cause, backoff = ?self.backoffs.period(), "upstream address in backoff");
        }
    }
}
