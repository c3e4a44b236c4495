//! Readiness that checks real dependencies, and `/debug/route` on the admin listener.

use crate::support::client::admin_get;
use crate::support::config::{ConfigBuilder, Route, quoted, strings};
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::*;

#[tokio::test]
async fn readiness_turns_503_with_a_reason_when_the_public_resolver_is_unreachable() {
    let net = aws_net();
    // A public resolver of this test's own, so it can be taken down.
    let public = FakeDns::start("127.53.3.1".parse().unwrap(), crate::support::net::public_zone()).await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .resolver("public", public.addr())
        .resolver_key("public", "timeout", quoted("300ms"))
        .admin()
        .build();
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
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
    let failing = within(HANG_SECS, "the dependency checks", proxy.handle.check_dependencies()).await;
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
    assert!(
        within(HANG_SECS, "the dependency checks", proxy.handle.check_dependencies())
            .await
            .is_empty()
    );
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn debug_route_on_the_admin_listener_diagnoses_a_host() {
    let net = aws_net();
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .admin()
        .admin_key("debug", "true")
        .build();
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
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .proxy_str("mode", "report")
        .route(Route::new("blocked").hosts(["blocked.example.com"]).deny())
        .build();
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
    // Counted on first use: no series at all is the expected "never rerouted".
    let none = [("route", "private-apis"), ("action", "reroute")];
    let private = crate::support::metrics::metric_or_zero(&m, "splitway_report_differences_total", &none);
    assert_eq!(private, 0.0, "{m}");
    assert_eq!(diff("blocked", "deny"), 1.0, "{m}");
    proxy.stop().await;
}

/// A listener that counts the connections it accepts (and closes them at once).
struct Counting {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    async fn bind(addr: &str) -> Counting {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the counting listener");
        let addr = listener.local_addr().expect("bound");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        Counting { addr, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn debug_route_is_off_by_default_and_opens_no_connection() {
    let net = aws_net();
    // The emulated network's port, so only `[admin] debug` stands in the way.
    let target = Counting::bind(&format!("127.77.0.1:{}", net.port)).await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On).admin().build();
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    let (status, body) = admin_get(admin, &format!("/debug/route?host={}", target.addr)).await;
    assert_eq!((status, body.as_str()), (404, "not found\n"));
    assert_eq!(admin_get(admin, "/debug/route").await.0, 404);
    assert_eq!(target.accepted(), 0, "the disabled endpoint connected");
    proxy.stop().await;
}

#[tokio::test]
async fn debug_route_obeys_connect_ports_and_deny_destinations() {
    let net = aws_net();
    let off_port = Counting::bind("127.77.0.2:0").await;
    let denied = Counting::bind(&format!("127.77.0.3:{}", net.port)).await;
    // A name whose system-path answer is denied: the system probe must not reach it either.
    let vpc = FakeDns::start(
        "127.53.7.1".parse().unwrap(),
        crate::support::net::vpc_private_dns_on_zone()
            .a("internal.example.com", "127.77.0.3".parse().unwrap())
            .a("denied.example.com", "127.77.0.3".parse().unwrap())
            .a("off-port.example.com", "127.77.0.2".parse().unwrap()),
    )
    .await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .resolver("system", vpc.addr())
        .proxy("deny_destinations", strings(["169.254.0.0/16", "127.77.0.3/32"]))
        .route(
            Route::new("internal")
                .hosts(["internal.example.com"])
                .str("resolver", "public"),
        )
        .admin()
        .admin_key("debug", "true")
        .build();
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    let probe = |host: String| async move {
        let (status, body) = admin_get(admin, &format!("/debug/route?host={host}")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")
    };

    // A port outside connect_ports: refused before anything is resolved or connected.
    let e = probe(format!("off-port.example.com:{}", off_port.addr.port())).await;
    let error = e["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("CONNECT to port {} is not allowed", off_port.addr.port())),
        "{e}"
    );
    assert!(
        e["probes"].is_null() && e["lookups"].as_array().is_some_and(Vec::is_empty),
        "{e}"
    );
    assert_eq!(off_port.accepted(), 0, "a probe reached a port outside connect_ports");

    // A denied address, as a literal: explained as refused (a literal is never probed: a
    // probe needs a name for the SNI).
    let e = probe(denied.addr.to_string()).await;
    assert!(
        e["error"].as_str().unwrap_or_default().contains("deny_destinations"),
        "{e}"
    );
    // A name the splitway path (the system resolver here) sends to the denied address, where
    // a listener would accept the probe: refused by the connector, nothing reaches it.
    let e = probe(format!("denied.example.com:{}", net.port)).await;
    let probes = e["probes"].as_array().filter(|p| !p.is_empty());
    let probes = probes.unwrap_or_else(|| panic!("no probe: {e}"));
    for p in probes {
        let error = p["error"].as_str().unwrap_or_default();
        assert!(error.contains("deny_destinations"), "{p}\n{e}");
    }
    // A name the system resolver sends to a denied address: the system probe refuses it too.
    let e = probe(format!("internal.example.com:{}", net.port)).await;
    let system = e["probes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["path"] == "system"))
        .unwrap_or_else(|| panic!("no system probe: {e}"));
    assert!(
        system["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deny_destinations"),
        "{e}"
    );
    assert_eq!(denied.accepted(), 0, "a probe reached a denied address");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

/// A port on `ip` free a moment ago, for a listener the config must name before it is bound.
fn free_ports<const N: usize>(ip: &str) -> [u16; N] {
    let held: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind((ip, 0)).expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound").port())
}

#[tokio::test]
async fn debug_route_never_probes_the_proxys_own_listener_or_admin() {
    let net = aws_net();
    // Both listeners on an address of this test's own, on ports the config names (and allows
    // in connect_ports), so only the own-listener check stands between a probe and them.
    let own_ip = "127.77.0.9";
    let [port, admin_port] = free_ports(own_ip);
    let vpc = FakeDns::start(
        "127.53.7.2".parse().unwrap(),
        crate::support::net::vpc_private_dns_on_zone().a("self.example.com", own_ip.parse().unwrap()),
    )
    .await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .resolver("system", vpc.addr())
        .proxy_str("listen", format!("{own_ip}:{port}"))
        .proxy("connect_ports", format!("[{}, {port}, {admin_port}]", net.port))
        .route(
            Route::new("loop")
                .hosts(["loop.example.com"])
                .key("addresses", strings([format!("{own_ip}:{port}")])),
        )
        .admin_key("listen", quoted(format!("{own_ip}:{admin_port}")))
        .admin_key("debug", "true")
        .build();
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    assert_eq!((proxy.addr.port(), admin.port()), (port, admin_port));
    let requests = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("splitway_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = requests(&proxy.handle.metrics_text());
    for host in [
        // A name the resolver sends to the proxy listener, and one to the admin listener.
        format!("self.example.com:{port}"),
        format!("self.example.com:{admin_port}"),
        // A route whose explicit address (exempt from deny_destinations) is the listener.
        format!("loop.example.com:{}", net.port),
    ] {
        let (status, body) = admin_get(admin, &format!("/debug/route?host={host}")).await;
        assert_eq!(status, 200, "{host}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let probes = e["probes"].as_array().cloned().unwrap_or_default();
        let splitway = probes.iter().find(|p| p["path"] == "splitway");
        let splitway = splitway.unwrap_or_else(|| panic!("{host}: no splitway probe: {e}"));
        let error = splitway["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("is this proxy's own listener; the request would loop"),
            "{host}: {e}"
        );
        // The system path (loop.example.com has no address there) connects nowhere either.
        assert!(probes.iter().all(|p| p["error"].is_string()), "{host}: {e}");
    }
    proxy.assert_no_leaks().await;
    // Had a probe connected, the proxy would have counted what arrived as a request.
    let after = proxy.handle.metrics_text();
    assert_eq!(
        requests(&after),
        before,
        "a probe reached the proxy's listener: {after}"
    );
    proxy.stop().await;
}
