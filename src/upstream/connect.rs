//! The one connector every outbound TCP connection goes through: resolve once, drop addresses
//! in `deny_destinations`, then Happy Eyeballs (RFC 8305) over exactly those addresses.
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
use super::dns::{Answer, Resolvers, Source};
use super::eyeballs::{Race, interleave, race};
use super::plan::Plan;
use crate::config::Via;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::routes::{CnameRule, Route};
use crate::target::{Host, Target};

/// How an upstream connection was reached (for the canonical log line).
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// The resolver asked, when a name was resolved.
    pub resolver: Option<Arc<str>>,
    pub dns_source: Option<Source>,
    pub dns_time: Duration,
    pub connect_time: Duration,
    /// The CNAME that re-planned the lookup (`on_cname`), if one did.
    pub detected: Option<Arc<str>>,
    /// The parent proxy (`via`, its `host:port`) that carried the connection; `addr` is then
    /// the parent's address.
    pub parent: Option<Arc<str>>,
    /// What the parent was asked for in its CONNECT.
    pub asked: Option<String>,
}

impl Upstream {
    /// A connection to one of a route's fixed addresses: nothing was resolved.
    pub(super) fn fixed_at(addr: SocketAddr, connect_time: Duration) -> Self {
        Self {
            addr,
            resolver: None,
            dns_source: None,
            dns_time: Duration::ZERO,
            connect_time,
            detected: None,
            parent: None,
            asked: None,
        }
    }

    /// Nothing resolved or connected yet (a parent in name mode resolves the target).
    pub(super) fn unresolved() -> Self {
        Self::fixed_at(SocketAddr::from(([0, 0, 0, 0], 0)), Duration::ZERO)
    }
}

/// The addresses one name resolved to, after the deny filter.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub addrs: Vec<SocketAddr>,
    pub answer: Option<Answer>,
    pub source: Option<Source>,
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

    /// `connect_timeout`: the budget for resolving and connecting.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn resolvers(&self) -> &Arc<Resolvers> {
        &self.resolvers
    }

    /// Connects for `target` along `route` within `connect_timeout`, following the route's
    /// [`Plan`].
    pub async fn connect(&self, route: &Route, target: &Target) -> Result<(TcpStream, Upstream), ProxyError> {
        let deadline = Instant::now() + self.timeout;
        match route.plan(target) {
            Plan::Deny => Err(denied(route, target)),
            Plan::Fixed(addrs) => {
                let started = Instant::now();
                let (stream, addr) = self.attempt(route, target, &addrs, deadline).await?;
                Ok((stream, Upstream::fixed_at(addr, started.elapsed())))
            }
            Plan::Resolve {
                resolver,
                names,
                on_cname,
                ..
            } => {
                self.resolve_and_connect(route, target, &resolver, &on_cname, &names, deadline)
                    .await
            }
            Plan::Parent { via, ask } => super::parent::connect(self, route, target, &via, &ask, deadline).await,
        }
    }

    /// Connects for a plain-HTTP request: like [`Connector::connect`], except that on a
    /// route with `via` the connection is to the parent itself (the request then goes to it
    /// in absolute-form). Returns the route's parents when it is such a connection.
    pub async fn connect_http(
        &self,
        route: &Route,
        target: &Target,
    ) -> Result<(TcpStream, Upstream, Option<Arc<Via>>), ProxyError> {
        match route.plan(target) {
            Plan::Parent { via, .. } => {
                let (stream, upstream) = super::parent::dial_first(self, route, &via).await?;
                Ok((stream, upstream, Some(via)))
            }
            _ => self.connect(route, target).await.map(|(s, u)| (s, u, None)),
        }
    }

    /// `connect` names are tried in order of preference: the first that resolves and accepts
    /// the connection wins; the last failure is the one reported. A name whose every address
    /// is in `address_backoff` goes after the others (RFC 8305 §4 across the preference list:
    /// a dark zone's zonal endpoint name is tried after the regional one).
    async fn resolve_and_connect(
        &self,
        route: &Route,
        target: &Target,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        names: &[(Host, u16)],
        deadline: Instant,
    ) -> Result<(TcpStream, Upstream), ProxyError> {
        let mut last = None;
        let mut deferred = Vec::new();
        for (i, (host, port)) in names.iter().enumerate() {
            let started = Instant::now();
            let c = match self.candidates(route, resolver, on_cname, host, *port, deadline).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let dns_time = started.elapsed();
            if i + 1 < names.len() && c.addrs.iter().all(|a| self.backoffs.contains(*a)) {
                deferred.push((c, dns_time));
                continue;
            }
            match self
                .connect_candidates(route, target, resolver, &c, dns_time, deadline)
                .await
            {
                Ok(ok) => return Ok(ok),
                Err(e @ ProxyError::ConnectTimeout { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        for (c, dns_time) in deferred {
            match self
                .connect_candidates(route, target, resolver, &c, dns_time, deadline)
                .await
            {
                Ok(ok) => return Ok(ok),
                Err(e @ ProxyError::ConnectTimeout { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| denied(route, target)))
    }

    /// Connects to one name's resolved addresses.
    async fn connect_candidates(
        &self,
        route: &Route,
        target: &Target,
        resolver: &Arc<str>,
        c: &Candidates,
        dns_time: Duration,
        deadline: Instant,
    ) -> Result<(TcpStream, Upstream), ProxyError> {
        let connecting = Instant::now();
        let (stream, addr) = self.attempt(route, target, &c.addrs, deadline).await?;
        let upstream = Upstream {
            connect_time: connecting.elapsed(),
            ..self.resolved_upstream(route, resolver, c, addr, dns_time)
        };
        Ok((stream, upstream))
    }

    /// The `Upstream` of a connection to `addr`, one of `c`'s addresses, which `resolver`
    /// answered — or an `on_cname` rule's resolver, when detection re-planned the name (counted
    /// here, once per connection made).
    pub(super) fn resolved_upstream(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        c: &Candidates,
        addr: SocketAddr,
        dns_time: Duration,
    ) -> Upstream {
        let (resolver, detected) = match &c.detected {
            Some(d) => {
                self.metrics.custom_domain_detected(&route.name);
                (d.resolver.clone(), Some(d.cname.clone()))
            }
            None => (resolver.clone(), None),
        };
        Upstream {
            resolver: c.answer.as_ref().map(|_| resolver),
            detected,
            dns_source: c.source,
            dns_time,
            ..Upstream::fixed_at(addr, Duration::ZERO)
        }
    }

    /// Resolves one name (IP literals are never looked up) and filters `deny_destinations`.
    pub async fn candidates(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        host: &Host,
        port: u16,
        deadline: Instant,
    ) -> Result<Candidates, ProxyError> {
        let (resolved, answer, source, detected) = match host {
            Host::Ip(ip) => (vec![*ip], None, None, None),
            Host::Name(name) => {
                let r = self.resolve_name(route, resolver, on_cname, name, deadline).await?;
                (r.answer.addrs.to_vec(), Some(r.answer), Some(r.source), r.detected)
            }
        };
        let (denied, allowed): (Vec<IpAddr>, Vec<IpAddr>) = resolved.into_iter().partition(|ip| self.is_denied(*ip));
        if allowed.is_empty() {
            let addrs = denied.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(ProxyError::DestinationProhibited {
                route: route.name.to_string(),
                host: host.to_string(),
                addrs,
            });
        }
        Ok(Candidates {
            addrs: interleave(allowed, port),
            answer,
            source,
            denied,
            detected,
        })
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
            return Err(ProxyError::DestinationProhibited {
                route: route.name.to_string(),
                host: target.to_string(),
                addrs: nowhere.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            });
        }
        let addrs = self.backoffs.order(&addrs);
        let mark = self.mark;
        let connect = move |addr: SocketAddr| async move {
            let stream = super::socket::connect(addr, mark).await?;
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(stream)
        };
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
                reason: failures
                    .iter()
                    .map(|(a, e)| format!("{a}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
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

pub(super) fn denied(route: &Route, target: &Target) -> ProxyError {
    ProxyError::Denied {
        route: route.name.to_string(),
        host: target.host.to_string(),
    }
}
