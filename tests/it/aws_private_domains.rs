//! Private custom domain names (`[aws] private_domains`): names no resolver knows reach their
//! region's VPC endpoint through the preset, the application's SNI and `Host` untouched, with
//! no private hosted zone; without splitway they do not resolve at all.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::config::{Aws, ConfigBuilder};
use crate::support::dns::udp_query;
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::*;

/// The preset with a private custom domain in us-east-1 and one in the peered us-west-2.
pub(crate) fn private_domains_preset(zone: Option<&str>) -> Aws {
    let aws =
        Aws::new(REGION, VPCE)
            .private_domains([PRIVATE_DOMAIN])
            .peered(WEST_REGION, WEST_VPCE, &[WEST_PRIVATE_DOMAIN]);
    match zone {
        Some(z) => aws.str("availability_zone", z),
        None => aws,
    }
}

#[tokio::test]
async fn without_splitway_a_private_custom_domain_does_not_resolve() {
    let net = aws_net();
    let resolvers = [Resolver::Public, Resolver::VpcPrivateDnsOn, Resolver::VpcPrivateDnsOff];
    for which in resolvers {
        for host in [PRIVATE_DOMAIN, WEST_PRIVATE_DOMAIN] {
            let reply = udp_query(net.dns_addr(which), host, RecordType::A).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NXDomain,
                "{host} ({which:?})"
            );
        }
        let direct = https_client(net, Via::Direct(which));
        let e = get(&direct, PRIVATE_DOMAIN).await.expect_err("no resolver knows it");
        assert!(describe_chain(&e).contains("NXDOMAIN"), "{}", describe_chain(&e));
    }
}

#[tokio::test]
async fn private_custom_domains_reach_their_endpoint_through_the_preset() {
    let net = aws_net();
    let cases = [(None, "vpce-us-east-1"), (Some("us-east-1a"), "vpce-us-east-1a")];
    for (zone, east) in cases {
        let toml = ConfigBuilder::with_resolvers(net, PrivateDns::On)
            .aws(private_domains_preset(zone))
            .build();
        let proxy = TestProxy::start(&toml).await;
        let client = https_client(net, Via::Proxy(proxy.addr));
        // The endpoint answers 200 only for the Host it serves, over TLS whose name check the
        // client made against the domain itself: SNI and Host reached it untouched.
        for (host, endpoint) in [(PRIVATE_DOMAIN, east), (WEST_PRIVATE_DOMAIN, "vpce-us-west-2")] {
            let served = get(&client, host)
                .await
                .unwrap_or_else(|e| panic!("{host} ({zone:?}): {}", describe_chain(&e)));
            assert_eq!(
                (served.status, served.served_by.as_str(), served.body),
                (200, endpoint, ok_body(endpoint, host)),
                "{host} ({zone:?})"
            );
        }
        drop(client);
        proxy.assert_no_leaks().await;
        let m = proxy.handle.metrics_text();
        for route in ["aws-private-domains", "aws-private-domains-us-west-2"] {
            let ok = [("kind", "connect"), ("route", route), ("outcome", "ok")];
            assert_eq!(metric(&m, "splitway_requests_total", &ok), 1.0, "{route}: {m}");
        }
        proxy.stop().await;
    }
}

#[test]
fn private_domain_errors_name_the_key() {
    let base = "[aws]\nregion = \"us-east-1\"\nvpc_endpoint = \"vpce-1-a.execute-api.us-east-1.vpce.amazonaws.com\"\n";
    let cases = [
        (
            format!("{base}private_domains = [\"bad name!\"]\n"),
            "key `aws.private_domains`: `bad name!` is not a host name",
        ),
        (
            format!("{base}private_domains = \"private.example.com\"\n"),
            "key `aws.private_domains`",
        ),
        (
            format!(
                "{base}[[aws.peered]]\nregion = \"us-west-2\"\nvpc_endpoint = \"vpce-2-b.execute-api.us-west-2.vpce.amazonaws.com\"\nprivate_domains = [\"*.\"]\n"
            ),
            "key `aws.peered`: `*.` is not a valid wildcard",
        ),
    ];
    for (toml, want) in cases {
        let e = splitway::Config::from_toml(&toml, "aws.toml")
            .expect_err(&toml)
            .to_string();
        assert!(e.contains("aws.toml:") && e.contains(want), "{want:?} in {e}");
    }
}
