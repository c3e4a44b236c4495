//! `[resolver.NAME]` tables: nameservers (udp/tcp, `tls://`, `https://`), their trust roots
//! (`ca_file`) and cache bounds.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::error::{Ctx, TableCtx};

/// Default for `[resolver.NAME] timeout`: the budget for one lookup.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for `min_ttl`.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Default for `max_ttl`.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
/// Default for `serve_stale` (RFC 8767 §5 suggests 1–3 days; an hour suits API endpoints).
pub const DEFAULT_SERVE_STALE: Duration = Duration::from_secs(3600);
/// Default for `cache_size`: entries (answers and negative answers) a resolver keeps beside
/// its route hosts and `connect` names, which are kept apart and never evicted. About
/// 0.5 KiB each, so at most ~5 MiB per resolver.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

/// One upstream DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nameserver {
    /// `IP[:PORT]`: UDP, falling back to TCP on truncation.
    UdpTcp(SocketAddr),
    /// `udp://IP[:PORT]`.
    Udp(SocketAddr),
    /// `tcp://IP[:PORT]`.
    Tcp(SocketAddr),
    /// `tls://IP[:PORT]#NAME`: DNS over TLS (RFC 7858), certificate checked against NAME.
    Tls { addr: SocketAddr, name: String },
    /// `https://IP[:PORT][/PATH]#NAME`: DNS over HTTPS (RFC 8484).
    Https {
        addr: SocketAddr,
        name: String,
        path: String,
    },
}

/// A named resolver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `None` only for `system` without an override: read `/etc/resolv.conf`.
    pub nameservers: Option<Vec<Nameserver>>,
    /// [`DEFAULT_DNS_TIMEOUT`].
    pub timeout: Duration,
    /// [`DEFAULT_MIN_TTL`].
    pub min_ttl: Duration,
    /// [`DEFAULT_MAX_TTL`].
    pub max_ttl: Duration,
    /// [`DEFAULT_SERVE_STALE`].
    pub serve_stale: Duration,
    /// Answer from `/etc/hosts` first; default on for `system`, off for the others.
    pub hosts_file: bool,
    /// `ca_file`: a PEM bundle trusted for `tls://` and `https://` servers, on top of the
    /// webpki roots (read when the resolver is built).
    pub ca_file: Option<PathBuf>,
    /// [`DEFAULT_CACHE_SIZE`]; at least 1.
    pub cache_size: usize,
}

impl ResolverSettings {
    pub(crate) fn system_default() -> Self {
        Self {
            nameservers: None,
            timeout: DEFAULT_DNS_TIMEOUT,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            serve_stale: DEFAULT_SERVE_STALE,
            hosts_file: true,
            ca_file: None,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

pub(super) const KEYS: &[&str] = &[
    "nameservers",
    "timeout",
    "min_ttl",
    "max_ttl",
    "serve_stale",
    "hosts_file",
    "ca_file",
    "cache_size",
];

pub(super) fn parse(ctx: &Ctx<'_>, name: &str, table: &Spanned<toml::Table>) -> Result<ResolverSettings, ConfigError> {
    let tc = TableCtx {
        ctx,
        table,
        route: None,
        prefix: format!("resolver.{name}."),
    };
    tc.only_keys(KEYS, "a resolver")?;
    let system = name == "system";
    let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        match tc.field::<String>(key)? {
            None => Ok(default),
            Some(s) => humantime::parse_duration(&s).map_err(|e| {
                tc.err(
                    key,
                    format!("`{s}` is not a duration such as \"500ms\", \"5s\", \"5m\": {e}"),
                )
            }),
        }
    };
    let nameservers = match tc.field::<Vec<String>>("nameservers")? {
        Some(list) if list.is_empty() => return Err(tc.err("nameservers", "must list at least one server")),
        Some(list) => Some(
            list.iter()
                .map(|s| parse_nameserver(s).map_err(|e| tc.bad("nameservers", &e)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None if system => None,
        None => return Err(tc.err("nameservers", "missing: a named resolver needs `nameservers`")),
    };
    let settings = ResolverSettings {
        nameservers,
        timeout: duration("timeout", DEFAULT_DNS_TIMEOUT)?,
        min_ttl: duration("min_ttl", DEFAULT_MIN_TTL)?,
        max_ttl: duration("max_ttl", DEFAULT_MAX_TTL)?,
        serve_stale: duration("serve_stale", DEFAULT_SERVE_STALE)?,
        hosts_file: tc.field("hosts_file")?.unwrap_or(system),
        ca_file: match tc.field::<String>("ca_file")? {
            Some(s) if s.is_empty() => return Err(tc.err("ca_file", "is empty: name a PEM file")),
            other => other.map(PathBuf::from),
        },
        cache_size: tc.field::<i64>("cache_size")?.map_or(Ok(DEFAULT_CACHE_SIZE), |n| {
            usize::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
                tc.err(
                    "cache_size",
                    format!("`{n}` must be a whole number of entries, at least 1"),
                )
            })
        })?,
    };
    let encrypted = settings
        .nameservers
        .iter()
        .flatten()
        .any(|ns| matches!(ns, Nameserver::Tls { .. } | Nameserver::Https { .. }));
    if settings.ca_file.is_some() && !encrypted {
        return Err(tc.err(
            "ca_file",
            "does nothing: no tls:// or https:// nameserver in this resolver",
        ));
    }
    if settings.timeout.is_zero() {
        return Err(tc.err("timeout", "must be above zero"));
    }
    if settings.min_ttl > settings.max_ttl {
        return Err(tc.err("min_ttl", "must not exceed max_ttl"));
    }
    Ok(settings)
}

/// A `nameservers` entry that is not one.
#[derive(Debug, thiserror::Error)]
#[error("`{value}` {why}; write IP[:PORT], udp://, tcp://, tls://IP#NAME or https://IP/PATH#NAME")]
pub(super) struct NameserverError {
    value: String,
    why: NameserverFault,
}

/// What is wrong with a `nameservers` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameserverFault {
    EmptyName,
    Scheme,
    NotAnAddress,
    Path,
    TlsName,
}

impl std::fmt::Display for NameserverFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EmptyName => "has an empty #NAME",
            Self::Scheme => "has an unknown scheme",
            Self::NotAnAddress => "is not an IP address",
            Self::Path => "has a path, which only https:// takes",
            Self::TlsName => "needs #NAME exactly when it is tls:// or https://",
        })
    }
}

/// Parses one `nameservers` entry.
pub(super) fn parse_nameserver(s: &str) -> Result<Nameserver, NameserverError> {
    let bad = |why: NameserverFault| NameserverError {
        value: s.to_owned(),
        why,
    };
    let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
    let (rest, tls_name) = match rest.split_once('#') {
        Some((r, n)) if !n.is_empty() => (r, Some(n.to_owned())),
        Some(_) => return Err(bad(NameserverFault::EmptyName)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let default_port = match scheme {
        "" | "udp" | "tcp" => 53,
        "tls" => 853,
        "https" => 443,
        _ => return Err(bad(NameserverFault::Scheme)),
    };
    let addr = parse_socket(authority, default_port).ok_or_else(|| bad(NameserverFault::NotAnAddress))?;
    if path.is_some() && scheme != "https" {
        return Err(bad(NameserverFault::Path));
    }
    if tls_name.is_some() != matches!(scheme, "tls" | "https") {
        return Err(bad(NameserverFault::TlsName));
    }
    Ok(match (scheme, tls_name) {
        ("", _) => Nameserver::UdpTcp(addr),
        ("udp", _) => Nameserver::Udp(addr),
        ("tcp", _) => Nameserver::Tcp(addr),
        ("tls", Some(name)) => Nameserver::Tls { addr, name },
        (_, name) => Nameserver::Https {
            addr,
            name: name.unwrap_or_default(),
            path: path.unwrap_or("/dns-query").to_owned(),
        },
    })
}

fn parse_socket(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}
