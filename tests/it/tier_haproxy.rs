//! A real HAProxy (TCP mode, `send-proxy-v2`, HTTP health checks on `/healthz`) as the
//! Network Load Balancer in front of two splitway replicas (the real binary): the seed's
//! scenarios through it, the canonical line with the real client and the load balancer as
//! `peer`, a policy by source address, and a rolling restart (SIGTERM with `drain_delay`)
//! while requests run, failing none. Everything on loopback addresses of its own, like the
//! rest of the emulated network.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;

use crate::support::apigw::ok_body;
use crate::support::bin::Running;
use crate::support::client::{admin_get, client_or_skip, get_over_tls, tls_over};
use crate::support::config::{ConfigBuilder, strings};
use crate::support::haproxy::{DRAIN_GUARD, HaProxy, INSTALL, Replica, haproxy_available};
use crate::support::proxy::PrivateDns;
use crate::support::wire::read_response;
use crate::support::*;

const LB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 30, 0, 10));
/// Where HAProxy connects to the replicas from: the `peer` they see.
const LB_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 30, 0, 1));
/// A client of the `internal` policy (every route) and one of `restricted` (custom domains).
const INTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 20, 0, 5));
const RESTRICTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 21, 0, 5));

fn replica_config() -> String {
    ConfigBuilder::scenario(aws_net(), PrivateDns::On)
        .admin()
        .proxy_str("proxy_protocol", "required")
        .proxy("proxy_protocol_from", strings([LB_SOURCE]))
        .proxy_str("drain_delay", "5s")
        .proxy_str("drain_timeout", "20s")
        .section(
            "[[client]]\nname = \"internal\"\nsources = [\"127.20.0.0/16\"]\nroutes = [\"*\"]\n\n\
             [[client]]\nname = \"restricted\"\nsources = [\"127.21.0.0/16\"]\nroutes = [\"custom-domains\"]\n",
        )
        .build()
}

fn replica(r: &Running) -> Replica {
    Replica {
        proxy: r.listen,
        admin: r.admin(),
    }
}

/// One call through the load balancer from `source`: CONNECT, then (on 200) a GET over TLS.
/// The CONNECT's status and what the API answered, or what went wrong.
async fn call(lb: &HaProxy, source: IpAddr, host: &str) -> Result<(u16, String), String> {
    let mut s = lb.connect_from(source).await;
    let request = connect_request(&format!("{host}:{}", aws_net().port));
    s.write_all(&request).await.map_err(|e| format!("send CONNECT: {e}"))?;
    let head = within(HANG_SECS, "the CONNECT's answer", read_response(&mut s))
        .await
        .ok_or("closed before answering the CONNECT")?;
    if head.status != 200 {
        return Ok((head.status, head.body));
    }
    let tls = tls_over(s, host, &aws_net().ca_der)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (status, body) = get_over_tls(tls, host).await;
    Ok((status, body))
}

#[tokio::test]
async fn tier_haproxy_two_replicas_policy_log_and_rolling_restart() {
    if !client_or_skip("haproxy", haproxy_available(), INSTALL) {
        return;
    }
    let toml = replica_config();
    let mut a = Running::start(&toml).await;
    let mut b = Running::start(&toml).await;
    let lb = Arc::new(HaProxy::start(LB, LB_SOURCE, &[replica(&a), replica(&b)]).await);

    // The seed's scenarios, through the load balancer, round robin over both replicas.
    for (host, endpoint) in crate::scenarios::expectations() {
        let (status, body) = call(&lb, INTERNAL, &host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains(&format!("\"endpoint\":\"{endpoint}\"")), "{host}: {body}");
    }
    // The canonical line: the real client, the load balancer as peer, the client policy.
    for replica in [&mut a, &mut b] {
        let line = replica.next_log("tunnel closed").await;
        assert!(
            line["client"].as_str().is_some_and(|c| c.starts_with("127.20.0.5:")),
            "{line}"
        );
        assert!(
            line["peer"].as_str().is_some_and(|p| p.starts_with("127.30.0.1:")),
            "{line}"
        );
        assert_eq!(line["client_name"], "internal", "{line}");
        // The line's connection span, made again at the tunnel's close (an idle tunnel holds
        // none): the same names as the span the PROXY header filled in at its start.
        let span = &line["span"];
        assert_eq!(span["name"], "conn", "{line}");
        assert_eq!(span["listener"], "proxy", "{line}");
        assert_eq!(span["client"], line["client"], "{line}");
        assert_eq!(span["peer"], line["peer"], "{line}");
    }
    // A policy by source address: `restricted` may reach its custom domains only.
    let private = execute_api_host(PRIVATE_API_ID, REGION);
    let (status, body) = call(&lb, RESTRICTED, &private).await.expect("refusal");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("client policy `restricted` may not use route `private-apis`"),
        "{body}"
    );
    let (status, body) = call(&lb, RESTRICTED, CUSTOM_DOMAIN).await.expect("custom domain");
    assert_eq!((status, body), (200, ok_body("public-us-east-1", CUSTOM_DOMAIN)));

    // A rolling restart of replica r0 while requests run: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (lb, stop, done, private) = (lb.clone(), stop.clone(), done.clone(), private.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match call(&lb, INTERNAL, &private).await {
                    Ok((200, _)) => {}
                    other => failures.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    let before = done.load(Ordering::Relaxed);
    a.signal("TERM").await;
    let admin = a.admin();
    poll_until(HANG_SECS, "r0 to report draining on /readyz", || async move {
        (admin_get(admin, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    // /healthz stays 200 while it drains: the load balancer would reset its flows otherwise.
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
    // During drain_delay r0 still takes new connections (the load is one request at a time,
    // so at most one of these was open before the SIGTERM).
    a.next_log("accepting for drain_delay").await;
    for _ in 0..10 {
        a.next_log("tunnel closed").await;
    }
    // The load balancer deregisters it (an NLB takes a while: drain_delay covers it).
    lb.command("set server splitway/r0 state drain").await;
    let exited = within(DRAIN_GUARD.as_secs(), "r0 to finish its drain", a.wait()).await;
    assert!(exited.success(), "r0 exits 0 after its drain: {exited}");
    let a2 = Running::start(&toml).await;
    lb.replace("r0", replica(&a2)).await;
    let during = done.load(Ordering::Relaxed);
    poll_until(HANG_SECS, "requests on the restarted tier", || {
        let n = done.load(Ordering::Relaxed);
        async move { (n >= during + 10).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let failures = within(HANG_SECS, "the load to stop", load).await.expect("load task");
    assert!(
        failures.is_empty(),
        "requests failed during the rolling restart: {failures:?}"
    );
    assert!(
        during > before,
        "requests ran during the restart ({before} -> {during})"
    );
    drop(a2);
    drop(b);
}
