//! The only file that touches hickory: building a resolver from settings, and one A + AAAA
//! query turned into splitway's own [`Answer`] or [`DnsError`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HDnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{TokioResolver, lookup::Lookup};

use super::{Answer, DnsError};
use crate::config::{Nameserver, ResolverSettings};

/// A hickory resolver with its own cache turned off: splitway's cache sits above it.
pub(super) struct Upstream {
    inner: TokioResolver,
    /// Names are passed as FQDNs unless this resolver applies resolv.conf search domains.
    search: bool,
}

impl Upstream {
    pub(super) fn new(name: &str, settings: &ResolverSettings) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let (mut builder, search) = match &settings.nameservers {
            None => {
                let b = TokioResolver::builder(provider)
                    .map_err(|e| format!("resolver `{name}`: cannot read /etc/resolv.conf: {e}"))?;
                (b, true)
            }
            Some(list) => {
                let servers = list.iter().map(name_server).collect();
                (
                    TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider),
                    false,
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.preserve_intermediates = true;
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        opts.use_hosts_file = if settings.hosts_file {
            ResolveHosts::Always
        } else {
            ResolveHosts::Never
        };
        let inner = builder.build().map_err(|e| format!("resolver `{name}`: {e}"))?;
        Ok(Self { inner, search })
    }

    /// Looks up A and AAAA at once; an answer needs one family to have addresses.
    pub(super) async fn query(&self, host: &str) -> Result<Answer, DnsError> {
        let name = if self.search {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        let (a, aaaa) = tokio::join!(
            self.inner.lookup(name.as_str(), RecordType::A),
            self.inner.lookup(name.as_str(), RecordType::AAAA)
        );
        let mut addrs = Vec::new();
        let mut cnames: Vec<String> = Vec::new();
        let mut ttl = u32::MAX;
        for lookup in [&a, &aaaa].into_iter().flatten() {
            collect(lookup, &mut addrs, &mut cnames, &mut ttl);
        }
        if !addrs.is_empty() {
            return Ok(Answer {
                addrs: addrs.into(),
                cnames: cnames.into(),
                ttl: Duration::from_secs(u64::from(ttl)),
            });
        }
        // Prefer the most telling failure: a timeout or server failure over "no records".
        let errors = [a.err(), aaaa.err()];
        let worst = errors.iter().flatten().max_by_key(|e| severity(e));
        Err(match worst {
            Some(e) => convert(e),
            None => DnsError::NotFound {
                reason: "no A or AAAA records".into(),
                negative_ttl: None,
            },
        })
    }
}

fn collect(lookup: &Lookup, addrs: &mut Vec<IpAddr>, cnames: &mut Vec<String>, ttl: &mut u32) {
    for record in lookup.answers() {
        match &record.data {
            RData::A(a) => addrs.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
            RData::CNAME(c) => {
                let target = c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                if !cnames.contains(&target) {
                    cnames.push(target);
                }
                continue;
            }
            _ => continue,
        }
        *ttl = (*ttl).min(record.ttl);
    }
}

fn severity(e: &NetError) -> u8 {
    match e {
        NetError::Dns(HDnsError::NoRecordsFound(_)) => 0,
        NetError::Timeout => 2,
        _ => 1,
    }
}

fn convert(e: &NetError) -> DnsError {
    match e {
        NetError::Dns(HDnsError::NoRecordsFound(nr)) => DnsError::NotFound {
            reason: format!("{} (no A or AAAA records)", nr.response_code),
            negative_ttl: nr.negative_ttl.map(|t| Duration::from_secs(u64::from(t))),
        },
        NetError::Timeout => DnsError::Timeout,
        other => DnsError::Failed(other.to_string()),
    }
}

fn name_server(ns: &Nameserver) -> NameServerConfig {
    let with_port = |mut c: ConnectionConfig, port: u16| {
        c.port = port;
        c
    };
    let (ip, conns) = match ns {
        Nameserver::UdpTcp(a) => (
            a.ip(),
            vec![
                with_port(ConnectionConfig::udp(), a.port()),
                with_port(ConnectionConfig::tcp(), a.port()),
            ],
        ),
        Nameserver::Udp(a) => (a.ip(), vec![with_port(ConnectionConfig::udp(), a.port())]),
        Nameserver::Tcp(a) => (a.ip(), vec![with_port(ConnectionConfig::tcp(), a.port())]),
        Nameserver::Tls { addr, name } => (
            addr.ip(),
            vec![with_port(ConnectionConfig::tls(Arc::from(name.as_str())), addr.port())],
        ),
        Nameserver::Https { addr, name, path } => (
            addr.ip(),
            vec![with_port(
                ConnectionConfig::https(Arc::from(name.as_str()), Some(Arc::from(path.as_str()))),
                addr.port(),
            )],
        ),
    };
    NameServerConfig::new(ip, true, conns)
}
