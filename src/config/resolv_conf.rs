//! `/etc/resolv.conf` for the `system` resolver: a pure parse of the text (with the
//! `resolv-conf` crate hickory itself uses), strict where a mistake would send lookups
//! elsewhere, lenient where glibc is (unknown directives and options are noted and skipped).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use resolv_conf::ParseError;

/// Where the `system` resolver reads its servers when `nameservers` is not set.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// glibc's caps (`resolv.h`): `RES_MAXNDOTS`, `RES_MAXRETRANS` (seconds), `RES_MAXRETRY`.
const MAX_NDOTS: u32 = 15;
const MAX_TIMEOUT_SECS: u32 = 30;
const MAX_ATTEMPTS: u32 = 5;

/// What splitway takes from a resolv.conf file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines in file order (port 53; an IPv6 zone index is dropped).
    pub nameservers: Vec<IpAddr>,
    /// The last `search` or `domain` line's domains, without the root (`search .` means none).
    pub search: Vec<String>,
    /// `options ndots:N` (default 1, at most 15).
    pub ndots: u8,
    /// `options timeout:N`: one try's wait (default 5 s, at most 30 s).
    pub timeout: Duration,
    /// `options attempts:N`: tries per server (default 2, 1 to 5).
    pub attempts: u8,
    /// `options rotate`: spread queries over the servers round robin.
    pub rotate: bool,
    /// `options use-vc`: TCP only.
    pub tcp_only: bool,
    /// `options no-aaaa`: ask for A records only.
    pub no_aaaa: bool,
    /// `options edns0`.
    pub edns0: bool,
    /// Lines or options glibc would skip too, said as `line N: ...`, for a start-up warning.
    pub ignored: Vec<String>,
}

/// A resolv.conf splitway cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("cannot read {origin}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} line {line}: {message}")]
    Line {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: no `nameserver` line")]
    NoNameserver { origin: String },
}

/// Reads and parses `path` (I/O here only; [`parse`] is pure). Bytes that are not UTF-8 are
/// read as U+FFFD: harmless in a comment (glibc ignores them), an error where a value is.
pub fn load(path: &Path) -> Result<ResolvConf, ResolvConfError> {
    let origin = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), &origin),
        Err(source) => Err(ResolvConfError::Read { origin, source }),
    }
}

/// Parses resolv.conf `text`; `origin` names it in errors (e.g. `/etc/resolv.conf`).
pub fn parse(text: &str, origin: &str) -> Result<ResolvConf, ResolvConfError> {
    let (parsed, errors) = resolv_conf::Config::parse_with_errors(text.as_bytes());
    let lines: Vec<&str> = text.split('\n').collect();
    let line_text = |n: usize| lines.get(n).map_or("", |l| l.trim());
    let at = |n: usize, message: String| ResolvConfError::Line {
        origin: origin.to_owned(),
        line: n + 1,
        message,
    };
    let mut ignored = Vec::new();
    for error in errors {
        match error {
            ParseError::InvalidDirective(n) => {
                ignored.push(format!("line {}: unknown directive `{}`", n + 1, line_text(n)))
            }
            ParseError::InvalidOption(n) => {
                ignored.push(format!("line {}: an unknown option in `{}`", n + 1, line_text(n)))
            }
            ParseError::ExtraData(n) => ignored.push(format!(
                "line {}: extra words after the value in `{}`",
                n + 1,
                line_text(n)
            )),
            ParseError::InvalidUtf8(n, _) => return Err(at(n, "not UTF-8".into())),
            ParseError::InvalidValue(n) => return Err(at(n, format!("`{}`: a missing or bad value", line_text(n)))),
            ParseError::InvalidOptionValue(n) => {
                return Err(at(n, format!("`{}`: an option's value is not a number", line_text(n))));
            }
            ParseError::InvalidIp(n, _) => return Err(at(n, format!("`{}`: not an IP address", line_text(n)))),
        }
    }
    if parsed.nameservers.is_empty() {
        return Err(ResolvConfError::NoNameserver {
            origin: origin.to_owned(),
        });
    }
    let search = search_domains(&parsed, &lines).map_err(|(n, m)| at(n, m))?;
    let clamp = |v: u32, max: u32| u8::try_from(v.clamp(1, max)).unwrap_or(u8::MAX);
    Ok(ResolvConf {
        nameservers: parsed.nameservers.iter().map(|ip| ip.into()).collect(),
        search,
        ndots: u8::try_from(parsed.ndots.min(MAX_NDOTS)).unwrap_or(u8::MAX),
        timeout: Duration::from_secs(u64::from(parsed.timeout.clamp(1, MAX_TIMEOUT_SECS))),
        attempts: clamp(parsed.attempts, MAX_ATTEMPTS),
        rotate: parsed.rotate,
        tcp_only: parsed.use_vc,
        no_aaaa: parsed.no_aaaa,
        edns0: parsed.edns0,
        ignored,
    })
}

/// The effective search list, each domain checked to be a DNS name (an error says the line of
/// the last `search` or `domain` directive, the one glibc uses).
fn search_domains(parsed: &resolv_conf::Config, lines: &[&str]) -> Result<Vec<String>, (usize, String)> {
    let last_line = lines.iter().rposition(|l| {
        let first = l.split([';', '#']).next().unwrap_or("").split_whitespace().next();
        matches!(first, Some("search" | "domain"))
    });
    let mut search = Vec::new();
    for domain in parsed.get_last_search_or_domain() {
        // systemd-resolved writes `search .` to mean "no search domains"; `--` is seen too.
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() || domain == "--" {
            continue;
        }
        if !is_dns_name(domain) {
            return Err((
                last_line.unwrap_or(0),
                format!("search domain `{domain}` is not a DNS name"),
            ));
        }
        search.push(domain.to_ascii_lowercase());
    }
    Ok(search)
}

/// Labels of 1 to 63 letters, digits, `-` or `_` (seen in home routers' domains), 253 at most.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;
