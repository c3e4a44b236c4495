//! Each recording method changes exactly its series in the text output, with exact values.

use std::collections::BTreeMap;

use super::*;

type Series = BTreeMap<String, f64>;

/// `name{labels} value` lines of the exposition, keyed by everything before the value.
fn series(m: &Metrics) -> Series {
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample line has a value");
            (key.to_owned(), value.parse().expect("a sample value is a number"))
        })
        .collect()
}

/// Runs `f` and returns the series it added or changed; no series may disappear.
fn changes(m: &Metrics, f: impl FnOnce(&Metrics)) -> Series {
    let before = series(m);
    f(m);
    let after = series(m);
    for key in before.keys() {
        assert!(after.contains_key(key), "{key} disappeared");
    }
    after.into_iter().filter(|(k, v)| before.get(k) != Some(v)).collect()
}

fn expect(pairs: &[(&str, f64)]) -> Series {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The series one histogram with `labels` has after the given observations.
fn histogram(name: &str, labels: &str, observed: &[f64]) -> Series {
    let mut out = Series::new();
    for le in LATENCY_BUCKETS {
        let n = observed.iter().filter(|v| **v <= le).count();
        out.insert(format!("{name}_bucket{{{labels},le=\"{le}\"}}"), n as f64);
    }
    out.insert(format!("{name}_bucket{{{labels},le=\"+Inf\"}}"), observed.len() as f64);
    out.insert(format!("{name}_sum{{{labels}}}"), observed.iter().sum());
    out.insert(format!("{name}_count{{{labels}}}"), observed.len() as f64);
    out
}

#[test]
fn a_new_registry_has_the_unlabelled_series_and_both_reload_results_at_zero() {
    let got = series(&Metrics::new());
    let want = expect(&[
        ("splitway_connections_open", 0.0),
        ("splitway_connections_rejected_total", 0.0),
        ("splitway_config_reloads_total{result=\"ok\"}", 0.0),
        ("splitway_config_reloads_total{result=\"error\"}", 0.0),
        ("splitway_panics_total", 0.0),
        ("splitway_tunnels_cut_at_shutdown_total", 0.0),
    ]);
    assert_eq!(got, want);
}

#[test]
fn request_counts_by_kind_route_and_outcome() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.request(RequestKind::Connect, "public", None, Outcome::Ok));
    assert_eq!(
        got,
        expect(&[(
            "splitway_requests_total{kind=\"connect\",route=\"public\",outcome=\"ok\"}",
            1.0
        )])
    );

    let got = changes(&m, |m| {
        m.request(RequestKind::Connect, "public", None, Outcome::Ok);
        m.request(
            RequestKind::Forward,
            "private",
            None,
            Outcome::Error(ErrorType::DnsError),
        );
    });
    let want = expect(&[
        (
            "splitway_requests_total{kind=\"connect\",route=\"public\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "splitway_requests_total{kind=\"forward\",route=\"private\",outcome=\"dns_error\"}",
            1.0,
        ),
    ]);
    assert_eq!(got, want);
}

/// A route's series are held once looked up, and a route made again (a reload) holds the
/// same series: both count into what `/metrics` shows.
#[test]
fn held_series_count_into_the_families() {
    let m = Metrics::new();
    let (first, again) = (RouteSeries::new("api".into()), RouteSeries::new("api".into()));
    for series in [&first, &first, &again] {
        m.request_ok(series, RequestKind::Connect, None);
        m.tunnel_opened(series);
    }
    m.request_ok(&first, RequestKind::Connect, Some("team-a"));
    let got = changes(&m, |m| {
        m.tunnel_closed(&again, None, TunnelEnd::Closed, 10, 20);
        m.tunnel_closed(&first, None, TunnelEnd::Closed, 1, 2);
        m.tunnel_closed(&first, Some("team-a"), TunnelEnd::Idle, 0, 0);
    });
    let want = expect(&[
        ("splitway_tunnels_open{route=\"api\"}", 0.0),
        ("splitway_tunnels_total{route=\"api\",end=\"closed\"}", 2.0),
        (
            "splitway_tunnels_total{route=\"api\",client=\"team-a\",end=\"idle\"}",
            1.0,
        ),
        (
            "splitway_bytes_total{route=\"api\",direction=\"client_to_upstream\"}",
            11.0,
        ),
        (
            "splitway_bytes_total{route=\"api\",direction=\"upstream_to_client\"}",
            22.0,
        ),
    ]);
    assert_eq!(got, want);
    let text = m.encode();
    assert!(
        text.contains("splitway_requests_total{kind=\"connect\",route=\"api\",outcome=\"ok\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("splitway_requests_total{kind=\"connect\",route=\"api\",client=\"team-a\",outcome=\"ok\"} 1\n"),
        "{text}"
    );
}

#[test]
fn tunnel_opened_raises_the_open_gauge_of_its_route() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.tunnel_opened(&RouteSeries::new("public".into())));
    assert_eq!(got, expect(&[("splitway_tunnels_open{route=\"public\"}", 1.0)]));
}

#[test]
fn tunnel_closed_lowers_the_gauge_counts_the_end_and_adds_bytes_each_way() {
    let m = Metrics::new();
    let public = RouteSeries::new("public".into());
    m.tunnel_opened(&public);
    m.tunnel_opened(&public);
    let got = changes(&m, |m| m.tunnel_closed(&public, None, TunnelEnd::Idle, 517, 4096));
    let want = expect(&[
        ("splitway_tunnels_open{route=\"public\"}", 1.0),
        ("splitway_tunnels_total{route=\"public\",end=\"idle\"}", 1.0),
        (
            "splitway_bytes_total{route=\"public\",direction=\"client_to_upstream\"}",
            517.0,
        ),
        (
            "splitway_bytes_total{route=\"public\",direction=\"upstream_to_client\"}",
            4096.0,
        ),
    ]);
    assert_eq!(got, want);

    let got = changes(&m, |m| m.tunnel_closed(&public, None, TunnelEnd::SniRejected, 3, 0));
    let want = expect(&[
        ("splitway_tunnels_open{route=\"public\"}", 0.0),
        ("splitway_tunnels_total{route=\"public\",end=\"sni_rejected\"}", 1.0),
        (
            "splitway_bytes_total{route=\"public\",direction=\"client_to_upstream\"}",
            520.0,
        ),
    ]);
    assert_eq!(got, want);
}

#[test]
fn every_tunnel_end_has_its_label_value() {
    let m = Metrics::new();
    let ends = [
        TunnelEnd::Closed,
        TunnelEnd::Idle,
        TunnelEnd::Error,
        TunnelEnd::SniRejected,
        TunnelEnd::Cancelled,
    ];
    for end in ends {
        m.tunnel_closed(&RouteSeries::new("r".into()), None, end, 0, 0);
    }
    let s = series(&m);
    for name in ["closed", "idle", "error", "sni_rejected", "cancelled"] {
        assert_eq!(
            s[&format!("splitway_tunnels_total{{route=\"r\",end=\"{name}\"}}")],
            1.0,
            "{name}"
        );
    }
}

#[test]
fn connect_duration_observes_into_the_route_histogram() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.connect_duration(&RouteSeries::new("public".into()), 0.003));
    assert_eq!(
        got,
        histogram("splitway_connect_duration_seconds", "route=\"public\"", &[0.003])
    );

    let got = changes(&m, |m| m.connect_duration(&RouteSeries::new("public".into()), 0.25));
    let before = histogram("splitway_connect_duration_seconds", "route=\"public\"", &[0.003]);
    let mut want = histogram("splitway_connect_duration_seconds", "route=\"public\"", &[0.003, 0.25]);
    want.retain(|k, v| before.get(k) != Some(v));
    assert_eq!(got, want);
    assert!(got.contains_key("splitway_connect_duration_seconds_bucket{route=\"public\",le=\"0.25\"}"));
    assert!(!got.contains_key("splitway_connect_duration_seconds_bucket{route=\"public\",le=\"0.1\"}"));
}

#[test]
fn dns_lookup_counts_by_result_and_observes_the_resolver_histogram() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.dns_lookup("vpc", DnsResult::Miss, 0.5));
    let mut want = histogram("splitway_dns_lookup_duration_seconds", "resolver=\"vpc\"", &[0.5]);
    want.insert(
        "splitway_dns_lookups_total{resolver=\"vpc\",result=\"miss\"}".to_owned(),
        1.0,
    );
    assert_eq!(got, want);

    for result in [DnsResult::Hit, DnsResult::Stale, DnsResult::Error] {
        m.dns_lookup("vpc", result, 0.0);
    }
    let s = series(&m);
    for name in ["hit", "miss", "stale", "error"] {
        assert_eq!(
            s[&format!("splitway_dns_lookups_total{{resolver=\"vpc\",result=\"{name}\"}}")],
            1.0
        );
    }
    assert_eq!(s["splitway_dns_lookup_duration_seconds_count{resolver=\"vpc\"}"], 4.0);
}

#[test]
fn sni_rejected_counts_by_route_and_reason() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.sni_rejected("public", SniReason::SniMismatch));
    assert_eq!(
        got,
        expect(&[(
            "splitway_sni_rejections_total{route=\"public\",reason=\"sni_mismatch\"}",
            1.0
        )])
    );
}

#[test]
fn connection_counters_and_gauge() {
    let m = Metrics::new();
    let got = changes(&m, Metrics::connection_rejected);
    assert_eq!(got, expect(&[("splitway_connections_rejected_total", 1.0)]));
    let got = changes(&m, |m| (0..7).for_each(|_| m.connection_opened()));
    assert_eq!(got, expect(&[("splitway_connections_open", 7.0)]));
    let got = changes(&m, |m| (0..5).for_each(|_| m.connection_closed()));
    assert_eq!(got, expect(&[("splitway_connections_open", 2.0)]));
}

#[test]
fn config_reload_counts_by_result() {
    let m = Metrics::new();
    let got = changes(&m, |m| m.config_reload(true));
    assert_eq!(got, expect(&[("splitway_config_reloads_total{result=\"ok\"}", 1.0)]));
    let got = changes(&m, |m| m.config_reload(false));
    assert_eq!(got, expect(&[("splitway_config_reloads_total{result=\"error\"}", 1.0)]));
}

#[test]
fn panic_caught_counts() {
    let m = Metrics::new();
    let got = changes(&m, Metrics::panic_caught);
    assert_eq!(got, expect(&[("splitway_panics_total", 1.0)]));
}

#[test]
fn every_family_has_help_and_type_lines() {
    let m = Metrics::new();
    m.request(RequestKind::Connect, "r", None, Outcome::Ok);
    m.tunnel_opened(&RouteSeries::new("r".into()));
    m.tunnel_closed(&RouteSeries::new("r".into()), None, TunnelEnd::Closed, 1, 1);
    m.connect_duration(&RouteSeries::new("r".into()), 0.01);
    m.dns_lookup("d", DnsResult::Hit, 0.0);
    m.sni_rejected("r", SniReason::NotTls);
    let text = m.encode();
    let families = [
        ("requests_total", "counter"),
        ("tunnels_total", "counter"),
        ("tunnels_open", "gauge"),
        ("bytes_total", "counter"),
        ("connect_duration_seconds", "histogram"),
        ("dns_lookups_total", "counter"),
        ("dns_lookup_duration_seconds", "histogram"),
        ("sni_rejections_total", "counter"),
        ("connections_open", "gauge"),
        ("connections_rejected_total", "counter"),
        ("config_reloads_total", "counter"),
        ("panics_total", "counter"),
        ("tunnels_cut_at_shutdown_total", "counter"),
    ];
    for (name, kind) in families {
        let help = format!("# HELP splitway_{name} ");
        assert!(
            text.lines().any(|l| l.starts_with(&help) && l.len() > help.len() + 5),
            "no help for {name}"
        );
        assert!(
            text.lines().any(|l| l == format!("# TYPE splitway_{name} {kind}")),
            "no type for {name}"
        );
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
        families.len()
    );
}

#[test]
fn names_are_interned_once() {
    let names = Names::default();
    let a = names.get("public");
    let b = names.get(&String::from("public"));
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

#[test]
fn concurrent_recording_loses_nothing() {
    let m = Metrics::new();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..1000 {
                    m.request(RequestKind::Connect, "public", None, Outcome::Ok);
                }
            });
        }
    });
    assert_eq!(
        series(&m)["splitway_requests_total{kind=\"connect\",route=\"public\",outcome=\"ok\"}"],
        8000.0
    );
}

#[test]
fn metrics_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Metrics>();
}

#[test]
fn request_and_tunnel_series_carry_client_only_with_policies() {
    let m = Metrics::new();
    let got = changes(&m, |m| {
        m.request(RequestKind::Connect, "r", Some("payments"), Outcome::Ok);
        m.tunnel_closed(
            &RouteSeries::new("r".into()),
            Some("unmatched"),
            TunnelEnd::Closed,
            1,
            2,
        );
    });
    assert_eq!(
        got.get("splitway_requests_total{kind=\"connect\",route=\"r\",client=\"payments\",outcome=\"ok\"}"),
        Some(&1.0),
        "{got:?}"
    );
    assert_eq!(
        got.get("splitway_tunnels_total{route=\"r\",client=\"unmatched\",end=\"closed\"}"),
        Some(&1.0),
        "{got:?}"
    );
    let none = changes(&m, |m| m.request(RequestKind::Connect, "r", None, Outcome::Ok));
    assert!(
        none.contains_key("splitway_requests_total{kind=\"connect\",route=\"r\",outcome=\"ok\"}"),
        "{none:?}"
    );
}

#[test]
fn tier_counters_have_closed_labels() {
    let m = Metrics::new();
    let got = changes(&m, |m| {
        m.proxy_header(ProxyHeader::Untrusted);
        m.client_policy_refusal("payments", "r", PolicyAction::Reported);
        m.tunnels_cut_at_shutdown(2);
    });
    assert_eq!(
        got.get("splitway_proxy_protocol_headers_total{result=\"untrusted\"}"),
        Some(&1.0),
        "{got:?}"
    );
    assert_eq!(
        got.get("splitway_client_policy_refusals_total{client=\"payments\",route=\"r\",action=\"reported\"}"),
        Some(&1.0),
        "{got:?}"
    );
    assert_eq!(got.get("splitway_tunnels_cut_at_shutdown_total"), Some(&2.0), "{got:?}");
}
