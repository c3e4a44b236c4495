//! A route's plan carried out: deny, fixed addresses, names walked (`walk.rs`) and connected
//! to, or a tunnel through parents (`parent.rs`). Everything below it — the walk, the attempt,
//! the parents — is reached from here, so the upstream modules import one way.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::connect::{Connector, Upstream};
use super::plan::{Plan, denied};
use super::walk::{Located, Walk};
use crate::config::Via;
use crate::error::ProxyError;
use crate::routes::{CnameRule, Route};
use crate::target::{Host, Target};

impl Connector {
    /// Connects for `target` along `route` within `connect_timeout`, following the route's
    /// [`Plan`].
    pub async fn connect(&self, route: &Route, target: &Target) -> Result<(TcpStream, Upstream), ProxyError> {
        let deadline = Instant::now() + self.timeout();
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
            // Boxed: a parent's CONNECT exchange is larger than a direct connect's state,
            // which every connection in flight would otherwise hold room for.
            Plan::Parent { via, ask } => {
                Box::pin(super::parent::tunnel_through(self, route, target, &via, &ask, deadline)).await
            }
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

    /// Connects to the first name of the plan's that resolves and accepts the connection,
    /// walking them by the walk's one rule (`walk.rs`); the last failure is the one reported.
    async fn resolve_and_connect(
        &self,
        route: &Route,
        target: &Target,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        names: &[(Host, u16)],
        deadline: Instant,
    ) -> Result<(TcpStream, Upstream), ProxyError> {
        let mut walk = Walk::new(self, route, resolver, on_cname, names, deadline);
        while let Some(found) = walk.next().await {
            match (self.connect_candidates(route, target, resolver, &found, deadline)).await {
                Ok(ok) => return Ok(ok),
                Err(e) => walk.failed(e),
            }
        }
        Err(walk.failure(target))
    }

    /// Connects to one name's resolved addresses.
    async fn connect_candidates(
        &self,
        route: &Route,
        target: &Target,
        resolver: &Arc<str>,
        found: &Located,
        deadline: Instant,
    ) -> Result<(TcpStream, Upstream), ProxyError> {
        let connecting = Instant::now();
        let (stream, addr) = self.attempt(route, target, &found.candidates.addrs, deadline).await?;
        let upstream = self
            .resolved_upstream(route, resolver, found, addr)
            .connected_in(connecting.elapsed());
        Ok((stream, upstream))
    }

    /// The `Upstream` of a connection to `addr`, one of `c`'s addresses, which `resolver`
    /// answered — or an `on_cname` rule's resolver, when detection re-planned the name (counted
    /// here, once per connection made).
    pub(super) fn resolved_upstream(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        found: &Located,
        addr: SocketAddr,
    ) -> Upstream {
        let c = &found.candidates;
        let (resolver, detected) = match &c.detected {
            Some(d) => {
                self.metrics().custom_domain_detected(&route.name);
                (d.resolver.clone(), Some(d.cname.clone()))
            }
            None => (resolver.clone(), None),
        };
        Upstream::resolved(addr, c.answer.as_ref().map(|_| resolver), detected, found.dns_time)
    }
}
