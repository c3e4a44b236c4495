//! DNS over TLS and over HTTPS end to end: a route resolves through a `tls://` and an
//! `https://` resolver trusting a private CA (`ca_file`), a certificate that does not match
//! or is not trusted is a 502 `dns_error`, and serve-stale covers a DoH server going down.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::support::client::ca_file;
use crate::support::dns_tls::{DOH_PATH, EncryptedDns};
use crate::support::metrics::metric;
use crate::support::net::public_zone;
use crate::support::pki;
use crate::support::proxy::{TestProxy, proxy_section};
use crate::support::*;

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
enum Kind {
    Dot,
    Doh,
}

/// A public resolver of the test's own behind DoT or DoH (its query log is the test's).
async fn encrypted_public_dns(kind: Kind) -> (FakeDns, EncryptedDns) {
    let net = aws_net();
    let dns = FakeDns::start(PUBLIC_DNS_IP, public_zone()).await;
    let server = match kind {
        Kind::Dot => EncryptedDns::dot(&dns, PUBLIC_DOT_IP, &net.ca, PUBLIC_DOT_NAME).await,
        Kind::Doh => EncryptedDns::doh(&dns, PUBLIC_DOH_IP, &net.ca, PUBLIC_DOH_NAME).await,
    };
    (dns, server)
}

/// The nameserver entry for `server`, checking its certificate against `name`.
fn nameserver(kind: Kind, server: &EncryptedDns, name: &str) -> String {
    match kind {
        Kind::Dot => format!("tls://{}#{name}", server.addr()),
        Kind::Doh => format!("https://{}{DOH_PATH}#{name}", server.addr()),
    }
}

/// `custom-domains` through `[resolver.public]` = `nameserver`, with `extra` keys (e.g.
/// `ca_file`); the system resolver is the VPC's, which must never be asked.
fn config(nameserver: &str, extra: &str) -> String {
    let net = aws_net();
    format!(
        "{}\n[resolver.system]\nnameservers = [\"{}\"]\nhosts_file = false\n\n[resolver.public]\nnameservers = [\"{nameserver}\"]\n{extra}\n\n[[route]]\nname = \"custom-domains\"\nhosts = [\"{CUSTOM_DOMAIN}\"]\nresolver = \"public\"\n",
        proxy_section(net),
        net.vpc_dns_private_on,
    )
}

fn trusting_the_test_ca() -> String {
    format!("ca_file = \"{}\"", ca_file(aws_net()).display())
}

/// CONNECT to the custom domain, then TLS and GET through the tunnel: the public endpoint
/// must answer, which only the public resolver's view leads to.
async fn assert_reaches_public_endpoint(proxy: &TestProxy) {
    let net = aws_net();
    let (status, _, body, stream) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 200, "{body}");
    let tls = tokio::time::timeout(HANG_GUARD, tls_over(stream, CUSTOM_DOMAIN, &net.ca_der))
        .await
        .expect("TLS through the tunnel in time")
        .expect("TLS to the public endpoint");
    let served = tokio::time::timeout(HANG_GUARD, get_over_tls(tls, CUSTOM_DOMAIN))
        .await
        .expect("GET in time");
    assert_eq!(served, (200, ok_body("public-us-east-1", CUSTOM_DOMAIN)));
}

async fn route_resolves_through(kind: Kind) {
    let (dns, server) = encrypted_public_dns(kind).await;
    let ns = nameserver(kind, &server, name_of(kind));
    let proxy = TestProxy::start(&config(&ns, &trusting_the_test_ca())).await;
    assert_reaches_public_endpoint(&proxy).await;
    let asked: Vec<_> = dns.queries().into_iter().filter(|(n, _)| n == CUSTOM_DOMAIN).collect();
    assert!(
        !asked.is_empty(),
        "the public resolver was not asked over TLS: {:?}",
        dns.queries()
    );
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

fn name_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Dot => PUBLIC_DOT_NAME,
        Kind::Doh => PUBLIC_DOH_NAME,
    }
}

#[tokio::test]
async fn encrypted_dns_a_route_resolves_through_dns_over_tls() {
    route_resolves_through(Kind::Dot).await;
}

#[tokio::test]
async fn encrypted_dns_a_route_resolves_through_dns_over_https() {
    route_resolves_through(Kind::Doh).await;
}

/// A CONNECT whose lookup fails on the resolver's TLS: 502 `dns_error`, and a body naming the
/// route, the resolver, the server and then `reason`.
async fn assert_dns_error(nameserver: &str, extra: &str, reason: &str) {
    let net = aws_net();
    let proxy = TestProxy::start(&config(nameserver, extra)).await;
    let (status, headers, body, _) =
        connect_raw(proxy.addr, &connect_request(&format!("{CUSTOM_DOMAIN}:{}", net.port))).await;
    assert_eq!(status_of(&status), 502, "{body}");
    assert!(
        header(&headers, "proxy-status").is_some_and(|p| p.starts_with("splitway; error=dns_error;")),
        "{headers:?}"
    );
    let want = format!(
        "splitway: route `custom-domains`: no address for {CUSTOM_DOMAIN} via resolver `public`: {nameserver}: TLS handshake failed: invalid peer certificate: {reason}"
    );
    assert_eq!(body.trim_end(), want);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn encrypted_dns_a_certificate_for_another_name_is_a_dns_error() {
    for kind in [Kind::Dot, Kind::Doh] {
        let (_dns, server) = encrypted_public_dns(kind).await;
        let ns = nameserver(kind, &server, "wrong.name");
        let reason = format!(
            "certificate not valid for name \"wrong.name\"; certificate is only valid for DnsName(\"{}\")",
            name_of(kind)
        );
        assert_dns_error(&ns, &trusting_the_test_ca(), &reason).await;
    }
}

#[tokio::test]
async fn encrypted_dns_without_ca_file_the_private_ca_is_not_trusted() {
    for kind in [Kind::Dot, Kind::Doh] {
        let (_dns, server) = encrypted_public_dns(kind).await;
        let ns = nameserver(kind, &server, name_of(kind));
        assert_dns_error(&ns, "", "UnknownIssuer (its CA is not trusted: name it in `ca_file`)").await;
    }
}

#[tokio::test]
async fn encrypted_dns_a_doh_server_going_down_is_covered_by_stale_answers() {
    let (dns, server) = encrypted_public_dns(Kind::Doh).await;
    let ns = nameserver(Kind::Doh, &server, PUBLIC_DOH_NAME);
    let extra = format!("{}\nmin_ttl = \"1ms\"\nmax_ttl = \"1ms\"", trusting_the_test_ca());
    let proxy = TestProxy::start(&config(&ns, &extra)).await;
    tokio::time::timeout(HANG_GUARD, proxy.handle.wait_started())
        .await
        .expect("started");
    assert!(
        dns.queries().iter().any(|(n, _)| n == CUSTOM_DOMAIN),
        "start-up lookup over DoH"
    );
    tokio::time::sleep(Duration::from_millis(20)).await; // let the start-up answer expire
    server.stop().await;
    assert_reaches_public_endpoint(&proxy).await;
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let stale = metric(
        &m,
        "splitway_dns_lookups_total",
        &[("resolver", "public"), ("result", "stale")],
    );
    assert_eq!(stale, 1.0, "{m}");
    proxy.stop().await;
}

/// The fake itself: RFC 8484's GET form answers as POST does (hickory's client uses POST).
#[tokio::test]
async fn encrypted_dns_the_fake_doh_server_answers_get_too() {
    let net = aws_net();
    let (dns, server) = encrypted_public_dns(Kind::Doh).await;
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(format!("{CUSTOM_DOMAIN}.")).expect("name"),
        RecordType::A,
    ));
    let encoded = URL_SAFE_NO_PAD.encode(query.to_vec().expect("encode query"));
    let mut tls = pki::client_config(&net.ca_der);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve(PUBLIC_DOH_NAME, server.addr())
        .build()
        .expect("client");
    let url = format!(
        "https://{PUBLIC_DOH_NAME}:{}{DOH_PATH}?dns={encoded}",
        server.addr().port()
    );
    let response = tokio::time::timeout(
        HANG_GUARD,
        client.get(url).header("accept", "application/dns-message").send(),
    )
    .await
    .expect("DoH GET in time")
    .expect("DoH GET");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(HANG_GUARD, response.bytes())
        .await
        .expect("body in time")
        .expect("body");
    let reply = Message::from_vec(&body).expect("a DNS message");
    let addrs: Vec<_> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    assert_eq!(addrs, [PUBLIC_ENDPOINT_IP]);
    assert_eq!(dns.queries(), [(CUSTOM_DOMAIN.to_owned(), "A".to_owned())]);
}
