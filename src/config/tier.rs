//! The shared egress tier's keys: PROXY protocol from a load balancer (`[proxy] proxy_protocol`,
//! `proxy_protocol_from`), `tcp_keepalive`, and the `[[client]]` policies (who may use which
//! routes).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::Mode;

/// Default for `[proxy] tcp_keepalive`: below an AWS NLB's 350 s idle timeout, so an idle
/// tunnel through one is probed before the NLB forgets the flow and resets it.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Default for `[proxy] drain_delay`: a sidecar's listener closes at once.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;
/// The name of the client policy of a client no `[[client]]` table matches.
pub const UNMATCHED: &str = "unmatched";

/// `[proxy] proxy_protocol`: whether connections to the proxy listener start with a PROXY
/// protocol header (v1 or v2, HAProxy's spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header is read (a header is then an ordinary malformed request).
    #[default]
    Off,
    /// A connection from `proxy_protocol_from` may start with one.
    Optional,
    /// Every connection must start with one, from `proxy_protocol_from`.
    Required,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// `tcp_keepalive = "60s"` or `"off"`.
pub(super) fn keepalive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        Ok(_) => Err(serde::de::Error::custom(
            "tcp_keepalive: 0s is no keepalive; write \"off\" to turn it off",
        )),
        Err(e) => Err(serde::de::Error::custom(format!(
            "tcp_keepalive: `{text}` is not a duration such as \"60s\", nor \"off\" ({e})"
        ))),
    }
}

/// A list of CIDR blocks, where a bare address is its own /32 or /128.
pub(super) fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address or CIDR block")))
        })
        .collect()
}

/// One `[[client]]` table: who (every key given must match) and which routes it may use.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// In logs and metrics (`client="NAME"`).
    pub name: String,
    /// Client addresses: the PROXY protocol source when there is one, else the peer.
    #[serde(default, deserialize_with = "nets")]
    pub sources: Vec<IpNet>,
    /// PrivateLink VPC endpoint IDs (PROXY v2 TLV 0xEA, subtype 0x01).
    #[serde(default)]
    pub vpc_endpoints: Vec<String>,
    /// `[proxy] auth` user names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Route names (`*` matches any run of characters) this client may use.
    pub routes: Vec<String>,
    /// `enforce` (default): refuse other routes with 403; `report`: let them through, count
    /// and log what would have been refused.
    #[serde(default)]
    pub mode: Mode,
    /// Where the table starts, for messages.
    #[serde(skip)]
    pub line: usize,
}

impl ClientSpec {
    /// Whether this policy lets its client use the route named `route`.
    pub fn allows(&self, route: &str) -> bool {
        self.routes.iter().any(|p| name_glob(p, route))
    }

    /// One line for `splitway check`.
    pub fn describe(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        let mut who = Vec::new();
        if !self.sources.is_empty() {
            let s: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
            who.push(format!("sources {}", s.join(", ")));
        }
        if !self.vpc_endpoints.is_empty() {
            who.push(format!("vpc_endpoints {}", list(&self.vpc_endpoints)));
        }
        if !self.users.is_empty() {
            who.push(format!("users {}", list(&self.users)));
        }
        if who.is_empty() {
            who.push("every client".into());
        }
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        };
        format!(
            "{:<16} {} -> routes {} ({mode})",
            self.name,
            who.join("; "),
            list(&self.routes)
        )
    }
}

/// `pattern` (literal text, `*` for any run of characters) matches all of `name`.
pub fn name_glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The tier's cross-field checks: `proxy_protocol` names its trusted sources, and the
/// `[[client]]` tables (see [`check_clients`]). The error is `(line, key, message)`.
pub(super) fn check(config: &super::Config) -> Result<(), (Option<usize>, &'static str, String)> {
    let p = &config.proxy;
    if p.proxy_protocol != ProxyProtocol::Off && p.proxy_protocol_from.is_empty() {
        let message = "list the load balancer's subnets: a PROXY header is believed only from them";
        return Err((None, "proxy.proxy_protocol_from", message.into()));
    }
    let mut names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
    if !config
        .routes
        .iter()
        .any(|r| r.patterns.iter().any(|(p, _)| *p == super::Pattern::CatchAll))
    {
        names.push(super::DEFAULT_ROUTE);
    }
    let user = p.auth.as_ref().map(|a| a.username.as_str());
    check_clients(&config.clients, &names, user).map_err(|(line, key, message)| (Some(line), key, message))
}

/// The `[[client]]` checks that need the rest of the config: names unique and not
/// [`UNMATCHED`], every route pattern names a route, users are `[proxy] auth`'s. The error is
/// `(line, key, message)`.
pub(super) fn check_clients(
    clients: &[ClientSpec],
    route_names: &[&str],
    auth_user: Option<&str>,
) -> Result<(), (usize, &'static str, String)> {
    for (i, c) in clients.iter().enumerate() {
        if c.name.is_empty() || c.name == UNMATCHED || c.name.chars().any(char::is_control) {
            return Err((
                c.line,
                "client.name",
                format!("`{}` is reserved or empty; pick another name", c.name),
            ));
        }
        if clients[..i].iter().any(|o| o.name == c.name) {
            return Err((
                c.line,
                "client.name",
                format!("two [[client]] tables are named `{}`", c.name),
            ));
        }
        if let Some(p) = c.routes.iter().find(|p| !route_names.iter().any(|r| name_glob(p, r))) {
            return Err((
                c.line,
                "client.routes",
                format!(
                    "[[client]] `{}`: `{p}` names no route; the routes are: {}",
                    c.name,
                    route_names.join(", ")
                ),
            ));
        }
        if let Some(u) = c.users.iter().find(|u| Some(u.as_str()) != auth_user) {
            return Err((
                c.line,
                "client.users",
                format!(
                    "[[client]] `{}`: `{u}` is not the [proxy] auth username; set [proxy] auth or remove it",
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::name_glob;
    use crate::config::{Config, Mode, ProxyProtocol};
    use std::time::Duration;

    fn err(toml: &str) -> String {
        Config::from_toml(toml, "bad.toml")
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn tier_keys_parse_with_their_defaults() {
        let c = Config::embedded();
        assert_eq!(c.proxy.tcp_keepalive, Some(super::DEFAULT_TCP_KEEPALIVE));
        assert_eq!(c.proxy.drain_delay, Duration::ZERO);
        assert_eq!(c.proxy.proxy_protocol, ProxyProtocol::Off);
        let c = Config::from_toml(
            r#"
[proxy]
drain_delay = "20s"
tcp_keepalive = "off"
proxy_protocol = "required"
proxy_protocol_from = ["10.0.0.0/24", "10.0.1.7"]
[[route]]
name = "private-apis"
hosts = ["*.execute-api.us-east-1.amazonaws.com"]
[[client]]
name = "payments"
sources = ["10.1.0.0/16"]
vpc_endpoints = ["vpce-0a1b2c3d4e5f60789"]
routes = ["private-*", "default"]
mode = "report"
"#,
            "ok.toml",
        )
        .expect("valid");
        assert_eq!(c.proxy.drain_delay, Duration::from_secs(20));
        assert_eq!(c.proxy.tcp_keepalive, None);
        assert_eq!(c.proxy.proxy_protocol_from[1].to_string(), "10.0.1.7/32");
        assert_eq!(c.clients[0].line, 10);
        assert_eq!(c.clients[0].mode, Mode::Report);
        assert!(super::super::describe(&c).contains("payments"), "check prints policies");
    }

    #[test]
    fn tier_mistakes_name_the_file_line_and_key() {
        let e = err("[proxy]\nproxy_protocol = \"optional\"\n");
        assert!(e.contains("proxy.proxy_protocol_from") && e.contains("subnets"), "{e}");
        let e = err("[proxy]\ntcp_keepalive = \"0s\"\n");
        assert!(e.contains("tcp_keepalive") && e.contains("off"), "{e}");
        let e = err("[[client]]\nname = \"a\"\nroutes = [\"nope*\"]\n");
        assert!(
            e.contains("bad.toml:1") && e.contains("`a`") && e.contains("client.routes") && e.contains("nope*"),
            "{e}"
        );
        let e = err("[[client]]\nname = \"unmatched\"\nroutes = [\"default\"]\n");
        assert!(e.contains("client.name"), "{e}");
        let e = err("[[client]]\nname = \"a\"\nusers = [\"x\"]\nroutes = [\"default\"]\n");
        assert!(e.contains("client.users") && e.contains("[proxy] auth"), "{e}");
        let e = err("[[client]]\nname = \"a\"\nroute = [\"default\"]\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = err("[[client]]\nname = \"a\"\nsources = [\"10.0.0.0/33\"]\nroutes = [\"default\"]\n");
        assert!(e.contains("10.0.0.0/33"), "{e}");
    }

    #[test]
    fn route_name_globs() {
        assert!(name_glob("aws-private-apis*", "aws-private-apis-us-west-2"));
        assert!(name_glob("aws-private-apis*", "aws-private-apis"));
        assert!(name_glob("custom-domains", "custom-domains"));
        assert!(!name_glob("custom-domains", "custom-domains-2"));
        assert!(name_glob("*", "anything"));
        assert!(name_glob("a*b*c", "axxbyyc"));
        assert!(!name_glob("a*b*c", "axxbyy"));
        assert!(!name_glob("ab*ba", "aba"));
    }
}
