//! The open-file limit. At it, `accept` fails and the connection waits in the listener's
//! backlog; with every descriptor held by an open tunnel, no retry would ever succeed. The
//! proxy keeps a spare descriptor for that moment, so the client gets a `503` it can read, and
//! serves again once descriptors are free. The real binary runs under `prlimit`, so the limit
//! is its own and not the test process's.

use tokio::net::TcpStream;

use crate::support::bin::{Running, descriptors};
use crate::support::config::loopback_toml;
use crate::support::origin::sink_origin;
use crate::support::raw::{assert_refused, closed, exchange};
use crate::support::*;

/// Low enough to reach in a few dozen tunnels, high enough for the process's own descriptors.
const NOFILE: u64 = 64;

#[tokio::test]
async fn at_the_open_file_limit_a_client_gets_503_and_is_served_once_descriptors_free() {
    let up = sink_origin().await;
    let toml = loopback_toml(up.port());
    let mut proxy = Running::spawn_with_nofile(&toml, NOFILE);
    // The hard limit is the soft one: nothing to raise, and too low for max_connections.
    let warned = proxy.next_log("open-file limit holds about").await;
    assert_eq!(warned["limit"], NOFILE, "{warned}");
    assert_eq!(warned["max_connections"], 10_000, "{warned}");
    proxy.wait_serving().await;
    let pid = proxy.child.id().expect("splitway is running");
    let before = descriptors(pid, NOFILE);

    // The most of three readings: the config watcher opens the file for a moment now and then.
    let free = || {
        (0..3)
            .map(|_| NOFILE as usize - descriptors(pid, NOFILE))
            .max()
            .unwrap_or(0)
    };
    let connect = format!("CONNECT {up} HTTP/1.1\r\nhost: {up}\r\n\r\n");
    let mut held = Vec::new();
    while free() > 1 {
        let (reply, stream) = exchange(proxy.listen, connect.as_bytes()).await;
        assert_eq!(
            reply.status,
            Some(200),
            "{} tunnels, {} descriptors free: {reply:?}",
            held.len(),
            free()
        );
        held.push(stream);
    }
    assert!(held.len() > 4, "only {} tunnels before the limit", held.len());
    // A connection that sends nothing holds one descriptor while it waits for its head.
    let mut waiting = Vec::new();
    let mut hold_one = async |free_after: usize| {
        let stream = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy.listen))
            .await
            .expect("connect");
        waiting.push(stream);
        poll_until(HANG_SECS, format!("{free_after} descriptors free"), || async {
            (free() == free_after).then_some(())
        })
        .await;
    };
    if free() == 0 {
        drop(held.pop());
        poll_until(HANG_SECS, "a closed tunnel's descriptors back", || async {
            (free() == 2).then_some(())
        })
        .await;
        hold_one(1).await;
    }

    // One descriptor free: the client is accepted, and its upstream socket is refused.
    let (reply, mut refused) = exchange(proxy.listen, connect.as_bytes()).await;
    assert_refused(&reply, 503, "connection_limit_reached", "out of file descriptors");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    assert!(closed(&mut refused).await);

    // None free: the client waits in the backlog, until the spare is given up for it.
    hold_one(0).await;
    let (reply, mut refused) = exchange(proxy.listen, connect.as_bytes()).await;
    assert_refused(&reply, 503, "connection_limit_reached", "out of file descriptors");
    let client = refused.local_addr().expect("addr").to_string();
    assert!(closed(&mut refused).await);
    let line = proxy.next_log("connection refused: out of file descriptors").await;
    assert_eq!(line["client"], client, "refused when accepted, on the spare: {line}");
    assert_eq!(line["listener"], "proxy", "{line}");

    // Descriptors free again: served again, and nothing of the refusals is left open.
    drop((waiting, held));
    let (reply, tunnel) = exchange(proxy.listen, connect.as_bytes()).await;
    assert_eq!(reply.status, Some(200), "served once descriptors are free: {reply:?}");
    drop(tunnel);
    poll_until(HANG_SECS, "splitway's descriptors back to before the limit", || async {
        (descriptors(pid, NOFILE) <= before).then_some(())
    })
    .await;
}
