//! The shared egress tier, in process: PROXY headers (v1, v2 with the PrivateLink VPC endpoint
//! ID, which HAProxy cannot send) give the client; `[[client]]` policies by endpoint and by
//! source, enforced and reported; every bad header refused, counted, nothing leaked; the drain
//! with `drain_delay`. The real HAProxy in front of real binaries is in tier_haproxy.rs.

use std::net::SocketAddr;
use std::time::Duration;

use splitway::Limits;
use tokio::io::AsyncWriteExt;

use crate::support::config::{ConfigBuilder, quoted, strings};
use crate::support::metrics::{metric, metric_or_zero};
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::proxy_protocol::{connect_with, v1, v2, v2_local};
use crate::support::raw::{assert_refused, closed, read_reply, sockets};
use crate::support::*;

pub(crate) const PAYMENTS_VPCE: &str = "vpce-0a1b2c3d4e5f60789";

/// The scenario's routes, PROXY protocol from `from`, and three policies: `payments` by VPC
/// endpoint (private APIs only), `partners` by source in report mode (custom domains),
/// `internal` by source (everything).
pub(crate) fn tier_config(from: &str, mode: &str) -> ConfigBuilder {
    ConfigBuilder::scenario(aws_net(), PrivateDns::On)
        .proxy_str("proxy_protocol", mode)
        .proxy("proxy_protocol_from", strings([from]))
        .section(format!(
            "[[client]]\nname = \"payments\"\nvpc_endpoints = [{}]\nroutes = [\"private-apis*\"]\n\n\
             [[client]]\nname = \"partners\"\nsources = [\"10.2.0.0/16\"]\nroutes = [\"custom-domains\"]\nmode = \"report\"\n\n\
             [[client]]\nname = \"internal\"\nsources = [\"10.1.0.0/16\", \"127.0.0.1\", \"127.20.0.0/16\"]\nroutes = [\"*\"]\n",
            quoted(PAYMENTS_VPCE)
        ))
}

fn source(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 40000))
}

fn connect_to(host: &str) -> Vec<u8> {
    connect_request(&format!("{host}:{}", aws_net().port))
}

#[tokio::test]
async fn tier_policy_by_vpc_endpoint_and_source_enforced_and_reported() {
    let proxy = TestProxy::start(&tier_config("127.0.0.1", "required").build()).await;
    let private = execute_api_host(PRIVATE_API_ID, REGION);
    let header = |ip, vpce| v2(source(ip), proxy.addr, vpce);
    // payments, by endpoint ID: its private APIs open; a custom domain is refused.
    let mut s = connect_with(
        proxy.addr,
        &header([10, 9, 0, 1], Some(PAYMENTS_VPCE)),
        &connect_to(&private),
    )
    .await;
    assert_eq!(read_reply(&mut s).await.status, Some(200));
    drop(s);
    let mut s = connect_with(
        proxy.addr,
        &header([10, 9, 0, 1], Some(PAYMENTS_VPCE)),
        &connect_to(CUSTOM_DOMAIN),
    )
    .await;
    let reply = read_reply(&mut s).await;
    assert_refused(
        &reply,
        403,
        "http_request_denied",
        "client policy `payments` may not use route `custom-domains`",
    );
    assert!(closed(&mut s).await);
    // partners, by source, report mode: let through, counted.
    let mut s = connect_with(proxy.addr, &header([10, 2, 0, 7], None), &connect_to(&private)).await;
    assert_eq!(read_reply(&mut s).await.status, Some(200));
    drop(s);
    // No table matches: refused, named `unmatched`; v1 headers work the same.
    let mut s = connect_with(
        proxy.addr,
        &v1(source([10, 3, 0, 1]), proxy.addr),
        &connect_to(&private),
    )
    .await;
    assert_refused(
        &read_reply(&mut s).await,
        403,
        "http_request_denied",
        "client policy `unmatched`",
    );
    drop(s);
    proxy.assert_no_leaks().await;
    let text = proxy.handle.metrics_text();
    let refusals = "splitway_client_policy_refusals_total";
    let count = |client, route, action| {
        metric(
            &text,
            refusals,
            &[("client", client), ("route", route), ("action", action)],
        )
    };
    assert_eq!(count("payments", "custom-domains", "denied"), 1.0);
    assert_eq!(count("partners", "private-apis", "reported"), 1.0);
    assert_eq!(count("unmatched", "private-apis", "denied"), 1.0);
    let requests = |client, outcome| {
        metric_or_zero(
            &text,
            "splitway_requests_total",
            &[("kind", "connect"), ("client", client), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("payments", "ok"), 1.0, "{text}");
    assert_eq!(requests("payments", "http_request_denied"), 1.0);
    assert_eq!(requests("partners", "ok"), 1.0);
    assert_eq!(
        metric(&text, "splitway_proxy_protocol_headers_total", &[("result", "proxy")]),
        4.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn tier_seed_scenarios_work_behind_a_proxy_header() {
    let net = aws_net();
    // Optional: a client of the VPC itself (no header, a peer in proxy_protocol_from) still
    // works, as `internal` by its own address.
    let proxy = TestProxy::start(&tier_config("127.0.0.0/8", "optional").build()).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    for (host, endpoint) in crate::scenarios::expectations() {
        let served = get(&client, &host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {}", describe_chain(&e)));
        assert_eq!((served.status, served.served_by.as_str()), (200, endpoint), "{host}");
    }
    drop(client);
    proxy.assert_no_leaks().await;
    let text = proxy.handle.metrics_text();
    assert_eq!(
        metric(&text, "splitway_proxy_protocol_headers_total", &[("result", "absent")]),
        5.0
    );
    proxy.stop().await;
}

/// A header case: what is sent, whether the write side is then shut, the counted result.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    shut: bool,
    result: &'static str,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, shut: bool, result: &'static str) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        shut,
        result,
    }
}

/// Every header splitway must refuse (or close quietly) with a trusted peer and `required`.
fn bad_headers(proxy: SocketAddr) -> Vec<Case> {
    let good = v2(source([10, 1, 0, 1]), proxy, None);
    let mut wrong_version = good.clone();
    wrong_version[12] = 0x31;
    let mut wrong_command = good.clone();
    wrong_command[12] = 0x2F;
    let mut huge = good[..14].to_vec();
    huge.extend(u16::MAX.to_be_bytes());
    let mut long_v1 = b"PROXY TCP4 ".to_vec();
    long_v1.extend([b'1'; 120]);
    let bad_vpce = v2(source([10, 1, 0, 1]), proxy, Some("vpce-\u{1}"));
    vec![
        case("no header", "CONNECT a:443 HTTP/1.1\r\n\r\n", false, "missing"),
        case("v1 missing addresses", "PROXY TCP4 10.1.0.1\r\n", false, "malformed"),
        case(
            "v1 bad address",
            "PROXY TCP4 10.1.0.999 10.0.0.1 1 2\r\n",
            false,
            "malformed",
        ),
        case(
            "v1 bad protocol",
            "PROXY UDP4 10.1.0.1 10.0.0.1 1 2\r\n",
            false,
            "malformed",
        ),
        case(
            "v1 port out of range",
            "PROXY TCP4 10.1.0.1 10.0.0.1 70000 2\r\n",
            false,
            "malformed",
        ),
        case("v1 over 107 bytes", long_v1, false, "too_large"),
        case("v2 wrong version", wrong_version, false, "malformed"),
        case("v2 unknown command", wrong_command, false, "malformed"),
        case("v2 over the size cap", huge, false, "too_large"),
        case("v2 bad VPC endpoint ID", bad_vpce, false, "malformed"),
        case("v2 truncated", good[..20].to_vec(), true, "timeout"),
        case("v1 truncated", "PROXY TCP4 10.1.", true, "timeout"),
        case("slow v2 (header timeout)", good[..20].to_vec(), false, "timeout"),
        case("LOCAL (a health check)", v2_local(), false, "local"),
    ]
}

#[tokio::test]
async fn tier_bad_headers_are_refused_counted_and_leak_nothing() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let proxy = TestProxy::start_with(&tier_config("127.0.0.1", "required").build(), limits).await;
    let cases = bad_headers(proxy.addr);
    for c in &cases {
        let mut s = connect_with(proxy.addr, &c.bytes, b"").await;
        if c.shut {
            s.shutdown().await.expect("shut the write side");
        }
        let reply = read_reply(&mut s).await;
        assert_eq!(reply.status, None, "{}: closed without an answer: {reply:?}", c.name);
        drop(s);
        proxy.assert_no_leaks().await;
        let text = proxy.handle.metrics_text();
        let counted = metric_or_zero(&text, "splitway_proxy_protocol_headers_total", &[("result", c.result)]);
        assert!(counted >= 1.0, "{}: not counted as {}", c.name, c.result);
    }
    let text = proxy.handle.metrics_text();
    let total: f64 = ["missing", "malformed", "too_large", "timeout", "local"]
        .iter()
        .map(|r| metric_or_zero(&text, "splitway_proxy_protocol_headers_total", &[("result", r)]))
        .sum();
    assert_eq!(total as usize, cases.len(), "every case counted once: {text}");
    assert_eq!(
        metric_or_zero(&text, "splitway_requests_total", &[("kind", "connect")]),
        0.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn tier_untrusted_headers_are_refused_never_believed() {
    // Only 127.0.0.2 is the load balancer: the test connects from 127.0.0.1.
    for mode in ["optional", "required"] {
        let proxy = TestProxy::start(&tier_config("127.0.0.2", mode).build()).await;
        let private = execute_api_host(PRIVATE_API_ID, REGION);
        let header = v2(source([10, 1, 0, 1]), proxy.addr, Some(PAYMENTS_VPCE));
        let mut s = connect_with(proxy.addr, &header, &connect_to(&private)).await;
        assert_eq!(
            read_reply(&mut s).await.status,
            None,
            "{mode}: a forged header is refused"
        );
        drop(s);
        proxy.assert_no_leaks().await;
        let text = proxy.handle.metrics_text();
        assert_eq!(
            metric(
                &text,
                "splitway_proxy_protocol_headers_total",
                &[("result", "untrusted")]
            ),
            1.0
        );
        assert_eq!(
            metric_or_zero(&text, "splitway_requests_total", &[("kind", "connect")]),
            0.0
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn tier_drain_delay_keeps_accepting_then_closes_and_cuts_at_drain_timeout() {
    let toml = tier_config("127.0.0.1", "optional")
        .proxy_str("drain_delay", "1s")
        .proxy_str("drain_timeout", "1s")
        .build();
    let mut proxy = TestProxy::start(&toml).await;
    let header = v2(source([10, 1, 0, 1]), proxy.addr, None);
    let private = execute_api_host(PRIVATE_API_ID, REGION);
    let mut open = connect_with(proxy.addr, &header, &connect_to(&private)).await;
    assert_eq!(read_reply(&mut open).await.status, Some(200));
    proxy.begin_stop().await;
    assert_eq!(proxy.handle.readiness(), "draining");
    // Still accepting during drain_delay: a new tunnel opens.
    let mut late = connect_with(proxy.addr, &header, &connect_to(&private)).await;
    assert_eq!(
        read_reply(&mut late).await.status,
        Some(200),
        "accepted during drain_delay"
    );
    // Then the listener closes.
    let addr = proxy.addr;
    poll_until(HANG_SECS, "the listener to close after drain_delay", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    let handle = proxy.handle.clone();
    proxy.stop().await;
    let text = handle.metrics_text();
    assert_eq!(
        metric(&text, "splitway_tunnels_cut_at_shutdown_total", &[]),
        2.0,
        "{text}"
    );
    assert!(closed(&mut open).await && closed(&mut late).await);
}

#[tokio::test]
async fn tier_check_prints_policies_and_explain_answers_for_a_client() {
    use crate::support::bin::run as splitway;
    use crate::support::tmp::TempFile;
    let file = TempFile::new("tier.toml", tier_config("10.0.0.0/24", "required").build());
    let out = splitway(&["check", "--config", file.arg()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("proxy_protocol required (believed from 10.0.0.0/24)"),
        "{text}"
    );
    assert!(
        text.contains("payments") && text.contains(PAYMENTS_VPCE) && text.contains("(report)"),
        "{text}"
    );
    let private = format!("{}:{}", execute_api_host(PRIVATE_API_ID, REGION), aws_net().port);
    let explain = |who: &'static str, value: &'static str| {
        let (file, private) = (file.arg().to_owned(), private.clone());
        async move {
            let out = splitway(&["explain", &private, "--config", &file, who, value]).await;
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (ok, text) = explain("--client", "payments").await;
    assert!(
        ok && text.contains("client:     `payments` may use route `private-apis`"),
        "{text}"
    );
    let (ok, text) = explain("--source", "10.2.3.4").await;
    assert!(
        ok && text.contains("`partners` does not list route `private-apis`: let through"),
        "{text}"
    );
    let (ok, text) = explain("--source", "192.0.2.1").await;
    assert!(
        ok && text.contains("`unmatched` may not use route `private-apis`: refused (403"),
        "{text}"
    );
    let (ok, text) = explain("--client", "nobody").await;
    assert!(
        !ok && text.contains("no [[client]] named `nobody`; the policies are: payments, partners, internal"),
        "{text}"
    );
}

#[tokio::test]
async fn tier_admin_answers_health_checks_behind_a_proxy_header() {
    let proxy = TestProxy::start(&tier_config("127.0.0.1", "required").admin().build()).await;
    let admin = proxy.admin.expect("admin listener");
    for header in [v2_local(), v2(source([10, 0, 0, 9]), admin, None), vec![]] {
        let mut s = connect_with(
            admin,
            &header,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(read_reply(&mut s).await.status, Some(200), "{header:?}");
    }
    let mut s = connect_with(admin, b"PROXY TCP4 nonsense\r\n", b"GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(read_reply(&mut s).await.status, None, "a malformed header is closed");
    proxy.stop().await;
}

/// `tcp_keepalive` is on both sockets of a tunnel: the client's (accepted by the proxy, from
/// the start) and the upstream's (once the tunnel has lasted a second), with the configured
/// idle time, so a flow through an NLB is probed before its 350 s idle timeout forgets it.
#[tokio::test]
async fn tcp_keepalive_is_on_the_client_and_upstream_sockets() {
    if crate::support::require("ss (iproute2)", crate::support::tool("ss", "-V")).is_none() {
        return;
    }
    let net = aws_net();
    let origin = crate::support::origin::Recorder::start(std::net::IpAddr::from([127, 21, 0, 9])).await;
    let toml = ConfigBuilder::new(net)
        .proxy_str("tcp_keepalive", "45s")
        .proxy("connect_ports", format!("[{}]", origin.addr().port()))
        .build();
    TestProxy::exercise(&toml, async |proxy| {
        let (reply, tunnel) =
            crate::support::raw::exchange(proxy.addr, &connect_request(&origin.addr().to_string())).await;
        assert_eq!(reply.status, Some(200), "{reply:?}");
        // The proxy's side of the client connection, and its connection to the origin (polled
        // until the tunnel has lasted long enough for it to be set).
        let client_side = sockets("established", "sport", proxy.addr.port());
        let upstream_side = within(HANG_SECS, "keepalive on the upstream socket", async {
            loop {
                let shown = sockets("established", "dport", origin.addr().port());
                if shown.contains("timer:(keepalive,") {
                    return shown;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        for (what, shown) in [("client", &client_side), ("upstream", &upstream_side)] {
            assert!(
                shown.contains("timer:(keepalive,"),
                "{what} socket without keepalive:\n{shown}"
            );
            // The idle time counts down from 45 s.
            assert!(
                shown.contains("timer:(keepalive,4"),
                "{what} keepalive is not 45s:\n{shown}"
            );
        }
        drop(tunnel);
    })
    .await;
}
