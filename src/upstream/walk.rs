//! A plan's names located: the one place a name is resolved through a route's resolver (with
//! custom domain detection, `on_cname`), filtered by `deny_destinations` and ordered, and the
//! one walk over a plan's names that connecting, parents, report mode, `explain` and the probes
//! all follow.
//!
//! The walk's rule, for every consumer: names are resolved one at a time, in the plan's order
//! of preference, when the walk reaches them; a name whose every address is in
//! `address_backoff` waits until the other names have been tried (RFC 8305 §4 across the
//! preference list: a dark zone's zonal endpoint name goes after the regional one); a failure —
//! the name's lookup, or the consumer's use of it ([`Walk::failed`]) — moves on to the next
//! name while the deadline lasts; the walk ends at the name its consumer keeps, when the
//! deadline has passed, or when no name is left, and then the last failure is its answer.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::connect::{Candidates, Connector};
use super::detect::{Detection, detect};
use super::dns::{Answer, DnsError};
use super::eyeballs::interleave;
use crate::error::ProxyError;
use crate::routes::{CnameRule, Route};
use crate::target::{Host, Target};

/// One name of a plan, located: its candidates and how long finding them took.
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) candidates: Candidates,
    pub(crate) dns_time: Duration,
}

/// What the walk found for one name it reached (kept when [`Walk::recording`]).
#[derive(Debug)]
pub(crate) struct Reached {
    pub(crate) host: Host,
    pub(crate) result: Result<Candidates, ProxyError>,
}

/// A walk over a plan's names (see the module's rule).
pub(crate) struct Walk<'a> {
    connector: &'a Connector,
    route: &'a Route,
    resolver: &'a Arc<str>,
    on_cname: &'a [CnameRule],
    names: std::slice::Iter<'a, (Host, u16)>,
    deadline: Instant,
    /// Names whose every address is in backoff, for after the others.
    deferred: VecDeque<Located>,
    last: Option<ProxyError>,
    reached: Option<Vec<Reached>>,
}

impl<'a> Walk<'a> {
    /// A walk over `names`, resolved through `resolver` (and `on_cname`), by `deadline`.
    pub(crate) fn new(
        connector: &'a Connector,
        route: &'a Route,
        resolver: &'a Arc<str>,
        on_cname: &'a [CnameRule],
        names: &'a [(Host, u16)],
        deadline: Instant,
    ) -> Self {
        Self {
            connector,
            route,
            resolver,
            on_cname,
            names: names.iter(),
            deadline,
            deferred: VecDeque::new(),
            last: None,
            reached: None,
        }
    }

    /// Keeps what every name reached resolved to (`explain` shows them all).
    pub(crate) fn recording(self) -> Self {
        Self {
            reached: Some(Vec::new()),
            ..self
        }
    }

    /// The next name to use, or `None` when the walk is over (then [`Walk::failure`] says why).
    pub(crate) async fn next(&mut self) -> Option<Located> {
        loop {
            if Instant::now() >= self.deadline {
                self.deferred.clear();
                return None;
            }
            let Some((host, port)) = self.names.next() else {
                return self.deferred.pop_front();
            };
            let started = Instant::now();
            let candidates = match self.locate(host, *port).await {
                Ok(c) => c,
                Err(e) => {
                    self.last = Some(e);
                    continue;
                }
            };
            let located = Located {
                candidates,
                dns_time: started.elapsed(),
            };
            let backoffs = self.connector.backoffs();
            let dark = located.candidates.addrs.iter().all(|a| backoffs.contains(*a));
            if dark && self.names.len() > 0 {
                self.deferred.push_back(located);
                continue;
            }
            return Some(located);
        }
    }

    /// Using the name [`Walk::next`] gave failed with `e`: the walk goes on to the next name.
    pub(crate) fn failed(&mut self, e: ProxyError) {
        self.last = Some(e);
    }

    /// Resolves the names the walk has not reached, for [`Walk::reached`] only.
    pub(crate) async fn rest(&mut self) {
        while let Some((host, port)) = self.names.next() {
            let _ = self.locate(host, *port).await;
        }
    }

    /// One name located, and kept when recording.
    async fn locate(&mut self, host: &Host, port: u16) -> Result<Candidates, ProxyError> {
        let found = (self.connector)
            .candidates(self.route, self.resolver, self.on_cname, host, port, self.deadline)
            .await;
        if let Some(reached) = &mut self.reached {
            reached.push(Reached {
                host: host.clone(),
                result: found.clone(),
            });
        }
        found
    }

    /// What every name reached resolved to, in order (when [`Walk::recording`]).
    pub(crate) fn reached(&self) -> &[Reached] {
        self.reached.as_deref().unwrap_or_default()
    }

    /// Why the walk found nothing: its last failure, or (for a plan without names) the route's
    /// refusal of `target`.
    pub(crate) fn failure(self, target: &Target) -> ProxyError {
        self.last.unwrap_or_else(|| ProxyError::Denied {
            route: self.route.name.to_string(),
            host: target.host.to_string(),
        })
    }
}

impl Connector {
    /// Resolves one name (IP literals are never looked up) and filters `deny_destinations`:
    /// the one place a name's addresses are found.
    async fn candidates(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        host: &Host,
        port: u16,
        deadline: Instant,
    ) -> Result<Candidates, ProxyError> {
        let (resolved, answer, detected) = match host {
            Host::Ip(ip) => (vec![*ip], None, None),
            Host::Name(name) => {
                let (answer, detected) = self.resolve_name(route, resolver, on_cname, name, deadline).await?;
                (answer.addrs.to_vec(), Some(answer), detected)
            }
        };
        let (denied, allowed): (Vec<IpAddr>, Vec<IpAddr>) = resolved.into_iter().partition(|ip| self.is_denied(*ip));
        if allowed.is_empty() {
            let addrs = denied.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let (route, host_name) = (route.name.to_string(), host.to_string());
            if denied.is_empty() || !denied.iter().all(|ip| super::deny::unspecified(*ip)) {
                return Err(ProxyError::DestinationProhibited {
                    route,
                    host: host_name,
                    addrs,
                });
            }
            let fix = match host {
                Host::Ip(_) => "ask for the destination by its own address or name",
                Host::Name(_) => "correct the name's DNS records",
            };
            return Err(ProxyError::UnspecifiedDestination {
                route,
                host: host_name,
                addrs,
                fix,
            });
        }
        Ok(Candidates {
            addrs: interleave(allowed, port),
            answer,
            denied,
            detected,
        })
    }

    /// Resolves `name` through `resolver` within `deadline`, then re-plans it through an
    /// `on_cname` rule's resolver when its chain matches one: both answers come from their
    /// resolvers' caches with their own TTLs, so a known host costs two cache hits.
    async fn resolve_name(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        name: &str,
        deadline: Instant,
    ) -> Result<(Answer, Option<Detection>), ProxyError> {
        let answer = self.lookup(route, resolver, name, deadline).await?;
        let Some(detected) = detect(on_cname, resolver, &answer) else {
            return Ok((answer, None));
        };
        let answer = self.lookup(route, &detected.resolver, name, deadline).await?;
        Ok((answer, Some(detected)))
    }

    /// One lookup, its failure turned into the route's `ProxyError`.
    async fn lookup(&self, route: &Route, resolver: &str, name: &str, deadline: Instant) -> Result<Answer, ProxyError> {
        let dns_err = |cause: DnsError| ProxyError::Dns {
            route: route.name.to_string(),
            host: name.to_owned(),
            resolver: resolver.to_owned(),
            cause,
        };
        // Config validation checks that every resolver a route names exists.
        let Some(upstream) = self.resolvers().get(resolver) else {
            return Err(dns_err(DnsError::NoSuchResolver));
        };
        let timed_out = || ProxyError::DnsTimeout {
            route: route.name.to_string(),
            host: name.to_owned(),
            resolver: resolver.to_owned(),
            after: upstream.timeout().min(self.timeout()),
        };
        let (result, _) = timeout_at(deadline, upstream.resolve(name))
            .await
            .map_err(|_| timed_out())?;
        match result {
            Ok(a) => Ok(a),
            Err(DnsError::Timeout) => Err(timed_out()),
            Err(e) => Err(dns_err(e)),
        }
    }
}
