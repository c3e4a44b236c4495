//! The TOML config: schema, defaults, `from_toml(&str)` (pure) and `load(path)` (I/O).
//!
//! Per-field checks come from types; cross-field checks live in [`Config::validate`]. Every
//! error names the file, the line, and where it applies the route and the key.

mod aws;
mod describe;
mod error;
mod placeholders;
pub mod resolv_conf;
mod resolver;
mod route;
pub mod schema;
mod tier;
mod transparent;
mod via;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub use describe::describe;
pub use error::{ConfigError, chain};
pub use resolver::{
    DEFAULT_CACHE_SIZE, DEFAULT_DNS_TIMEOUT, DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, DEFAULT_SERVE_STALE, Nameserver,
    ResolverSettings,
};
pub use route::{Action, AddrSpec, CnameRule, ConnectName, Pattern, RouteSpec, SniMode};
pub use tier::{ClientSpec, DEFAULT_DRAIN_DELAY, DEFAULT_TCP_KEEPALIVE, ProxyProtocol, UNMATCHED, name_glob};
pub use transparent::{DEFAULT_TRANSPARENT_LISTEN, NoSni, TransparentSettings};
pub use via::{Parent, Secret, Via, ViaTarget};

/// Default for `[proxy] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
/// Default for `[admin] listen` in the embedded config.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default for `[proxy] connect_ports`.
pub const DEFAULT_CONNECT_PORTS: &[u16] = &[443];
/// Default for `[proxy] connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `[proxy] idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for `[proxy] drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `[proxy] address_backoff`.
pub const DEFAULT_ADDRESS_BACKOFF: Duration = Duration::from_secs(30);
/// Default for `[proxy] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for `[proxy] deny_destinations`: loopback, the unspecified addresses ("this host"
/// on Linux), link-local (IPv4 instance metadata, the ECS and EKS credential agents) and the
/// IPv6 instance metadata (`fd00:ec2::254`) and EKS Pod Identity (`fd00:ec2::23`) endpoints:
/// the classic SSRF targets of a proxy beside an application. The unspecified addresses are
/// refused even when the list leaves them out (`upstream::deny`).
pub const DEFAULT_DENY_DESTINATIONS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "fd00:ec2::23/128",
];

/// The name of the implicit catch-all route (a plain forward proxy on the system resolver)
/// when no route claims `*`.
pub const DEFAULT_ROUTE: &str = "default";

/// The config used when no file is given: a plain forward proxy on the system resolver.
pub const EMBEDDED_DEFAULT: &str = "\
[proxy]
listen = \"127.0.0.1:3128\"

[admin]
listen = \"127.0.0.1:9901\"
";

/// Where the embedded config says it came from, in messages.
pub const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// A loaded and validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (or [`EMBEDDED_ORIGIN`]), for messages.
    pub origin: String,
    pub proxy: ProxySettings,
    pub admin: Option<AdminSettings>,
    /// `[transparent]`; `None` when the table is absent (transparent mode off).
    pub transparent: Option<TransparentSettings>,
    /// Named resolvers; always holds `system`.
    pub resolvers: BTreeMap<String, ResolverSettings>,
    /// Routes in file order (order never affects matching), then those `[aws]` generated.
    pub routes: Vec<RouteSpec>,
    /// `[[client]]` policies in file order (the first that matches applies); empty: every
    /// client may use every route.
    pub clients: Vec<ClientSpec>,
    /// Things `check` reports that are not errors (e.g. `[aws]` patterns overridden).
    pub notes: Vec<String>,
}

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Listener for the applications' `HTTPS_PROXY`; [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Ports a CONNECT may reach; [`DEFAULT_CONNECT_PORTS`].
    pub connect_ports: Vec<u16>,
    /// Resolve + TCP connect budget; [`DEFAULT_CONNECT_TIMEOUT`].
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A tunnel silent both ways this long is closed; [`DEFAULT_IDLE_TIMEOUT`].
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest wait for clients on SIGTERM; [`DEFAULT_DRAIN_TIMEOUT`].
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Client connections at once; [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Resolved addresses never connected to; [`DEFAULT_DENY_DESTINATIONS`].
    pub deny_destinations: Vec<IpNet>,
    /// An upstream address that timed out or refused is tried after the others for this long
    /// (RFC 8305 §4); a success resets it; `"0s"` turns it off. [`DEFAULT_ADDRESS_BACKOFF`].
    #[serde(with = "humantime_serde")]
    pub address_backoff: Duration,
    /// `enforce` (default) or `report`: route as the system resolver would and only log and
    /// count what splitway would have done differently.
    pub mode: Mode,
    /// `auth = { username = "...", password = "..." }`: Basic credentials every request must
    /// carry in `Proxy-Authorization` (RFC 9110 §11.7.1, RFC 7617); none by default.
    pub auth: Option<ProxyAuth>,
    /// On SIGTERM, the listener keeps accepting this long (a load balancer's deregistration)
    /// before it closes; [`DEFAULT_DRAIN_DELAY`].
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// TCP keepalive idle time on client and upstream sockets; `None` (`"off"`): none.
    /// [`DEFAULT_TCP_KEEPALIVE`].
    #[serde(deserialize_with = "tier::keepalive")]
    pub tcp_keepalive: Option<Duration>,
    /// PROXY protocol on the proxy listener; off by default.
    pub proxy_protocol: ProxyProtocol,
    /// The only peers whose PROXY header is believed (the load balancer's subnets).
    #[serde(deserialize_with = "tier::nets")]
    pub proxy_protocol_from: Vec<IpNet>,
}

/// `[proxy] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

/// `[proxy] auth`. Debug output never shows the password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProxyAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN is a socket address"),
            connect_ports: DEFAULT_CONNECT_PORTS.to_vec(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            deny_destinations: DEFAULT_DENY_DESTINATIONS
                .iter()
                .map(|n| n.parse().expect("DEFAULT_DENY_DESTINATIONS are CIDR blocks"))
                .collect(),
            address_backoff: DEFAULT_ADDRESS_BACKOFF,
            mode: Mode::Enforce,
            auth: None,
            drain_delay: DEFAULT_DRAIN_DELAY,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            proxy_protocol: ProxyProtocol::Off,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `/healthz`, `/readyz`, `/metrics`; the embedded default uses [`DEFAULT_ADMIN_LISTEN`].
    pub listen: SocketAddr,
    /// Serve `GET /debug/route` (`explain --probe` over HTTP); off by default, because whoever
    /// reaches the admin port could make the proxy open connections (within its own rules).
    #[serde(default)]
    pub debug: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxy: ProxySettings,
    admin: Option<AdminSettings>,
    transparent: Option<TransparentSettings>,
    #[serde(default)]
    resolver: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    route: Vec<Spanned<toml::Table>>,
    aws: Option<Spanned<toml::Table>>,
    #[serde(default)]
    client: Vec<Spanned<ClientSpec>>,
}

impl Config {
    /// Parses and validates a config from TOML text; `origin` names it in errors.
    pub fn from_toml(src: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigError::from_toml(origin, src, &e))?;
        let ctx = error::Ctx::new(origin, src);
        let mut resolvers = BTreeMap::new();
        resolvers.insert("system".to_owned(), ResolverSettings::system_default());
        for (name, table) in &raw.resolver {
            resolvers.insert(name.clone(), resolver::parse(&ctx, name, table)?);
        }
        let routes = raw
            .route
            .iter()
            .enumerate()
            .map(|(i, table)| route::parse(&ctx, i, table))
            .collect::<Result<Vec<_>, _>>()?;
        let mut routes = routes;
        let mut notes = Vec::new();
        if let Some(table) = &raw.aws {
            let (generated, overridden) = aws::expand(&ctx, table, &routes)?;
            routes.extend(generated);
            notes = overridden;
        }
        notes.extend(placeholders::notes(src));
        let clients = raw
            .client
            .into_iter()
            .map(|c| {
                let line = ctx.line(c.span().start);
                ClientSpec { line, ..c.into_inner() }
            })
            .collect();
        let config = Config {
            origin: origin.to_owned(),
            proxy: raw.proxy,
            admin: raw.admin,
            transparent: raw.transparent,
            resolvers,
            routes,
            clients,
            notes,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            origin: origin.clone(),
            source: e,
        })?;
        Self::from_toml(&src, &origin)
    }

    /// The embedded default: a plain forward proxy on the system resolver.
    pub fn embedded() -> Config {
        Self::from_toml(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN).expect("the embedded config is valid")
    }

    /// Cross-field checks: resolvers named by routes exist, patterns are unique, values sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_proxy()?;
        if let Some(t) = &self.transparent {
            t.check(self.proxy.listen)
                .map_err(|(key, message)| self.invalid(None, None, key, message))?;
        }
        for route in &self.routes {
            self.validate_route(route)?;
        }
        tier::check(self).map_err(|(line, key, message)| self.invalid(line, None, key, message))?;
        // Two routes claiming one pattern: found where the route table is built
        // (`RouteTable::new`), which every command that reads a config builds.
        Ok(())
    }

    /// An error in this config's file at `line`, in `route`, at `key`.
    fn invalid(&self, line: Option<usize>, route: Option<&str>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line,
            route: route.map(str::to_owned),
            key: key.to_owned(),
            message,
        }
    }

    /// `[proxy]` values the types alone do not rule out.
    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let p = &self.proxy;
        let err = |key: &str, message: &str| Err(self.invalid(None, None, key, message.to_owned()));
        if p.connect_ports.contains(&0) {
            return err("proxy.connect_ports", "port 0 is not a valid port");
        }
        if p.max_connections == 0 {
            return err("proxy.max_connections", "must be at least 1");
        }
        if p.connect_timeout.is_zero() || p.idle_timeout.is_zero() {
            return err("proxy.connect_timeout", "timeouts must be above zero");
        }
        if let Some(auth) = &p.auth {
            // RFC 7617 §2: the user-id cannot contain a colon; an empty one is a typo.
            if auth.username.is_empty() || auth.username.contains(':') || auth.username.chars().any(char::is_control) {
                return err(
                    "proxy.auth.username",
                    "must be non-empty, without `:` or control characters",
                );
            }
            if auth.password.chars().any(char::is_control) {
                return err("proxy.auth.password", "must not contain control characters");
            }
        }
        Ok(())
    }

    /// A route's resolvers exist (its own and its `on_cname` rules'), and its parents are not
    /// in `deny_destinations`.
    fn validate_route(&self, route: &RouteSpec) -> Result<(), ConfigError> {
        let known = || self.resolvers.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        let unknown = |r: &str| {
            format!(
                "unknown resolver `{r}`; define [resolver.{r}] or use one of: {}",
                known()
            )
        };
        if let Some(rule) = route
            .on_cname
            .iter()
            .find(|r| !self.resolvers.contains_key(&r.resolver))
        {
            let line = route.on_cname_line.or(Some(route.line));
            let message = format!("{} (match `{}`)", unknown(&rule.resolver), rule.pattern);
            return Err(self.invalid(line, Some(&route.name), "on_cname", message));
        }
        if !self.resolvers.contains_key(&route.resolver) {
            let line = Some(route.resolver_line.unwrap_or(route.line));
            return Err(self.invalid(line, Some(&route.name), "resolver", unknown(&route.resolver)));
        }
        let Some(via) = &route.via else { return Ok(()) };
        let denied = via
            .literal_ips()
            .find(|ip| self.proxy.deny_destinations.iter().any(|n| n.contains(ip)));
        match denied {
            Some(ip) => Err(self.invalid(
                Some(route.line),
                Some(&route.name),
                "via",
                format!(
                    "parent {ip} is inside [proxy] deny_destinations; remove it from deny_destinations or \
                     use another parent"
                ),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
