//! Names and addresses of the emulated AWS network, in one place for every test.
//!
//! Everything lives on 127.0.0.0/8: Linux routes the whole block to `lo`, so each emulated
//! host gets its own loopback address without any setup, and nothing leaves the machine.

use std::net::{IpAddr, Ipv4Addr};

pub(crate) const REGION: &str = "us-east-1";
pub(crate) const WEST_REGION: &str = "us-west-2";

/// A public REST API in us-east-1: served only by the public endpoint.
pub(crate) const PUBLIC_API_ID: &str = "bmf11pk5je";
/// A private API in us-east-1: served only through the VPC endpoint.
pub(crate) const PRIVATE_API_ID: &str = "a1b2c3d4e5";
/// A private API in us-west-2: served only through the peered VPC's endpoint.
pub(crate) const WEST_PRIVATE_API_ID: &str = "w9x8y7z6v5";

/// Public custom domains, hosted at an external DNS provider as CNAMEs to API Gateway.
pub(crate) const CUSTOM_DOMAIN: &str = "api.mydomain.com";
pub(crate) const CUSTOM_DOMAIN_2: &str = "special-api.mydomain.com";
/// The API Gateway domain names the custom domains CNAME to.
pub(crate) const APIGW_DOMAIN: &str = "d-abc123.execute-api.us-east-1.amazonaws.com";
pub(crate) const APIGW_DOMAIN_2: &str = "d-def456.execute-api.us-east-1.amazonaws.com";

/// A partner's public custom domain that no config lists: found by its CNAME chain alone.
pub(crate) const UNLISTED_DOMAIN: &str = "api.partner-example.com";
pub(crate) const APIGW_DOMAIN_3: &str = "d-xyz789.execute-api.us-east-1.amazonaws.com";
/// A name CNAME'd to something that is not API Gateway (a CDN): detection leaves it alone.
pub(crate) const CDN_DOMAIN: &str = "www.partner-example.com";
pub(crate) const CDN_TARGET: &str = "d111111abcdef8.cloudfront-example.net";
/// Two names whose CNAMEs point at each other.
pub(crate) const LOOP_DOMAIN: &str = "loop.partner-example.com";
pub(crate) const LOOP_DOMAIN_2: &str = "loop2.partner-example.com";

/// Private custom domain names (2024) of a private API in us-east-1 and in us-west-2: served
/// by the VPC endpoint when SNI and `Host` are the name; no resolver anywhere knows them (a
/// consumer VPC would need a private hosted zone).
pub(crate) const PRIVATE_DOMAIN: &str = "api.private-example.test";
pub(crate) const WEST_PRIVATE_DOMAIN: &str = "orders.private-example.test";

/// The us-east-1 VPC endpoint's regional and zonal DNS names.
pub(crate) const VPCE: &str = "vpce-0123456789abcdef0-abcd1234.execute-api.us-east-1.vpce.amazonaws.com";
pub(crate) const VPCE_ZONAL: &str =
    "vpce-0123456789abcdef0-abcd1234-us-east-1a.execute-api.us-east-1.vpce.amazonaws.com";
/// The us-west-2 VPC endpoint, reached over VPC peering.
pub(crate) const WEST_VPCE: &str = "vpce-0fedcba9876543210-wxyz9876.execute-api.us-west-2.vpce.amazonaws.com";

/// The public API Gateway endpoint of us-east-1.
pub(crate) const PUBLIC_ENDPOINT_IP: IpAddr = v4(127, 10, 0, 10);
/// The public endpoint of us-west-2. Nothing listens here: it models a private subnet with
/// no internet route, so calling it directly is refused.
pub(crate) const WEST_PUBLIC_ENDPOINT_IP: IpAddr = v4(127, 10, 1, 10);
/// The us-east-1 VPC endpoint's ENIs: regional and zonal (us-east-1a).
pub(crate) const VPCE_IP: IpAddr = v4(127, 10, 0, 20);
pub(crate) const VPCE_ZONAL_IP: IpAddr = v4(127, 10, 0, 21);
/// The us-west-2 VPC endpoint's ENI, reached over peering.
pub(crate) const WEST_VPCE_IP: IpAddr = v4(127, 11, 0, 20);

/// A resolver on the internet (say 1.1.1.1).
pub(crate) const PUBLIC_DNS_IP: IpAddr = v4(127, 53, 0, 1);
/// The VPC's resolver (.2) with the execute-api endpoint's Private DNS on, and off.
pub(crate) const VPC_DNS_PRIVATE_ON_IP: IpAddr = v4(127, 53, 0, 2);
pub(crate) const VPC_DNS_PRIVATE_OFF_IP: IpAddr = v4(127, 53, 0, 3);
/// The public resolver's DNS-over-TLS and DNS-over-HTTPS front ends (tests start their own,
/// on ephemeral ports) and the names their certificates carry (say `cloudflare-dns.com`).
pub(crate) const PUBLIC_DOT_IP: IpAddr = v4(127, 53, 0, 10);
pub(crate) const PUBLIC_DOH_IP: IpAddr = v4(127, 53, 0, 11);
pub(crate) const PUBLIC_DOT_NAME: &str = "dot.public-dns.test";
pub(crate) const PUBLIC_DOH_NAME: &str = "doh.public-dns.test";

/// The default URL host of an API: `{id}.execute-api.{region}.amazonaws.com`.
pub(crate) fn execute_api_host(id: &str, region: &str) -> String {
    format!("{id}.execute-api.{region}.amazonaws.com")
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}
