//! Reloads in the real binary: SIGHUP sent to the process and the file watcher noticing an
//! edit, observed through behaviour and the admin `/metrics` (bounded polls: the process is
//! another one, nothing tells the test when it has reloaded).

use std::net::SocketAddr;

use crate::support::bin::Running;
use crate::support::client::{admin_get, is_name_mismatch};
use crate::support::config::{ConfigBuilder, strings};
use crate::support::metrics::metric;
use crate::support::proxy::PrivateDns;
use crate::support::*;

async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    let (status, m) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{m}");
    metric(&m, "splitway_config_reloads_total", &[("result", result)])
}

/// Polls until the `result` reload counter reaches `want`; panics if it goes past it.
async fn reloads_reach(admin: SocketAddr, result: &str, want: f64) {
    let what = format!("splitway_config_reloads_total{{result={result:?}}} = {want}");
    poll_until(HANG_SECS, what, || async move {
        let n = reloads(admin, result).await;
        assert!(n <= want, "{n} {result} reloads, want {want}");
        (n == want).then_some(())
    })
    .await;
}

/// Who serves `CUSTOM_DOMAIN` through the proxy now, or the error, on a fresh client.
async fn custom_domain_via(net: &'static AwsNet, proxy: SocketAddr) -> Result<String, String> {
    let client = https_client(net, Via::Proxy(proxy));
    match get(&client, CUSTOM_DOMAIN).await {
        Ok(served) => Ok(served.served_by),
        Err(e) if is_name_mismatch(&e) => Err("name mismatch".into()),
        Err(e) => panic!("{}", describe_chain(&e)),
    }
}

#[tokio::test]
async fn sighup_and_a_file_edit_reload_the_running_binary() {
    let net = aws_net();
    let full = ConfigBuilder::scenario(net, PrivateDns::On).admin();
    // Without the custom-domain route, Private DNS sends that domain to the VPC endpoint,
    // whose certificate does not cover it.
    let without = full
        .clone()
        .route_key("custom-domains", "hosts", strings(["unused.example"]));
    let mut child = Running::start(&without.build()).await;
    let admin = child.admin();
    assert_eq!(custom_domain_via(net, child.listen).await, Err("name mismatch".into()));
    assert_eq!(reloads(admin, "ok").await, 0.0);

    // SIGHUP reloads even an unchanged file (the watcher never does): the count moves.
    child.signal("HUP").await;
    child.next_log("SIGHUP received").await;
    child.next_log("config reloaded").await;
    reloads_reach(admin, "ok", 1.0).await;

    // The watcher: an edit is picked up without a signal, and the new route is in force.
    child.config.rewrite(full.build());
    let served = poll_until(HANG_SECS, "the edited config in force", || async {
        custom_domain_via(net, child.listen).await.ok()
    })
    .await;
    assert_eq!(served, "public-us-east-1");
    reloads_reach(admin, "ok", 2.0).await;

    // A broken edit is rejected and counted; the running config stays.
    child
        .config
        .rewrite("[[route]]\nhosts = [\"x.example\"]\nresolver = \"missing\"\n");
    reloads_reach(admin, "error", 1.0).await;
    assert_eq!(
        custom_domain_via(net, child.listen).await,
        Ok("public-us-east-1".into())
    );
    assert_eq!(reloads(admin, "ok").await, 2.0);

    child.signal("TERM").await;
    assert_eq!(child.wait().await.code(), Some(0));
}

/// A config file that goes away (a volume unmounted, a deploy that deletes before it writes)
/// is reported once, naming the file; the running config stays in force, and the file is
/// reloaded once it is back with new content.
#[tokio::test]
async fn a_config_file_that_disappears_is_reported_and_reloaded_when_it_is_back() {
    let net = aws_net();
    let full = ConfigBuilder::scenario(net, PrivateDns::On).admin();
    let mut child = Running::start(&full.build()).await;
    let admin = child.admin();
    let path = child.config.arg().to_owned();
    assert_eq!(
        custom_domain_via(net, child.listen).await,
        Ok("public-us-east-1".into())
    );

    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {path}: {e}"));
    let warned = child.next_log("cannot read the config file").await;
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert_eq!(warned["config"], path.as_str(), "{warned}");
    let error = warned["error"].as_str().unwrap_or_default();
    assert!(error.contains("No such file or directory"), "{warned}");
    // Not a rejected reload: nothing was loaded, and the running config still serves.
    assert_eq!(reloads(admin, "error").await, 0.0);
    assert_eq!(
        custom_domain_via(net, child.listen).await,
        Ok("public-us-east-1".into())
    );

    // Back with other content: reloaded, and the new route table is in force.
    child.config.rewrite(
        full.route_key("custom-domains", "hosts", strings(["unused.example"]))
            .build(),
    );
    child.next_log("config reloaded").await;
    reloads_reach(admin, "ok", 1.0).await;
    assert_eq!(custom_domain_via(net, child.listen).await, Err("name mismatch".into()));

    child.signal("TERM").await;
    assert_eq!(child.wait().await.code(), Some(0));
    let again: Vec<String> = child
        .rest_of_log()
        .await
        .into_iter()
        .filter(|l| l.contains("cannot read the config file"))
        .collect();
    assert!(again.is_empty(), "reported more than once: {again:?}");
}
