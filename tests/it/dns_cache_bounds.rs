//! Bounded resolver caches: a flood of distinct names (answered or NXDOMAIN) never holds more
//! than `cache_size` entries beside the pinned route hosts, never evicts a route host, and
//! leaves nothing behind.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::metrics::metric;
use crate::support::net::public_zone;
use crate::support::proxy::{TestProxy, proxy_section};
use crate::support::*;

const CACHE_SIZE: usize = 20;
/// The route hosts `public` pins (kept beside the bounded part).
const PINNED: usize = 1;

/// `public` has a small cache and 1 ms TTLs (every answer stale a moment later); the route
/// host is pinned; `*.many.test` answers every name, `*.nx.test` is NXDOMAIN.
fn flood_config(dns: SocketAddr) -> String {
    format!(
        "{}\n[resolver.system]\nnameservers = [\"{dns}\"]\nhosts_file = false\ntimeout = \"200ms\"\n\n\
         [resolver.public]\nnameservers = [\"{dns}\"]\ntimeout = \"200ms\"\nmin_ttl = \"1ms\"\nmax_ttl = \"1ms\"\n\
         cache_size = {CACHE_SIZE}\n\n\
         [[route]]\nname = \"custom-domains\"\nhosts = [\"{CUSTOM_DOMAIN}\"]\nresolver = \"public\"\n\n\
         [[route]]\nname = \"many\"\nhosts = [\"*.many.test\", \"*.nx.test\"]\nresolver = \"public\"\n",
        proxy_section(aws_net())
    )
}

async fn flood_dns() -> FakeDns {
    FakeDns::start(PUBLIC_DNS_IP, public_zone().addr("*.many.test", PUBLIC_ENDPOINT_IP)).await
}

async fn connect(proxy: &TestProxy, host: &str) -> (u16, Vec<(String, String)>, String) {
    let authority = format!("{host}:{}", aws_net().port);
    let (status, headers, body, _stream) = connect_raw(proxy.addr, &connect_request(&authority)).await;
    (status_of(&status), headers, body)
}

fn entries(proxy: &TestProxy) -> f64 {
    let m = proxy.handle.metrics_text();
    metric(&m, "splitway_dns_cache_entries", &[("resolver", "public")])
}

/// Resolves `count` distinct names under `suffix` through the proxy, checking the entry gauge
/// every ten names; returns what the last CONNECT got.
async fn flood(proxy: &TestProxy, suffix: &str, count: usize, want: u16) {
    // Each name twice: a flood of names asked more often than the route host, which a
    // frequency-aware cache alone would come to prefer.
    for i in (0..2 * count).map(|i| i / 2) {
        let (status, headers, body) = connect(proxy, &format!("n{i}.{suffix}")).await;
        assert_eq!(status, want, "n{i}.{suffix}: {body}");
        if want == 502 {
            assert!(
                header(&headers, "proxy-status").is_some_and(|p| p.starts_with("splitway; error=dns_error;")),
                "{headers:?}"
            );
            assert!(
                body.contains("route `many`") && body.contains(&format!("n{i}.{suffix}")),
                "{body}"
            );
        }
        if i % 10 == 9 {
            let n = entries(proxy);
            assert!(n <= (CACHE_SIZE + PINNED) as f64, "{n} entries after {} names", i + 1);
        }
    }
}

/// With the resolver down, the route host is still answered from its (stale) entry.
async fn route_host_served_stale(proxy: &TestProxy, dns: &FakeDns) {
    dns.set_mode(DnsMode::Blackhole);
    // No stale answer may have been served yet: the series appears on first use.
    let before = crate::support::metrics::metric_or_zero(
        &proxy.handle.metrics_text(),
        "splitway_dns_lookups_total",
        &[("resolver", "public"), ("result", "stale")],
    );
    let (status, _, body) = connect(proxy, CUSTOM_DOMAIN).await;
    assert_eq!(status, 200, "the route host was not evicted: {body}");
    let m = proxy.handle.metrics_text();
    let after = metric(
        &m,
        "splitway_dns_lookups_total",
        &[("resolver", "public"), ("result", "stale")],
    );
    assert_eq!(after, before + 1.0, "answered from the stale entry: {m}");
}

async fn started(dns: &FakeDns) -> TestProxy {
    let proxy = TestProxy::start(&flood_config(dns.addr())).await;
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // let the start-up answer go stale
    proxy
}

#[tokio::test]
async fn dns_cache_distinct_names_stay_within_cache_size_and_keep_route_hosts() {
    let dns = flood_dns().await;
    let proxy = started(&dns).await;
    flood(&proxy, "many.test", 5 * CACHE_SIZE, 200).await;
    let m = proxy.handle.metrics_text();
    let evicted = metric(&m, "splitway_dns_cache_evictions_total", &[("resolver", "public")]);
    assert!(evicted >= (4 * CACHE_SIZE - PINNED) as f64, "{m}");
    route_host_served_stale(&proxy, &dns).await;
    assert!(entries(&proxy) <= (CACHE_SIZE + PINNED) as f64);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn dns_cache_an_nxdomain_flood_does_not_evict_route_hosts() {
    let dns = flood_dns().await;
    let proxy = started(&dns).await;
    flood(&proxy, "nx.test", 5 * CACHE_SIZE, 502).await;
    route_host_served_stale(&proxy, &dns).await;
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
