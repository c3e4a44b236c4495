//! The `[aws]` preset: same routing as the hand-written config, same-AZ endpoint preference
//! with fallback, and `check` showing what it generated and what explicit routes override.

use crate::scenarios::expectations;
use crate::support::config::{Aws, ConfigBuilder};
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::*;

fn preset(net: &AwsNet, dns: PrivateDns, zone: Option<&str>) -> String {
    preset_on(ConfigBuilder::with_resolvers(net, dns), zone)
}

/// The `[aws]` preset on top of `base`'s `[proxy]` and resolver sections.
fn preset_on(base: ConfigBuilder, zone: Option<&str>) -> String {
    let aws = match zone {
        Some(z) => Aws::scenario().str("availability_zone", z),
        None => Aws::scenario(),
    };
    base.aws(aws).build()
}

#[tokio::test]
async fn preset_routes_like_the_hand_written_config() {
    let net = aws_net();
    for dns in [PrivateDns::On, PrivateDns::Off] {
        let proxy = TestProxy::start(&preset(net, dns, None)).await;
        let client = https_client(net, Via::Proxy(proxy.addr));
        for (host, endpoint) in expectations() {
            let served = get(&client, &host)
                .await
                .unwrap_or_else(|e| panic!("{host} ({dns:?}): {}", describe_chain(&e)));
            assert_eq!(
                (served.status, served.served_by.as_str()),
                (200, endpoint),
                "{host} ({dns:?})"
            );
        }
        drop(client);
        proxy.assert_no_leaks().await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn zonal_endpoint_preferred_then_regional_when_it_is_down() {
    let net = aws_net();
    let private = execute_api_host(PRIVATE_API_ID, REGION);
    let proxy = TestProxy::start(&preset(net, PrivateDns::On, Some("us-east-1a"))).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&client, &private).await.expect("zonal").served_by,
        "vpce-us-east-1a"
    );
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;

    // A VPC resolver of this test's own whose zonal name points at an ENI that refuses.
    let zone = Zone::new()
        .addr(&format!("*.execute-api.{REGION}.amazonaws.com"), VPCE_IP)
        .addr(VPCE, VPCE_IP)
        .addr(VPCE_ZONAL, "127.10.9.21".parse().unwrap())
        .addr(WEST_VPCE, WEST_VPCE_IP);
    let dns = FakeDns::start("127.53.2.2".parse().unwrap(), zone).await;
    let base = ConfigBuilder::with_resolvers(net, PrivateDns::On).resolver("system", dns.addr());
    let toml = preset_on(base, Some("us-east-1a"));
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    assert_eq!(
        get(&client, &private).await.expect("regional fallback").served_by,
        "vpce-us-east-1"
    );
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[test]
fn check_shows_generated_routes_and_overrides() {
    let net_free = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[resolver.system]\nnameservers = [\"{VPC_DNS_PRIVATE_ON_IP}\"]\nhosts_file = false\n[resolver.public]\nnameservers = [\"127.0.0.1:53\"]\n"
    );
    let toml = format!(
        "{net_free}[[route]]\nname = \"mine\"\nhosts = [\"*.execute-api.{REGION}.amazonaws.com\"]\ndeny = true\n\n[aws]\nregion = \"{REGION}\"\nvpc_endpoint = \"{VPCE}\"\navailability_zone = \"us-east-1a\"\npublic_api_ids = [\"{PUBLIC_API_ID}\"]\npublic_resolver = \"public\"\n"
    );
    let config = splitway::Config::from_toml(&toml, "preset.toml").expect("valid");
    let text = splitway::config::describe(&config);
    assert!(
        text.contains(&format!(
            "aws-public-api-ids       [{}] -> resolve via `public`",
            execute_api_host(PUBLIC_API_ID, REGION)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("note: [aws] pattern `*.execute-api.{REGION}.amazonaws.com` of route `aws-private-apis` is overridden by route `mine`")),
        "{text}"
    );
    assert!(
        !text.contains("aws-private-apis  "),
        "fully overridden route is dropped: {text}"
    );
}

#[test]
fn preset_errors_name_the_key() {
    let cases = [
        (
            "[aws]\nregion = \"us-east-1\"\nvpc_endpoint = \"api.example.com\"\n",
            "key `aws.vpc_endpoint`",
        ),
        (
            "[aws]\nregion = \"us-east-1\"\nvpc_endpoint = \"vpce-1-a.execute-api.us-east-1.vpce.amazonaws.com\"\navailability_zone = \"eu-west-1a\"\n",
            "key `aws.availability_zone`",
        ),
        (
            "[aws]\nregion = \"us-east-1\"\nvpc_endpoint = \"vpce-1-a.execute-api.us-east-1.vpce.amazonaws.com\"\npublic_domains = [\"api.example.com\"]\n",
            "key `aws.public_resolver`",
        ),
        (
            "[aws]\nregion = \"us-east-1\"\nvpc_endpoint = \"vpce-1-a.execute-api.us-east-1.vpce.amazonaws.com\"\npublic_resolver = \"public\"\npublic_api_ids = [\"x\"]\n",
            "unknown resolver `public`",
        ),
        ("[aws]\nregoin = \"us-east-1\"\n", "key `aws.regoin`"),
    ];
    for (toml, want) in cases {
        let e = splitway::Config::from_toml(toml, "aws.toml")
            .expect_err(toml)
            .to_string();
        assert!(e.contains("aws.toml:") && e.contains(want), "{want:?} in {e}");
    }
}
