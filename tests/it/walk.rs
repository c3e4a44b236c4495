//! A plan's names are walked by one rule, whoever walks them (`src/upstream/walk.rs`): a name
//! that does not resolve or does not accept the connection moves the walk on to the next;
//! the walk ends at the first name its consumer keeps, or when the deadline has passed.

use std::net::IpAddr;

use crate::support::config::{ConfigBuilder, Route, quoted, strings};
use crate::support::origin::Recorder;
use crate::support::proxy::TestProxy;
use crate::support::raw::{assert_refused, exchange};
use crate::support::*;

const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 71, 0, 10));
/// Nothing listens here: a connection to it is refused.
const REFUSING: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 71, 0, 9));

fn zone() -> Zone {
    Zone::new()
        .addr("refusing.walk.test", REFUSING)
        .addr("good.walk.test", GOOD)
}

#[tokio::test]
async fn every_consumer_walks_a_plans_names_by_one_rule() {
    let net = aws_net();
    let good = Recorder::start(GOOD).await;
    let port = good.addr().port();
    let dns = FakeDns::start(IpAddr::from([127, 71, 0, 53]), zone()).await;
    let silent = FakeDns::start(IpAddr::from([127, 71, 0, 54]), zone()).await;
    silent.set_mode(DnsMode::Blackhole);
    let names = ["nx.walk.test", "refusing.walk.test", "good.walk.test"].map(|n| format!("{n}:{port}"));
    let toml = ConfigBuilder::new(net)
        .proxy_str("connect_timeout", "500ms")
        .resolver("walk", dns.addr())
        .resolver("silent", silent.addr())
        // Longer than connect_timeout: the lookup is cut by the deadline, not by the resolver.
        .resolver_key("silent", "timeout", quoted("1s"))
        .route(
            Route::new("walked")
                .hosts(["svc.walk.test"])
                .key("connect", strings(&names))
                .str("resolver", "walk"),
        )
        .route(
            Route::new("stalled")
                .hosts(["stalled.walk.test"])
                .key(
                    "connect",
                    strings(["slow.walk.test", "good.walk.test"].map(|n| format!("{n}:{port}"))),
                )
                .str("resolver", "silent"),
        )
        .admin()
        .admin_key("debug", "true")
        .build();
    let proxy = TestProxy::start(&toml).await;
    let target = format!("svc.walk.test:{}", net.port);

    // Connecting: past a name that does not resolve and one that refuses, to the good one.
    let (reply, tunnel) = exchange(proxy.addr, &connect_request(&target)).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    drop(tunnel);
    assert_eq!(
        good.when_closed(1).await.accepted,
        1,
        "the third name carried the tunnel"
    );

    // explain walks the same names, with what the connection learnt: the refusing name's
    // only address is in backoff now, so the walk takes it after the others and the good name
    // comes first; every name is shown with what it resolved to.
    let admin = proxy.admin.expect("admin listener");
    let (status, body) = crate::support::client::admin_get(admin, &format!("/debug/route?host={target}")).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["connect_to"], format!("{GOOD}:{port}"), "{body}");
    let backoffs = json["backoffs"].as_array().expect("backoffs");
    assert!(
        backoffs.iter().any(|b| b["address"] == format!("{REFUSING}:{port}")),
        "the refused address is in backoff: {body}"
    );
    let lookups = json["lookups"].as_array().expect("lookups");
    assert_eq!(lookups.len(), 3, "{body}");
    assert!(lookups[0]["error"].is_string(), "nx.walk.test does not resolve: {body}");
    assert_eq!(lookups[2]["addresses"][0], GOOD.to_string(), "{body}");

    // The deadline ends the walk: the first name's lookup outlasts connect_timeout, so the
    // second name is never tried. (The debug route's probe connected to the good name too.)
    let before = good.seen().accepted;
    let (reply, _) = exchange(proxy.addr, &connect_request(&format!("stalled.walk.test:{}", net.port))).await;
    assert_refused(&reply, 504, "dns_timeout", "slow.walk.test");
    assert_eq!(good.seen().accepted, before, "no name after the deadline is tried");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
