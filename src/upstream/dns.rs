//! Named resolvers, each with its own cache: TTLs clamped to `[min_ttl, max_ttl]`, negative
//! answers cached, stale answers served while the upstream fails or is slow (RFC 8767), one
//! upstream query per name at a time (single-flight), and a refresh in the background when a
//! hit finds its entry close to expiry.
//!
//! hickory types never leave `dns/hickory.rs`; the rest of the crate sees [`Answer`] and
//! [`DnsError`].

mod cache;
mod hickory;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use self::cache::{Cache, Entry};
use crate::config::ResolverSettings;
pub use crate::error::DnsError;
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

/// A resolver that cannot be built from its settings: hickory-free, naming the resolver and
/// saying what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    /// `/etc/resolv.conf` cannot be used (the `system` resolver without `nameservers`).
    #[error(
        "resolver `{resolver}`: {}; fix the file or set [resolver.{resolver}] nameservers",
        hickory::system_detail(source)
    )]
    SystemConf {
        resolver: String,
        source: Arc<crate::config::resolv_conf::ResolvConfError>,
    },
    /// The TLS client config of a `tls://` or `https://` server (`ca_file`).
    #[error("resolver `{resolver}`: {source}")]
    Tls {
        resolver: String,
        source: hickory::TlsSetupError,
    },
    /// hickory refused the settings.
    #[error("resolver `{resolver}`: its settings were refused")]
    Build {
        resolver: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// RFC 8767 §5 "client response timer": how long a lookup with stale data at hand waits for
/// the upstream before answering from the stale data (the query goes on in the background).
pub const STALE_ANSWER_AFTER: Duration = Duration::from_millis(1800);
/// RFC 8767 §5 "failure recheck timer": after a failed refresh, stale data is served without
/// asking the upstream again for this long.
pub const FAILURE_RECHECK: Duration = Duration::from_secs(30);

type Outcome = Result<Answer, DnsError>;

/// What lookups share: the cache and the queries in flight (one per name at a time).
struct Inner {
    name: Arc<str>,
    settings: ResolverSettings,
    upstream: hickory::Upstream,
    cache: Cache,
    inflight: Mutex<HashMap<Box<str>, watch::Receiver<Option<Outcome>>>>,
}

/// One named resolver and its cache.
pub struct Resolver {
    inner: Arc<Inner>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the map valid: ignore the poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Resolver {
    pub fn new(name: &str, settings: &ResolverSettings, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let name: Arc<str> = name.into();
        let inner = Inner {
            cache: Cache::new(&name, settings.cache_size, settings.serve_stale, metrics.clone()),
            upstream: hickory::Upstream::new(&name, settings)?,
            name,
            settings: settings.clone(),
            inflight: Mutex::new(HashMap::new()),
        };
        Ok(Self {
            inner: Arc::new(inner),
            metrics,
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// The lookup budget (`timeout`).
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }

    /// Asks the upstream directly, bypassing the cache (readiness checks must see an outage
    /// that serve-stale would hide).
    pub async fn check(&self, host: &str) -> Result<Answer, DnsError> {
        match tokio::time::timeout(self.inner.settings.timeout, self.inner.upstream.query(host)).await {
            Ok(r) => r,
            Err(_) => Err(DnsError::Timeout),
        }
    }

    /// Resolves a normalized host name to addresses, from the cache when it is fresh.
    pub async fn resolve(&self, host: &str) -> (Outcome, Source) {
        let started = Instant::now();
        let (result, source) = self.lookup(host).await;
        let label = match (&result, source) {
            (Err(_), _) => DnsResult::Error,
            (Ok(_), Source::Hit) => DnsResult::Hit,
            (Ok(_), Source::Miss) => DnsResult::Miss,
            (Ok(_), Source::Stale) => DnsResult::Stale,
        };
        self.metrics
            .dns_lookup(&self.inner.name, label, started.elapsed().as_secs_f64());
        (result, source)
    }

    async fn lookup(&self, host: &str) -> (Outcome, Source) {
        let now = Instant::now();
        let (stale, refresh) = match self.inner.cache.get(host, now) {
            Some(e) if now < e.expires => {
                let refresh = e.result.is_ok() && now >= e.refresh_at && e.recheck_at.is_none_or(|t| now >= t);
                (Some((e.result, Source::Hit)), refresh)
            }
            Some(Entry {
                result: Ok(a),
                recheck_at,
                ..
            }) => {
                // Within the failure recheck time the upstream is not asked again.
                let recent_failure = recheck_at.is_some_and(|t| now < t);
                (Some((Ok(a), Source::Stale)), !recent_failure)
            }
            _ => (None, true),
        };
        match stale {
            Some((hit, Source::Hit)) => {
                if refresh {
                    drop(self.inner.query(host));
                }
                (hit, Source::Hit)
            }
            Some((old, _)) if !refresh => (old, Source::Stale),
            Some((old, _)) => {
                let mut rx = self.inner.query(host);
                let wait = self.inner.settings.timeout.min(STALE_ANSWER_AFTER);
                match tokio::time::timeout(wait, wait_result(&mut rx)).await {
                    // RFC 8767 §4: a failed upstream with stale data at hand answers from it.
                    Ok(Err(DnsError::Timeout | DnsError::Failed(_) | DnsError::NoAnswer)) | Err(_) => {
                        (old, Source::Stale)
                    }
                    Ok(fresh) => (fresh, Source::Miss),
                }
            }
            None => (wait_result(&mut self.inner.query(host)).await, Source::Miss),
        }
    }

    /// When `host` should next be refreshed: its entry's refresh time (or failure recheck time);
    /// `None` when it has no usable entry.
    pub fn refresh_at(&self, host: &str) -> Option<Instant> {
        self.inner
            .cache
            .get(host, Instant::now())
            .filter(|e| e.result.is_ok())
            .map(|e| e.refresh_at.max(e.recheck_at.unwrap_or(e.refresh_at)))
    }

    /// Keeps the entries of `names` (route hosts and `connect` names) beside the bounded
    /// cache, where lookups of other names never evict them; replaces the previous set.
    pub fn pin<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        self.inner.cache.pin(names.into_iter().map(Box::from).collect());
    }

    /// Asks the upstream for `host` now (joining a query in flight) and caches the answer.
    pub async fn refresh(&self, host: &str) -> Outcome {
        wait_result(&mut self.inner.query(host)).await
    }
}

async fn wait_result(rx: &mut watch::Receiver<Option<Outcome>>) -> Outcome {
    match rx.wait_for(Option::is_some).await {
        Ok(r) => r.clone().unwrap_or(Err(DnsError::NoAnswer)),
        Err(_) => Err(DnsError::NoAnswer),
    }
}

impl Inner {
    /// Single-flight: joins the query for `host` in flight, or starts one on its own task, so
    /// it completes (and fills the cache) even when every waiter has given up.
    fn query(self: &Arc<Self>, host: &str) -> watch::Receiver<Option<Outcome>> {
        let mut inflight = lock(&self.inflight);
        // A closed channel is a query task that died (runtime shut down): start afresh.
        if let Some(rx) = inflight.get(host).filter(|rx| rx.has_changed().is_ok()) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(host.into(), rx.clone());
        let (inner, host) = (self.clone(), Box::<str>::from(host));
        tokio::spawn(async move {
            let fetched = match tokio::time::timeout(inner.settings.timeout, inner.upstream.query(&host)).await {
                Ok(r) => r,
                Err(_) => Err(DnsError::Timeout),
            };
            let result = inner.store(&host, fetched);
            lock(&inner.inflight).remove(&host);
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// Caches an answer or a negative answer with its TTL clamped; a failure marks a cached
    /// answer for the failure recheck time instead. Returns the result as cached.
    fn store(&self, host: &str, result: Outcome) -> Outcome {
        let s = &self.settings;
        let now = Instant::now();
        let ttl = match &result {
            Ok(a) => a.ttl,
            Err(DnsError::NotFound { negative_ttl, .. }) => negative_ttl.unwrap_or(s.min_ttl),
            // Failures are not cached: the next request asks again (after the recheck time
            // when stale data is there to answer meanwhile).
            Err(_) => {
                self.cache.update(host, |e| e.recheck_at = Some(now + FAILURE_RECHECK));
                return result;
            }
        };
        let ttl = ttl.clamp(s.min_ttl, s.max_ttl);
        let result = result.map(|a| Answer { ttl, ..a });
        let entry = Entry {
            result: result.clone(),
            expires: now + ttl,
            refresh_at: now + ttl - ttl / 10,
            recheck_at: None,
        };
        self.cache.insert(host, entry);
        result
    }
}

/// Every resolver a config names, `system` included.
pub struct Resolvers {
    map: HashMap<Arc<str>, Arc<Resolver>>,
}

impl Resolvers {
    /// Builds every resolver of a config. A resolver of `previous` (the runtime a reload
    /// replaces) whose definition is unchanged is kept, cache and queries in flight included,
    /// so a reload during a DNS outage still answers from its stale entries; a changed or new
    /// one starts with an empty cache.
    pub fn new(
        settings: &BTreeMap<String, ResolverSettings>,
        metrics: Arc<Metrics>,
        previous: Option<&Resolvers>,
    ) -> Result<Self, SetupError> {
        let map = settings
            .iter()
            .map(|(name, s)| {
                let kept = previous
                    .and_then(|p| p.get(name))
                    .filter(|r| r.inner.settings == *s)
                    .cloned();
                let resolver = match kept {
                    Some(r) => r,
                    None => Arc::new(Resolver::new(name, s, metrics.clone())?),
                };
                Ok((Arc::from(name.as_str()), resolver))
            })
            .collect::<Result<_, SetupError>>()?;
        Ok(Self { map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Resolver>> {
        self.map.get(name)
    }

    /// Pins each resolver's names from `(resolver, name)` pairs; a resolver not named keeps
    /// no pinned name (see [`Resolver::pin`]).
    pub fn pin<'a>(&self, names: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut by_resolver: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (resolver, name) in names {
            by_resolver.entry(resolver).or_default().insert(name);
        }
        for (name, resolver) in &self.map {
            resolver.pin(by_resolver.remove(&**name).unwrap_or_default());
        }
    }
}
