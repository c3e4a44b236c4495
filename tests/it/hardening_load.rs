//! Load (ignored; run with `cargo test --test it hardening_load -- --ignored`): thousands of
//! tunnels open at once through one in-process proxy, zero errors, then every file
//! descriptor and task back to where it started. Loopback only.
//!
//! Sizing: the proxy runs in this process, so each tunnel costs four descriptors here (the
//! client socket, the proxy's accepted socket, the proxy's upstream socket, the echo server's
//! accepted socket). With the machine's limit of 20,000 open files, 4,000 tunnels (16,000
//! descriptors) leave room for the runtime, the emulated network and the test harness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::proxy::{PrivateDns, TestProxy, scenario_config};
use crate::support::*;

const TUNNELS: usize = 4_000;
/// Clients connecting at once: below the listeners' accept backlog of 1024.
const BATCH: usize = 500;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Echoes every byte; `open` counts the connections it holds.
async fn echo_server() -> (SocketAddr, Arc<watch::Sender<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(watch::Sender::new(0usize));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.send_modify(|n| *n += 1);
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                drop(s);
                counter.send_modify(|n| *n -= 1);
            });
        }
    });
    (addr, open)
}

async fn open_tunnel(proxy: SocketAddr, echo: SocketAddr) -> TcpStream {
    let (status, _, body, mut stream) = connect_raw(proxy, &connect_request(&echo.to_string())).await;
    assert_eq!(status_of(&status), 200, "{body}");
    stream.write_all(b"ping").await.expect("ping");
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.expect("pong");
    assert_eq!(&pong, b"ping");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run explicitly"]
async fn hardening_load_thousands_of_tunnels_then_nothing_left() {
    let (echo, echo_open) = echo_server().await;
    let toml = scenario_config(aws_net(), PrivateDns::On)
        .replace(&format!("connect_ports = [{}]", aws_net().port), &format!("connect_ports = [{}]", echo.port()));
    let proxy = TestProxy::start(&toml).await;
    // Start-up resolution holds resolver sockets for a moment: count after it.
    proxy.handle.wait_started().await;
    let fds_before = open_fds();
    let mut open = Vec::with_capacity(TUNNELS);
    while open.len() < TUNNELS {
        let batch: Vec<_> = (0..BATCH.min(TUNNELS - open.len())).map(|_| tokio::spawn(open_tunnel(proxy.addr, echo))).collect();
        for t in batch {
            open.push(tokio::time::timeout(Duration::from_secs(60), t).await.expect("hang guard").expect("tunnel"));
        }
    }
    assert_eq!(proxy.handle.open_connections(), TUNNELS, "every tunnel open at once");
    assert_eq!(*echo_open.borrow(), TUNNELS);
    drop(open);
    proxy.assert_no_leaks().await;
    let _ = echo_open.subscribe().wait_for(|n| *n == 0).await;
    assert_eq!(open_fds(), fds_before, "descriptors back to their starting count");
    let m = proxy.handle.metrics_text();
    let ok = crate::support::metrics::metric(&m, "splitway_requests_total", &[("kind", "connect"), ("outcome", "ok")]);
    assert_eq!(ok, TUNNELS as f64, "zero errors: {m}");
    proxy.stop().await;
}
