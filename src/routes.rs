//! The route table: a CONNECT or request host to the one route that handles it.
//!
//! Names: exact > longest `*.suffix` > `*`. IP literals: exact > narrowest CIDR > `*`.
//! Without a `*` route the catch-all is [`DEFAULT_ROUTE`] on the system resolver. Lookups
//! allocate nothing: a wildcard lookup is one hash probe per label of the host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{Action, ConfigError, Pattern, RouteSpec, SniMode, Via};
use crate::metrics::RouteSeries;
use crate::target::{Host, embedded_ipv4};

pub(crate) use crate::config::DEFAULT_ROUTE;

/// A route as the proxy uses it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub action: Action,
    pub resolver: Arc<str>,
    pub sni: SniMode,
    /// `via`: the parent proxies its connections go through.
    pub via: Option<Arc<Via>>,
    /// The route's exact host patterns (the names start-up resolution keeps warm).
    pub exact: Vec<String>,
    /// Re-plan through another resolver when the CNAME chain reaches a pattern (`on_cname`).
    pub on_cname: Arc<[CnameRule]>,
    /// Its metric series, held once looked up (a route's tunnels count straight into them).
    pub series: RouteSeries,
}

/// A route's `on_cname` rule as the connector uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnameRule {
    pub pattern: crate::glob::NameGlob,
    pub resolver: Arc<str>,
}

impl Route {
    /// A route that resolves the requested host through `resolver`, as a plain forward proxy
    /// does with `system` (the implicit catch-all, report mode's actual path).
    pub fn resolving(name: &str, resolver: &str) -> Route {
        let name: Arc<str> = name.into();
        Route {
            series: RouteSeries::new(name.clone()),
            name,
            action: Action::Resolve,
            resolver: resolver.into(),
            sni: SniMode::Match,
            via: None,
            exact: vec![],
            on_cname: Arc::new([]),
        }
    }
}

/// Two routes claimed the same pattern.
#[derive(Debug, thiserror::Error)]
#[error("pattern `{pattern}` is claimed by both route `{first}` and route `{route}`; keep it in one")]
pub struct Clash {
    pub pattern: String,
    pub first: String,
    pub route: String,
    pub line: usize,
}

impl Clash {
    /// The clash as an error of the config file it is in.
    pub fn located(self, origin: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line: Some(self.line),
            route: Some(self.route.clone()),
            key: "hosts".into(),
            message: self.to_string(),
        }
    }
}

/// Host → route, most specific wins; file order never matters.
#[derive(Debug)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Arc<Route>>,
    wildcard: HashMap<Box<str>, Arc<Route>>,
    ips: HashMap<IpAddr, Arc<Route>>,
    /// Narrowest prefix first.
    cidrs: Vec<(IpNet, Arc<Route>)>,
    catch_all: Arc<Route>,
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(specs: &[RouteSpec]) -> Result<Self, Clash> {
        let default = Arc::new(Route::resolving(DEFAULT_ROUTE, "system"));
        let mut table = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            ips: HashMap::new(),
            cidrs: Vec::new(),
            catch_all: default,
            routes: Vec::new(),
        };
        let mut claimed: HashMap<&Pattern, &str> = HashMap::new();
        let mut catch_all = None;
        for spec in specs {
            let name: Arc<str> = spec.name.as_str().into();
            let route = Arc::new(Route {
                series: RouteSeries::new(name.clone()),
                name,
                action: spec.action.clone(),
                resolver: spec.resolver.as_str().into(),
                sni: spec.sni,
                via: spec.via.clone(),
                exact: spec
                    .patterns
                    .iter()
                    .filter_map(|(p, _)| match p {
                        Pattern::Exact(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect(),
                on_cname: spec
                    .on_cname
                    .iter()
                    .map(|r| CnameRule {
                        pattern: r.pattern.clone(),
                        resolver: r.resolver.as_str().into(),
                    })
                    .collect(),
            });
            for (pattern, line) in &spec.patterns {
                if let Some(first) = claimed.insert(pattern, &spec.name) {
                    return Err(Clash {
                        pattern: pattern.to_string(),
                        first: first.to_owned(),
                        route: spec.name.clone(),
                        line: *line,
                    });
                }
                let r = route.clone();
                match pattern {
                    Pattern::Exact(n) => drop(table.exact.insert(n.as_str().into(), r)),
                    Pattern::Wildcard(s) => drop(table.wildcard.insert(s.as_str().into(), r)),
                    Pattern::CatchAll => catch_all = Some(r),
                    Pattern::Ip(ip) => drop(table.ips.insert(*ip, r)),
                    Pattern::Cidr(net) => table.cidrs.push((*net, r)),
                }
            }
            table.routes.push(route);
        }
        table.cidrs.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        if let Some(r) = catch_all {
            table.catch_all = r;
        } else {
            table.routes.push(table.catch_all.clone());
        }
        Ok(table)
    }

    /// The route for a host (names lowercased, trailing dot removed, as `Host` guarantees).
    pub fn lookup(&self, host: &Host) -> &Arc<Route> {
        match host {
            Host::Name(name) => self.lookup_name(name),
            Host::Ip(ip) => self.lookup_ip(*ip),
        }
    }

    /// The route for a normalized name.
    pub fn lookup_name(&self, name: &str) -> &Arc<Route> {
        if let Some(r) = self.exact.get(name) {
            return r;
        }
        // Walking suffixes from the left tries the longest suffix first.
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(r) = self.wildcard.get(suffix) {
                return r;
            }
            rest = suffix;
        }
        &self.catch_all
    }

    /// The route for an IP literal. An IPv6 literal that stands for an IPv4 address (mapped
    /// `[::ffff:10.0.0.1]`, compatible, NAT64 `[64:ff9b::a00:1]`, 6to4) and that no IPv6
    /// pattern claims routes as that IPv4 address, so IPv4 routes cannot be sidestepped; the
    /// deny list reads the same forms with the same function (`target::embedded_ipv4`).
    pub fn lookup_ip(&self, ip: IpAddr) -> &Arc<Route> {
        let route = self.lookup_ip_as_written(ip);
        match ip {
            IpAddr::V6(v6) if Arc::ptr_eq(route, &self.catch_all) => {
                embedded_ipv4(v6).map_or(route, |v4| self.lookup_ip_as_written(IpAddr::V4(v4)))
            }
            _ => route,
        }
    }

    fn lookup_ip_as_written(&self, ip: IpAddr) -> &Arc<Route> {
        if let Some(r) = self.ips.get(&ip) {
            return r;
        }
        self.cidrs
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(&self.catch_all, |(_, r)| r)
    }

    /// Every route, the implicit default included (for metrics and `check`).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests;
