//! Parent proxies (`via`) with a real Squid as the corporate egress proxy of a VPC without
//! NAT: it carries the public routes when asked for the address splitway resolved, and lands
//! on the VPC endpoint again when asked for the name (why the address is the default); it
//! wants credentials. The faults a real parent cannot do on cue are in `parent_faults`.

use std::net::IpAddr;
use std::time::Duration;

use crate::support::config::{Aws, ConfigBuilder, strings};
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::squid::Squid;
use crate::support::*;

pub(crate) const GUARD: Duration = Duration::from_secs(30);

pub(crate) fn ip(d: u8) -> IpAddr {
    IpAddr::from([127, 60, 0, d])
}

/// The `[aws]` preset with `public_via` (a raw TOML value) and `extra` `[aws]` keys, on the VPC
/// resolver with Private DNS on.
fn preset_via(net: &AwsNet, via: &str, extra: &[(&str, &str)]) -> String {
    let mut aws = Aws::new(REGION, VPCE)
        .key("public_api_ids", strings([PUBLIC_API_ID]))
        .key("public_domains", strings([CUSTOM_DOMAIN]))
        .str("public_resolver", "public")
        .key("public_via", via);
    for (key, raw) in extra {
        aws = aws.key(key, *raw);
    }
    ConfigBuilder::with_resolvers(net, PrivateDns::On).aws(aws).build()
}

/// One route for the custom domain through `via` (TOML value), with extra route keys.
pub(crate) fn route_via(net: &AwsNet, via: &str, extra: &str, timeout: &str) -> String {
    let builder = ConfigBuilder::with_resolvers(net, PrivateDns::On).proxy_str("connect_timeout", timeout);
    format!(
        r#"{proxy}{resolvers}
[[route]]
name = "corp-egress"
hosts = ["{CUSTOM_DOMAIN}"]
resolver = "public"
via = {via}
{extra}"#,
        proxy = builder.render_proxy(),
        resolvers = builder.render_resolvers(),
    )
}

pub(crate) fn assert_refusal(
    status: &str,
    headers: &[(String, String)],
    body: &str,
    code: u16,
    error: &str,
    has: &[&str],
) {
    assert_eq!(status_of(status), code, "{status}\n{body}");
    let ps = header(headers, "proxy-status").expect("Proxy-Status");
    assert!(ps.starts_with(&format!("splitway; error={error}")), "Proxy-Status {ps}");
    assert!(body.starts_with("splitway: ") && body.lines().count() == 1, "{body:?}");
    for h in has {
        assert!(
            body.contains(h) && ps.contains(h),
            "{h:?} missing from body {body:?} or Proxy-Status {ps}"
        );
    }
}

pub(crate) fn authority(host: &str) -> String {
    format!("{host}:{}", aws_net().port)
}

#[tokio::test]
async fn squid_carries_public_routes_asked_for_the_resolved_address() {
    let net = aws_net();
    let Some(squid) = require("squid", Squid::start(net, ip(1), ip(101), None).await) else {
        return;
    };
    let proxy = TestProxy::start(&preset_via(net, &format!("\"http://{}\"", squid.addr), &[])).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    for host in [CUSTOM_DOMAIN.to_owned(), execute_api_host(PUBLIC_API_ID, REGION)] {
        let served = get(&client, &host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {}", describe_chain(&e)));
        assert_eq!(
            (served.status, served.served_by.as_str()),
            (200, "public-us-east-1"),
            "{host}"
        );
    }
    // The private API does not leave the VPC: straight to the endpoint, not through Squid.
    let private = get(&client, &execute_api_host(PRIVATE_API_ID, REGION))
        .await
        .expect("private");
    assert_eq!((private.status, private.served_by.as_str()), (200, "vpce-us-east-1"));
    drop(client);
    proxy.assert_no_leaks().await;
    let log = squid
        .wait_access(&format!("CONNECT {PUBLIC_ENDPOINT_IP}:{}", net.port))
        .await;
    assert_eq!(
        log.matches("CONNECT").count(),
        2,
        "two tunnels through squid, both to the address: {log}"
    );
    assert!(!log.contains(CUSTOM_DOMAIN) && !log.contains(VPCE), "{log}");
    let m = proxy.handle.metrics_text();
    let parent = squid.addr.to_string();
    for route in ["aws-public-domains", "aws-public-api-ids"] {
        let labels = [("route", route), ("parent", parent.as_str()), ("result", "ok")];
        assert_eq!(
            metrics::metric(&m, "splitway_parent_tunnels_total", &labels),
            1.0,
            "{m}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn squid_asked_for_the_name_lands_on_the_vpc_endpoint() {
    let net = aws_net();
    let Some(squid) = require("squid", Squid::start(net, ip(2), ip(102), None).await) else {
        return;
    };
    let toml = preset_via(
        net,
        &format!("\"http://{}\"", squid.addr),
        &[("public_via_target", "\"name\"")],
    );
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let err = get(&client, CUSTOM_DOMAIN)
        .await
        .expect_err("squid resolves to the VPC endpoint");
    assert!(
        client::is_name_mismatch(&err),
        "not a name mismatch: {}",
        describe_chain(&err)
    );
    let public = get(&client, &execute_api_host(PUBLIC_API_ID, REGION))
        .await
        .expect("a response");
    assert_eq!(public.status, 403, "{public:?}");
    assert_eq!(public.served_by, "vpce-us-east-1");
    assert_eq!(public.error_type, "ForbiddenException");
    drop(client);
    proxy.assert_no_leaks().await;
    squid
        .wait_access(&format!("CONNECT {CUSTOM_DOMAIN}:{}", net.port))
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn squid_wants_credentials_407_names_the_parent_then_200_with_them() {
    let net = aws_net();
    let password = "s3cret-Parent-pw";
    let Some(squid) = require(
        "squid",
        Squid::start(net, ip(3), ip(103), Some(("alice", password))).await,
    ) else {
        return;
    };
    let proxy = TestProxy::start(&route_via(net, &format!("\"http://{}\"", squid.addr), "", "5s")).await;
    let (status, headers, body, _s) = connect_raw(proxy.addr, &connect_request(&authority(CUSTOM_DOMAIN))).await;
    assert_refusal(
        &status,
        &headers,
        &body,
        502,
        "http_request_denied; received-status=407",
        &["corp-egress", &squid.addr.to_string(), "wants credentials"],
    );
    drop(_s);
    proxy.assert_no_leaks().await;
    proxy.stop().await;

    let dir = std::env::temp_dir().join(format!("splitway-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("parent-password");
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    let extra = format!("via_password_file = \"{}\"\n", file.display());
    let toml = route_via(net, &format!("\"http://alice@{}\"", squid.addr), &extra, "5s");
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let served = get(&client, CUSTOM_DOMAIN)
        .await
        .unwrap_or_else(|e| panic!("{}", describe_chain(&e)));
    assert_eq!((served.status, served.served_by.as_str()), (200, "public-us-east-1"));
    drop(client);
    proxy.assert_no_leaks().await;
    let log = squid.wait_access(" alice ").await;
    assert!(log.contains(&format!("CONNECT {PUBLIC_ENDPOINT_IP}")), "{log}");
    proxy.stop().await;

    // The wrong password: 407 again, now saying the credentials were rejected, and the
    // password is in neither the body nor the header.
    std::fs::write(&file, "wrong-password\n").expect("password file");
    let proxy = TestProxy::start(&toml).await;
    let (status, headers, body, s) = connect_raw(proxy.addr, &connect_request(&authority(CUSTOM_DOMAIN))).await;
    assert_refusal(
        &status,
        &headers,
        &body,
        502,
        "http_request_denied; received-status=407",
        &["rejected the credentials of user `alice`"],
    );
    assert!(!body.contains("wrong-password") && !format!("{headers:?}").contains("wrong-password"));
    drop(s);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
