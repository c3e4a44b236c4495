//! The dial plan: what one route does for one target — the one place a route's action is
//! turned into "where and how to connect". Tunnels, forwarding, report mode, `explain`, the
//! probes, start-up resolution, the refresher and the readiness checks all read it from here.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Action, Via, ViaTarget};
use crate::error::ProxyError;
use crate::routes::{CnameRule, Route};
use crate::target::{Host, Target};

/// Where a connection for one target goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Refused with 403.
    Deny,
    /// The route's fixed `addresses`, tried in order; exempt from `deny_destinations` (never
    /// from the own-listener check).
    Fixed(Vec<SocketAddr>),
    /// Names resolved through `resolver`, in order of preference: the first that resolves and
    /// accepts the connection is used.
    Resolve {
        resolver: Arc<str>,
        names: Vec<(Host, u16)>,
        /// The names are the route's `connect` names, resolved instead of the target.
        instead: bool,
        /// `on_cname`: a name whose CNAME chain reaches one of these patterns is resolved
        /// again through the rule's resolver (custom domain detection).
        on_cname: Arc<[CnameRule]>,
    },
    /// Through the route's parent proxies (`via`), tried in order: `ask` (never `Deny` or
    /// `Parent`) is what splitway does first — with `via_target = "address"` it resolves or
    /// takes the fixed address as without `via` and asks the parent for that address; with
    /// `"name"` nothing is resolved and the parent is asked for `ask`'s first name.
    Parent { via: Arc<Via>, ask: Box<Plan> },
}

impl Route {
    /// The plan for `target` on this route.
    pub fn plan(&self, target: &Target) -> Plan {
        let direct = self.direct_plan(target);
        match &self.via {
            Some(via) if direct != Plan::Deny => Plan::Parent {
                via: via.clone(),
                ask: Box::new(direct),
            },
            _ => direct,
        }
    }

    /// The plan without `via`.
    fn direct_plan(&self, target: &Target) -> Plan {
        match &self.action {
            Action::Deny => Plan::Deny,
            Action::Addresses(list) => Plan::Fixed(
                list.iter()
                    .map(|a| SocketAddr::new(a.ip, a.port.unwrap_or(target.port)))
                    .collect(),
            ),
            Action::Connect(list) => Plan::Resolve {
                resolver: self.resolver.clone(),
                names: list
                    .iter()
                    .map(|c| (c.host.clone(), c.port.unwrap_or(target.port)))
                    .collect(),
                instead: true,
                on_cname: Arc::new([]),
            },
            Action::Resolve => Plan::Resolve {
                resolver: self.resolver.clone(),
                names: vec![(target.host.clone(), target.port)],
                instead: false,
                on_cname: self.on_cname.clone(),
            },
        }
    }

    /// The names this route resolves whatever the target (its `connect` names), or, when it
    /// resolves the requested host itself, its exact host patterns. Each with whether it must
    /// resolve for the route to work (a `connect` name) or merely be asked. Start-up
    /// resolution, the refresher and the readiness checks keep these warm.
    pub fn warm_names(&self) -> Vec<(String, bool)> {
        if self.via.as_ref().is_some_and(|v| v.target == ViaTarget::Name) {
            // The parent resolves these, not splitway.
            return vec![];
        }
        match &self.action {
            Action::Connect(list) => list
                .iter()
                .filter_map(|c| c.host.as_name())
                .map(|n| (n.to_owned(), true))
                .collect(),
            Action::Resolve => self.exact.iter().map(|n| (n.clone(), false)).collect(),
            Action::Addresses(_) | Action::Deny => vec![],
        }
    }
}

impl Plan {
    /// Whether this plan is what a plain forward proxy does: resolve the target through the
    /// system resolver (then there is no other path to compare with).
    pub fn is_system_path(&self) -> bool {
        matches!(self, Plan::Resolve { resolver, instead: false, on_cname, .. }
            if &**resolver == "system" && on_cname.is_empty())
    }

    /// The resolver this plan asks, if any.
    pub fn resolver(&self) -> Option<&Arc<str>> {
        match self {
            Plan::Resolve { resolver, .. } => Some(resolver),
            Plan::Parent { via, ask } if via.target == ViaTarget::Address => ask.resolver(),
            Plan::Deny | Plan::Fixed(_) | Plan::Parent { .. } => None,
        }
    }

    /// What splitway itself resolves or connects to: the plan, or for a parent plan in
    /// address mode the plan that finds the address to ask for; `None` in name mode.
    pub fn local(&self) -> Option<&Plan> {
        match self {
            Plan::Parent { via, ask } if via.target == ViaTarget::Address => Some(ask),
            Plan::Parent { .. } => None,
            plan => Some(plan),
        }
    }

    /// The host and port a parent is asked for in name mode: the first name of the plan.
    pub fn first_name(&self) -> Option<Target> {
        match self {
            Plan::Resolve { names, .. } => names.first().map(|(host, port)| Target {
                host: host.clone(),
                port: *port,
            }),
            Plan::Fixed(addrs) => addrs.first().map(|a| Target {
                host: Host::Ip(a.ip()),
                port: a.port(),
            }),
            Plan::Deny | Plan::Parent { .. } => None,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |items: Vec<String>, sep: &str| items.join(sep);
        match self {
            Plan::Deny => f.write_str("deny (403)"),
            Plan::Fixed(addrs) => write!(
                f,
                "connect to fixed addresses {}",
                joined(addrs.iter().map(ToString::to_string).collect(), ", ")
            ),
            Plan::Resolve {
                resolver,
                names,
                instead: true,
                ..
            } => write!(
                f,
                "connect to {} via resolver `{resolver}`",
                joined(names.iter().map(|(h, p)| format!("{h}:{p}")).collect(), ", then ")
            ),
            Plan::Resolve { resolver, names, .. } => {
                let host = names.first().map(|(h, _)| h.to_string()).unwrap_or_default();
                write!(f, "resolve {host} via resolver `{resolver}`")
            }
            Plan::Parent { via, ask } => match via.target {
                ViaTarget::Address => write!(f, "{ask}, then connect to {via}, then CONNECT that address"),
                ViaTarget::Name => {
                    let name = ask.first_name().map(|t| t.to_string()).unwrap_or_default();
                    write!(f, "connect to {via}, then CONNECT {name} (the parent resolves it)")
                }
            },
        }
    }
}

/// The refusal of a route that denies `target` (or has nothing to connect it to).
pub(crate) fn denied(route: &Route, target: &Target) -> ProxyError {
    ProxyError::Denied {
        route: route.name.to_string(),
        host: target.host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AddrSpec, ConnectName, SniMode};

    fn route(action: Action, resolver: &str) -> Route {
        Route {
            name: "r".into(),
            series: crate::metrics::RouteSeries::new("r".into()),
            action,
            resolver: resolver.into(),
            sni: SniMode::Match,
            via: None,
            exact: vec!["a.example".into(), "b.example".into()],
            on_cname: Arc::new([]),
        }
    }

    fn target(s: &str) -> Target {
        Target::parse_authority(s).expect("target")
    }

    #[test]
    fn each_action_has_one_plan() {
        let t = target("api.example.com:443");
        assert_eq!(route(Action::Deny, "system").plan(&t), Plan::Deny);
        let fixed = Action::Addresses(vec![
            AddrSpec {
                ip: "10.1.5.20".parse().unwrap(),
                port: None,
            },
            AddrSpec {
                ip: "10.1.6.20".parse().unwrap(),
                port: Some(8443),
            },
        ]);
        assert_eq!(
            route(fixed, "system").plan(&t),
            Plan::Fixed(vec![
                "10.1.5.20:443".parse().unwrap(),
                "10.1.6.20:8443".parse().unwrap()
            ])
        );
        let connect = Action::Connect(vec![
            ConnectName {
                host: Host::Name("zonal.example".into()),
                port: None,
            },
            ConnectName {
                host: Host::Name("regional.example".into()),
                port: Some(444),
            },
        ]);
        let plan = route(connect, "vpc").plan(&t);
        assert_eq!(
            plan.to_string(),
            "connect to zonal.example:443, then regional.example:444 via resolver `vpc`"
        );
        assert!(!plan.is_system_path());
        let plan = route(Action::Resolve, "system").plan(&t);
        assert_eq!(plan.to_string(), "resolve api.example.com via resolver `system`");
        assert!(plan.is_system_path());
        assert!(!route(Action::Resolve, "public").plan(&t).is_system_path());
    }

    #[test]
    fn a_via_route_plans_its_parents_around_the_direct_plan() {
        use crate::config::{Parent, Via};
        let t = target("api.example.com:443");
        let via = |target| {
            Arc::new(Via {
                parents: vec![Parent {
                    host: Host::Ip("10.0.0.5".parse().unwrap()),
                    port: 3128,
                    user: Some("svc".into()),
                }],
                target,
                password: None,
            })
        };
        let mut r = route(Action::Resolve, "public");
        r.via = Some(via(ViaTarget::Address));
        let plan = r.plan(&t);
        assert_eq!(
            plan.to_string(),
            "resolve api.example.com via resolver `public`, then connect to http://svc:***@10.0.0.5:3128, \
             then CONNECT that address"
        );
        assert_eq!(plan.resolver().map(|r| &**r), Some("public"));
        assert!(matches!(plan.local(), Some(Plan::Resolve { .. })));
        r.via = Some(via(ViaTarget::Name));
        let plan = r.plan(&t);
        assert_eq!(
            plan.to_string(),
            "connect to http://svc:***@10.0.0.5:3128, then CONNECT api.example.com:443 (the parent resolves it)"
        );
        assert!(plan.local().is_none() && plan.resolver().is_none());
        assert!(r.warm_names().is_empty(), "in name mode the parent resolves");
        let mut deny = route(Action::Deny, "system");
        deny.via = Some(via(ViaTarget::Address));
        assert_eq!(deny.plan(&t), Plan::Deny);
    }

    #[test]
    fn warm_names_are_connect_names_or_exact_hosts() {
        let connect = Action::Connect(vec![ConnectName {
            host: Host::Name("vpce.example".into()),
            port: None,
        }]);
        assert_eq!(
            route(connect, "vpc").warm_names(),
            vec![("vpce.example".to_owned(), true)]
        );
        assert_eq!(
            route(Action::Resolve, "public").warm_names(),
            vec![("a.example".to_owned(), false), ("b.example".to_owned(), false)]
        );
        assert!(route(Action::Deny, "system").warm_names().is_empty());
    }
}
