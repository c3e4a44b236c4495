//! Reading the Prometheus text of `/metrics` in tests.

/// The value of the series `name` whose labels include every `(key, value)` in `labels`
/// (0 when no such series was exported yet).
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
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
    found.unwrap_or(0.0)
}
