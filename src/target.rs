//! Where a request wants to go: `host:port` parsed as RFC 9112 §3.2.3 and RFC 3986 §3.2 say.
//!
//! Every route decision and every upstream connection starts from a [`Target`], so this
//! parser is strict where leniency would let one string mean two hosts (numeric shorthands
//! such as `127.1`, zone ids, userinfo) and lenient where real DNS names are untidy
//! (underscores, hyphens at label edges).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 1035 §2.3.4, counted without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// Longest piece of input quoted in an error: any valid name fits, and a hostile request
/// line cannot blow up a log line.
const MAX_QUOTED_LEN: usize = 256;

/// The host part of a [`Target`] (RFC 3986 §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lowercased ASCII, one trailing dot removed.
    Name(String),
    /// An IPv4 dotted quad, or an IPv6 address given in brackets.
    Ip(IpAddr),
}

/// A host and port a client asked the proxy to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

/// Why a request target or `Host` is not a usable `host:port`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("empty host")]
    EmptyHost,
    #[error("missing port in `{0}`")]
    MissingPort(String),
    #[error("invalid port `{0}`")]
    InvalidPort(String),
    #[error("port `{0}` out of range 1-65535")]
    PortOutOfRange(String),
    /// Carries no text: userinfo is where credentials would be, and errors end up in logs.
    #[error("userinfo is not allowed in a request target")]
    Userinfo,
    #[error("path, query or fragment is not allowed in `{0}`")]
    NotAuthority(String),
    #[error("IPv6 address `{0}` must be in brackets")]
    UnbracketedIpv6(String),
    #[error("IPv6 zone identifier is not allowed in `{0}`")]
    Ipv6Zone(String),
    #[error("invalid IPv6 literal `{0}`")]
    InvalidIpv6(String),
    #[error("host name is {0} bytes long, over 253")]
    NameTooLong(usize),
    #[error("invalid host name `{0}`")]
    InvalidName(String),
}

impl Target {
    /// Parses authority-form `host:port` as a CONNECT request target (RFC 9112 §3.2.3).
    ///
    /// The port is required and must be 1-65535 in at most five decimal digits. IPv6 only in
    /// brackets (`[::1]:443`), without a zone id; IPv4 only as a dotted quad. Names are labels
    /// of letters, digits, hyphens and underscores, 1-63 bytes each, 253 bytes in all, with
    /// one optional trailing dot; an all-numeric last label is refused, since resolvers would
    /// read `1.2.3.999` or `127.1` as an address (RFC 3696 §2). Userinfo, paths, queries and
    /// fragments are refused (RFC 9110 §4.2.4 deprecates userinfo in `http`/`https` URIs).
    pub fn parse_authority(s: &str) -> Result<Target, TargetError> {
        parse(s, None)
    }

    /// Like [`Target::parse_authority`], but the port may be absent (or empty, RFC 3986
    /// §3.2.3), as in absolute-form `http://` URIs and `Host` headers (RFC 9110 §7.2):
    /// `default_port` is used then.
    pub fn parse_host_port(s: &str, default_port: u16) -> Result<Target, TargetError> {
        parse(s, Some(default_port))
    }
}

impl Host {
    /// The DNS name, if this host is one.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
}

/// The RFC 3986 `host` form: IPv6 in brackets, so the text is usable in a URI or `Host`.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => ip.fmt(f),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The host part before it is checked: brackets say which grammar applies.
enum RawHost<'a> {
    Bracketed(&'a str),
    Plain(&'a str),
}

fn parse(s: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
    if s.contains('@') {
        return Err(TargetError::Userinfo);
    }
    if s.contains(['/', '?', '#']) {
        return Err(TargetError::NotAuthority(quote(s)));
    }
    let (raw_host, port) = split(s)?;
    let host = match raw_host {
        RawHost::Bracketed(inner) => ipv6_literal(inner)?,
        RawHost::Plain(host) => plain_host(host)?,
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(port) => parse_port(port)?,
        None => default_port.ok_or_else(|| TargetError::MissingPort(quote(s)))?,
    };
    Ok(Target { host, port })
}

/// Splits `host[:port]` at the colon that RFC 3986 §3.2 means, leaving IPv6 colons alone.
fn split(s: &str) -> Result<(RawHost<'_>, Option<&str>), TargetError> {
    if let Some(rest) = s.strip_prefix('[') {
        let invalid = || TargetError::InvalidIpv6(quote(s));
        let (inner, after) = rest.split_once(']').ok_or_else(invalid)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        };
        return Ok((RawHost::Bracketed(inner), port));
    }
    match s.rsplit_once(':') {
        None => Ok((RawHost::Plain(s), None)),
        Some((host, _)) if host.contains(':') => {
            let looks_ipv6 = s.parse::<Ipv6Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok();
            Err(if looks_ipv6 {
                TargetError::UnbracketedIpv6(quote(s))
            } else {
                TargetError::InvalidName(quote(host))
            })
        }
        Some((host, port)) => Ok((RawHost::Plain(host), Some(port))),
    }
}

fn ipv6_literal(inner: &str) -> Result<Host, TargetError> {
    // RFC 6874 zone ids name an interface of this machine: never a proxy destination.
    if inner.contains('%') {
        return Err(TargetError::Ipv6Zone(quote(inner)));
    }
    // Also refuses `[1.2.3.4]` and RFC 3986 IPvFuture: brackets mean IPv6 here.
    let ip = inner
        .parse::<Ipv6Addr>()
        .map_err(|_| TargetError::InvalidIpv6(quote(inner)))?;
    Ok(Host::Ip(IpAddr::V6(ip)))
}

fn plain_host(host: &str) -> Result<Host, TargetError> {
    if host.is_empty() {
        return Err(TargetError::EmptyHost);
    }
    // std accepts only four decimal octets without leading zeros, so the octal and
    // shorthand forms inet_aton(3) takes fall through to the name check and fail there.
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > MAX_NAME_LEN {
        return Err(TargetError::NameTooLong(name.len()));
    }
    let labels_ok = name.split('.').all(|label| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tld {
        return Err(TargetError::InvalidName(quote(host)));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// RFC 3986 §3.2.3 `port = *DIGIT`, held to what fits a TCP port: no sign, no spaces, at
/// most five digits (so `000443` is refused rather than silently read as 443).
fn parse_port(port: &str) -> Result<u16, TargetError> {
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::InvalidPort(quote(port)));
    }
    port.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| TargetError::PortOutOfRange(quote(port)))
}

/// Input quoted in an error, cut to `MAX_QUOTED_LEN` bytes at a character boundary.
fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED_LEN {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}

/// The IPv4 address an IPv6 address stands for, in the forms that route to IPv4:
/// IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2), IPv4-compatible `::a.b.c.d` (deprecated,
/// §2.5.5.1; `::` and `::1` are excluded, they are IPv6's own), NAT64 `64:ff9b::a.b.c.d`
/// (RFC 6052 §2.1) and 6to4 `2002:AABB:CCDD::/48` (RFC 3056 §2).
pub(crate) fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_unspecified() && !v6.is_loopback() => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
