//! DNS resilience: negative caching, single-flight, stale answers when the resolver is slow
//! or down, a fast `dns_timeout` for unknown names, refresh before expiry.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use splitway::config::{Nameserver, ResolverSettings};
use splitway::dns::{Answer, DnsError, Resolver as SwResolver, Source};
use splitway::metrics::Metrics;

use crate::support::metrics::metric;
use crate::support::net::public_zone;
use crate::support::proxy::{TestProxy, proxy_section};
use crate::support::*;

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn settings(dns: SocketAddr, timeout: &str, ttl: &str) -> ResolverSettings {
    let d = |s: &str| humantime::parse_duration(s).expect("duration");
    ResolverSettings {
        nameservers: Some(vec![Nameserver::Udp(dns)]),
        timeout: d(timeout),
        min_ttl: d(ttl),
        max_ttl: d(ttl),
        serve_stale: Duration::from_secs(3600),
        hosts_file: false,
        ca_file: None,
        cache_size: splitway::config::DEFAULT_CACHE_SIZE,
    }
}

/// A resolver of the library on a fake DNS of the test's own (its query log is ours).
async fn resolver(timeout: &str, ttl: &str) -> (FakeDns, SwResolver) {
    let (dns, r, _) = resolver_with_metrics(timeout, ttl).await;
    (dns, r)
}

/// [`resolver`] with the metrics it records its lookups in.
async fn resolver_with_metrics(timeout: &str, ttl: &str) -> (FakeDns, SwResolver, Arc<Metrics>) {
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let metrics = Arc::new(Metrics::new());
    let r = SwResolver::new("test", &settings(dns.addr(), timeout, ttl), metrics.clone()).expect("resolver");
    (dns, r, metrics)
}

fn queries_for(dns: &FakeDns, host: &str) -> usize {
    dns.queries().iter().filter(|(n, _)| n == host).count()
}

#[tokio::test]
async fn hardening_concurrent_lookups_of_one_name_share_one_query() {
    let (dns, r) = resolver("5s", "60s").await;
    // Poll every lookup once before any can finish: each has then either started the query
    // or joined it. Without single-flight each would have sent its own A + AAAA.
    type Lookup<'a> = Pin<Box<dyn Future<Output = (Result<Answer, DnsError>, Source)> + 'a>>;
    let mut lookups: Vec<Lookup<'_>> = (0..20).map(|_| Box::pin(r.resolve(CUSTOM_DOMAIN)) as _).collect();
    for l in &mut lookups {
        assert!(futures_poll_once(l.as_mut()).is_pending());
    }
    for l in lookups {
        let (answer, _) = tokio::time::timeout(HANG_GUARD, l).await.expect("hang guard");
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert_eq!(
        queries_for(&dns, CUSTOM_DOMAIN),
        2,
        "one A and one AAAA: {:?}",
        dns.queries()
    );
}

fn futures_poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> std::task::Poll<F::Output> {
    f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test]
async fn hardening_negative_answers_are_cached() {
    let (dns, r) = resolver("5s", "60s").await;
    let name = "nope.mydomain.com";
    assert!(r.resolve(name).await.0.is_err());
    let asked = queries_for(&dns, name);
    assert!(asked > 0);
    let (second, source) = r.resolve(name).await;
    assert!(second.is_err());
    assert_eq!(
        (queries_for(&dns, name), source),
        (asked, Source::Hit),
        "the NXDOMAIN came from the cache"
    );
}

/// Resolves once, then lets the (1 ms) entry expire: time has to pass, nothing is awaited.
async fn with_expired_entry(timeout: &str) -> (FakeDns, SwResolver) {
    let (dns, r) = resolver(timeout, "1ms").await;
    assert_eq!(r.resolve(CUSTOM_DOMAIN).await.1, Source::Miss);
    tokio::time::sleep(Duration::from_millis(20)).await;
    (dns, r)
}

#[tokio::test]
async fn hardening_a_slow_resolver_is_answered_from_stale_data() {
    // The upstream never answers and its timeout is a minute: a stale answer within the
    // hang guard can only come from the client response timer (RFC 8767 §5).
    let (dns, r) = with_expired_entry("60s").await;
    dns.set_mode(DnsMode::Blackhole);
    let (answer, source) = tokio::time::timeout(HANG_GUARD, r.resolve(CUSTOM_DOMAIN))
        .await
        .expect("stale answer in time");
    assert_eq!(source, Source::Stale);
    assert_eq!(answer.expect("stale answer").addrs[0], PUBLIC_ENDPOINT_IP);
}

#[tokio::test]
async fn hardening_a_failing_resolver_is_answered_from_stale_data_then_recovers() {
    let (dns, r) = with_expired_entry("5s").await;
    dns.set_mode(DnsMode::ServFail);
    let (answer, source) = r.resolve(CUSTOM_DOMAIN).await;
    assert_eq!((answer.is_ok(), source), (true, Source::Stale));
    // Within the failure recheck time the resolver is not asked again.
    let asked = queries_for(&dns, CUSTOM_DOMAIN);
    assert_eq!(r.resolve(CUSTOM_DOMAIN).await.1, Source::Stale);
    assert_eq!(queries_for(&dns, CUSTOM_DOMAIN), asked);
    // An explicit refresh (what the refresher does) gets the fresh answer once it is back.
    dns.set_mode(DnsMode::Normal);
    assert!(r.refresh(CUSTOM_DOMAIN).await.is_ok());
}

#[tokio::test]
async fn hardening_a_hit_near_expiry_refreshes_in_the_background() {
    // A 2 s TTL: the refresh window (its last tenth) is 200 ms wide, room enough for a slow
    // machine to land in it; a lookup that misses it fails the test instead of passing.
    let (dns, r, metrics) = resolver_with_metrics("5s", "2s").await;
    assert_eq!(r.resolve(CUSTOM_DOMAIN).await.1, Source::Miss);
    let asked = queries_for(&dns, CUSTOM_DOMAIN);
    let refresh_at = r.refresh_at(CUSTOM_DOMAIN).expect("cached");
    // Into the last tenth of the TTL (time has to pass; nothing is awaited but the clock).
    tokio::time::sleep_until(refresh_at + Duration::from_millis(1)).await;
    let (answer, source) = r.resolve(CUSTOM_DOMAIN).await;
    assert_eq!(
        source,
        Source::Hit,
        "inside the refresh window the cached answer is served"
    );
    assert!(answer.is_ok(), "{answer:?}");
    // The hit asked the upstream again by itself (A and AAAA), and the answer replaced the
    // entry: its refresh time moved on, so the next lookup is a plain hit again.
    tokio::time::timeout(HANG_GUARD, dns.wait_queries_for(CUSTOM_DOMAIN, asked + 2))
        .await
        .expect("background refresh");
    let refreshed = async {
        loop {
            match r.refresh_at(CUSTOM_DOMAIN) {
                Some(at) if at > refresh_at => return at,
                // The answer is on its way from the fake DNS to the cache: nothing to await.
                _ => tokio::task::yield_now().await,
            }
        }
    };
    let next = tokio::time::timeout(HANG_GUARD, refreshed)
        .await
        .expect("the refreshed entry cached");
    assert!(next > tokio::time::Instant::now(), "the refreshed entry is fresh");
    assert_eq!(r.resolve(CUSTOM_DOMAIN).await.1, Source::Hit);
    assert_eq!(
        queries_for(&dns, CUSTOM_DOMAIN),
        asked + 2,
        "no lookup but the refresh asked"
    );
    let m = metrics.encode();
    let lookups = |result| {
        metric(
            &m,
            "splitway_dns_lookups_total",
            &[("resolver", "test"), ("result", result)],
        )
    };
    assert_eq!((lookups("miss"), lookups("hit")), (1.0, 2.0), "{m}");
}

fn dead_resolver_config(dns: SocketAddr, ttl: &str) -> String {
    let net = aws_net();
    format!(
        "{}\n[resolver.system]\nnameservers = [\"{dns}\"]\nhosts_file = false\ntimeout = \"200ms\"\n\n[resolver.public]\nnameservers = [\"{dns}\"]\ntimeout = \"200ms\"\nmin_ttl = \"{ttl}\"\nmax_ttl = \"{ttl}\"\n\n[[route]]\nname = \"custom-domains\"\nhosts = [\"{CUSTOM_DOMAIN}\"]\nresolver = \"public\"\n",
        proxy_section(net)
    )
}

#[tokio::test]
async fn hardening_resolver_down_serves_stale_for_a_route_host_and_504_for_an_unknown_name() {
    let net = aws_net();
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let proxy = TestProxy::start(&dead_resolver_config(dns.addr(), "1ms")).await;
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // let the start-up answer expire
    dns.set_mode(DnsMode::Blackhole);
    let (status, _, body, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200, "stale answer for the route host: {body}");
    let tls = tls_over(stream, CUSTOM_DOMAIN, &net.ca_der)
        .await
        .expect("TLS to the stale address");
    assert_eq!(get_over_tls(tls, CUSTOM_DOMAIN).await.0, 200);
    let (status, headers, body, _) = connect_raw(
        proxy.addr,
        &connect_request(&format!("unknown.mydomain.com:{}", net.port)),
    )
    .await;
    assert_eq!(status_of(&status), 504, "{body}");
    assert!(
        header(&headers, "proxy-status").is_some_and(|p| p.starts_with("splitway; error=dns_timeout;")),
        "{headers:?}"
    );
    assert!(body.contains("200ms"), "{body}");
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    assert_eq!(
        metric(
            &m,
            "splitway_dns_lookups_total",
            &[("resolver", "public"), ("result", "stale")]
        ),
        1.0,
        "{m}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn hardening_route_hosts_are_refreshed_before_they_expire() {
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let proxy = TestProxy::start(&dead_resolver_config(dns.addr(), "1s")).await;
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
    let at_start = queries_for(&dns, CUSTOM_DOMAIN);
    assert!(at_start >= 2, "{:?}", dns.queries());
    // No request is made: only the refresher can ask again (twice: A and AAAA, twice over).
    tokio::time::timeout(HANG_GUARD, dns.wait_queries_for(CUSTOM_DOMAIN, at_start + 4))
        .await
        .expect("refreshed");
    proxy.stop().await;
}
