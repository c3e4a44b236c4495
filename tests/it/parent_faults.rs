//! Parent proxies (`via`) with the test-only parent: fallback to the next parent, every
//! fault's status and Proxy-Status, bytes after the 200, what the parent is asked and sent,
//! plain HTTP in absolute-form.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::parent::{GUARD, assert_refusal, authority, ip, route_via};
use crate::support::parent::{Behaviour, TestParent, down_parent};
use crate::support::proxy::TestProxy;
use crate::support::*;

#[tokio::test]
async fn a_down_parent_falls_back_to_the_next_and_all_down_is_502() {
    let net = aws_net();
    let good = TestParent::start(ip(10), net, Behaviour::Relay { auth: None }).await;
    let (dead1, dead2) = (down_parent(ip(11)).await, down_parent(ip(12)).await);
    let via = format!("[\"http://{dead1}\", \"http://{}\"]", good.addr);
    let proxy = TestProxy::start(&route_via(net, &via, "", "5s")).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let served = get(&client, CUSTOM_DOMAIN)
        .await
        .unwrap_or_else(|e| panic!("{}", describe_chain(&e)));
    assert_eq!((served.status, served.served_by.as_str()), (200, "public-us-east-1"));
    drop(client);
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let (d, g) = (dead1.to_string(), good.addr.to_string());
    let count = |p: &str, r: &str| {
        metrics::metric(
            &m,
            "splitway_parent_tunnels_total",
            &[("route", "corp-egress"), ("parent", p), ("result", r)],
        )
    };
    assert_eq!((count(&d, "unreachable"), count(&g, "ok")), (1.0, 1.0), "{m}");
    proxy.stop().await;

    let via = format!("[\"http://{dead1}\", \"http://{dead2}\"]");
    let proxy = TestProxy::start(&route_via(net, &via, "", "5s")).await;
    let (status, headers, body, s) = connect_raw(proxy.addr, &connect_request(&authority(CUSTOM_DOMAIN))).await;
    assert_refusal(
        &status,
        &headers,
        &body,
        502,
        "connection_refused",
        &["corp-egress", &dead2.to_string(), "refused the connection"],
    );
    assert!(!ps_has_received(&headers), "no received-status without an answer");
    drop(s);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

fn ps_has_received(headers: &[(String, String)]) -> bool {
    header(headers, "proxy-status").is_some_and(|p| p.contains("received-status"))
}

#[tokio::test]
async fn parent_faults_each_get_their_status_and_proxy_status() {
    let net = aws_net();
    let cases: [(u8, Behaviour, u16, &str, &str); 5] = [
        (
            20,
            Behaviour::Status(403),
            502,
            "http_request_denied; received-status=403",
            "answered 403 to CONNECT",
        ),
        (
            21,
            Behaviour::Status(503),
            502,
            "destination_unavailable; received-status=503",
            "answered 503",
        ),
        (
            22,
            Behaviour::Silent,
            504,
            "http_response_timeout",
            "did not answer the CONNECT within 1s",
        ),
        (
            23,
            Behaviour::ResetMidReply,
            502,
            "http_response_incomplete",
            "closed the connection before its answer was complete (connection reset)",
        ),
        (
            24,
            Behaviour::Garbage,
            502,
            "http_protocol_error",
            "not an HTTP response",
        ),
    ];
    for (d, behaviour, code, error, reason) in cases {
        let parent = TestParent::start(ip(d), net, behaviour.clone()).await;
        // The silent parent's case waits out `connect_timeout`: short. The others must fault
        // before it, even on a loaded machine (the reset waits until the proxy has read the
        // half reply): long.
        let timeout = match behaviour {
            Behaviour::Silent => "1s",
            _ => "15s",
        };
        let proxy = TestProxy::start(&route_via(net, &format!("\"http://{}\"", parent.addr), "", timeout)).await;
        let (status, headers, body, s) = tokio::time::timeout(
            GUARD,
            connect_raw(proxy.addr, &connect_request(&authority(CUSTOM_DOMAIN))),
        )
        .await
        .expect("splitway answers within connect_timeout");
        assert_refusal(
            &status,
            &headers,
            &body,
            code,
            error,
            &["corp-egress", &parent.addr.to_string(), reason],
        );
        drop(s);
        proxy.assert_no_leaks().await;
        proxy.stop().await;
        assert_eq!(
            parent.received().len(),
            1,
            "{behaviour:?}: a parent's answer is final, asked once"
        );
    }
}

/// A 200 followed by nothing is an open tunnel like any other: the client gets its 200, the
/// bytes the parent sends after its head (a server-first banner) reach the client unchanged,
/// and the tunnel ends when a side closes.
#[tokio::test]
async fn bytes_after_the_parents_200_reach_the_client() {
    let net = aws_net();
    let parent = TestParent::start(ip(30), net, Behaviour::OkThen(b"220 banner\r\n")).await;
    let toml = route_via(net, &format!("\"http://{}\"", parent.addr), "sni = \"any\"\n", "5s");
    let proxy = TestProxy::start(&toml).await;
    let (status, _, _, mut s) = connect_raw(proxy.addr, &connect_request(&authority(CUSTOM_DOMAIN))).await;
    assert_eq!(status_of(&status), 200, "{status}");
    let mut buf = [0u8; 12];
    tokio::time::timeout(GUARD, s.read_exact(&mut buf))
        .await
        .expect("banner in time")
        .expect("banner");
    assert_eq!(&buf, b"220 banner\r\n");
    s.shutdown().await.expect("shutdown");
    proxy.expect_tunnel_end(s, "corp-egress", "closed").await;
}

#[tokio::test]
async fn the_parent_is_asked_for_the_address_or_the_name_and_only_it_gets_credentials() {
    let net = aws_net();
    let dir = std::env::temp_dir().join(format!("splitway-pw2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("pw");
    std::fs::write(&file, "open sesame\n").expect("password file");
    // RFC 7617 §2's example credentials.
    let expected = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==";
    let parent = TestParent::start(
        ip(40),
        net,
        Behaviour::Relay {
            auth: Some(expected.into()),
        },
    )
    .await;
    for (mode, asked) in [
        ("address", format!("{PUBLIC_ENDPOINT_IP}:{}", net.port)),
        ("name", authority(CUSTOM_DOMAIN)),
    ] {
        let extra = format!("via_target = \"{mode}\"\nvia_password_file = \"{}\"\n", file.display());
        let toml = route_via(net, &format!("\"http://Aladdin@{}\"", parent.addr), &extra, "5s");
        let proxy = TestProxy::start(&toml).await;
        // The client's own Proxy-Authorization is for splitway, never passed on.
        let request = format!(
            "CONNECT {a} HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: Basic Y2xpZW50OnNlY3JldA==\r\n\r\n",
            a = authority(CUSTOM_DOMAIN)
        );
        let (status, _, _, s) = connect_raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&status), 200, "{mode}: {status}");
        let got = parent.received().pop().expect("the parent got a CONNECT");
        assert_eq!(got.line, format!("CONNECT {asked} HTTP/1.1"), "{mode}");
        assert_eq!(got.header("host"), Some(asked.as_str()));
        assert_eq!(got.header("proxy-authorization"), Some(expected), "{mode}");
        let auths = got.headers.iter().filter(|(n, _)| n == "proxy-authorization").count();
        assert_eq!(
            auths, 1,
            "{mode}: the client's own Proxy-Authorization is not passed on: {got:?}"
        );
        // Asked for the address, the parent reaches the public endpoint; asked for the name,
        // it resolves like the VPC and reaches the endpoint, whose certificate does not fit.
        let tls = tls_over(s, CUSTOM_DOMAIN, &net.ca_der).await;
        match mode {
            "address" => {
                let (code, body) = get_over_tls(tls.expect("TLS through the parent"), CUSTOM_DOMAIN).await;
                assert_eq!(code, 200, "{body}");
                assert!(body.contains("public-us-east-1"), "{body}");
            }
            _ => assert!(
                tls.is_err(),
                "the VPC endpoint's certificate does not cover {CUSTOM_DOMAIN}"
            ),
        }
        proxy.assert_no_leaks().await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn plain_http_goes_to_the_parent_in_absolute_form_with_its_credentials() {
    let net = aws_net();
    let dir = std::env::temp_dir().join(format!("splitway-pw3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("pw");
    std::fs::write(&file, "open sesame\n").expect("password file");
    let parent = TestParent::start(ip(50), net, Behaviour::Relay { auth: None }).await;
    let extra = format!("via_password_file = \"{}\"\n", file.display());
    let toml = route_via(net, &format!("\"http://Aladdin@{}\"", parent.addr), &extra, "5s");
    let proxy = TestProxy::start(&toml).await;
    let request = format!(
        "GET http://{CUSTOM_DOMAIN}/path?q=1 HTTP/1.1\r\nHost: {CUSTOM_DOMAIN}\r\n\
         Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==\r\nConnection: close\r\n\r\n"
    );
    let (reply, _s) = tokio::time::timeout(GUARD, raw::exchange(proxy.addr, request.as_bytes()))
        .await
        .expect("a reply in time");
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(
        reply.body,
        format!("parent got GET http://{CUSTOM_DOMAIN}/path?q=1 HTTP/1.1")
    );
    let got = parent.received().pop().expect("the parent got the request");
    assert_eq!(
        got.header("proxy-authorization"),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    assert_eq!(got.header("host"), Some(CUSTOM_DOMAIN));
    drop(_s);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
