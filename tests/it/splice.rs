//! Bulk transfers through the binary are copied through the serving thread's buffer unless
//! `SPLITWAY_SPLICE=on` asks for `splice(2)`: seen from outside by the pipes the process holds
//! (a burst borrows one from a pool, which keeps it once the burst is over).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::bin::{Running, open_fds};
use crate::support::config::loopback_toml;
use crate::support::origin::sink_origin;
use crate::support::raw::exchange;
use crate::support::*;

/// Bytes sent up the tunnel: many times the 64 KiB buffer a read fills before a direction
/// counts as bulk.
const UPLOAD: usize = 8 << 20;

/// The pipes the process holds beyond its standard streams (which the test harness pipes).
fn pipes(proxy: &Running) -> usize {
    let pid = proxy.child.id().expect("splitway is running");
    open_fds(pid)
        .into_iter()
        .filter(|(fd, target)| *fd > 2 && target.starts_with("pipe:"))
        .count()
}

/// Sends [`UPLOAD`] bytes through a tunnel to a sink, half-closes, and waits for the tunnel's
/// end; returns how many more pipes the proxy holds then than before the tunnel.
async fn pipes_after_an_upload(env: &[(&str, &str)]) -> usize {
    let sink = sink_origin().await;
    let mut proxy = Running::spawn(&loopback_toml(sink.port()), &["run"], env);
    proxy.wait_serving().await;
    // Before any tunnel; one may be inherited (cargo's jobserver pipe).
    let before = pipes(&proxy);
    let (reply, mut tunnel) = exchange(proxy.listen, &connect_request(&sink.to_string())).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    let upload = async {
        tunnel
            .write_all(&vec![7u8; UPLOAD])
            .await
            .expect("upload through the tunnel");
        tunnel.shutdown().await.expect("half-close");
        // The sink closes once it has read everything; the proxy then closes the tunnel.
        let mut rest = Vec::new();
        tunnel.read_to_end(&mut rest).await.expect("the tunnel's end");
    };
    within(HANG_SECS, "an 8 MiB upload through the tunnel", upload).await;
    proxy.next_log("\"bytes_up\"").await;
    let held = pipes(&proxy) - before;
    proxy.signal("TERM").await;
    assert_eq!(proxy.wait().await.code(), Some(0));
    held
}

#[tokio::test]
async fn bulk_transfers_are_copied_unless_splice_is_asked_for() {
    assert_eq!(pipes_after_an_upload(&[]).await, 0, "SPLITWAY_SPLICE unset: no pipe");
    assert_eq!(
        pipes_after_an_upload(&[("SPLITWAY_SPLICE", "off")]).await,
        0,
        "off: no pipe"
    );
    // One pooled pipe: its two ends.
    assert_eq!(
        pipes_after_an_upload(&[("SPLITWAY_SPLICE", "on")]).await,
        2,
        "on: the pooled pipe"
    );
}

#[tokio::test]
async fn a_bad_splice_setting_stops_the_start_naming_it() {
    let mut proxy = Running::spawn(&loopback_toml(9), &["run"], &[("SPLITWAY_SPLICE", "yes")]);
    let status = proxy.wait().await;
    assert_eq!(status.code(), Some(1));
    let said = proxy.rest_of_log().await.join("\n");
    assert!(
        said.contains("SPLITWAY_SPLICE=`yes`: give `on` (bulk transfers splice) or `off`, or unset it (off)"),
        "{said}"
    );
}
