//! Who a client is — the PROXY protocol source (the connection's peer kept beside it), the
//! PrivateLink VPC endpoint, the `[proxy] auth` user — and which `[[client]]` policy applies:
//! the first table in file order whose every given key matches (smokescreen's roles).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{ClientSpec, Mode, UNMATCHED};
use crate::error::ProxyError;
use crate::metrics::{Metrics, PolicyAction};
use crate::target::Target;

/// The client of a connection, as the server learnt it at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client: a PROXY header's source, or the peer when there was none.
    pub client: SocketAddr,
    /// The TCP peer when a PROXY header named someone else (the load balancer's address).
    pub peer: Option<SocketAddr>,
    /// The PrivateLink VPC endpoint ID (PROXY v2 TLV `0xEA`, subtype `0x01`).
    pub vpc_endpoint: Option<Arc<str>>,
}

impl Identity {
    /// A client that connected directly: it is its own peer.
    pub fn direct(client: SocketAddr) -> Self {
        Self {
            client,
            peer: None,
            vpc_endpoint: None,
        }
    }
}

/// The `[[client]]` policies of a runtime, in file order.
#[derive(Debug, Default)]
pub struct Policies(Vec<Arc<ClientSpec>>);

impl Policies {
    pub fn new(specs: &[ClientSpec]) -> Self {
        Self(specs.iter().cloned().map(Arc::new).collect())
    }

    /// The policy of `who` with `user` authenticated; `None` when there are no policies
    /// (every client may use every route).
    pub fn for_client(&self, who: &Identity, user: Option<&str>) -> Option<Policy> {
        if self.0.is_empty() {
            return None;
        }
        let found = self.0.iter().find(|c| matches(c, who, user));
        Some(found.map_or(Policy::Unmatched, |c| Policy::Client(c.clone())))
    }

    /// The policy named `name` (`explain --client`).
    pub fn named(&self, name: &str) -> Option<Policy> {
        if name == UNMATCHED {
            return Some(Policy::Unmatched);
        }
        self.0.iter().find(|c| c.name == name).cloned().map(Policy::Client)
    }
}

/// Which client `splitway explain` asks about.
#[derive(Debug, Clone)]
pub enum Asked {
    /// `--client NAME`: a policy by its name (`unmatched` included).
    Named(String),
    /// `--source IP`: the policy a client at that address gets (no VPC endpoint, no user).
    Source(std::net::IpAddr),
}

/// `--client NAME` names no `[[client]]` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no [[client]] named `{name}`; the policies are: {known}")]
pub struct UnknownClient {
    pub name: String,
    /// The config's policy names, or `none`.
    pub known: String,
}

/// What `splitway explain --client/--source` says about `route`, or why it cannot.
pub fn explain(policies: &Policies, asked: &Asked, route: &str) -> Result<String, UnknownClient> {
    let policy = match asked {
        Asked::Named(name) => policies.named(name).ok_or_else(|| {
            let names: Vec<&str> = policies.0.iter().map(|c| c.name.as_str()).collect();
            let known = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            UnknownClient {
                name: name.clone(),
                known,
            }
        })?,
        Asked::Source(ip) => match policies.for_client(&Identity::direct(SocketAddr::new(*ip, 0)), None) {
            Some(p) => p,
            None => return Ok("no [[client]] policies: every client may use every route".to_owned()),
        },
    };
    let name = policy.name();
    Ok(match policy.verdict(route) {
        Verdict::Allow => format!("`{name}` may use route `{route}`"),
        Verdict::Report => format!("`{name}` does not list route `{route}`: let through and counted (report mode)"),
        Verdict::Deny => format!("`{name}` may not use route `{route}`: refused (403 http_request_denied)"),
    })
}

/// Every key the table gives matches.
fn matches(c: &ClientSpec, who: &Identity, user: Option<&str>) -> bool {
    let source = c.sources.is_empty() || c.sources.iter().any(|n| n.contains(&who.client.ip()));
    let endpoint = c.vpc_endpoints.is_empty()
        || who
            .vpc_endpoint
            .as_deref()
            .is_some_and(|v| c.vpc_endpoints.iter().any(|e| e.eq_ignore_ascii_case(v)));
    let user = c.users.is_empty() || user.is_some_and(|u| c.users.iter().any(|x| x == u));
    source && endpoint && user
}

/// The policy that applies to one exchange.
#[derive(Debug, Clone)]
pub enum Policy {
    Client(Arc<ClientSpec>),
    /// No table matched: every route is refused.
    Unmatched,
}

/// What a policy says about one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Not listed, in `mode = "report"`: let through, counted.
    Report,
    Deny,
}

impl Policy {
    /// The name in logs and metrics: the table's, or `unmatched`.
    pub fn name(&self) -> &str {
        match self {
            Self::Client(c) => &c.name,
            Self::Unmatched => UNMATCHED,
        }
    }

    /// Whether this client may use `route` for `target`: a route it does not list is
    /// refused (403 `http_request_denied`), or in report mode let through; both counted and
    /// logged.
    pub fn check(&self, metrics: &Metrics, route: &str, target: &Target) -> Result<(), ProxyError> {
        let action = match self.verdict(route) {
            Verdict::Allow => return Ok(()),
            Verdict::Report => PolicyAction::Reported,
            Verdict::Deny => PolicyAction::Denied,
        };
        metrics.client_policy_refusal(self.name(), route, action);
        if action == PolicyAction::Reported {
            tracing::info!(client_name = self.name(), route, host = %target, "client policy would refuse (report mode)");
            return Ok(());
        }
        Err(ProxyError::ClientDenied {
            client: self.name().to_owned(),
            route: route.to_owned(),
            host: target.to_string(),
        })
    }

    pub fn verdict(&self, route: &str) -> Verdict {
        match self {
            Self::Client(c) if c.allows(route) => Verdict::Allow,
            Self::Client(c) if c.mode == Mode::Report => Verdict::Report,
            _ => Verdict::Deny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policies(toml: &str) -> Policies {
        let config = Config::from_toml(toml, "t.toml").expect("valid");
        Policies::new(&config.clients)
    }

    const TOML: &str = r#"
[proxy]
auth = { username = "svc", password = "pw" }
[[route]]
name = "private-apis"
hosts = ["*.execute-api.us-east-1.amazonaws.com"]
[[route]]
name = "custom-domains"
hosts = ["api.example.com"]
[[client]]
name = "payments"
sources = ["10.1.0.0/16"]
vpc_endpoints = ["vpce-0a1b2c3d4e5f60789"]
routes = ["private-*"]
[[client]]
name = "vpc-a"
sources = ["10.1.0.0/16", "10.9.9.9"]
users = ["svc"]
routes = ["custom-domains"]
mode = "report"
"#;

    fn who(ip: [u8; 4], vpce: Option<&str>) -> Identity {
        Identity {
            client: SocketAddr::from((ip, 40000)),
            peer: None,
            vpc_endpoint: vpce.map(Arc::from),
        }
    }

    #[test]
    fn first_table_whose_every_key_matches_applies() {
        let p = policies(TOML);
        let name = |w: &Identity, u| p.for_client(w, u).map(|p| p.name().to_owned());
        let payments = who([10, 1, 2, 3], Some("VPCE-0a1b2c3d4e5f60789"));
        assert_eq!(name(&payments, None).as_deref(), Some("payments"));
        // Same source, no endpoint: the first table does not match; the second needs the user.
        assert_eq!(name(&who([10, 1, 2, 3], None), None).as_deref(), Some("unmatched"));
        assert_eq!(name(&who([10, 1, 2, 3], None), Some("svc")).as_deref(), Some("vpc-a"));
        assert_eq!(name(&who([10, 9, 9, 9], None), Some("svc")).as_deref(), Some("vpc-a"));
        assert_eq!(
            name(&who([10, 2, 0, 1], None), Some("svc")).as_deref(),
            Some("unmatched")
        );
    }

    #[test]
    fn verdicts_per_mode() {
        let p = policies(TOML);
        let payments = p.named("payments").expect("named");
        assert_eq!(payments.verdict("private-apis"), Verdict::Allow);
        assert_eq!(payments.verdict("custom-domains"), Verdict::Deny);
        let report = p.named("vpc-a").expect("named");
        assert_eq!(report.verdict("custom-domains"), Verdict::Allow);
        assert_eq!(report.verdict("private-apis"), Verdict::Report);
        assert_eq!(Policy::Unmatched.verdict("private-apis"), Verdict::Deny);
        assert!(policies("[proxy]\n").for_client(&payments_who(), None).is_none());
    }

    fn payments_who() -> Identity {
        who([10, 1, 2, 3], None)
    }
}
