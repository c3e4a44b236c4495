//! `splitway lambda-extension` driven by a test Extensions API (support/lambda.rs): it
//! registers before its first `next`, serves while registered, drains on `SHUTDOWN` within the
//! deadline and exits 0, reports a bad config to `init/error`; and a sandbox frozen past the
//! TTL with its resolver down is served from stale on thaw.

use std::time::Duration;

use crate::cli::write_config;
use crate::support::bin::{Running, run as splitway};
use crate::support::client::admin_get;
use crate::support::config::{ConfigBuilder, quoted};
use crate::support::lambda::{EXTENSION_ID, ExtensionsApi};
use crate::support::metrics::metric;
use crate::support::proxy::PrivateDns;
use crate::support::*;

/// `splitway lambda-extension` with `toml`, its Extensions API at `api`.
fn extension(api: &ExtensionsApi, toml: &str) -> Running {
    let runtime_api = api.runtime_api();
    Running::spawn(toml, &["lambda-extension"], &[("AWS_LAMBDA_RUNTIME_API", &runtime_api)])
}

/// A request through the proxy at `proxy` to the private API: the endpoint that served it.
async fn private_api(proxy: std::net::SocketAddr) -> Served {
    let client = https_client(aws_net(), Via::Proxy(proxy));
    let host = execute_api_host(PRIVATE_API_ID, REGION);
    get(&client, &host)
        .await
        .unwrap_or_else(|e| panic!("{host}: {}", describe_chain(&e)))
}

#[tokio::test]
async fn lambda_registers_serves_and_drains_a_tunnel_on_shutdown() {
    let net = aws_net();
    let api = ExtensionsApi::start().await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On).admin().build();
    let mut ext = extension(&api, &toml);

    // Registered for SHUTDOWN under the executable's name, then bound, then `next`.
    let register = api.wait_call("register", 1).await;
    assert_eq!(
        (register.method.as_str(), register.name.as_deref()),
        ("POST", Some("splitway"))
    );
    assert_eq!(register.body, serde_json::json!({ "events": ["SHUTDOWN"] }));
    let next = api.wait_call("event/next", 1).await;
    assert_eq!((next.method.as_str(), next.id.as_deref()), ("GET", Some(EXTENSION_ID)));
    assert_eq!(api.paths(), ["register", "event/next"]);
    // The serving line was logged before `next` was asked: the proxy listens while registered.
    ext.wait_serving().await;
    let served = private_api(ext.listen).await;
    assert_eq!((served.status, served.served_by.as_str()), (200, "vpce-us-east-1"));
    // One serving thread beside the function, as `run` has by default: no runtime workers.
    assert_eq!(ext.threads(), ["splitway"], "threads of the extension");

    // A tunnel open when SHUTDOWN comes is drained, not cut: it still carries a request.
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    let (status, _, _, stream) = connect_raw(ext.listen, &connect_request(&target)).await;
    assert_eq!(status_of(&status), 200, "{status}");
    let tls = tls_over(stream, CUSTOM_DOMAIN, &net.ca_der)
        .await
        .expect("TLS through the tunnel");
    let deadline = Duration::from_secs(10);
    let sent = std::time::Instant::now();
    api.shutdown(deadline);
    ext.next_log("SHUTDOWN from Lambda").await;
    assert_eq!(get_over_tls(tls, CUSTOM_DOMAIN).await.0, 200);
    // The tunnel closed (Connection: close): nothing is left, so the process exits 0 at once.
    let status = ext.wait().await;
    assert!(status.success(), "{status}");
    assert!(sent.elapsed() < deadline, "exited {:?} after SHUTDOWN", sent.elapsed());
    assert_eq!(api.paths(), ["register", "event/next"], "no call after SHUTDOWN");
}

#[tokio::test]
async fn lambda_shutdown_deadline_cuts_a_tunnel_left_open() {
    let net = aws_net();
    let api = ExtensionsApi::start().await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On).build();
    let mut ext = extension(&api, &toml);
    api.wait_call("event/next", 1).await;
    ext.wait_serving().await;
    let target = format!("{CUSTOM_DOMAIN}:{}", net.port);
    let (status, _, _, _open) = connect_raw(ext.listen, &connect_request(&target)).await;
    assert_eq!(status_of(&status), 200, "{status}");
    // drain_timeout is 30 s; Lambda's deadline is shorter and wins.
    let deadline = Duration::from_millis(1500);
    let sent = std::time::Instant::now();
    api.shutdown(deadline);
    let status = ext.wait().await;
    assert!(status.success(), "{status}");
    assert!(sent.elapsed() < deadline, "exited {:?} after SHUTDOWN", sent.elapsed());
    ext.next_log("drain cut at the Lambda shutdown deadline").await;
}

#[tokio::test]
async fn lambda_bad_config_reaches_init_error_with_checks_message() {
    let api = ExtensionsApi::start().await;
    let bad = "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"r\"\nhosts = [\"a.example\"]\nresolver = \"publik\"\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n";
    let mut ext = extension(&api, bad);
    let status = ext.wait().await;
    assert_eq!(status.code(), Some(1), "a bad config exits non-zero");
    let error = api.wait_call("init/error", 1).await;
    assert_eq!(api.paths(), ["register", "init/error"], "never asks for an event");
    assert_eq!(
        (error.id.as_deref(), error.error_type.as_deref()),
        (Some(EXTENSION_ID), Some("Extension.ConfigInvalid"))
    );
    let check = splitway(&["check", "--config", ext.config.arg()]).await;
    let printed = String::from_utf8_lossy(&check.stderr);
    let message = error.body["errorMessage"].as_str().expect("errorMessage");
    assert_eq!(printed, format!("error: {message}\n"));
    assert!(
        message.contains("key `resolver`: unknown resolver `publik`"),
        "{message}"
    );
    assert_eq!(error.body["errorType"], "Extension.ConfigInvalid");
}

#[tokio::test]
async fn lambda_extension_outside_lambda_says_what_to_do() {
    let path = write_config(
        "lambda-no-api.toml",
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n",
    );
    let out = splitway(&["lambda-extension", "--config", path.arg()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: AWS_LAMBDA_RUNTIME_API is not set: `splitway lambda-extension` runs inside AWS Lambda, \
         started from the layer's /opt/extensions/; use `splitway run` elsewhere\n"
    );
}

#[tokio::test]
async fn lambda_thaw_after_the_ttl_with_the_resolver_down_is_served_from_stale() {
    let net = aws_net();
    // The VPC resolver of this test's own; every TTL is clamped to 1 s.
    let zone = crate::support::net::vpc_private_dns_on_zone();
    let dns = FakeDns::start("127.53.9.3".parse().unwrap(), zone).await;
    let toml = ConfigBuilder::scenario(net, PrivateDns::On)
        .resolver("system", dns.addr())
        .resolver_key("system", "min_ttl", quoted("1s"))
        .resolver_key("system", "max_ttl", quoted("1s"))
        .resolver_key("system", "timeout", quoted("300ms"))
        .resolver_key("system", "serve_stale", quoted("1h"))
        .admin()
        .build();
    let api = ExtensionsApi::start().await;
    let mut ext = extension(&api, &toml);
    api.wait_call("event/next", 1).await;
    ext.wait_serving().await;
    assert_eq!(private_api(ext.listen).await.status, 200);

    // Lambda freezes the sandbox between invocations; meanwhile the resolver goes down and
    // the cached answer ages past its TTL. The sleep is the frozen time itself.
    dns.set_mode(DnsMode::Blackhole);
    ext.signal("STOP").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ext.signal("CONT").await;
    let asked = std::time::Instant::now();
    let served = private_api(ext.listen).await;
    assert_eq!((served.status, served.served_by.as_str()), (200, "vpce-us-east-1"));
    // Answered from stale after at most the resolver's timeout, not after a failed lookup.
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        asked.elapsed()
    );
    let (_, m) = admin_get(ext.admin(), "/metrics").await;
    let stale = [("resolver", "system"), ("result", "stale")];
    assert!(metric(&m, "splitway_dns_lookups_total", &stale) >= 1.0, "{m}");
    api.shutdown(Duration::from_secs(5));
    assert!(ext.wait().await.success());
}

#[tokio::test]
async fn lambda_is_chosen_when_the_runtime_api_is_set_and_no_command_is_given() {
    let api = ExtensionsApi::start().await;
    let runtime_api = api.runtime_api();
    let toml = ConfigBuilder::scenario(aws_net(), PrivateDns::On).build();
    let mut ext = Running::spawn(&toml, &[], &[("AWS_LAMBDA_RUNTIME_API", &runtime_api)]);
    api.wait_call("event/next", 1).await;
    ext.wait_serving().await;
    api.shutdown(Duration::from_secs(5));
    assert!(ext.wait().await.success());
    assert_eq!(api.paths(), ["register", "event/next"]);
}

#[tokio::test]
async fn lambda_a_listener_that_cannot_bind_reaches_init_error() {
    let api = ExtensionsApi::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let mut ext = extension(
        &api,
        &format!(
            "[proxy]\nlisten = \"{addr}\"\n[resolver.system]\nnameservers = [\"127.53.0.2\"]\nhosts_file = false\n"
        ),
    );
    assert_eq!(ext.wait().await.code(), Some(1));
    let error = api.wait_call("init/error", 1).await;
    assert_eq!(api.paths(), ["register", "init/error"]);
    assert_eq!(error.error_type.as_deref(), Some("Extension.StartFailed"));
    let message = error.body["errorMessage"].as_str().expect("errorMessage");
    assert!(
        message.starts_with(&format!("cannot listen on {addr} ([proxy] listen): ")),
        "{message}"
    );
    drop(taken);
}
