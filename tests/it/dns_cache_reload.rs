//! Resolver caches across a reload: an unchanged resolver keeps its entries (stale ones
//! included, so a reload during a DNS outage changes nothing); a changed one starts fresh.

use std::net::SocketAddr;
use std::time::Duration;

use splitway::Config;

use crate::support::metrics::metric;
use crate::support::net::public_zone;
use crate::support::proxy::{TestProxy, proxy_section};
use crate::support::*;

/// `public` answers the route host with a 1 ms TTL, so every answer is stale a moment later.
fn outage_config(dns: SocketAddr, public_timeout: &str, extra: &str) -> String {
    format!(
        "{}\n[resolver.system]\nnameservers = [\"{dns}\"]\nhosts_file = false\ntimeout = \"200ms\"\n\n\
         [resolver.public]\nnameservers = [\"{dns}\"]\ntimeout = \"{public_timeout}\"\nmin_ttl = \"1ms\"\nmax_ttl = \"1ms\"\n\n\
         [[route]]\nname = \"custom-domains\"\nhosts = [\"{CUSTOM_DOMAIN}\"]\nresolver = \"public\"\n{extra}",
        proxy_section(aws_net())
    )
}

const EXTRA_ROUTE: &str = "\n[[route]]\nname = \"blocked\"\nhosts = [\"blocked.example\"]\ndeny = true\n";

/// CONNECT to the route host; the status line, headers and body.
async fn connect_route_host(proxy: &TestProxy) -> (u16, Vec<(String, String)>, String) {
    let authority = format!("{CUSTOM_DOMAIN}:{}", aws_net().port);
    let (status, headers, body, _stream) = connect_raw(proxy.addr, &connect_request(&authority)).await;
    (status_of(&status), headers, body)
}

fn reload(proxy: &TestProxy, toml: &str) {
    let config = Config::from_toml(toml, "reloaded.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    proxy.handle.reload(config).expect("valid config reloads");
}

/// A proxy whose start-up answer for the route host is cached and already stale, with the
/// resolver down from now on.
async fn proxy_during_outage(dns: &FakeDns, public_timeout: &str) -> TestProxy {
    let proxy = TestProxy::start(&outage_config(dns.addr(), public_timeout, "")).await;
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // let the start-up answer expire
    dns.set_mode(DnsMode::Blackhole);
    let (status, _, body) = connect_route_host(&proxy).await;
    assert_eq!(status, 200, "stale answer before the reload: {body}");
    proxy
}

#[tokio::test]
async fn dns_cache_an_unchanged_resolver_keeps_its_stale_entries_across_a_reload() {
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let proxy = proxy_during_outage(&dns, "200ms").await;
    // Only a route is added: both resolvers are defined as before.
    reload(&proxy, &outage_config(dns.addr(), "200ms", EXTRA_ROUTE));
    // The reload took effect: the added route refuses its host (before it, the name went to
    // the system resolver, which is down: 504).
    let authority = format!("blocked.example:{}", aws_net().port);
    let (status, headers, body, _) = connect_raw(proxy.addr, &connect_request(&authority)).await;
    assert_eq!(status_of(&status), 403, "the reloaded config's route: {body}");
    assert!(
        header(&headers, "proxy-status").is_some_and(|p| p.starts_with("splitway; error=http_request_denied")),
        "{headers:?}"
    );
    assert!(body.contains("blocked"), "{body}");
    let (status, _, body) = connect_route_host(&proxy).await;
    assert_eq!(status, 200, "the stale entry survives the reload: {body}");
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let stale = metric(
        &m,
        "splitway_dns_lookups_total",
        &[("resolver", "public"), ("result", "stale")],
    );
    assert!(stale >= 2.0, "both requests answered from the stale entry: {m}");
    proxy.stop().await;
}

#[tokio::test]
async fn dns_cache_a_changed_resolver_starts_fresh_after_a_reload() {
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let proxy = proxy_during_outage(&dns, "200ms").await;
    // `public` gets another timeout: a new definition, a new (empty) cache.
    reload(&proxy, &outage_config(dns.addr(), "300ms", ""));
    let (status, headers, body) = connect_route_host(&proxy).await;
    assert_eq!(status, 504, "no stale entry to answer from: {body}");
    assert!(
        header(&headers, "proxy-status").is_some_and(|p| p.starts_with("splitway; error=dns_timeout;")),
        "{headers:?}"
    );
    assert!(body.contains("custom-domains") && body.contains("300ms"), "{body}");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
