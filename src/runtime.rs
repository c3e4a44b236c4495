//! `Runtime`: everything built from one config that requests read — the route table, the
//! resolvers and the connector. A connection keeps the `Runtime` it started with.

use std::sync::Arc;

use crate::config::Config;
use crate::proxy::forward::{self, ForwardClient};
use crate::routes::RouteTable;
use crate::upstream::connect::Connector;
use crate::upstream::dns::Resolvers;

/// The state derived from one config.
pub struct Runtime {
    pub config: Config,
    pub routes: Arc<RouteTable>,
    pub connector: Arc<Connector>,
    /// Pooled upstream connections for plain-HTTP forwarding.
    pub client: ForwardClient,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Self, String> {
        let routes = RouteTable::new(&config.routes).map_err(|e| format!("{}: {e}", config.origin))?;
        let resolvers = Arc::new(Resolvers::new(&config.resolvers)?);
        let p = &config.proxy;
        let connector = Arc::new(Connector::new(resolvers, p.deny_destinations.clone(), p.connect_timeout));
        let routes = Arc::new(routes);
        let client = forward::client(routes.clone(), connector.clone());
        Ok(Self { config, routes, connector, client })
    }
}
