//! `Runtime`: everything built from one config that requests read — the route table, the
//! resolvers and the connector. A connection keeps the `Runtime` it started with.

use crate::policy::Policies;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Basic;
use crate::config::{Config, Mode};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::routes::Route;
use crate::routes::RouteTable;
use crate::target::Target;
use crate::upstream::connect::Connector;
use crate::upstream::dns::DnsError;
use crate::upstream::dns::{FAILURE_RECHECK, Resolver, Resolvers, SetupError};
use crate::upstream::http::{self as forward, ForwardClient};
use crate::upstream::parent;

/// The route name of report mode's actual path.
pub(crate) const SYSTEM_PATH: &str = "system-path";

/// Why a config could not be turned into a runtime (validation catches most of this first).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Two routes claim one pattern.
    #[error(transparent)]
    Routes(crate::config::ConfigError),
    #[error(transparent)]
    Resolver(#[from] SetupError),
    #[error(
        "{origin}: [transparent] mark = {mark:#x}: cannot set SO_MARK; it needs CAP_NET_ADMIN, \
         or drop `mark` and exclude splitway's user with `exclude_uid`"
    )]
    Mark {
        origin: String,
        mark: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `[transparent] mark` can be set by this process: checked before serving with it
/// (start-up, reload), since without `CAP_NET_ADMIN` every marked connection would fail.
pub(crate) fn check_mark(config: &Config) -> Result<(), RuntimeError> {
    match config.transparent.as_ref().and_then(|t| t.mark) {
        Some(mark) => crate::upstream::socket::check_mark(mark).map_err(|source| RuntimeError::Mark {
            origin: config.origin.clone(),
            mark,
            source,
        }),
        None => Ok(()),
    }
}

/// One dependency check shown by `/readyz?verbose`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// `resolver`, `connect` or `parent`.
    pub kind: &'static str,
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The runtime new connections and requests take: replaced atomically on reload. A request
/// reads it once and keeps what it read to its end, so a reload never changes a request or
/// tunnel half-way, and reaches a kept-alive connection at its next request.
pub(crate) struct Current(std::sync::RwLock<Arc<Runtime>>);

impl Current {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self(std::sync::RwLock::new(runtime))
    }

    /// The runtime now.
    pub(crate) fn load(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces it for what starts next.
    pub(crate) fn store(&self, next: Arc<Runtime>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// The state derived from one config.
pub struct Runtime {
    pub config: Config,
    pub routes: Arc<RouteTable>,
    pub connector: Arc<Connector>,
    /// Pooled upstream connections for plain-HTTP forwarding.
    pub client: ForwardClient,
    /// What a plain forward proxy would do (report mode's actual path): resolve the host
    /// through `system`.
    pub system_route: Arc<Route>,
    /// `[proxy] auth`, ready to compare.
    pub auth: Option<Basic>,
    /// `[[client]]` policies.
    pub policies: Policies,
    refresher_stop: CancellationToken,
}

impl Runtime {
    /// A runtime whose own addresses (never connected to) are the config's listen addresses.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Self, RuntimeError> {
        let own = std::iter::once(config.proxy.listen)
            .chain(config.admin.as_ref().map(|a| a.listen))
            .collect();
        Self::new_bound(config, metrics, own, None)
    }

    /// A runtime for a proxy bound at `own` (the listeners' real addresses, port 0 resolved),
    /// which the connector refuses to connect to: a request through the proxy to itself
    /// would loop. `previous`: the resolvers of the runtime this one replaces, whose
    /// unchanged ones are kept with their caches (see [`Resolvers::new`]).
    pub fn new_bound(
        config: Config,
        metrics: Arc<Metrics>,
        own: Vec<SocketAddr>,
        previous: Option<&Resolvers>,
    ) -> Result<Self, RuntimeError> {
        let routes =
            RouteTable::new(&config.routes).map_err(|clash| RuntimeError::Routes(clash.located(&config.origin)))?;
        let resolvers = Arc::new(Resolvers::new(&config.resolvers, metrics.clone(), previous)?);
        let p = &config.proxy;
        let mark = config.transparent.as_ref().and_then(|t| t.mark);
        let connector = Arc::new(
            Connector::new(resolvers, metrics, p.deny_destinations.clone(), p.connect_timeout)
                .with_own(own)
                .with_mark(mark)
                .with_keepalive(p.tcp_keepalive)
                .with_backoff(p.address_backoff),
        );
        let routes = Arc::new(routes);
        // Report mode: forwarded requests follow the system path too (an empty table routes
        // everything through the implicit default route).
        let forward_routes = match config.proxy.mode {
            Mode::Enforce => routes.clone(),
            Mode::Report => {
                Arc::new(RouteTable::new(&[]).map_err(|clash| RuntimeError::Routes(clash.located(&config.origin)))?)
            }
        };
        let client = forward::client(forward_routes, connector.clone());
        let system_route = Arc::new(Route::resolving(SYSTEM_PATH, "system"));
        let auth = config.proxy.auth.as_ref().map(Basic::new);
        let policies = Policies::new(&config.clients);
        let runtime = Self {
            config,
            routes,
            connector,
            client,
            system_route,
            auth,
            policies,
            refresher_stop: CancellationToken::new(),
        };
        // The names this runtime keeps warm are never evicted by other traffic.
        let names = runtime.route_names();
        runtime
            .connector
            .resolvers()
            .pin(names.keys().map(|(r, n)| (r.as_str(), n.as_str())));
        Ok(runtime)
    }
}

impl Runtime {
    /// A CONNECT (or an admin-side probe) may reach only `[proxy] connect_ports`.
    pub fn check_connect_port(&self, target: &Target) -> Result<(), ProxyError> {
        let ports = &self.config.proxy.connect_ports;
        if ports.contains(&target.port) {
            return Ok(());
        }
        let allowed = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        Err(ProxyError::PortNotAllowed {
            port: target.port,
            allowed,
        })
    }

    /// Plain HTTP on the transparent listener may reach only the ports `splitway iptables`
    /// captures: `[proxy] connect_ports` and `[transparent] http_ports`.
    pub fn check_transparent_http_port(&self, target: &Target) -> Result<(), ProxyError> {
        let http_ports = self.config.transparent.as_ref().map_or(&[][..], |t| &t.http_ports[..]);
        if http_ports.contains(&target.port) {
            return Ok(());
        }
        self.check_connect_port(target).map_err(|_| {
            let ports = self.config.proxy.connect_ports.iter().chain(http_ports);
            ProxyError::PortNotAllowed {
                port: target.port,
                allowed: ports.map(u16::to_string).collect::<Vec<_>>().join(", "),
            }
        })
    }

    /// Every route's [`Route::warm_names`], keyed by (resolver, name), once each; the value
    /// says whether some route needs it to resolve (a `connect` name), not just to answer.
    fn route_names(&self) -> BTreeMap<(String, String), bool> {
        let mut names = BTreeMap::new();
        for route in self.routes.routes() {
            for (name, must_resolve) in route.warm_names() {
                *names.entry((route.resolver.to_string(), name)).or_insert(false) |= must_resolve;
            }
        }
        names
    }

    /// [`Runtime::route_names`] with the resolver that looks each one up.
    fn warm_names(&self) -> Vec<(Arc<Resolver>, String)> {
        let resolvers = self.connector.resolvers();
        self.route_names()
            .into_keys()
            .filter_map(|(resolver, name)| resolvers.get(&resolver).map(|r| (r.clone(), name)))
            .collect()
    }

    /// Resolves every exact route host and every `connect` name, so the first requests find
    /// them cached (SPEC: start-up resolution). Failures are logged, not fatal.
    pub async fn prefetch(&self) {
        let mut lookups = tokio::task::JoinSet::new();
        for (resolver, name) in self.warm_names() {
            lookups.spawn(async move {
                if let (Err(e), _) = resolver.resolve(&name).await {
                    tracing::warn!(host = %name, resolver = %resolver.name(), error = %e, "start-up resolution failed");
                }
            });
        }
        while lookups.join_next().await.is_some() {}
    }

    /// Keeps the start-up names fresh: each is asked again when the last tenth of its TTL
    /// begins, so requests rarely wait on DNS. The future holds no reference to the runtime;
    /// it ends when [`Runtime::stop_refresher`] is called or the runtime is dropped.
    pub fn refresher(&self) -> impl Future<Output = ()> + Send + 'static {
        let (names, stop) = (self.warm_names(), self.refresher_stop.clone());
        async move {
            tokio::select! {
                () = keep_fresh(names) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Ends the [`Runtime::refresher`] (a reload replaced this runtime, or the proxy stops).
    pub fn stop_refresher(&self) {
        self.refresher_stop.cancel();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.refresher_stop.cancel();
    }
}

/// The refresher asks again for one name at most this often, whatever its TTL.
const MIN_REFRESH_GAP: std::time::Duration = std::time::Duration::from_secs(1);

async fn keep_fresh(names: Vec<(Arc<Resolver>, String)>) {
    let start = Instant::now();
    let mut next: Vec<Instant> = names.iter().map(|(r, n)| r.refresh_at(n).unwrap_or(start)).collect();
    loop {
        let Some(&earliest) = next.iter().min() else { return };
        tokio::time::sleep_until(earliest).await;
        let now = Instant::now();
        let mut due = tokio::task::JoinSet::new();
        for (i, (resolver, name)) in names.iter().enumerate().filter(|(i, _)| next[*i] <= now) {
            let (resolver, name) = (resolver.clone(), name.clone());
            due.spawn(async move {
                if let Err(e) = resolver.refresh(&name).await {
                    tracing::debug!(host = %name, resolver = %resolver.name(), error = %e, "refresh failed");
                }
                (i, resolver.refresh_at(&name))
            });
        }
        while let Some(joined) = due.join_next().await {
            let Ok((i, at)) = joined else { continue };
            // A failed refresh is retried after the failure recheck time, and a tiny TTL is
            // refreshed at most once per MIN_REFRESH_GAP: never a tight loop.
            next[i] = match at {
                Some(at) => at.max(Instant::now() + MIN_REFRESH_GAP),
                None => now + FAILURE_RECHECK,
            };
        }
    }
}

impl Runtime {
    /// Checks every resolver that routes depend on and every `connect` name, asking the
    /// upstream servers directly: a resolver is reachable when it answers at all (a negative
    /// answer included); a `connect` name must resolve.
    /// Each parent proxy (`via`) of any route, once: does it accept a TCP connection?
    async fn check_parents(&self) -> Vec<Check> {
        let mut seen = std::collections::BTreeSet::new();
        let mut dials = tokio::task::JoinSet::new();
        for route in self.routes.routes() {
            for parent in route.via.iter().flat_map(|v| v.parents.iter()) {
                if seen.insert(parent.authority()) {
                    let (connector, route, parent) = (self.connector.clone(), route.clone(), parent.clone());
                    dials.spawn(async move {
                        let result = parent::reachable(&connector, &route, &parent).await;
                        (parent.authority(), result)
                    });
                }
            }
        }
        let mut checks = Vec::new();
        while let Some(Ok((name, result))) = dials.join_next().await {
            let reason = result.err().map(|e| format!("parent proxy {name} {e}"));
            checks.push(Check {
                kind: "parent",
                name,
                ok: reason.is_none(),
                reason,
            });
        }
        checks
    }

    pub async fn check_dependencies(&self) -> Vec<Check> {
        let names = self.route_names();
        let mut lookups = tokio::task::JoinSet::new();
        for ((resolver, name), is_connect) in names {
            let Some(r) = self.connector.resolvers().get(&resolver).cloned() else {
                continue;
            };
            lookups.spawn(async move {
                let result = r.check(&name).await;
                (resolver, name, is_connect, result)
            });
        }
        let mut resolvers: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut checks = Vec::new();
        while let Some(Ok((resolver, name, is_connect, result))) = lookups.join_next().await {
            let reachable = matches!(result, Ok(_) | Err(DnsError::NotFound { .. }));
            let entry = resolvers.entry(resolver.clone()).or_insert(Some(String::new()));
            match (&result, reachable) {
                (_, true) => *entry = None,
                (Err(e), false) => {
                    if let Some(reason) = entry {
                        *reason = format!("no answer for {name}: {}", e.describe());
                    }
                }
                (Ok(_), false) => {}
            }
            if is_connect {
                let reason = result.err().map(|e| match e {
                    // The usual first-run cause: a placeholder or mistyped endpoint name.
                    DnsError::NotFound { .. } => format!(
                        "resolver `{resolver}`: {}; check the name in the route's `connect` (or [aws] \
                         vpc_endpoint): a VPC endpoint's names are listed by `aws ec2 describe-vpc-endpoints`",
                        e.describe()
                    ),
                    e => format!("resolver `{resolver}`: {}", e.describe()),
                });
                checks.push(Check {
                    kind: "connect",
                    name,
                    ok: reason.is_none(),
                    reason,
                });
            }
        }
        checks.extend(self.check_parents().await);
        for (name, reason) in resolvers {
            checks.push(Check {
                kind: "resolver",
                name,
                ok: reason.is_none(),
                reason,
            });
        }
        checks.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        checks
    }
}
