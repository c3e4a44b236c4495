//! The emulated network reproduces the failures splitway exists for, with no proxy at all:
//! an application in a VPC whose execute-api endpoint has Private DNS on cannot reach public
//! custom domains, public API IDs or another region's private APIs.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::client::{describe_chain, is_connection_refused, is_name_mismatch};
use crate::support::dns::udp_query;
use crate::support::*;

/// GETs `host` straight from an application that asks resolver `which`.
async fn get_direct(which: Resolver, host: &str) -> Result<Served, reqwest::Error> {
    get(&https_client(aws_net(), Via::Direct(which)), host).await
}

#[tokio::test]
async fn private_dns_on_custom_domain_fails_tls_name_check_at_the_vpce() {
    let net = aws_net();
    let before = net.vpce.connections();
    let err = get_direct(Resolver::VpcPrivateDnsOn, CUSTOM_DOMAIN)
        .await
        .expect_err("the VPC endpoint's certificate does not cover the custom domain");
    assert!(is_name_mismatch(&err), "not a name mismatch: {}", describe_chain(&err));
    assert!(
        net.vpce.connections() > before,
        "the handshake should have reached the VPCE"
    );
}

#[tokio::test]
async fn private_dns_on_public_api_id_is_forbidden_by_the_vpce() {
    let host = execute_api_host(PUBLIC_API_ID, REGION);
    let served = get_direct(Resolver::VpcPrivateDnsOn, &host).await.expect("a response");
    assert_eq!(served.status, 403, "{served:?}");
    assert_eq!(served.served_by, "vpce-us-east-1");
    assert_eq!(served.error_type, "ForbiddenException");
    assert_eq!(served.body, r#"{"message":"Forbidden"}"#);
}

#[tokio::test]
async fn private_dns_on_cross_region_private_api_is_unreachable() {
    let host = execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION);
    let err = get_direct(Resolver::VpcPrivateDnsOn, &host)
        .await
        .expect_err("the us-west-2 public endpoint has no route from the VPC");
    assert!(err.is_connect(), "not a connect error: {}", describe_chain(&err));
    assert!(is_connection_refused(&err), "not refused: {}", describe_chain(&err));
}

#[tokio::test]
async fn private_dns_on_private_api_works_through_the_vpce() {
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let served = get_direct(Resolver::VpcPrivateDnsOn, &host).await.expect("a response");
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.served_by, "vpce-us-east-1");
    assert_eq!(served.body, ok_body("vpce-us-east-1", PRIVATE_API_ID));
}

#[tokio::test]
async fn private_dns_off_public_names_work_and_private_api_is_forbidden() {
    let off = Resolver::VpcPrivateDnsOff;
    let custom = get_direct(off, CUSTOM_DOMAIN).await.expect("custom domain");
    assert_eq!(
        (custom.status, custom.body.as_str()),
        (200, &*ok_body("public-us-east-1", CUSTOM_DOMAIN))
    );

    let public = get_direct(off, &execute_api_host(PUBLIC_API_ID, REGION))
        .await
        .expect("public");
    assert_eq!(
        (public.status, public.body.as_str()),
        (200, &*ok_body("public-us-east-1", PUBLIC_API_ID))
    );

    let private = get_direct(off, &execute_api_host(PRIVATE_API_ID, REGION))
        .await
        .expect("private");
    assert_eq!(private.status, 403, "{private:?}");
    assert_eq!(private.served_by, "public-us-east-1");
    assert_eq!(private.error_type, "ForbiddenException");
}

#[tokio::test]
async fn public_resolver_answers_custom_domain_with_the_cname_chain() {
    let reply = udp_query(aws_net().public_dns, CUSTOM_DOMAIN, RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let answers: Vec<(String, RData)> = reply
        .answers
        .iter()
        .map(|r| (r.name.to_ascii(), r.data.clone()))
        .collect();
    let [(cname_owner, RData::CNAME(target)), (a_owner, RData::A(ip))] = answers.as_slice() else {
        panic!("expected a CNAME then an A: {answers:?}");
    };
    assert_eq!(cname_owner, &format!("{CUSTOM_DOMAIN}."));
    assert_eq!(target.0.to_ascii(), format!("{APIGW_DOMAIN}."));
    assert_eq!(a_owner, &format!("{APIGW_DOMAIN}."));
    assert_eq!(std::net::IpAddr::V4(ip.0), PUBLIC_ENDPOINT_IP);
}

#[tokio::test]
async fn fake_dns_negative_answers_modes_and_log() {
    // Its own server: the query log of a shared one is everyone's.
    let dns = FakeDns::start(std::net::IpAddr::from([127, 53, 0, 9]), net::public_zone()).await;

    let nodata = udp_query(dns.addr(), CUSTOM_DOMAIN, RecordType::AAAA).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.iter().all(|r| r.record_type() == RecordType::CNAME));
    assert!(matches!(nodata.authorities.as_slice(), [soa] if soa.record_type() == RecordType::SOA));

    let nx = udp_query(dns.addr(), "nope.mydomain.com", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities.len(), 1, "NXDOMAIN carries an SOA");

    dns.set_mode(DnsMode::ServFail);
    let failed = udp_query(dns.addr(), CUSTOM_DOMAIN, RecordType::A).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);

    let expected = [
        (CUSTOM_DOMAIN, "AAAA"),
        ("nope.mydomain.com", "A"),
        (CUSTOM_DOMAIN, "A"),
    ];
    let expected: Vec<_> = expected.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    assert_eq!(dns.queries(), expected);
    assert_eq!(dns.query_count(), 3);
}

#[tokio::test]
async fn curl_sees_the_custom_domain_certificate_failure() {
    if require("curl", tool("curl", "--version")).is_none() {
        return;
    }
    let net = aws_net();
    let out = client::curl(net, Via::Direct(Resolver::VpcPrivateDnsOn), CUSTOM_DOMAIN, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(60), "curl: {stderr}");
}
