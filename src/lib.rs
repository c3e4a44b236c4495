//! splitway: a sidecar forward proxy that decides per host where a connection goes.
//!
//! Applications reach it through `HTTPS_PROXY`; for each `CONNECT host:port` it picks a route
//! (exact name > longest `*.suffix` > `*`), resolves through that route's named resolver, and
//! opens a byte pipe. The application's TLS is never terminated.
//!
//! Module map (floors top down, imports pointing one way; `tests/it/house.rs` holds it):
//! - [`server`]: the one accept loop for the proxy and transparent listeners, the connection
//!   limit, the PROXY protocol header at accept, the drain (`drain_delay`, then
//!   `drain_timeout`); `transparent`: a redirected connection, routed by its SNI or `Host`;
//! - [`proxy`]: the first CONNECT without hyper, the hyper service, the one tunnel, the one
//!   forwarding path; `outcome`: the `Exchange` every request and tunnel ends
//!   through, counted and logged in one place;
//! - [`upstream`]: the plan carried out (`dial`), the one walk over a plan's names (`walk`),
//!   the connector, named resolvers with caches, parent proxies;
//! - [`policy`]: who a client is (PROXY source, peer, VPC endpoint, auth user) and which
//!   `[[client]]` policy applies;
//! - [`routes`]: the route table; [`config`]: the TOML schema, defaults and validation;
//!   [`error`]: `ProxyError` → status, `Proxy-Status`, metric label;
//! - [`target`], [`glob`]: the ground floor (targets, name patterns);
//! - [`metrics`]: every metric name and label set; [`admin`]: `/healthz`, `/readyz`,
//!   `/metrics`; [`ready`]: readiness; [`runtime`]: what one config builds;
//! - [`iptables`], [`lambda`], [`reload`], [`explain`] and [`probe`], [`env`]: the commands;
//! - `conn` (below server and proxy): the connection guard, panic containment, `ClientIo`;
//!   `auth`: Basic credentials.
//!
//! Process-wide items (everything else belongs to a [`Proxy`]): the rustls crypto provider
//! (ring, installed once by [`install_crypto_provider`]); the splice switch and pipe pool (off
//! unless [`enable_splice`]; at most 64 empty pipes shared by every tunnel,
//! `proxy/pipe/splice.rs`); the per-thread 64 KiB scratch
//! buffer the pipe copies through (`proxy/pipe.rs`).
//!
//! Invariants:
//! - every outbound TCP connection goes through [`upstream::connect::Connector`]: resolve once,
//!   check the addresses against `deny_destinations`, connect to exactly those;
//! - a CONNECT gets `200` only after its upstream connection succeeded;
//! - what a route does is decided in one place, [`upstream::plan`] (`Route::plan`);
//! - a `ProxyError` becomes a response in one place ([`proxy::error_response`]), and a request
//!   or tunnel becomes a metric and a log line in one place (`outcome::Exchange`);
//! - no global state: everything belongs to a [`Proxy`], so tests run many side by side;
//! - a request or tunnel keeps the [`runtime::Runtime`] (routes, resolvers) it started with;
//!   a kept-alive connection takes the current one at its next request.

pub mod admin;
pub(crate) mod auth;
pub mod config;
pub(crate) mod conn;
pub mod env;
pub mod error;
pub mod explain;
pub mod glob;
pub mod iptables;
pub mod lambda;
pub mod logging;
pub mod metrics;
pub(crate) mod outcome;
pub mod policy;
pub mod probe;
pub(crate) mod proxy;
pub(crate) mod ready;
pub mod reload;
pub(crate) mod routes;
pub(crate) mod runtime;
pub(crate) mod server;
pub mod target;
#[cfg(test)]
mod test_util;
pub(crate) mod transparent;
pub(crate) mod upstream;

// The few internals the binary, tests, benches and fuzz targets use; everything else of the
// modules above is the crate's own (`unreachable_pub` checks it).
pub use proxy::sni;
pub use routes::{Clash, RouteTable};
pub use runtime::{Runtime, RuntimeError};
pub use server::head;
pub use server::proxy_header;
pub use server::{HEADER_READ_TIMEOUT, Limits, block_on_serving, raise_open_file_limit};
pub use upstream::dns;
pub use upstream::http::{POOL_MAX_CONNECTIONS, POOL_MAX_IDLE_PER_HOST};

/// Lets bulk transfers move with `splice(2)` from now on instead of through the serving
/// thread's buffer (`SPLITWAY_SPLICE=on`; off by default, docs/performance.md says why). Linux
/// only; elsewhere it does nothing.
pub fn enable_splice() {
    #[cfg(target_os = "linux")]
    proxy::pipe::splice::enable();
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Config, ConfigError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setup(#[from] runtime::RuntimeError),
    #[error("cannot listen on {addr} ({key})")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving proxy.
pub struct Proxy {
    listener: TcpListener,
    admin: Option<TcpListener>,
    /// `[transparent]` listeners (its `listen`, and `[::1]` beside `127.0.0.1`).
    transparent: Vec<TcpListener>,
    /// The same addresses again, for the other threads' runtimes ([`Limits::threads`]).
    siblings: Vec<(std::net::TcpListener, server::Listener)>,
    shared: Arc<server::Shared>,
}

impl Proxy {
    /// Builds resolvers and routes from `config` and binds the listeners.
    pub async fn bind(config: Config) -> Result<Proxy, StartError> {
        Self::bind_with(config, server::Limits::default()).await
    }

    /// [`Proxy::bind`] with limits the config file does not set (tests shorten timeouts).
    pub async fn bind_with(config: Config, limits: server::Limits) -> Result<Proxy, StartError> {
        install_crypto_provider();
        let metrics = Arc::new(metrics::Metrics::new());
        let addr = config.proxy.listen;
        let admin_addr = config.admin.as_ref().map(|a| a.listen);
        // Fail on a bad config before taking the ports; the real runtime is built after binding,
        // when port 0 has become a real port the connector can refuse to loop back to. It takes
        // over this one's resolvers, so /etc/resolv.conf and `ca_file` are read once.
        let checked = runtime::Runtime::new(config.clone(), metrics.clone()).map_err(StartError::Setup)?;
        let (listener, siblings) =
            upstream::socket::bind_group(addr, limits.threads).map_err(|source| StartError::Bind {
                addr,
                key: "[proxy] listen",
                source,
            })?;
        let admin = match admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                addr,
                key: "[admin] listen",
                source,
            })?),
            None => None,
        };
        let (transparent, transparent_siblings) = bind_transparent(&config, limits.threads)?;
        // `TCP_NODELAY` and `tcp_keepalive` on the listeners, before anyone knows their ports:
        // every connection they accept inherits them (the accept loop follows a reload that
        // changes `tcp_keepalive`).
        for l in std::iter::once(&listener).chain(&transparent) {
            upstream::socket::prepare_listener(l, config.proxy.tcp_keepalive);
        }
        for l in siblings.iter().chain(&transparent_siblings) {
            upstream::socket::prepare_listener(l, config.proxy.tcp_keepalive);
        }
        let siblings = siblings
            .into_iter()
            .map(|l| (l, server::Listener::Proxy))
            .chain(
                transparent_siblings
                    .into_iter()
                    .map(|l| (l, server::Listener::Transparent)),
            )
            .collect();
        if let Some(a) = config
            .admin
            .as_ref()
            .filter(|a| a.debug && !a.listen.ip().is_loopback())
        {
            tracing::warn!(addr = %a.listen, "[admin] debug is on beyond loopback: anyone who can reach this address can make the proxy probe hosts (within its own rules)");
        }
        if !addr.ip().is_loopback() {
            if config.proxy.auth.is_some() {
                tracing::warn!(%addr, "listening beyond loopback: clients need the [proxy] auth credentials");
            } else {
                tracing::warn!(%addr, "listening beyond loopback without auth: anyone who can reach this address can use the proxy");
            }
        }
        let own: Vec<SocketAddr> = [Some(&listener), admin.as_ref()]
            .into_iter()
            .flatten()
            .chain(&transparent)
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let runtime = runtime::Runtime::new_bound(
            config,
            metrics.clone(),
            own.clone(),
            Some(checked.connector.resolvers()),
        )
        .map_err(StartError::Setup)?;
        drop(checked);
        let shared = Arc::new(server::Shared::new(runtime, metrics, limits, own));
        // Weak: the readiness the view lives in belongs to `shared` itself.
        let weak = Arc::downgrade(&shared);
        shared.ready().set_backoffs(admin::BackoffView(Arc::new(move || {
            weak.upgrade()
                .map(|s| s.runtime().connector.backoffs().snapshot())
                .unwrap_or_default()
        })));
        shared
            .ready()
            .set_transparent(transparent.iter().filter_map(|l| l.local_addr().ok()).collect());
        Ok(Proxy {
            listener,
            admin,
            transparent,
            siblings,
            shared,
        })
    }

    /// The proxy listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The `[transparent]` listeners' addresses (empty when transparent mode is off).
    pub fn transparent_addrs(&self) -> Vec<SocketAddr> {
        self.transparent.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// A handle for watching and reloading the proxy while it serves.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Resolves start-up names, turns ready, serves until `shutdown`, then drains (see
    /// [`server::serve`]). The admin listener stays up until the drain is over.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let stop_admin = tokio_util::sync::CancellationToken::new();
        let admin = self.admin.map(|l| {
            let (m, r, stop) = (
                self.shared.metrics().clone(),
                self.shared.ready().clone(),
                stop_admin.clone(),
            );
            // An NLB's health checks carry a PROXY header when the proxy listener takes them.
            let p = &self.shared.runtime().config.proxy;
            let from: Arc<[ipnet::IpNet]> = match p.proxy_protocol {
                config::ProxyProtocol::Off => Arc::from([]),
                _ => Arc::from(p.proxy_protocol_from.as_slice()),
            };
            let debug = Some(admin::debug::route(self.shared.current().clone()));
            tokio::spawn(admin::serve(l, m, r, debug, from, stop))
        });
        let shared = self.shared.clone();
        let warm = tokio::spawn(async move {
            let runtime = shared.runtime();
            runtime.prefetch().await;
            let handle = ProxyHandle { shared: shared.clone() };
            let failing = handle.check_dependencies().await;
            shared.ready().set_ready();
            // Start-up is over; /readyz also wants every dependency check to pass.
            tracing::info!(failing_checks = failing.len(), "ready");
            let refresher = runtime.refresher();
            drop(runtime);
            let checks = async {
                loop {
                    tokio::time::sleep(DEPENDENCY_CHECK_INTERVAL).await;
                    handle.check_dependencies().await;
                }
            };
            tokio::join!(refresher, checks);
        });
        let shared = self.shared.clone();
        server::serve(self.listener, self.transparent, self.siblings, self.shared, shutdown).await;
        warm.abort();
        shared.runtime().stop_refresher();
        stop_admin.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

/// Binds `[transparent] listen` (when set), after checking that `mark` can be set: without
/// `CAP_NET_ADMIN` every marked connection would fail, so that is a start-up error.
fn bind_transparent(config: &Config, threads: usize) -> Result<transparent::Bound, StartError> {
    let Some(t) = &config.transparent else {
        return Ok((Vec::new(), Vec::new()));
    };
    runtime::check_mark(config)?;
    transparent::bind(t.listen, threads).map_err(|source| StartError::Bind {
        addr: t.listen,
        key: "[transparent] listen",
        source,
    })
}

/// How often `/readyz` re-checks resolvers and `connect` names.
pub const DEPENDENCY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// rustls with exactly one provider, chosen here: ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Observes and reloads a serving proxy (tests, the reload watcher and the binary use it).
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<server::Shared>,
}

impl ProxyHandle {
    /// Client connections open now; a tunnel counts as its client connection.
    pub fn open_connections(&self) -> usize {
        self.shared.open().get()
    }

    /// Resolves once no client connection is open.
    pub async fn wait_idle(&self) {
        self.shared.open().wait_none().await;
    }

    /// Resolves once no task runs for a client (connections, tunnels). Meant for tests and
    /// shutdown checks: while it waits, the tracker is closed, and it is reopened after
    /// unless the drain has begun.
    pub async fn wait_tasks_done(&self) {
        let tracker = &self.shared.tracker();
        tracker.close();
        tracker.wait().await;
        if !self.shared.draining().is_cancelled() {
            tracker.reopen();
        }
    }

    /// Tasks the proxy is running for clients (connections and tunnels).
    pub fn tasks(&self) -> usize {
        self.shared.tracker().len()
    }

    /// The Prometheus text the admin `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics().encode()
    }

    /// The upstream addresses in `[proxy] address_backoff` now, soonest to end first.
    pub fn address_backoffs(&self) -> Vec<upstream::backoff::Backoff> {
        self.shared.runtime().connector.backoffs().snapshot()
    }

    /// The lifecycle phase: `starting`, `running` or `draining`.
    pub fn readiness(&self) -> &'static str {
        self.shared.ready().lifecycle()
    }

    /// Resolves once the proxy has begun draining.
    pub async fn wait_draining(&self) {
        self.shared.ready().draining().await;
    }

    /// Resolves once start-up (resolution of route names) is over.
    pub async fn wait_started(&self) {
        self.shared.ready().started().await;
    }

    /// Replaces routes and resolvers for new connections; open ones keep theirs. A resolver
    /// whose definition did not change is kept, cache included (SPEC: reload). The
    /// listen addresses are bound once: changing them takes a restart (logged).
    pub fn reload(&self, config: Config) -> Result<(), runtime::RuntimeError> {
        let current = self.shared.runtime();
        if config.proxy.listen != current.config.proxy.listen
            || config.admin.as_ref().map(|a| a.listen) != current.config.admin.as_ref().map(|a| a.listen)
            || config.transparent.as_ref().map(|t| t.listen) != current.config.transparent.as_ref().map(|t| t.listen)
        {
            tracing::warn!("listen addresses changed in the config: they apply at the next restart");
        }
        runtime::check_mark(&config)?;
        let next = Arc::new(runtime::Runtime::new_bound(
            config,
            self.shared.metrics().clone(),
            self.shared.own().to_vec(),
            Some(current.connector.resolvers()),
        )?);
        self.shared.set_runtime(next.clone());
        // Open connections keep the old runtime, but its names are no longer kept fresh.
        current.stop_refresher();
        tokio::spawn(async move {
            next.prefetch().await;
            let refresher = next.refresher();
            drop(next);
            refresher.await;
        });
        Ok(())
    }

    /// Re-checks resolvers and `connect` names now; `/readyz` reflects the result. Returns
    /// the failing checks.
    pub async fn check_dependencies(&self) -> Vec<admin::Check> {
        let checks = self.shared.runtime().check_dependencies().await;
        for c in checks.iter().filter(|c| !c.ok) {
            tracing::warn!(kind = c.kind, name = %c.name, reason = c.reason.as_deref().unwrap_or(""), "dependency check failed");
        }
        let failing = checks.iter().filter(|c| !c.ok).cloned().collect();
        self.shared.ready().set_checks(checks);
        failing
    }

    pub(crate) fn count_reload(&self, ok: bool) {
        self.shared.metrics().config_reload(ok);
    }
}
