//! Test configs built as data, rendered to TOML: the `[proxy]` section, named resolvers,
//! routes, `[admin]` and raw extra sections. A change to a key that is not there panics, so
//! a test never silently runs on the config it meant to change.

use std::fmt::Display;

use super::names::*;
use super::net::AwsNet;
use super::proxy::PrivateDns;

/// Panics unless `config` names its own `[resolver.system]` nameservers and leaves
/// `/etc/hosts` out: otherwise start-up would read the machine's `/etc/resolv.conf` and hosts
/// file, and the test would depend on the machine it runs on. Every proxy the tests start goes
/// through here; tests/it/source_rules.rs checks the configs written out by hand.
#[track_caller]
pub(crate) fn assert_hermetic(config: &splitway::Config) {
    let system = config.resolvers.get("system");
    assert!(
        system.is_some_and(|s| s.nameservers.is_some() && !s.hosts_file),
        "test config {} has no [resolver.system] with its own nameservers and hosts_file = false: \
         the proxy would read this machine's /etc/resolv.conf and /etc/hosts",
        config.origin
    );
}

/// [`assert_hermetic`] for config text; a config that does not load (the point of some tests)
/// builds no resolver and passes.
#[track_caller]
pub(crate) fn assert_hermetic_toml(toml: &str) {
    if let Ok(config) = splitway::Config::from_toml(toml, "test.toml") {
        assert_hermetic(&config);
    }
}

/// A config whose one route, `loopback`, takes `CONNECT 127.0.0.1:port` to 127.0.0.1 (the
/// resolver is the emulated VPC's, never asked): for a test of the real binary against an
/// origin of its own on loopback.
pub(crate) fn loopback_toml(port: u16) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nconnect_ports = [{port}]\ndeny_destinations = []\n\n\
         [resolver.system]\nnameservers = [\"{VPC_DNS_PRIVATE_ON_IP}\"]\nhosts_file = false\n\n\
         [[route]]\nname = \"loopback\"\nhosts = [\"127.0.0.1\"]\naddresses = [\"127.0.0.1\"]\n"
    )
}

/// A TOML basic string: `"…"` with `"` and `\` escaped.
pub(crate) fn quoted(s: impl Display) -> String {
    let s = s.to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A TOML array of strings.
pub(crate) fn strings<S: Display>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

/// Keys of one table, in order, each with its raw TOML value.
#[derive(Clone, Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn set(&mut self, key: &str, raw: impl Into<String>) {
        let raw = raw.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_owned(), raw)),
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }

    fn render(&self, header: &str) -> String {
        let keys: String = self.0.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("{header}\n{keys}")
    }
}

/// One `[[route]]`.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    name: String,
    keys: Table,
}

impl Route {
    pub(crate) fn new(name: &str) -> Route {
        let mut keys = Table::default();
        keys.set("name", quoted(name));
        Route {
            name: name.to_owned(),
            keys,
        }
    }

    pub(crate) fn hosts<S: Display>(self, hosts: impl IntoIterator<Item = S>) -> Route {
        self.key("hosts", strings(hosts))
    }

    /// Any key with its raw TOML value, e.g. `key("deny", "true")`.
    pub(crate) fn key(mut self, key: &str, raw: impl Into<String>) -> Route {
        self.keys.set(key, raw);
        self
    }

    /// A key whose value is a string.
    pub(crate) fn str(self, key: &str, value: impl Display) -> Route {
        self.key(key, quoted(value))
    }

    pub(crate) fn deny(self) -> Route {
        self.key("deny", "true")
    }
}

/// The `[aws]` preset and its `[[aws.peered]]` tables.
#[derive(Clone, Debug)]
pub(crate) struct Aws {
    keys: Table,
    peered: Vec<Table>,
}

impl Aws {
    /// `[aws]` for `region` and its endpoint's regional DNS name, nothing else.
    pub(crate) fn new(region: &str, vpc_endpoint: &str) -> Aws {
        let mut keys = Table::default();
        keys.set("region", quoted(region));
        keys.set("vpc_endpoint", quoted(vpc_endpoint));
        Aws { keys, peered: vec![] }
    }

    /// The emulated network's preset: us-east-1's endpoint, the public API ID and custom
    /// domains through `public`, and the peered us-west-2 endpoint.
    pub(crate) fn scenario() -> Aws {
        Aws::new(REGION, VPCE)
            .key("public_api_ids", strings([PUBLIC_API_ID]))
            .key("public_domains", strings([CUSTOM_DOMAIN, CUSTOM_DOMAIN_2]))
            .str("public_resolver", "public")
            .peered(WEST_REGION, WEST_VPCE, &[])
    }

    /// Any `[aws]` key with its raw TOML value.
    pub(crate) fn key(mut self, key: &str, raw: impl Into<String>) -> Aws {
        self.keys.set(key, raw);
        self
    }

    /// An `[aws]` key whose value is a string.
    pub(crate) fn str(self, key: &str, value: impl Display) -> Aws {
        self.key(key, quoted(value))
    }

    /// `[aws] private_domains`.
    pub(crate) fn private_domains<S: Display>(self, names: impl IntoIterator<Item = S>) -> Aws {
        self.key("private_domains", strings(names))
    }

    /// One `[[aws.peered]]` (its `private_domains` only when some are given).
    pub(crate) fn peered(mut self, region: &str, vpc_endpoint: &str, private_domains: &[&str]) -> Aws {
        let mut peer = Table::default();
        peer.set("region", quoted(region));
        peer.set("vpc_endpoint", quoted(vpc_endpoint));
        if !private_domains.is_empty() {
            peer.set("private_domains", strings(private_domains));
        }
        self.peered.push(peer);
        self
    }

    fn render(&self) -> String {
        let mut out = self.keys.render("[aws]");
        for peer in &self.peered {
            out += "\n";
            out += &peer.render("[[aws.peered]]");
        }
        out
    }
}

/// A whole config file under construction.
#[derive(Clone, Debug)]
pub(crate) struct ConfigBuilder {
    proxy: Table,
    resolvers: Vec<(String, Table)>,
    routes: Vec<Route>,
    aws: Option<Aws>,
    sections: Vec<String>,
    admin: Option<Table>,
}

impl ConfigBuilder {
    /// `[proxy]` for tests: port 0, the emulated network's port allowed, loopback not denied
    /// (the emulated AWS network lives on 127.0.0.0/8), and `[resolver.system]` on the VPC
    /// resolver (Private DNS on) without `/etc/hosts`: a test never reads the machine's own
    /// resolver (see [`assert_hermetic`]). No other resolver, no routes.
    pub(crate) fn new(net: &AwsNet) -> ConfigBuilder {
        let mut proxy = Table::default();
        proxy.set("listen", quoted("127.0.0.1:0"));
        proxy.set("connect_ports", format!("[{}]", net.port));
        proxy.set("connect_timeout", quoted("5s"));
        proxy.set("deny_destinations", strings(["169.254.0.0/16"]));
        let builder = ConfigBuilder {
            proxy,
            resolvers: vec![],
            routes: vec![],
            aws: None,
            sections: vec![],
            admin: None,
        };
        builder
            .resolver("system", net.vpc_dns_private_on)
            .resolver_key("system", "hosts_file", "false")
    }

    /// `new` with `[resolver.system]` (the VPC resolver `dns` says) and `[resolver.public]`.
    pub(crate) fn with_resolvers(net: &AwsNet, dns: PrivateDns) -> ConfigBuilder {
        let system = match dns {
            PrivateDns::On => net.vpc_dns_private_on,
            PrivateDns::Off => net.vpc_dns_private_off,
        };
        ConfigBuilder::new(net)
            .resolver("system", system)
            .resolver_key("system", "hosts_file", "false")
            .resolver("public", net.public_dns)
    }

    /// The hand-written config that fixes all three failures of the emulated network.
    pub(crate) fn scenario(net: &AwsNet, dns: PrivateDns) -> ConfigBuilder {
        ConfigBuilder::with_resolvers(net, dns)
            .route(
                Route::new("custom-domains")
                    .hosts([CUSTOM_DOMAIN, CUSTOM_DOMAIN_2])
                    .str("resolver", "public"),
            )
            .route(
                Route::new("public-api-ids")
                    .hosts([execute_api_host(PUBLIC_API_ID, REGION)])
                    .str("resolver", "public"),
            )
            .route(
                Route::new("private-apis")
                    .hosts([format!("*.execute-api.{REGION}.amazonaws.com")])
                    .str("connect", VPCE),
            )
            .route(
                Route::new("private-apis-us-west-2")
                    .hosts([format!("*.execute-api.{WEST_REGION}.amazonaws.com")])
                    .key("addresses", strings([WEST_VPCE_IP])),
            )
    }

    /// Sets a `[proxy]` key to a raw TOML value, e.g. `proxy("max_connections", "2")`.
    pub(crate) fn proxy(mut self, key: &str, raw: impl Into<String>) -> ConfigBuilder {
        self.proxy.set(key, raw);
        self
    }

    /// Removes a `[proxy]` key (back to the default); panics if it is not set.
    pub(crate) fn without_proxy_key(mut self, key: &str) -> ConfigBuilder {
        assert!(self.proxy.remove(key), "[proxy] has no key `{key}`");
        self
    }

    /// Sets a `[proxy]` key to a string.
    pub(crate) fn proxy_str(self, key: &str, value: impl Display) -> ConfigBuilder {
        self.proxy(key, quoted(value))
    }

    /// `[resolver.NAME]` asking `nameserver` (added, or its nameservers replaced).
    pub(crate) fn resolver(self, name: &str, nameserver: impl Display) -> ConfigBuilder {
        self.resolver_key(name, "nameservers", strings([nameserver]))
    }

    /// Sets a key of `[resolver.NAME]`, creating the section if needed.
    pub(crate) fn resolver_key(mut self, name: &str, key: &str, raw: impl Into<String>) -> ConfigBuilder {
        match self.resolvers.iter_mut().find(|(n, _)| n == name) {
            Some((_, table)) => table.set(key, raw),
            None => {
                let mut table = Table::default();
                table.set(key, raw);
                self.resolvers.push((name.to_owned(), table));
            }
        }
        self
    }

    /// Appends a route (after those already there).
    pub(crate) fn route(mut self, route: Route) -> ConfigBuilder {
        assert!(
            self.routes.iter().all(|r| r.name != route.name),
            "route `{}` is already in the test config",
            route.name
        );
        self.routes.push(route);
        self
    }

    /// Replaces the route of the same name, in its place; panics if there is none.
    pub(crate) fn replace_route(mut self, route: Route) -> ConfigBuilder {
        let name = route.name.clone();
        *self.route_mut(&name) = route;
        self
    }

    /// Sets a key of the route `name`; panics if there is no such route.
    pub(crate) fn route_key(mut self, name: &str, key: &str, raw: impl Into<String>) -> ConfigBuilder {
        self.route_mut(name).keys.set(key, raw);
        self
    }

    /// Removes a key of the route `name`; panics if the route or the key is missing.
    pub(crate) fn without_route_key(mut self, name: &str, key: &str) -> ConfigBuilder {
        assert!(
            self.route_mut(name).keys.remove(key),
            "route `{name}` has no key `{key}`"
        );
        self
    }

    fn route_mut(&mut self, name: &str) -> &mut Route {
        let known: Vec<String> = self.routes.iter().map(|r| r.name.clone()).collect();
        self.routes
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route `{name}` in the test config (routes: {known:?})"))
    }

    /// `[admin]` on port 0.
    pub(crate) fn admin(self) -> ConfigBuilder {
        self.admin_key("listen", quoted("127.0.0.1:0"))
    }

    /// Sets a key of `[admin]`, creating the section if needed.
    pub(crate) fn admin_key(mut self, key: &str, raw: impl Into<String>) -> ConfigBuilder {
        self.admin.get_or_insert_with(Table::default).set(key, raw);
        self
    }

    /// The `[aws]` preset (replacing any set before), rendered after the routes.
    pub(crate) fn aws(mut self, aws: Aws) -> ConfigBuilder {
        self.aws = Some(aws);
        self
    }

    /// Raw TOML appended after the routes (e.g. an `[aws]` section or routes written out).
    pub(crate) fn section(mut self, raw: impl Into<String>) -> ConfigBuilder {
        self.sections.push(raw.into());
        self
    }

    /// `[proxy]` alone.
    pub(crate) fn render_proxy(&self) -> String {
        self.proxy.render("[proxy]")
    }

    /// The `[resolver.*]` sections alone, each followed by a blank line.
    pub(crate) fn render_resolvers(&self) -> String {
        let sections = self.resolvers.iter();
        sections
            .map(|(name, table)| table.render(&format!("[resolver.{name}]")) + "\n")
            .collect()
    }

    /// The TOML text of the whole config.
    pub(crate) fn build(&self) -> String {
        let mut out = self.render_proxy() + "\n" + &self.render_resolvers();
        for route in &self.routes {
            out += &route.keys.render("[[route]]");
            out += "\n";
        }
        if let Some(aws) = &self.aws {
            out += &aws.render();
            out += "\n";
        }
        for section in &self.sections {
            out += section;
            out += "\n";
        }
        if let Some(admin) = &self.admin {
            out += &admin.render("[admin]");
        }
        out
    }
}
