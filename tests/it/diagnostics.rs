//! Readiness that checks real dependencies, and `/debug/route` on the admin listener.

use crate::support::client::admin_get;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

#[tokio::test]
async fn readiness_turns_503_with_a_reason_when_the_public_resolver_is_unreachable() {
    let net = aws_net();
    // A public resolver of this test's own, so it can be taken down.
    let public = FakeDns::start("127.53.3.1".parse().unwrap(), crate::support::net::public_zone()).await;
    let toml = scenario_config(net, PrivateDns::On).replace(&net.public_dns.to_string(), &public.addr().to_string())
        + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let toml = toml.replacen("[resolver.public]\n", "[resolver.public]\ntimeout = \"300ms\"\n", 1);
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    proxy.handle.wait_started().await;
    let (status, body) = admin_get(admin, "/readyz?verbose").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"public") && names.contains(&"system") && names.contains(&VPCE),
        "{body}"
    );

    public.set_mode(DnsMode::Blackhole);
    let failing = proxy.handle.check_dependencies().await;
    assert_eq!(failing.len(), 1, "{failing:?}");
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("resolver public: no answer for") && body.contains("no answer in time"),
        "{body}"
    );
    let (_, verbose) = admin_get(admin, "/readyz?verbose").await;
    let v: serde_json::Value = serde_json::from_str(&verbose).expect("JSON");
    let public_check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "public")
        .unwrap();
    assert_eq!(public_check["ok"], false, "{verbose}");

    public.set_mode(DnsMode::Normal);
    assert!(proxy.handle.check_dependencies().await.is_empty());
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn debug_route_on_the_admin_listener_diagnoses_a_host() {
    let net = aws_net();
    let toml = scenario_config(net, PrivateDns::On) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    let (status, body) = admin_get(admin, &format!("/debug/route?host={CUSTOM_DOMAIN}:{}", net.port)).await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(e["route"], "custom-domains");
    assert_eq!(e["differs"], true);
    // The admin probe trusts only public roots, so the test CA's certificates are untrusted,
    // but the name coverage tells the story.
    let system = e["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "system")
        .expect("system probe");
    assert_eq!(system["covers_host"], false, "{body}");
    assert_eq!(admin_get(admin, "/debug/route").await.0, 400);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn report_mode_follows_the_system_path_and_counts_would_be_reroutes() {
    let net = aws_net();
    let toml = scenario_config(net, PrivateDns::On).replacen("[proxy]\n", "[proxy]\nmode = \"report\"\n", 1)
        + "\n[[route]]\nname = \"blocked\"\nhosts = [\"blocked.example.com\"]\ndeny = true\n";
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    // The custom domain goes where the VPC resolver sends it: the VPC endpoint, whose
    // certificate does not cover it — exactly what happens without splitway.
    let err = get(&client, CUSTOM_DOMAIN)
        .await
        .expect_err("system path fails as before");
    assert!(
        crate::support::client::is_name_mismatch(&err),
        "{}",
        describe_chain(&err)
    );
    // The public API ID reaches the VPC endpoint and gets its 403.
    let served = get(&client, &execute_api_host(PUBLIC_API_ID, REGION))
        .await
        .expect("request");
    assert_eq!((served.status, served.served_by.as_str()), (403, "vpce-us-east-1"));
    // A private API already works on the system path: no difference.
    assert_eq!(
        get(&client, &execute_api_host(PRIVATE_API_ID, REGION))
            .await
            .expect("request")
            .status,
        200
    );
    drop(client);
    // A denied host is not refused in report mode (it fails later for want of DNS here).
    let (status, _, _, _) = connect_raw(
        proxy.addr,
        &connect_request(&format!("blocked.example.com:{}", net.port)),
    )
    .await;
    assert_ne!(status_of(&status), 403, "{status}");
    proxy.assert_no_leaks().await;
    let m = proxy.handle.metrics_text();
    let diff = |route: &str, action: &str| {
        crate::support::metrics::metric(
            &m,
            "splitway_report_differences_total",
            &[("route", route), ("action", action)],
        )
    };
    assert_eq!(diff("custom-domains", "reroute"), 1.0, "{m}");
    assert_eq!(diff("public-api-ids", "reroute"), 1.0, "{m}");
    assert_eq!(diff("private-apis", "reroute"), 0.0, "{m}");
    assert_eq!(diff("blocked", "deny"), 1.0, "{m}");
    proxy.stop().await;
}
