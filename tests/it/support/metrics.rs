//! Reading the Prometheus text of `/metrics` in tests. A series that is missing is never
//! read as 0: `metric` panics with the whole text, and the few checks where absence is the
//! point say so (`metric_or_zero`, `assert_missing`).

/// The value of the one series `name` whose labels include every `(key, value)` in
/// `labels`; `None` when there is none. Panics when more than one matches.
pub(crate) fn find_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if matches {
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(found.is_none(), "{name} {labels:?} matches more than one series");
            found = Some(v);
        }
    }
    found
}

/// The value of the series `name` with `labels`; panics with the metrics text when the
/// series is not exported (a check for 0 on a series that must exist fails when it is missing).
#[track_caller]
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_metric(text, name, labels).unwrap_or_else(|| panic!("no series {name} {labels:?} in:\n{text}"))
}

/// The value of the series, or 0 when it is not exported: only for series that appear on
/// first use (counters of events that may not have happened yet).
pub(crate) fn metric_or_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_metric(text, name, labels).unwrap_or(0.0)
}

/// Panics when a series `name` with `labels` is exported.
#[track_caller]
pub(crate) fn assert_missing(text: &str, name: &str, labels: &[(&str, &str)]) {
    if let Some(v) = find_metric(text, name, labels) {
        panic!("series {name} {labels:?} exported (value {v}), expected none:\n{text}");
    }
}
