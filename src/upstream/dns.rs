//! Named resolvers, each with its own cache: TTLs clamped to `[min_ttl, max_ttl]`, negative
//! answers cached, stale answers served while the upstream fails (RFC 8767).
//!
//! hickory types never leave `dns/hickory.rs`; the rest of the crate sees [`Answer`] and
//! [`DnsError`].

mod hickory;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ResolverSettings;
use crate::metrics::{DnsResult, Metrics};

/// Addresses for a name, the CNAME chain that led there, and the (clamped) TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Arc<[IpAddr]>,
    /// CNAME targets in the order followed.
    pub cnames: Arc<[String]>,
    pub ttl: Duration,
}

/// How a lookup was answered (the `result` label of the DNS lookup metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
    Stale,
}

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{reason}")]
    NotFound { reason: String, negative_ttl: Option<Duration> },
    #[error("no answer in time")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

struct Entry {
    result: Result<Answer, DnsError>,
    expires: Instant,
}

/// One named resolver and its cache.
pub struct Resolver {
    name: Arc<str>,
    settings: ResolverSettings,
    upstream: hickory::Upstream,
    cache: Mutex<HashMap<Box<str>, Entry>>,
    metrics: Arc<Metrics>,
}

impl Resolver {
    pub fn new(name: &str, settings: &ResolverSettings, metrics: Arc<Metrics>) -> Result<Self, String> {
        Ok(Self {
            name: name.into(),
            settings: settings.clone(),
            upstream: hickory::Upstream::new(name, settings)?,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The lookup budget (`timeout`).
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Asks the upstream directly, bypassing the cache (readiness checks must see an outage
    /// that serve-stale would hide).
    pub async fn check(&self, host: &str) -> Result<Answer, DnsError> {
        match tokio::time::timeout(self.settings.timeout, self.upstream.query(host)).await {
            Ok(r) => r,
            Err(_) => Err(DnsError::Timeout),
        }
    }

    /// Resolves a normalized host name to addresses, from the cache when it is fresh.
    pub async fn resolve(&self, host: &str) -> (Result<Answer, DnsError>, Source) {
        let started = Instant::now();
        let (result, source) = self.lookup(host).await;
        let label = match (&result, source) {
            (Err(_), _) => DnsResult::Error,
            (Ok(_), Source::Hit) => DnsResult::Hit,
            (Ok(_), Source::Miss) => DnsResult::Miss,
            (Ok(_), Source::Stale) => DnsResult::Stale,
        };
        self.metrics.dns_lookup(&self.name, label, started.elapsed().as_secs_f64());
        (result, source)
    }

    async fn lookup(&self, host: &str) -> (Result<Answer, DnsError>, Source) {
        let now = Instant::now();
        let stale = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(host) {
                Some(e) if now < e.expires => return (e.result.clone(), Source::Hit),
                Some(Entry { result: Ok(a), expires }) if now < *expires + self.settings.serve_stale => Some(a.clone()),
                _ => None,
            }
        };
        let fetched = match tokio::time::timeout(self.settings.timeout, self.upstream.query(host)).await {
            Ok(r) => r,
            Err(_) => Err(DnsError::Timeout),
        };
        match (fetched, stale) {
            // RFC 8767 §4: an upstream failure with stale data at hand answers from it.
            (Err(DnsError::Timeout | DnsError::Failed(_)), Some(old)) => (Ok(old), Source::Stale),
            (result, _) => (self.store(host, result), Source::Miss),
        }
    }

    /// Caches an answer or a negative answer with its TTL clamped; returns it as cached.
    fn store(&self, host: &str, result: Result<Answer, DnsError>) -> Result<Answer, DnsError> {
        let s = &self.settings;
        let ttl = match &result {
            Ok(a) => a.ttl,
            Err(DnsError::NotFound { negative_ttl, .. }) => negative_ttl.unwrap_or(s.min_ttl),
            // Failures are not cached: the next request asks again.
            Err(_) => return result,
        };
        let ttl = ttl.clamp(s.min_ttl, s.max_ttl);
        let result = result.map(|a| Answer { ttl, ..a });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(host.into(), Entry { result: result.clone(), expires: Instant::now() + ttl });
        result
    }
}

/// Every resolver a config names, `system` included.
pub struct Resolvers {
    map: HashMap<Arc<str>, Arc<Resolver>>,
}

impl Resolvers {
    pub fn new(settings: &BTreeMap<String, ResolverSettings>, metrics: Arc<Metrics>) -> Result<Self, String> {
        let map = settings
            .iter()
            .map(|(name, s)| Ok((Arc::from(name.as_str()), Arc::new(Resolver::new(name, s, metrics.clone())?))))
            .collect::<Result<_, String>>()?;
        Ok(Self { map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Resolver>> {
        self.map.get(name)
    }
}
