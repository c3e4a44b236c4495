//! Zero-config custom domains: with the `[aws]` preset and no `public_domains`, a host whose
//! CNAME chain (as the VPC resolver gives it) reaches an API Gateway domain name is resolved
//! publicly and reaches the public endpoint; anything else is left alone.

use crate::cli::write_config;
use crate::support::bin::run as splitway;
use crate::support::config::{Aws, ConfigBuilder, strings};
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::*;

/// The preset with no `public_domains` at all; `detect` sets `detect_custom_domains` when given.
fn preset(net: &AwsNet, detect: Option<bool>) -> String {
    preset_with(detect, ConfigBuilder::with_resolvers(net, PrivateDns::On))
}

/// The `[aws]` preset (no `public_domains`) on top of `base` (with the test resolvers).
fn preset_with(detect: Option<bool>, base: ConfigBuilder) -> String {
    let mut aws = Aws::new(REGION, VPCE)
        .key("public_api_ids", strings([PUBLIC_API_ID]))
        .str("public_resolver", "public")
        .peered(WEST_REGION, WEST_VPCE, &[]);
    if let Some(d) = detect {
        aws = aws.key("detect_custom_domains", d.to_string());
    }
    base.aws(aws).build()
}

#[tokio::test]
async fn an_unlisted_custom_domain_fails_without_the_proxy() {
    let net = aws_net();
    let client = https_client(net, Via::Direct(Resolver::VpcPrivateDnsOn));
    let err = get(&client, UNLISTED_DOMAIN)
        .await
        .expect_err("the VPC endpoint's certificate does not cover it");
    assert!(
        crate::support::client::is_name_mismatch(&err),
        "{}",
        describe_chain(&err)
    );
}

#[tokio::test]
async fn custom_domains_are_found_by_their_cname_chain_with_no_public_domains() {
    let net = aws_net();
    let proxy = TestProxy::start(&preset(net, None)).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let cases = [
        (UNLISTED_DOMAIN.to_owned(), "public-us-east-1"),
        (CUSTOM_DOMAIN.to_owned(), "public-us-east-1"),
        (execute_api_host(PUBLIC_API_ID, REGION), "public-us-east-1"),
        (execute_api_host(PRIVATE_API_ID, REGION), "vpce-us-east-1"),
        (execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION), "vpce-us-west-2"),
    ];
    for (host, endpoint) in cases {
        let served = get(&client, &host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {}", describe_chain(&e)));
        assert_eq!((served.status, served.served_by.as_str()), (200, endpoint), "{host}");
    }
    drop(client);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let detected = metric(
        &m,
        "splitway_custom_domains_detected_total",
        &[("route", "aws-custom-domains")],
    );
    assert_eq!(detected, 2.0, "the two custom domains, nothing else: {m}");
    proxy.stop().await;
}

#[tokio::test]
async fn with_detection_off_the_failure_is_back() {
    let net = aws_net();
    let proxy = TestProxy::start(&preset(net, Some(false))).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let err = get(&client, UNLISTED_DOMAIN)
        .await
        .expect_err("lands on the VPC endpoint again");
    assert!(
        crate::support::client::is_name_mismatch(&err),
        "{}",
        describe_chain(&err)
    );
    drop(client);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    crate::support::metrics::assert_missing(&m, "splitway_custom_domains_detected_total", &[]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_re_planned_answer_still_obeys_deny_destinations() {
    let net = aws_net();
    let toml = preset_with(
        None,
        ConfigBuilder::with_resolvers(net, PrivateDns::On).proxy(
            "deny_destinations",
            strings(["169.254.0.0/16".to_owned(), format!("{PUBLIC_ENDPOINT_IP}/32")]),
        ),
    );
    let proxy = TestProxy::start(&toml).await;
    let (status, headers, body, _) =
        connect_raw(proxy.addr, &connect_request(&format!("{UNLISTED_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 403, "{status} {body}");
    let proxy_status = header(&headers, "proxy-status").unwrap_or_default();
    assert!(
        proxy_status.contains("error=destination_ip_prohibited"),
        "{proxy_status}"
    );
    assert!(
        body.contains("route `aws-custom-domains`")
            && body.contains(&format!(
                "every address of {UNLISTED_DOMAIN} is in [proxy] deny_destinations"
            )),
        "{body}"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_cname_loop_is_a_dns_error() {
    let net = aws_net();
    let proxy = TestProxy::start(&preset(net, None)).await;
    let (status, headers, body, _) =
        connect_raw(proxy.addr, &connect_request(&format!("{LOOP_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 502, "{status} {body}");
    let proxy_status = header(&headers, "proxy-status").unwrap_or_default();
    assert!(proxy_status.contains("error=dns_error"), "{proxy_status}");
    assert!(
        body.contains(&format!(
            "route `aws-custom-domains`: no address for {LOOP_DOMAIN} via resolver `system`"
        )),
        "{body}"
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn explain_shows_a_detected_domain_and_leaves_a_cdn_name_alone() {
    let net = aws_net();
    let path = write_config("detect.toml", &preset(net, None));
    let config = path.arg();
    let out = splitway(&[
        "explain",
        &format!("{UNLISTED_DOMAIN}:{}", net.port),
        "--config",
        config,
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!(
            "detected:   custom domain (CNAME {APIGW_DOMAIN_3}) -> resolver public"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("connect to: {PUBLIC_ENDPOINT_IP}:{}", net.port)),
        "{text}"
    );

    let out = splitway(&[
        "explain",
        &format!("{CDN_DOMAIN}:{}", net.port),
        "--config",
        config,
        "--json",
    ])
    .await;
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain --json prints JSON");
    assert_eq!(e["route"], "aws-custom-domains", "{e}");
    assert!(e["detected"].is_null(), "a CDN CNAME is not API Gateway: {e}");
    assert_eq!(e["lookups"][0]["resolver"], "system", "{e}");

    let out = splitway(&["check", "--config", config]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("on CNAME d-*.execute-api.us-east-1.amazonaws.com -> resolve via `public`")
            && text.contains("on CNAME d-*.execute-api.us-west-2.amazonaws.com -> resolve via `public`"),
        "{text}"
    );
}

#[tokio::test]
async fn report_mode_counts_a_detected_domain_as_a_reroute() {
    let net = aws_net();
    let toml = preset_with(
        None,
        ConfigBuilder::with_resolvers(net, PrivateDns::On).proxy_str("mode", "report"),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let err = get(&client, UNLISTED_DOMAIN)
        .await
        .expect_err("report mode follows the system path");
    assert!(
        crate::support::client::is_name_mismatch(&err),
        "{}",
        describe_chain(&err)
    );
    let served = get(&client, CDN_DOMAIN).await;
    drop((client, served));
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let reroutes = metric(
        &m,
        "splitway_report_differences_total",
        &[("route", "aws-custom-domains"), ("action", "reroute")],
    );
    assert_eq!(reroutes, 1.0, "the detected domain only, not the CDN name: {m}");
    proxy.stop().await;
}
