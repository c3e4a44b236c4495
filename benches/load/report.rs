//! From samples to medians, ratios to direct, a markdown table, splitway against the two floors
//! (the mio floor and the C relay) and the best peer, and the JSON record.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::proxies::Kind;
use crate::workloads::Sample;

/// Every run of every (workload, contender) pair, in the order run.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) samples: BTreeMap<(String, String), Vec<Sample>>,
}

impl Runs {
    pub(crate) fn add(&mut self, workload: &str, contender: &str, s: Sample) {
        self.samples
            .entry((workload.to_owned(), contender.to_owned()))
            .or_default()
            .push(s);
    }
}

/// One metric of one workload across contenders (medians over the repetitions).
pub(crate) struct Row {
    pub(crate) workload: String,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    /// (contender, median, errors over all runs)
    pub(crate) values: Vec<(String, Option<f64>, u64)>,
}

impl Row {
    pub(crate) fn value(&self, contender: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(c, _, _)| c == contender)
            .and_then(|(_, v, _)| *v)
    }

    /// `value / direct`, where both exist.
    pub(crate) fn ratio(&self, contender: &str) -> Option<f64> {
        self.ratio_to(contender, "direct")
    }

    /// `value / other's value`, where both exist.
    pub(crate) fn ratio_to(&self, contender: &str, other: &str) -> Option<f64> {
        Some(self.value(contender)? / self.value(other).filter(|d| *d > 0.0)?)
    }

    /// For cost metrics (CPU, memory) less is better; for rates more is.
    fn lower_is_better(&self) -> bool {
        self.metric.contains("CPU") || self.metric.starts_with("RSS")
    }

    /// The peer (squid, tinyproxy, g3proxy) with the best value, and that value.
    pub(crate) fn best_peer(&self) -> Option<(&str, f64)> {
        let peers = self
            .values
            .iter()
            .filter(|(c, _, _)| Kind::is_peer(c))
            .filter_map(|(c, v, _)| Some((c.as_str(), (*v)?)));
        if self.lower_is_better() {
            peers.min_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            peers.max_by(|a, b| a.1.total_cmp(&b.1))
        }
    }

    /// `value / the best peer's value`.
    pub(crate) fn ratio_to_best_peer(&self, contender: &str) -> Option<f64> {
        let (peer, _) = self.best_peer()?;
        self.ratio_to(contender, peer)
    }

    /// Whether the row is one the targets speak of.
    fn judged(&self) -> bool {
        matches!(
            self.metric,
            "req/s" | "throughput" | "proxy CPU/req" | "proxy CPU/GiB" | "RSS/tunnel"
        )
    }
}

pub(crate) type Metric = (&'static str, &'static str, fn(&Sample) -> Option<f64>);

pub(crate) fn metrics(workload: &str) -> Vec<Metric> {
    let rate: Metric = ("req/s", "req/s", |s| {
        (s.secs > 0.0 && s.requests > 0).then(|| s.requests as f64 / s.secs)
    });
    let p50: Metric = ("p50", "ms", |s| percentile(&s.latencies_us, 50.0));
    let p99: Metric = ("p99", "ms", |s| percentile(&s.latencies_us, 99.0));
    let cpu: Metric = ("proxy CPU/req", "µs", |s| {
        Some(s.cpu?.as_secs_f64() * 1e6 / s.requests.max(1) as f64).filter(|_| s.requests > 0)
    });
    match workload {
        "fresh-tls" | "fresh-plain" | "fresh-proxy-v2" | "fresh-tls-nginx" | "fresh-plain-nginx" => {
            vec![rate, p50, p99, cpu]
        }
        "keepalive" | "forward" | "keepalive-nginx" | "keepalive-plain-nginx" => vec![rate, cpu],
        "bulk" | "bulk-nginx" => vec![
            ("throughput", "MB/s", |s| {
                (s.bytes > 0).then(|| s.bytes as f64 / 1e6 / s.secs)
            }),
            ("proxy CPU/GiB", "s", |s| {
                Some(s.cpu?.as_secs_f64() / (s.bytes as f64 / f64::from(1u32 << 30))).filter(|_| s.bytes > 0)
            }),
            ("machine CPU/GiB", "s", |s| {
                Some(s.machine_cpu?.as_secs_f64() / (s.bytes as f64 / f64::from(1u32 << 30))).filter(|_| s.bytes > 0)
            }),
        ],
        w if w.starts_with("distinct") => vec![
            ("RSS/10k names", "KiB", |s| s.kib_per_10k_names),
            ("tunnels opened", "", |s| Some(s.requests as f64)),
        ],
        _ => vec![
            ("RSS/tunnel", "KiB", |s| s.kib_per_tunnel),
            ("tunnels opened", "", |s| Some(s.requests as f64)),
        ],
    }
}

fn percentile(lat_us: &[u32], p: f64) -> Option<f64> {
    if lat_us.is_empty() {
        return None;
    }
    let mut v = lat_us.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 * p / 100.0) as usize).min(v.len() - 1);
    Some(f64::from(v[i]) / 1000.0)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Rows in workload order, contenders in `contenders` order.
pub(crate) fn rows(runs: &Runs, workloads: &[String], contenders: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in workloads {
        for (metric, unit, f) in metrics(w) {
            let values = contenders
                .iter()
                .filter_map(|c| {
                    let samples = runs.samples.get(&(w.clone(), c.clone()))?;
                    let errors = samples.iter().map(|s| s.errors).sum();
                    Some((c.clone(), median(samples.iter().filter_map(f).collect()), errors))
                })
                .collect::<Vec<_>>();
            if !values.is_empty() {
                rows.push(Row {
                    workload: w.clone(),
                    metric,
                    unit,
                    values,
                });
            }
        }
    }
    rows
}

fn fmt(v: f64) -> String {
    match v.abs() {
        x if x >= 100.0 => format!("{v:.0}"),
        x if x >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The markdown table: each cell the median, then the ratio to direct where there is one.
pub(crate) fn table(rows: &[Row], contenders: &[String]) -> String {
    let mut out = String::from("| workload | metric |");
    for c in contenders {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(contenders.len()));
    out.push('\n');
    for r in rows {
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unit)
        };
        let _ = write!(out, "| {} | {}{unit} |", r.workload, r.metric);
        for c in contenders {
            let cell = match (r.value(c), r.ratio(c)) {
                (Some(v), Some(x)) if c != "direct" => format!("{} ({x:.2}×)", fmt(v)),
                (Some(v), _) => fmt(v),
                (None, _) if r.values.iter().any(|(n, _, e)| n == c && *e > 0) => "failed".into(),
                (None, _) => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// Contenders judged against the floor and the best peer: splitway and its A/B twin.
fn ours(contenders: &[String]) -> impl Iterator<Item = &String> {
    contenders.iter().filter(|c| c.starts_with("splitway"))
}

/// The floors splitway is judged against, those that ran: the mio floor and the C relay.
fn floors(contenders: &[String]) -> Vec<&'static str> {
    ["floor", "relay-c"]
        .into_iter()
        .filter(|f| contenders.iter().any(|c| c == f))
        .collect()
}

/// splitway (and splitway-b) beside the floors and the best peer: value, `÷` each floor and
/// `÷ best peer`, for the rows with targets (CPU per unit of work, rates, memory).
pub(crate) fn judged(rows: &[Row], contenders: &[String]) -> String {
    let floors = floors(contenders);
    let mut out = String::from("| workload | metric |");
    for f in &floors {
        let _ = write!(out, " {f} |");
    }
    out.push_str(" best peer |");
    for c in ours(contenders) {
        let _ = write!(out, " {c} |");
        for f in &floors {
            let _ = write!(out, " ÷ {f} |");
        }
        out.push_str(" ÷ best peer |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(floors.len() + 1));
    out.push_str(&"---:|".repeat(ours(contenders).count() * (floors.len() + 2)));
    out.push('\n');
    let cell = |v: Option<f64>| v.map_or("–".to_owned(), fmt);
    let times = |v: Option<f64>| v.map_or("–".to_owned(), |x| format!("{x:.2}×"));
    for r in rows.iter().filter(|r| r.judged()) {
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.unit)
        };
        let peer = r
            .best_peer()
            .map_or("–".to_owned(), |(p, v)| format!("{} ({p})", fmt(v)));
        let _ = write!(out, "| {} | {}{unit} |", r.workload, r.metric);
        for f in &floors {
            let _ = write!(out, " {} |", cell(r.value(f)));
        }
        let _ = write!(out, " {peer} |");
        for c in ours(contenders) {
            let _ = write!(out, " {} |", cell(r.value(c)));
            for f in &floors {
                let _ = write!(out, " {} |", times(r.ratio_to(c, f)));
            }
            let _ = write!(out, " {} |", times(r.ratio_to_best_peer(c)));
        }
        out.push('\n');
    }
    out
}

/// Errors seen per (workload, contender), with the first error's text.
/// The PROXY v2 header's cost: splitway-pp's CPU per `fresh-proxy-v2` tunnel against
/// splitway's per `fresh-plain` tunnel (the same tunnel without the header).
pub(crate) fn proxy_header_cost(rows: &[Row]) -> Option<String> {
    let cpu = |w: &str, c: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.metric == "proxy CPU/req")
            .and_then(|r| r.value(c))
    };
    let with = cpu("fresh-proxy-v2", "splitway-pp")?;
    let without = cpu("fresh-plain", "splitway")?;
    Some(format!(
        "PROXY v2 header (with a VPC endpoint TLV): {with:.1} µs of proxy CPU per fresh tunnel against {without:.1} µs without, {:+.1} % of a fresh tunnel's CPU",
        (with - without) / without * 100.0
    ))
}

pub(crate) fn error_notes(runs: &Runs) -> Vec<String> {
    runs.samples
        .iter()
        .filter_map(|((w, c), samples)| {
            let errors: u64 = samples.iter().map(|s| s.errors).sum();
            let first = samples.iter().find_map(|s| s.first_error.clone()).unwrap_or_default();
            (errors > 0).then(|| {
                format!(
                    "{w} / {c}: {errors} errors over {} runs (first: {first})",
                    samples.len()
                )
            })
        })
        .collect()
}

/// The JSON record: settings, machine, medians with ratios, and every run's raw numbers.
pub(crate) fn json(rows: &[Row], runs: &Runs, header: Value, notes: &[String]) -> Value {
    let mut results = serde_json::Map::new();
    for r in rows {
        let w = results.entry(r.workload.clone()).or_insert_with(|| json!({}));
        for (c, v, errors) in &r.values {
            let entry = w
                .as_object_mut()
                .expect("object")
                .entry(c.clone())
                .or_insert_with(|| json!({"errors": errors}));
            let key = format!("{} ({})", r.metric, r.unit).replace(" ()", "");
            entry[key.as_str()] = json!(v);
            if let Some(x) = r.ratio(c).filter(|_| c != "direct") {
                entry[format!("{key} ratio to direct").as_str()] = json!(x);
            }
            if c.starts_with("splitway") {
                for f in ["floor", "relay-c"] {
                    if let Some(x) = r.ratio_to(c, f) {
                        entry[format!("{key} ratio to {f}").as_str()] = json!(x);
                    }
                }
                if let (Some(x), Some((peer, _))) = (r.ratio_to_best_peer(c), r.best_peer()) {
                    entry[format!("{key} ratio to best peer").as_str()] = json!(x);
                    entry[format!("{key} best peer").as_str()] = json!(peer);
                }
            }
        }
    }
    let raw: Vec<Value> = runs
        .samples
        .iter()
        .flat_map(|((w, c), samples)| {
            samples.iter().map(move |s| {
                json!({
                    "workload": w, "contender": c, "requests": s.requests, "bytes": s.bytes,
                    "secs": s.secs, "errors": s.errors, "first_error": s.first_error,
                    "proxy_cpu_secs": s.cpu.map(|d| d.as_secs_f64()), "machine_cpu_secs": s.machine_cpu.map(|d| d.as_secs_f64()), "kib_per_tunnel": s.kib_per_tunnel, "kib_per_10k_names": s.kib_per_10k_names,
                })
            })
        })
        .collect();
    let mut out = header;
    out["results"] = Value::Object(results);
    out["notes"] = json!(notes);
    out["runs"] = Value::Array(raw);
    out
}
