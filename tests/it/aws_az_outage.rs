//! A zone that goes dark (`[proxy] address_backoff`): a VPC endpoint with two ENIs, one
//! black-holed by an iptables `DROP` in the test's own network namespace. The first new tunnel
//! may wait the Happy Eyeballs attempt delay on the dead ENI; the next ones go straight to the
//! healthy one; once the rule is gone and the backoff is over, the ENI carries tunnels again.

use std::net::IpAddr;

use crate::support::client::{admin_get, get_url};
use crate::support::config::{Aws, ConfigBuilder, Route, quoted};
use crate::support::metrics::{find_metric, metric};
use crate::support::netns::{NetNs, NsNet};
use crate::support::proxy::TestProxy;
use crate::support::raw::{assert_refused, exchange};
use crate::support::*;

const ROUTE: &str = "two-enis";
/// Short, so the test waits little for the backoff to end; long enough for a few tunnels.
const BACKOFF: &str = "5s";
/// RFC 8305's attempt delay is 250 ms: a tunnel that did not wait on the dead ENI connects
/// well within this.
const FAST: &str = "0.1";

/// Tunnels through the proxy (a new client, so a new tunnel), run in the namespace.
async fn served_by(ns: &NsNet, proxy: std::net::SocketAddr) -> String {
    let net = ns.net;
    // The namespace's endpoints listen on 443, not on the shared network's port.
    let url = format!("https://{}:{}/", execute_api_host(PRIVATE_API_ID, REGION), net.port);
    let served = ns
        .run("a request through the proxy", async move {
            let client = https_client(net, Via::Proxy(proxy));
            get_url(&client, &url).await.map_err(|e| describe_chain(&e))
        })
        .await
        .unwrap_or_else(|e| panic!("through the proxy: {e}"));
    assert_eq!(served.status, 200, "{served:?}");
    served.served_by
}

/// Connects of `route` so far that took at most `FAST` seconds.
fn fast_connects(proxy: &TestProxy, route: &str) -> f64 {
    let m = proxy.handle.metrics_text();
    let labels = [("route", route), ("le", FAST)];
    find_metric(&m, "splitway_connect_duration_seconds_bucket", &labels).unwrap_or(0.0)
}

fn iptables(ns: &NetNs, op: &str, ip: IpAddr) {
    let ip = ip.to_string();
    let args = [op, "OUTPUT", "-d", &ip, "-p", "tcp", "--dport", "443", "-j", "DROP"];
    ns.run("iptables", &args)
        .unwrap_or_else(|e| panic!("iptables {op}: {e}"));
}

#[tokio::test]
async fn aws_a_dark_zone_is_tried_last_until_its_backoff_is_over() {
    let Some(ns) = NetNs::for_test("aws_a_dark_zone_is_tried_last_until_its_backoff_is_over") else {
        return;
    };
    let nsnet = NsNet::start(&ns);
    let net = nsnet.net;
    // The endpoint's regional name answers with both ENIs, as AWS's does (one per zone).
    let zone = Zone::new().addr(VPCE, VPCE_IP).addr(VPCE, VPCE_ZONAL_IP);
    let dns = nsnet
        .run("the VPC resolver", FakeDns::start("127.53.9.2".parse().unwrap(), zone))
        .await;
    let toml = ConfigBuilder::new(net)
        .resolver("system", dns.addr())
        .resolver_key("system", "hosts_file", "false")
        .proxy("address_backoff", quoted(BACKOFF))
        .route(
            Route::new(ROUTE)
                .hosts([format!("*.execute-api.{REGION}.amazonaws.com")])
                .str("connect", VPCE),
        )
        .admin()
        .admin_key("debug", "true")
        .build();
    let proxy = nsnet
        .run("the proxy", async move { TestProxy::start(&toml).await })
        .await;
    let (addr, admin) = (proxy.addr, proxy.admin.expect("admin"));

    // Both healthy: the first address answers first.
    let first = served_by(&nsnet, addr).await;
    let (dark_ip, other) = match first.as_str() {
        "vpce-us-east-1" => (VPCE_IP, "vpce-us-east-1a"),
        "vpce-us-east-1a" => (VPCE_ZONAL_IP, "vpce-us-east-1"),
        other => panic!("served by {other}"),
    };
    let dark = net.endpoint_addr(dark_ip);
    iptables(&ns, "-I", dark_ip);

    // The first tunnel after the outage may pay the attempt delay; the ENI goes into backoff.
    assert_eq!(served_by(&nsnet, addr).await, other);
    let m = proxy.handle.metrics_text();
    assert_eq!(
        metric(&m, "splitway_upstream_backoffs_total", &[("route", ROUTE)]),
        1.0,
        "{m}"
    );
    let backoffs = proxy.handle.address_backoffs();
    assert_eq!(
        backoffs
            .iter()
            .map(|b| (b.address, b.route.as_str()))
            .collect::<Vec<_>>(),
        [(dark, ROUTE)],
        "{backoffs:?}"
    );
    let (status, body) = nsnet.run("/readyz?verbose", admin_get(admin, "/readyz?verbose")).await;
    assert_eq!(status, 200, "a backoff is not a readiness failure: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let shown = &v["address_backoff"][0];
    assert_eq!(
        (&shown["address"], &shown["route"], &shown["cause"]),
        (&dark.to_string().into(), &ROUTE.into(), &"timed_out".into()),
        "{body}"
    );

    // explain on the running proxy (/debug/route) shows it, and connects elsewhere first.
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let path = format!("/debug/route?host={host}:{}", net.port);
    let (status, body) = nsnet
        .run("/debug/route", async move { admin_get(admin, &path).await })
        .await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(e["backoffs"][0]["address"], dark.to_string(), "{body}");
    assert_ne!(e["connect_to"], dark.to_string(), "{body}");
    assert_eq!(e["address_backoff"], BACKOFF, "{body}");

    // The next tunnels go straight to the healthy ENI: none waits the 250 ms attempt delay.
    let before = fast_connects(&proxy, ROUTE);
    for _ in 0..3 {
        assert_eq!(served_by(&nsnet, addr).await, other);
    }
    let m = proxy.handle.metrics_text();
    assert_eq!(
        fast_connects(&proxy, ROUTE) - before,
        3.0,
        "every tunnel after the first connects within {FAST}s:\n{m}"
    );
    assert_eq!(
        metric(&m, "splitway_upstream_backoffs_total", &[("route", ROUTE)]),
        1.0,
        "{m}"
    );

    // The zone comes back; once the backoff is over the ENI is tried first again.
    iptables(&ns, "-D", dark_ip);
    let handle = proxy.handle.clone();
    poll_until(HANG_SECS, "the address backoff to end", || {
        let over = handle.address_backoffs().is_empty();
        async move { over.then_some(()) }
    })
    .await;
    assert_eq!(served_by(&nsnet, addr).await, first);
    let m = proxy.handle.metrics_text();
    assert_eq!(
        metric(&m, "splitway_upstream_backoffs_total", &[("route", ROUTE)]),
        1.0,
        "{m}"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
    drop(dns);
}

/// The preset's zonal endpoint name first: when its zone goes dark, the names whose every
/// address is in backoff go after the regional name, so only the first tunnel fails.
#[tokio::test]
async fn aws_a_dark_zonal_endpoint_name_is_tried_after_the_regional_one() {
    let Some(ns) = NetNs::for_test("aws_a_dark_zonal_endpoint_name_is_tried_after_the_regional_one") else {
        return;
    };
    let nsnet = NsNet::start(&ns);
    let net = nsnet.net;
    let zone = Zone::new().addr(VPCE, VPCE_IP).addr(VPCE_ZONAL, VPCE_ZONAL_IP);
    let dns = nsnet
        .run("the VPC resolver", FakeDns::start("127.53.9.4".parse().unwrap(), zone))
        .await;
    let toml = ConfigBuilder::new(net)
        .resolver("system", dns.addr())
        .resolver_key("system", "hosts_file", "false")
        .proxy("address_backoff", quoted(BACKOFF))
        .proxy("connect_timeout", quoted("1s"))
        .aws(Aws::new(REGION, VPCE).str("availability_zone", "us-east-1a"))
        .build();
    let proxy = nsnet
        .run("the proxy", async move { TestProxy::start(&toml).await })
        .await;
    let addr = proxy.addr;
    assert_eq!(served_by(&nsnet, addr).await, "vpce-us-east-1a", "the zonal name first");

    iptables(&ns, "-I", VPCE_ZONAL_IP);
    // The one address of the zonal name does not answer within connect_timeout: refused with
    // 504, and that address goes into backoff.
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let connect = format!("CONNECT {host}:{0} HTTP/1.1\r\nHost: {host}:{0}\r\n\r\n", net.port);
    let (reply, _) = nsnet
        .run("a CONNECT to the dark zone", async move {
            exchange(addr, connect.as_bytes()).await
        })
        .await;
    assert_refused(&reply, 504, "connection_timeout", "aws-private-apis");
    let m = proxy.handle.metrics_text();
    let labels = [("route", "aws-private-apis")];
    assert_eq!(metric(&m, "splitway_upstream_backoffs_total", &labels), 1.0, "{m}");

    // From now on the regional name is tried first: no tunnel waits on the dark zone.
    let before = fast_connects(&proxy, "aws-private-apis");
    for _ in 0..3 {
        assert_eq!(served_by(&nsnet, addr).await, "vpce-us-east-1");
    }
    assert_eq!(fast_connects(&proxy, "aws-private-apis") - before, 3.0);

    iptables(&ns, "-D", VPCE_ZONAL_IP);
    let handle = proxy.handle.clone();
    poll_until(HANG_SECS, "the address backoff to end", || {
        let over = handle.address_backoffs().is_empty();
        async move { over.then_some(()) }
    })
    .await;
    assert_eq!(served_by(&nsnet, addr).await, "vpce-us-east-1a", "the zone is back");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
    drop(dns);
}
