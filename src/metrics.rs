//! Every metric splitway exports: names, help texts, label sets and the text encoding, in one file.
//!
//! Label values come only from closed sets: the enums below, `&'static str` error types
//! (RFC 9209 §2.3, from [`ProxyError::proxy_status`](crate::error::ProxyError::proxy_status)),
//! and route and resolver names from the config. Never a hostname: that would make the series
//! count grow with traffic.
//!
//! The registry belongs to a [`Metrics`] value, not to the process, so tests can run many
//! proxies side by side.

mod families;
mod labels;
mod route;
mod tier;
mod values;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use families::Families;

use labels::{
    BytesLabels, DnsLabels, Names, ParentLabels, ReloadLabels, ReportLabels, RequestLabels, ResolverLabels,
    RouteLabels, SniLabels, TunnelLabels,
};
pub use labels::{DnsResult, ParentResult, RequestKind, TunnelEnd};
pub use route::RouteSeries;
pub use tier::{PolicyAction, ProxyHeader};
pub use values::{ErrorType, Outcome, ReportAction, SniReason};

/// The `Content-Type` of what [`Metrics::encode`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms: 1-2.5-5 steps from 0.5ms, where a cached
/// lookup or a same-AZ connect lands, to 10s, beyond any sane connect or DNS timeout.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The proxy's metrics: a registry and handles to every family in it. `Send + Sync`; share it
/// through an `Arc`. Every recording method is a hash-map lookup and an atomic add, or on a
/// route's tunnel path an atomic add on a series its [`RouteSeries`] holds.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Every family's served name, from the registration itself.
    families: Vec<String>,
    names: Names,
    requests: Family<RequestLabels, Counter>,
    tunnels: Family<TunnelLabels, Counter>,
    tunnels_open: Family<RouteLabels, Gauge>,
    bytes: Family<BytesLabels, Counter>,
    connect_duration: HistogramFamily<RouteLabels>,
    dns_lookups: Family<DnsLabels, Counter>,
    dns_duration: HistogramFamily<ResolverLabels>,
    dns_cache_entries: Family<ResolverLabels, Gauge>,
    dns_cache_evictions: Family<ResolverLabels, Counter>,
    sni_rejections: Family<SniLabels, Counter>,
    report: Family<ReportLabels, Counter>,
    custom_domains: Family<RouteLabels, Counter>,
    parent_tunnels: Family<ParentLabels, Counter>,
    upstream_backoffs: Family<RouteLabels, Counter>,
    connections_open: Gauge,
    connections_rejected: Counter,
    config_reloads: Family<ReloadLabels, Counter>,
    panics: Counter,
    tier: tier::Tier,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every splitway family registered.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            families: Vec::new(),
            names: Names::default(),
            requests: Family::default(),
            tunnels: Family::default(),
            tunnels_open: Family::default(),
            bytes: Family::default(),
            connect_duration: Family::new_with_constructor(latency_histogram),
            dns_lookups: Family::default(),
            dns_duration: Family::new_with_constructor(latency_histogram),
            dns_cache_entries: Family::default(),
            dns_cache_evictions: Family::default(),
            sni_rejections: Family::default(),
            report: Family::default(),
            custom_domains: Family::default(),
            parent_tunnels: Family::default(),
            upstream_backoffs: Family::default(),
            connections_open: Gauge::default(),
            connections_rejected: Counter::default(),
            config_reloads: Family::default(),
            panics: Counter::default(),
            tier: tier::Tier::default(),
        };
        (m.registry, m.families) = m.registry().finish();
        // Both results exist from the start, so an alert on `error` increasing has a baseline.
        for result in ["ok", "error"] {
            drop(m.config_reloads.get_or_create(&ReloadLabels { result }));
        }
        m
    }

    // Counters are registered without `_total`: the encoder appends it (and prometheus-client
    // 0.26 panics in debug builds if the name already has it).
    fn registry(&self) -> Families {
        let mut r = Families::new("splitway");
        r.register(
            "requests",
            "CONNECT and forwarded requests by route and outcome (ok, or the RFC 9209 Proxy-Status error type)",
            self.requests.clone(),
        );
        r.register(
            "tunnels",
            "Tunnels ended, by route and how they ended",
            self.tunnels.clone(),
        );
        r.register("tunnels_open", "Tunnels open now, by route", self.tunnels_open.clone());
        r.register(
            "bytes",
            "Bytes copied through tunnels, by route and direction",
            self.bytes.clone(),
        );
        r.register_with_unit(
            "connect_duration",
            "Time to open the upstream TCP connection, resolution included, by route",
            Unit::Seconds,
            self.connect_duration.clone(),
        );
        r.register(
            "dns_lookups",
            "DNS lookups by resolver and result",
            self.dns_lookups.clone(),
        );
        r.register_with_unit(
            "dns_lookup_duration",
            "DNS lookup time by resolver, cache hits included",
            Unit::Seconds,
            self.dns_duration.clone(),
        );
        r.register(
            "dns_cache_entries",
            "Entries in each resolver's cache (route hosts and connect names included)",
            self.dns_cache_entries.clone(),
        );
        r.register(
            "dns_cache_evictions",
            "Entries each resolver's cache evicted to stay within cache_size",
            self.dns_cache_evictions.clone(),
        );
        r.register(
            "sni_rejections",
            "Tunnels closed because the TLS ClientHello named a server the route does not allow",
            self.sni_rejections.clone(),
        );
        r.register(
            "report_differences",
            "Report mode: requests splitway would have handled differently (action: reroute or deny), by route",
            self.report.clone(),
        );
        r.register(
            "custom_domains_detected",
            "Connections re-planned by on_cname: the host's CNAME chain reached an API Gateway domain name (or another pattern), by route",
            self.custom_domains.clone(),
        );
        r.register(
            "parent_tunnels",
            "CONNECTs sent to parent proxies (via), by route, parent (host:port) and result",
            self.parent_tunnels.clone(),
        );
        r.register(
            "upstream_backoffs",
            "Upstream addresses put into [proxy] address_backoff (they timed out or refused; tried after the others for a while), by route",
            self.upstream_backoffs.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now on this replica (what an HPA or ECS target tracking scales a shared tier on)",
            self.connections_open.clone(),
        );
        r.register(
            "connections_rejected",
            "Client connections refused at [proxy] max_connections",
            self.connections_rejected.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads by result",
            self.config_reloads.clone(),
        );
        r.register("panics", "Panics caught in connection tasks", self.panics.clone());
        self.tier.register(&mut r);
        r
    }

    /// One CONNECT or forwarded request finished deciding: `outcome` is `"ok"` or the RFC 9209
    /// error type (e.g. `"dns_error"`).
    /// `client` is the `[[client]]` policy's name (`None` without policies).
    pub fn request(&self, kind: RequestKind, route: &str, client: Option<&str>, outcome: Outcome) {
        let labels = RequestLabels {
            kind,
            route: self.names.get(route),
            client: client.map(|c| self.names.get(c)),
            outcome,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The named `resolver` answered a lookup in `seconds`.
    pub fn dns_lookup(&self, resolver: &str, result: DnsResult, seconds: f64) {
        let resolver = self.names.get(resolver);
        self.dns_lookups
            .get_or_create(&DnsLabels {
                resolver: resolver.clone(),
                result,
            })
            .inc();
        self.dns_duration
            .get_or_create(&ResolverLabels { resolver })
            .observe(seconds);
    }

    /// The cache of `resolver` holds `entries` now.
    pub fn dns_cache_entries(&self, resolver: &str, entries: usize) {
        let labels = ResolverLabels {
            resolver: self.names.get(resolver),
        };
        let entries = i64::try_from(entries).unwrap_or(i64::MAX);
        self.dns_cache_entries.get_or_create(&labels).set(entries);
        // Exported from the start, at 0, like the gauge.
        let _ = self.dns_cache_evictions.get_or_create(&labels);
    }

    /// The cache of `resolver` evicted one entry to stay within its size.
    pub fn dns_cache_evicted(&self, resolver: &str) {
        self.dns_cache_evictions
            .get_or_create(&ResolverLabels {
                resolver: self.names.get(resolver),
            })
            .inc();
    }

    /// A tunnel on `route` was closed by the SNI check, for `reason` (a fixed string).
    pub fn sni_rejected(&self, route: &str, reason: SniReason) {
        self.sni_rejections
            .get_or_create(&SniLabels {
                route: self.names.get(route),
                reason,
            })
            .inc();
    }

    /// Report mode: `route` would have sent a request elsewhere (`reroute`) or refused it (`deny`).
    pub fn report_difference(&self, route: &str, action: ReportAction) {
        self.report
            .get_or_create(&ReportLabels {
                route: self.names.get(route),
                action,
            })
            .inc();
    }

    /// A connection of `route` was re-planned by an `on_cname` rule (custom domain detection).
    pub fn custom_domain_detected(&self, route: &str) {
        self.custom_domains
            .get_or_create(&RouteLabels {
                route: self.names.get(route),
            })
            .inc();
    }

    /// An upstream address of `route` timed out or refused and went into `address_backoff`.
    pub fn upstream_backoff(&self, route: &str) {
        self.upstream_backoffs
            .get_or_create(&RouteLabels {
                route: self.names.get(route),
            })
            .inc();
    }

    /// One CONNECT to a parent proxy ended: `parent` is its `host:port` from the config.
    pub fn parent_tunnel(&self, route: &str, parent: &str, result: ParentResult) {
        let labels = ParentLabels {
            route: self.names.get(route),
            parent: self.names.get(parent),
            result,
        };
        self.parent_tunnels.get_or_create(&labels).inc();
    }

    /// A client connection was refused at `max_connections`.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// A client connection opened.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A client connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A config reload was applied (`ok`) or rejected.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// A panic was caught in a connection task.
    pub fn panic_caught(&self) {
        self.panics.inc();
    }

    /// The name of every family `/metrics` serves (`splitway_requests_total`, …); a family
    /// appears in the text once it has a series.
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The Prometheus text exposition (format 0.0.4, see [`CONTENT_TYPE`]) of every series.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail and our label values are plain strings, so an error
        // here is a bug in the encoder: say so rather than serve half a page.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests;
