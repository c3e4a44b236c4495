//! A registry that also records the name each family is served under, so the docs test can
//! check every metric against the operations page, including those without a series yet
//! (the text encoder leaves a family out until it has one).

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry, Unit};

pub(super) struct Families {
    prefix: &'static str,
    registry: Registry,
    names: Vec<String>,
}

impl Families {
    pub(super) fn new(prefix: &'static str) -> Families {
        Families {
            prefix,
            registry: Registry::with_prefix(prefix),
            names: Vec::new(),
        }
    }

    pub(super) fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.record(name, None, &metric);
        self.registry.register(name, help, metric);
    }

    pub(super) fn register_with_unit(&mut self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.record(name, Some(&unit), &metric);
        self.registry.register_with_unit(name, help, unit, metric);
    }

    /// The registry and the served names, in registration order.
    pub(super) fn finish(self) -> (Registry, Vec<String>) {
        (self.registry, self.names)
    }

    /// The name the Prometheus text format serves: prefix, name, unit, `_total` for counters.
    fn record(&mut self, name: &str, unit: Option<&Unit>, metric: &impl EncodeMetric) {
        let mut served = format!("{}_{name}", self.prefix);
        if let Some(unit) = unit {
            served = format!("{served}_{}", unit.as_str());
        }
        if matches!(metric.metric_type(), MetricType::Counter) {
            served.push_str("_total");
        }
        self.names.push(served);
    }
}
