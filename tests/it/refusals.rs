//! Every refusal of a CONNECT: the exact status, `Proxy-Status` error type, a body naming the
//! route, and nothing left open afterwards.

use crate::support::config::{ConfigBuilder, Route, strings};
use crate::support::proxy::{PrivateDns, TestProxy, proxy_section, resolver_sections, scenario_config};
use crate::support::*;

struct Case {
    name: &'static str,
    request: String,
    status: u16,
    error: &'static str,
    body_has: &'static str,
}

fn extra_routes() -> String {
    format!(
        r#"
[[route]]
name = "blocked"
hosts = ["blocked.example"]
deny = true

[[route]]
name = "dead-end"
hosts = ["refused.example"]
addresses = ["{WEST_PUBLIC_ENDPOINT_IP}"]
"#
    )
}

async fn run_cases(toml: &str, cases: &[Case]) {
    let proxy = TestProxy::start(toml).await;
    for c in cases {
        let (status, headers, body, stream) = connect_raw(proxy.addr, c.request.as_bytes()).await;
        assert_eq!(status_of(&status), c.status, "{}: {status}\n{body}", c.name);
        let ps = header(&headers, "proxy-status").unwrap_or_else(|| panic!("{}: no Proxy-Status", c.name));
        assert!(
            ps.starts_with(&format!("splitway; error={};", c.error)),
            "{}: Proxy-Status {ps}",
            c.name
        );
        assert!(
            body.starts_with("splitway: ") && body.ends_with('\n') && body.lines().count() == 1,
            "{}: {body:?}",
            c.name
        );
        assert!(
            body.contains(c.body_has),
            "{}: body {body:?} should name {:?}",
            c.name,
            c.body_has
        );
        drop(stream);
    }
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_carry_status_proxy_status_and_route() {
    let net = aws_net();
    let port = net.port;
    let toml = scenario_config(net, PrivateDns::On) + &extra_routes();
    let connect = |authority: String| String::from_utf8(connect_request(&authority)).unwrap();
    let cases = [
        Case {
            name: "deny route",
            request: connect(format!("blocked.example:{port}")),
            status: 403,
            error: "http_request_denied",
            body_has: "route `blocked`",
        },
        Case {
            name: "port not in connect_ports",
            request: connect(format!("{CUSTOM_DOMAIN}:8443")),
            status: 403,
            error: "http_request_denied",
            body_has: "connect_ports",
        },
        Case {
            name: "unknown name",
            request: connect(format!("nope.mydomain.com:{port}")),
            status: 502,
            error: "dns_error",
            body_has: "route `default`",
        },
        Case {
            name: "unknown name on a named resolver",
            request: connect(format!("missing.execute-api.eu-west-1.amazonaws.com:{port}")),
            status: 502,
            error: "dns_error",
            body_has: "resolver `system`",
        },
        Case {
            name: "connection refused",
            request: connect(format!("refused.example:{port}")),
            status: 502,
            error: "connection_refused",
            body_has: "route `dead-end`",
        },
        Case {
            name: "not host:port",
            request: "CONNECT justahost HTTP/1.1\r\nHost: justahost\r\n\r\n".into(),
            status: 400,
            error: "http_request_error",
            body_has: "justahost",
        },
        Case {
            name: "origin-form GET",
            request: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".into(),
            status: 400,
            error: "http_request_error",
            body_has: "CONNECT",
        },
    ];
    run_cases(&toml, &cases).await;
}

#[tokio::test]
async fn resolved_address_in_deny_destinations_is_prohibited() {
    let net = aws_net();
    // The default deny list covers 127.0.0.0/8, where the emulated endpoints live.
    let toml = ConfigBuilder::with_resolvers(net, PrivateDns::On)
        .without_proxy_key("deny_destinations")
        .without_proxy_key("connect_timeout")
        .route(
            Route::new("custom-domains")
                .hosts([CUSTOM_DOMAIN])
                .str("resolver", "public"),
        )
        .route(
            Route::new("pinned")
                .hosts([CUSTOM_DOMAIN_2])
                .key("addresses", strings([PUBLIC_ENDPOINT_IP])),
        )
        .build();
    let cases = [Case {
        name: "resolved into 127/8",
        request: String::from_utf8(connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).unwrap(),
        status: 403,
        error: "destination_ip_prohibited",
        body_has: "route `custom-domains`",
    }];
    run_cases(&toml, &cases).await;
    // A route's explicit `addresses` are exempt.
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let served = get(&client, CUSTOM_DOMAIN_2)
        .await
        .expect("explicit addresses are exempt");
    assert_eq!((served.status, served.served_by.as_str()), (200, "public-us-east-1"));
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_section_alone_is_a_plain_forward_proxy() {
    // No routes: the implicit default resolves through `system` (here the VPC resolver).
    let net = aws_net();
    let toml = proxy_section(net) + &resolver_sections(net, PrivateDns::Off);
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let served = get(&client, CUSTOM_DOMAIN).await.expect("request");
    assert_eq!((served.status, served.served_by.as_str()), (200, "public-us-east-1"));
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
