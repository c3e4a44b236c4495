//! One name resolved through a route's resolver, and custom domain detection (`on_cname`):
//! when the answer's CNAME chain reaches a name matching a rule's pattern (an API Gateway
//! domain name `d-*.execute-api.REGION.amazonaws.com`), the host is resolved again through the
//! rule's resolver, and that answer is the one connected to (after `deny_destinations`).
//!
//! Both answers come from their resolvers' caches with their own TTLs, so once a host is
//! known, detection costs two cache hits and no query.

use std::sync::Arc;

use tokio::time::{Instant, timeout_at};

use super::connect::Connector;
use super::dns::{Answer, DnsError, Source};
use crate::error::ProxyError;
use crate::routes::{CnameRule, Route};

/// The CNAME chain reached a rule's pattern: `cname` is the name that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub cname: Arc<str>,
    pub resolver: Arc<str>,
}

/// A name's answer, and the detection that re-planned it.
pub(super) struct Resolved {
    pub(super) answer: Answer,
    pub(super) source: Source,
    pub(super) detected: Option<Detection>,
}

/// The first rule (in order) whose pattern some CNAME of the chain matches, with that CNAME.
/// A rule that names the resolver that already answered changes nothing.
pub(crate) fn detect(rules: &[CnameRule], resolver: &str, answer: &Answer) -> Option<Detection> {
    rules.iter().filter(|r| &*r.resolver != resolver).find_map(|rule| {
        answer
            .cnames
            .iter()
            .find(|c| rule.pattern.matches(c))
            .map(|c| Detection {
                cname: c.as_str().into(),
                resolver: rule.resolver.clone(),
            })
    })
}

impl Connector {
    /// Resolves `name` through `resolver` within `deadline`, then re-plans it through an
    /// `on_cname` rule's resolver when its chain matches one.
    pub(super) async fn resolve_name(
        &self,
        route: &Route,
        resolver: &Arc<str>,
        on_cname: &[CnameRule],
        name: &str,
        deadline: Instant,
    ) -> Result<Resolved, ProxyError> {
        let (answer, source) = self.lookup(route, resolver, name, deadline).await?;
        let Some(detected) = detect(on_cname, resolver, &answer) else {
            return Ok(Resolved {
                answer,
                source,
                detected: None,
            });
        };
        let (answer, source) = self.lookup(route, &detected.resolver, name, deadline).await?;
        Ok(Resolved {
            answer,
            source,
            detected: Some(detected),
        })
    }

    /// One lookup, its failure turned into the route's `ProxyError`.
    async fn lookup(
        &self,
        route: &Route,
        resolver: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<(Answer, Source), ProxyError> {
        let dns_err = |reason: String| ProxyError::Dns {
            route: route.name.to_string(),
            host: name.to_owned(),
            resolver: resolver.to_owned(),
            reason,
        };
        // Config validation checks that every resolver a route names exists.
        let Some(upstream) = self.resolvers().get(resolver) else {
            return Err(dns_err("no such resolver".into()));
        };
        let timed_out = || ProxyError::DnsTimeout {
            route: route.name.to_string(),
            host: name.to_owned(),
            resolver: resolver.to_owned(),
            after: upstream.timeout().min(self.timeout()),
        };
        let (result, source) = timeout_at(deadline, upstream.resolve(name))
            .await
            .map_err(|_| timed_out())?;
        match result {
            Ok(a) => Ok((a, source)),
            Err(DnsError::Timeout) => Err(timed_out()),
            Err(e) => Err(dns_err(e.to_string())),
        }
    }
}
