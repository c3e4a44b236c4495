//! The three failures of the problem statement, fixed through the proxy — for Private DNS on
//! and off, through a real HTTP client (reqwest) and through `curl -x` where installed.

use crate::support::config::ConfigBuilder;
use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

/// (host, endpoint that must answer).
pub(crate) fn expectations() -> Vec<(String, &'static str)> {
    vec![
        (CUSTOM_DOMAIN.to_owned(), "public-us-east-1"),
        (CUSTOM_DOMAIN_2.to_owned(), "public-us-east-1"),
        (execute_api_host(PUBLIC_API_ID, REGION), "public-us-east-1"),
        (execute_api_host(PRIVATE_API_ID, REGION), "vpce-us-east-1"),
        (execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION), "vpce-us-west-2"),
    ]
}

async fn all_fixed_through_proxy(dns: PrivateDns) {
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, dns)).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    for (host, endpoint) in expectations() {
        let served = get(&client, &host)
            .await
            .unwrap_or_else(|e| panic!("{host} via proxy ({dns:?}): {}", describe_chain(&e)));
        assert_eq!(served.status, 200, "{host} ({dns:?}): {served:?}");
        assert_eq!(served.served_by, endpoint, "{host} ({dns:?})");
    }
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_fixes_all_three_failures_with_private_dns_on() {
    all_fixed_through_proxy(PrivateDns::On).await;
}

#[tokio::test]
async fn proxy_fixes_all_three_failures_with_private_dns_off() {
    all_fixed_through_proxy(PrivateDns::Off).await;
}

#[tokio::test]
async fn curl_through_proxy_reaches_every_api() {
    if require("curl", tool("curl", "--version")).is_none() {
        return;
    }
    let net = aws_net();
    for dns in [PrivateDns::On, PrivateDns::Off] {
        let proxy = TestProxy::start(&scenario_config(net, dns)).await;
        for (host, endpoint) in expectations() {
            let out = curl(net, Via::Proxy(proxy.addr), &host, &["-sS", "-D", "-"]).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "curl {host} ({dns:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains(" 200"), "{host}: {stdout}");
            assert!(stdout.contains(&format!("x-served-by: {endpoint}")), "{host}: {stdout}");
        }
        proxy.assert_no_leaks().await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn route_on_a_named_resolver_never_asks_the_system_resolver() {
    let net = aws_net();
    // A private system resolver of our own, so its query log is this test's alone.
    let system = FakeDns::start(
        "127.53.1.2".parse().unwrap(),
        crate::support::net::vpc_private_dns_on_zone(),
    )
    .await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .resolver("system", system.addr())
        .build();
    let proxy = TestProxy::start(&toml).await;
    let client = https_client(net, Via::Proxy(proxy.addr));
    let public_names = [
        CUSTOM_DOMAIN.to_owned(),
        APIGW_DOMAIN.to_owned(),
        execute_api_host(PUBLIC_API_ID, REGION),
    ];
    for host in &public_names[..] {
        if host != APIGW_DOMAIN {
            assert_eq!(get(&client, host).await.expect("request").status, 200);
        }
    }
    let asked: Vec<String> = system.queries().into_iter().map(|(name, _)| name).collect();
    for name in &public_names {
        assert!(!asked.contains(name), "system resolver was asked for {name}: {asked:?}");
    }
    // The private route resolves the endpoint name through `system` (at start-up and on use).
    assert_eq!(
        get(&client, &execute_api_host(PRIVATE_API_ID, REGION))
            .await
            .expect("request")
            .status,
        200
    );
    assert!(
        system.queries().iter().any(|(name, _)| name == VPCE),
        "{:?}",
        system.queries()
    );
    drop(client);
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn http10_connect_without_host_header_works() {
    // What `openssl s_client -proxy` sends.
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    let request = format!("CONNECT {host}:{} HTTP/1.0\r\n\r\n", net.port);
    let (status, _, _, stream) = connect_raw(proxy.addr, request.as_bytes()).await;
    assert_eq!(status_of(&status), 200, "{status}");
    let tls = tls_over(stream, &host, &net.ca_der)
        .await
        .expect("TLS through the tunnel");
    let (code, body) = get_over_tls(tls, &host).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("vpce-us-east-1"), "{body}");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}

#[tokio::test]
async fn openssl_s_client_through_the_proxy() {
    // openssl sends `CONNECT host:port HTTP/1.0` without a Host header.
    if require("openssl", tool("openssl", "version")).is_none() {
        return;
    }
    let net = aws_net();
    let proxy = TestProxy::start(&scenario_config(net, PrivateDns::On)).await;
    let ca = crate::support::tmp::TempFile::new("ca.pem", &net.ca_pem);
    let host = CUSTOM_DOMAIN;
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            host,
            "-servername",
            host,
        ])
        .args([
            "-proxy",
            &proxy.addr.to_string(),
            "-connect",
            &format!("{host}:{}", net.port),
        ])
        .arg("-CAfile")
        .arg(&*ca)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl");
    let mut stdin = child.stdin.take().unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    within(
        HANG_SECS,
        "openssl to take the request",
        tokio::io::AsyncWriteExt::write_all(&mut stdin, request.as_bytes()),
    )
    .await
    .expect("write to openssl");
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("openssl finishes")
        .unwrap();
    drop(stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("HTTP/1.1 200"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("x-served-by: public-us-east-1"), "{stdout}");
    proxy.assert_no_leaks().await;
    proxy.stop().await;
}
