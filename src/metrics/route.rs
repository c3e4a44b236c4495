//! One route's series on the tunnel path, looked up once and then held by the route.
//!
//! A fresh tunnel touches seven series (its request, the open gauge up and down, the connect
//! histogram, its end, the bytes each way), and a family lookup interns the route's name and
//! hashes the label set under the family's lock. [`RouteSeries`] holds each series of its
//! route from its first use on (a series is a shared handle: incrementing the held one is
//! incrementing the family's), so the next tunnel on the route adds to it directly. Series
//! with a `client` label are held only for the unlabelled case (no `[[client]]` tables); a
//! policy's series are looked up as before. Families never drop a series, so a held one
//! stays the one `/metrics` shows.

use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::Metrics;
use super::labels::{BytesLabels, Direction, RequestKind, RequestLabels, RouteLabels, TunnelEnd, TunnelLabels};
use super::values::Outcome;

const KINDS: usize = 3;
const ENDS: usize = 5;
// A new kind or end must grow the arrays (it would index past them).
const _: () = assert!(RequestKind::Transparent as usize + 1 == KINDS && TunnelEnd::Cancelled as usize + 1 == ENDS);

/// The series of one route (made with the route; see the module).
#[derive(Debug)]
pub struct RouteSeries {
    route: Arc<str>,
    /// `requests_total{outcome="ok"}` by [`RequestKind`], without a client.
    ok: [OnceLock<Counter>; KINDS],
    tunnels_open: OnceLock<Gauge>,
    connect_duration: OnceLock<Histogram>,
    /// `tunnels_total` by [`TunnelEnd`], without a client.
    tunnels: [OnceLock<Counter>; ENDS],
    bytes_up: OnceLock<Counter>,
    bytes_down: OnceLock<Counter>,
}

impl RouteSeries {
    /// The series of the route named `route`, none looked up yet.
    pub fn new(route: Arc<str>) -> Self {
        Self {
            route,
            ok: Default::default(),
            tunnels_open: OnceLock::new(),
            connect_duration: OnceLock::new(),
            tunnels: Default::default(),
            bytes_up: OnceLock::new(),
            bytes_down: OnceLock::new(),
        }
    }

    /// The route these series are labelled with.
    pub fn route(&self) -> &str {
        &self.route
    }
}

impl Metrics {
    /// [`Metrics::request`] with outcome `ok`, for a request on `route`.
    pub fn request_ok(&self, route: &RouteSeries, kind: RequestKind, client: Option<&str>) {
        if client.is_some() {
            return self.request(kind, &route.route, client, Outcome::Ok);
        }
        route.ok[kind as usize]
            .get_or_init(|| {
                let labels = RequestLabels {
                    kind,
                    route: self.names.get(&route.route),
                    client: None,
                    outcome: Outcome::Ok,
                };
                self.requests.get_or_create(&labels).clone()
            })
            .inc();
    }

    /// A tunnel on `route` is open (after its `200`).
    pub fn tunnel_opened(&self, route: &RouteSeries) {
        self.tunnels_open(route).inc();
    }

    /// A tunnel opened with [`Metrics::tunnel_opened`] ended, having copied these bytes.
    pub fn tunnel_closed(
        &self,
        route: &RouteSeries,
        client: Option<&str>,
        end: TunnelEnd,
        client_to_upstream: u64,
        upstream_to_client: u64,
    ) {
        self.tunnels_open(route).dec();
        let tunnels = |client: Option<&str>| {
            let labels = TunnelLabels {
                route: self.names.get(&route.route),
                client: client.map(|c| self.names.get(c)),
                end,
            };
            self.tunnels.get_or_create(&labels).clone()
        };
        match client {
            None => route.tunnels[end as usize].get_or_init(|| tunnels(None)).inc(),
            Some(_) => tunnels(client).inc(),
        };
        let bytes = |direction| {
            let labels = BytesLabels {
                route: self.names.get(&route.route),
                direction,
            };
            self.bytes.get_or_create(&labels).clone()
        };
        route
            .bytes_up
            .get_or_init(|| bytes(Direction::ClientToUpstream))
            .inc_by(client_to_upstream);
        route
            .bytes_down
            .get_or_init(|| bytes(Direction::UpstreamToClient))
            .inc_by(upstream_to_client);
    }

    /// An upstream connection on `route` succeeded after `seconds`.
    pub fn connect_duration(&self, route: &RouteSeries, seconds: f64) {
        route
            .connect_duration
            .get_or_init(|| {
                let labels = RouteLabels {
                    route: self.names.get(&route.route),
                };
                self.connect_duration.get_or_create(&labels).clone()
            })
            .observe(seconds);
    }

    fn tunnels_open<'a>(&self, route: &'a RouteSeries) -> &'a Gauge {
        route.tunnels_open.get_or_init(|| {
            let labels = RouteLabels {
                route: self.names.get(&route.route),
            };
            self.tunnels_open.get_or_create(&labels).clone()
        })
    }
}
