//! `[[route]]` tables: host patterns, where to connect, which resolver, SNI policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::error::{Ctx, TableCtx};
use super::via::Via;
use crate::glob::NameGlob;
use crate::target::{Host, Target};

/// One host pattern of a route (SPEC: exact names, `*.suffix`, `*`, IP literals, CIDR blocks).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// An exact name, lowercased, without a trailing dot.
    Exact(String),
    /// `*.suffix`: any name at any depth below `suffix` (stored without the `*.`).
    Wildcard(String),
    /// `*`: everything no other route claims.
    CatchAll,
    Ip(IpAddr),
    Cidr(IpNet),
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Wildcard(s) => write!(f, "*.{s}"),
            Self::CatchAll => f.write_str("*"),
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Cidr(net) => write!(f, "{net}"),
        }
    }
}

/// `sni`: whether a tunnel's ClientHello must name the CONNECT host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SniMode {
    #[default]
    Match,
    Any,
}

/// A fixed upstream address; the port defaults to the requested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrSpec {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// A name resolved instead of the requested host; the port defaults to the requested one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectName {
    pub host: Host,
    pub port: Option<u16>,
}

/// Where a route sends its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resolve the requested host itself.
    Resolve,
    /// Connect to these addresses, in order; exempt from `deny_destinations`.
    Addresses(Vec<AddrSpec>),
    /// Resolve these names instead, in order of preference.
    Connect(Vec<ConnectName>),
    /// Refuse with 403.
    Deny,
}

impl Action {
    /// Whether the route's `resolver` is asked (it resolves the target or `connect` names).
    pub fn uses_resolver(&self) -> bool {
        matches!(self, Action::Resolve | Action::Connect(_))
    }
}

/// What `splitway check` shows of an action.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Resolve => f.write_str("resolve"),
            Action::Deny => f.write_str("deny 403"),
            Action::Addresses(list) => {
                let a = list.iter().map(|a| match a.port {
                    Some(p) => SocketAddr::new(a.ip, p).to_string(),
                    None => a.ip.to_string(),
                });
                write!(f, "addresses {}", a.collect::<Vec<_>>().join(", "))
            }
            Action::Connect(list) => {
                let c = list.iter().map(|c| match c.port {
                    Some(p) => format!("{}:{p}", c.host),
                    None => c.host.to_string(),
                });
                write!(f, "connect {}", c.collect::<Vec<_>>().join(" then "))
            }
        }
    }
}

/// One `on_cname` rule: a host whose CNAME chain (from the route's resolver) reaches a name
/// matching `pattern` is resolved through `resolver` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnameRule {
    pub pattern: NameGlob,
    pub resolver: String,
}

/// A validated `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    /// Each pattern with the line it was written on.
    pub patterns: Vec<(Pattern, usize)>,
    pub action: Action,
    pub resolver: String,
    pub resolver_line: Option<usize>,
    pub sni: SniMode,
    /// `on_cname` rules, in order: the first whose pattern the chain reaches wins.
    pub on_cname: Vec<CnameRule>,
    /// The line of the `on_cname` key, for errors about its resolvers.
    pub on_cname_line: Option<usize>,
    /// `via`: the parent proxies the route's connections go through.
    pub via: Option<Arc<Via>>,
    /// The line of the `[[route]]` header.
    pub line: usize,
}

pub(super) const KEYS: &[&str] = &[
    "name",
    "hosts",
    "addresses",
    "connect",
    "deny",
    "resolver",
    "sni",
    "on_cname",
    "via",
    "via_target",
    "via_password_env",
    "via_password_file",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCnameRule {
    #[serde(rename = "match")]
    pattern: String,
    resolver: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub(super) fn parse(ctx: &Ctx<'_>, index: usize, table: &Spanned<toml::Table>) -> Result<RouteSpec, ConfigError> {
    let first_host = table
        .get_ref()
        .get("hosts")
        .and_then(|h| h.as_array()?.first()?.as_str().map(str::to_owned));
    let mut rc = TableCtx {
        ctx,
        table,
        route: Some(first_host.unwrap_or_else(|| format!("#{}", index + 1))),
        prefix: String::new(),
    };
    if let Some(name) = rc.field::<String>("name")? {
        if name.is_empty() {
            return Err(rc.err("name", "must not be empty"));
        }
        rc.route = Some(name);
    }
    rc.only_keys(KEYS, "a route")?;
    let hosts: Vec<String> = rc
        .field("hosts")?
        .ok_or_else(|| rc.err("hosts", "missing: every route needs `hosts`"))?;
    if hosts.is_empty() {
        return Err(rc.err("hosts", "must list at least one host pattern"));
    }
    let line = ctx.key_line(&table.span(), "hosts");
    let patterns = hosts
        .iter()
        .map(|h| parse_pattern(h).map(|p| (p, line)).map_err(|e| rc.bad("hosts", &e)))
        .collect::<Result<Vec<_>, _>>()?;
    let action = parse_action(&rc)?;
    let resolver: Option<String> = rc.field("resolver")?;
    if resolver.is_some() && !action.uses_resolver() {
        return Err(rc.err(
            "resolver",
            "has no effect on a route with `addresses` or `deny`; remove it",
        ));
    }
    let via = super::via::parse(&rc, "")?;
    if via.is_some() && action == Action::Deny {
        return Err(rc.err("via", "has no effect on a route with `deny = true`; remove it"));
    }
    let on_cname = parse_on_cname(&rc, &action)?;
    Ok(RouteSpec {
        on_cname_line: (!on_cname.is_empty()).then(|| ctx.key_line(&table.span(), "on_cname")),
        on_cname,
        via,
        resolver_line: resolver.as_ref().map(|_| ctx.key_line(&table.span(), "resolver")),
        resolver: resolver.unwrap_or_else(|| "system".to_owned()),
        sni: rc.field("sni")?.unwrap_or_default(),
        line: ctx.line(table.span().start),
        patterns,
        action,
        name: rc.route.unwrap_or_default(),
    })
}

fn parse_on_cname(rc: &TableCtx<'_>, action: &Action) -> Result<Vec<CnameRule>, ConfigError> {
    let Some(raw) = rc.field::<Vec<RawCnameRule>>("on_cname")? else {
        return Ok(vec![]);
    };
    if *action != Action::Resolve {
        return Err(rc.err(
            "on_cname",
            "needs a route that resolves the requested host (no `addresses`, `connect` or `deny`)",
        ));
    }
    raw.into_iter()
        .map(|r| {
            let pattern = NameGlob::parse(&r.pattern).map_err(|e| rc.err("on_cname", format!("match {e}")))?;
            Ok(CnameRule {
                pattern,
                resolver: r.resolver,
            })
        })
        .collect()
}

fn parse_action(rc: &TableCtx<'_>) -> Result<Action, ConfigError> {
    let addresses: Option<Vec<String>> = rc.field("addresses")?;
    let connect: Option<OneOrMany> = rc.field("connect")?;
    let deny: bool = rc.field("deny")?.unwrap_or(false);
    let chosen = usize::from(addresses.is_some()) + usize::from(connect.is_some()) + usize::from(deny);
    if chosen > 1 {
        let key = if deny { "deny" } else { "connect" };
        return Err(rc.err(
            key,
            "a route takes at most one of `addresses`, `connect`, `deny = true`",
        ));
    }
    if deny {
        return Ok(Action::Deny);
    }
    if let Some(list) = addresses {
        if list.is_empty() {
            return Err(rc.err("addresses", "must list at least one address"));
        }
        let specs = list.iter().map(|a| parse_addr(a).map_err(|e| rc.bad("addresses", &e)));
        return specs.collect::<Result<_, _>>().map(Action::Addresses);
    }
    if let Some(connect) = connect {
        let list = match connect {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() {
            return Err(rc.err("connect", "must name at least one host"));
        }
        let names = list.iter().map(|c| parse_connect(c).map_err(|e| rc.bad("connect", &e)));
        return names.collect::<Result<_, _>>().map(Action::Connect);
    }
    Ok(Action::Resolve)
}

/// Why a `hosts`, `addresses` or `connect` entry is not one.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("`{0}` is not a valid wildcard; write `*.example.com`")]
    Wildcard(String),
    #[error("`{0}` is not a valid CIDR block such as 10.0.0.0/8")]
    Cidr(String),
    #[error("`{0}` is not a host name, `*.suffix`, `*`, IP address or CIDR block")]
    Pattern(String),
    #[error("`{0}` is not an IP address or IP:PORT (IPv6 as [::1]:443)")]
    Address(String),
    #[error("`{value}` is not NAME or NAME:PORT")]
    ConnectName {
        value: String,
        #[source]
        source: crate::target::TargetError,
    },
}

/// Parses one `hosts` entry.
pub(super) fn parse_pattern(s: &str) -> Result<Pattern, ValueError> {
    let s = s.trim();
    if s == "*" {
        return Ok(Pattern::CatchAll);
    }
    if let Some(suffix) = s.strip_prefix("*.") {
        return match Target::parse_host_port(suffix, 1) {
            Ok(Target {
                host: Host::Name(n), ..
            }) if !suffix.contains(':') => Ok(Pattern::Wildcard(n)),
            _ => Err(ValueError::Wildcard(s.to_owned())),
        };
    }
    if s.contains('/') {
        return s
            .parse::<IpNet>()
            .map(|n| Pattern::Cidr(n.trunc()))
            .map_err(|_| ValueError::Cidr(s.to_owned()));
    }
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Pattern::Ip(ip));
    }
    match Target::parse_host_port(s, 1) {
        Ok(Target {
            host: Host::Name(n), ..
        }) if !s.contains(':') => Ok(Pattern::Exact(n)),
        _ => Err(ValueError::Pattern(s.to_owned())),
    }
}

fn parse_addr(s: &str) -> Result<AddrSpec, ValueError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(AddrSpec { ip, port: None });
    }
    match s.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok(AddrSpec {
            ip: sa.ip(),
            port: Some(sa.port()),
        }),
        _ => Err(ValueError::Address(s.to_owned())),
    }
}

fn parse_connect(s: &str) -> Result<ConnectName, ValueError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ConnectName {
            host: Host::Ip(ip),
            port: None,
        });
    }
    let has_port = s
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
    let parsed = if has_port {
        Target::parse_authority(s)
    } else {
        Target::parse_host_port(s, 1)
    };
    parsed
        .map(|t| ConnectName {
            host: t.host,
            port: has_port.then_some(t.port),
        })
        .map_err(|source| ValueError::ConnectName {
            value: s.to_owned(),
            source,
        })
}
