//! splitway: a sidecar forward proxy that decides per host where a connection goes.
//!
//! Applications reach it through `HTTPS_PROXY`; for each `CONNECT host:port` it picks a route
//! (exact name > longest `*.suffix` > `*`), resolves through that route's named resolver, and
//! opens a byte pipe. The application's TLS is never terminated.
//!
//! Module map (dependencies point one way, server → proxy → upstream):
//! - [`config`]: the TOML schema, defaults and validation;
//! - [`routes`]: the route table;
//! - [`server`]: accept loop, connection limit, drain;
//! - [`proxy`]: the hyper service, tunnels, SNI pinning, the byte pipe;
//! - [`upstream`]: CONNECT targets, named resolvers with caches, the one connector;
//! - [`error`]: `ProxyError` → status, `Proxy-Status`, metric label;
//! - [`explain`]: the routing decision for one host, for `splitway explain`.
//!
//! Invariants:
//! - every outbound TCP connection goes through [`upstream::connect::Connector`]: resolve once,
//!   check the addresses against `deny_destinations`, connect to exactly those;
//! - a CONNECT gets `200` only after its upstream connection succeeded;
//! - a `ProxyError` becomes a response in one place ([`proxy::error_response`]);
//! - no global state: everything belongs to a [`Proxy`], so tests run many side by side;
//! - a connection keeps the [`runtime::Runtime`] (routes, resolvers) it started with.

pub mod admin;
pub mod config;
pub mod error;
pub mod explain;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Config, ConfigError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr} ([proxy] listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<server::Shared>,
}

impl Proxy {
    /// Builds resolvers and routes from `config` and binds the listener.
    pub async fn bind(config: Config) -> Result<Proxy, StartError> {
        install_crypto_provider();
        let addr = config.proxy.listen;
        let runtime = runtime::Runtime::new(config).map_err(StartError::Setup)?;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        Ok(Proxy { listener, shared: Arc::new(server::Shared::new(runtime)) })
    }

    /// The proxy listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// A handle for watching the proxy while it serves.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle { shared: self.shared.clone() }
    }

    /// Serves until `shutdown` resolves, then drains (see [`server::serve`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        server::serve(self.listener, self.shared, shutdown).await;
    }
}

/// rustls with exactly one provider, chosen here: ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Observes a serving proxy (tests and the admin listener use it).
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<server::Shared>,
}

impl ProxyHandle {
    /// Client connections open now; a tunnel counts as its client connection.
    pub fn open_connections(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// Resolves once no client connection is open.
    pub async fn wait_idle(&self) {
        let mut rx = self.shared.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Tasks the proxy is running for clients (connections and tunnels).
    pub fn tasks(&self) -> usize {
        self.shared.tracker.len()
    }
}
