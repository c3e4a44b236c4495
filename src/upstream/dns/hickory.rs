//! The only file that touches hickory: building a resolver from settings, and one A + AAAA
//! query turned into splitway's own [`Answer`] or [`DnsError`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HDnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{TokioResolver, lookup::Lookup};

mod tls;

use self::tls::Probe;
pub(super) use self::tls::TlsSetupError;
use super::{Answer, DnsError, SetupError};
use crate::config::resolv_conf::{self, RESOLV_CONF, ResolvConf, ResolvConfError};
use crate::config::{Nameserver, ResolverSettings};

/// A hickory resolver with its own cache turned off: splitway's cache sits above it.
pub(super) struct Upstream {
    inner: TokioResolver,
    /// Off when resolv.conf says `options no-aaaa`.
    aaaa: bool,
    /// Says why, when hickory can only say "no connections available".
    probe: Option<Probe>,
}

impl Upstream {
    pub(super) fn new(name: &str, settings: &ResolverSettings) -> Result<Self, SetupError> {
        let (servers, system) = match &settings.nameservers {
            Some(list) => (list.clone(), None),
            None => {
                let conf = resolv_conf::load(Path::new(RESOLV_CONF)).map_err(|e| SetupError::SystemConf {
                    resolver: name.to_owned(),
                    source: Arc::new(e),
                })?;
                for note in &conf.ignored {
                    tracing::warn!(resolver = name, file = RESOLV_CONF, "{note}: ignored, as glibc does");
                }
                (system_servers(&conf), Some(conf))
            }
        };
        if let Some(conf) = system.as_ref().filter(|c| !c.search.is_empty()) {
            tracing::info!(
                resolver = name,
                file = RESOLV_CONF,
                search = %conf.search.join(" "),
                "search domains are not applied: a name is resolved as given, so the route chosen \
                 for it holds for the name resolved; list short names in NO_PROXY"
            );
        }
        // No search list: a route is chosen on the name as given, and a deny route for
        // `*.corp.example` must not be sidestepped by asking for `secret` and letting a search
        // domain add `.corp.example` (Squid's `dns_defnames off`).
        let config = ResolverConfig::from_parts(None, Vec::new(), servers.iter().map(name_server).collect());
        let tls = tls::client_config(settings.ca_file.as_deref()).map_err(|source| SetupError::Tls {
            resolver: name.to_owned(),
            source,
        })?;
        let probe = Probe::new(&servers, &tls);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_tls_config(tls);
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
        if let Some(conf) = &system {
            system_options(opts, conf, settings.timeout);
        }
        let inner = builder.build().map_err(|e| SetupError::Build {
            resolver: name.to_owned(),
            source: Arc::new(e),
        })?;
        Ok(Self {
            inner,
            aaaa: !system.is_some_and(|c| c.no_aaaa),
            probe,
        })
    }

    /// Looks up A and AAAA at once; an answer needs one family to have addresses.
    pub(super) async fn query(&self, host: &str) -> Result<Answer, DnsError> {
        let name = fqdn(host);
        let aaaa = async {
            match self.aaaa {
                true => Some(self.inner.lookup(name.as_str(), RecordType::AAAA).await),
                false => None,
            }
        };
        let (a, aaaa) = tokio::join!(self.inner.lookup(name.as_str(), RecordType::A), aaaa);
        let results: Vec<&Result<Lookup, NetError>> = std::iter::once(&a).chain(aaaa.as_ref()).collect();
        let mut addrs = Vec::new();
        let mut cnames: Vec<String> = Vec::new();
        let mut ttl = u32::MAX;
        for lookup in results.iter().copied().flatten() {
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
        let worst = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .max_by_key(|e| severity(e));
        Err(match worst {
            Some(NetError::NoConnections) => self.why_no_connections().await,
            Some(e) => convert(e),
            None => DnsError::NotFound {
                reason: "no A or AAAA records".into(),
                negative_ttl: None,
            },
        })
    }
}

impl Upstream {
    /// hickory says only "no connections available"; the probe says why, when it can.
    async fn why_no_connections(&self) -> DnsError {
        let why = match &self.probe {
            Some(probe) => probe.why_unreachable().await,
            None => None,
        };
        match why {
            Some(why) => DnsError::Failed(Arc::new(why)),
            None => DnsError::Failed(Arc::new(NetError::NoConnections)),
        }
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
        other => DnsError::Failed(Arc::new(other.clone())),
    }
}

/// The `system` resolver's servers from resolv.conf: port 53, UDP with TCP fallback, or TCP
/// only under `options use-vc`.
fn system_servers(conf: &ResolvConf) -> Vec<Nameserver> {
    let server = |ip: &IpAddr| {
        let addr = SocketAddr::new(*ip, 53);
        match conf.tcp_only {
            true => Nameserver::Tcp(addr),
            false => Nameserver::UdpTcp(addr),
        }
    };
    conf.nameservers.iter().map(server).collect()
}

/// The name as an FQDN (a trailing dot), which hickory never extends with a search domain
/// and `ndots` does not apply to.
fn fqdn(host: &str) -> String {
    format!("{}.", host.trim_end_matches('.'))
}

/// What resolv.conf's `options` change; `budget` (the resolver's `timeout`) still bounds a
/// whole lookup, so one try never waits longer than it.
fn system_options(opts: &mut ResolverOpts, conf: &ResolvConf, budget: Duration) {
    opts.ndots = usize::from(conf.ndots);
    opts.timeout = conf.timeout.min(budget);
    opts.attempts = usize::from(conf.attempts);
    opts.edns0 = conf.edns0;
    if conf.rotate {
        opts.server_ordering_strategy = ServerOrderingStrategy::RoundRobin;
    }
}

/// A resolv.conf error as the user sees it: what is wrong, then how to get going again.
/// What a resolv.conf error says, its cause after it.
pub(super) fn system_detail(e: &ResolvConfError) -> String {
    let cause = std::error::Error::source(e)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    format!("{e}{cause}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::ProtocolConfig;

    const POD: &str = "search default.svc.cluster.local ec2.internal\nnameserver 172.20.0.10\nnameserver 172.20.0.11\noptions ndots:5 timeout:5 attempts:3 use-vc rotate edns0\n";

    #[test]
    fn names_are_resolved_as_given_never_with_a_search_domain() {
        assert_eq!(fqdn("secret"), "secret.");
        assert_eq!(fqdn("api.example.com"), "api.example.com.");
        assert_eq!(fqdn("api.example.com."), "api.example.com.");
    }

    #[test]
    fn resolv_conf_becomes_hickory_config_and_options() {
        let conf = resolv_conf::parse(POD, RESOLV_CONF).expect("parses");
        let servers: Vec<NameServerConfig> = system_servers(&conf).iter().map(name_server).collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let servers: Vec<IpAddr> = config.name_servers().iter().map(|s| s.ip).collect();
        assert_eq!(
            servers,
            ["172.20.0.10".parse::<IpAddr>().unwrap(), "172.20.0.11".parse().unwrap()]
        );
        for server in config.name_servers() {
            // use-vc: TCP only, on port 53.
            assert_eq!(server.connections.len(), 1);
            assert!(matches!(server.connections[0].protocol, ProtocolConfig::Tcp));
            assert_eq!(server.connections[0].port, 53);
        }
        let mut opts = ResolverOpts::default();
        system_options(&mut opts, &conf, Duration::from_secs(2));
        assert_eq!((opts.ndots, opts.attempts, opts.edns0), (5, 3, true));
        // One try never outlasts the resolver's own budget.
        assert_eq!(opts.timeout, Duration::from_secs(2));
        assert_eq!(opts.server_ordering_strategy, ServerOrderingStrategy::RoundRobin);
    }

    #[test]
    fn a_bad_resolv_conf_says_what_to_do() {
        let system_error = |_: &str, e: ResolvConfError| {
            SetupError::SystemConf {
                resolver: "system".into(),
                source: Arc::new(e),
            }
            .to_string()
        };
        let e = resolv_conf::parse("nameserver 10.0.0.x\n", RESOLV_CONF).expect_err("bad IP");
        assert_eq!(
            system_error("system", e),
            "resolver `system`: /etc/resolv.conf line 1: `nameserver 10.0.0.x`: not an IP address; fix the file or set [resolver.system] nameservers"
        );
        let e = resolv_conf::load(Path::new("/nonexistent/resolv.conf")).expect_err("missing");
        let shown = system_error("system", e);
        assert!(
            shown.starts_with("resolver `system`: cannot read /nonexistent/resolv.conf: "),
            "{shown}"
        );
    }
}
