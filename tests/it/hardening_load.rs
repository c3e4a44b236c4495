//! Load (ignored; run with `cargo test --test it hardening_load -- --ignored --nocapture`):
//! thousands of tunnels open at once, zero errors, then every descriptor back to where it
//! started. Loopback only. Two tests, because descriptors are the limit (20,000 open files per
//! process on the test machine):
//!
//! - In process, 4,000 tunnels: each costs four descriptors here (client, the proxy's accepted
//!   and upstream sockets, the echo server's end), 16,000 in all; in exchange the test can also
//!   count the proxy's tasks.
//! - The real binary, 9,000 tunnels across three processes: this test holds the clients, the
//!   proxy holds two descriptors per tunnel (18,000), and the echo upstream is this test binary
//!   re-executed as a child (support/echo_process.rs). The proxy is observed from outside: `/metrics` and `/proc/PID/fd`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::support::bin::{Running, descriptors};
use crate::support::client::admin_get;
use crate::support::config::ConfigBuilder;
use crate::support::echo_process;
use crate::support::metrics::metric;
use crate::support::proxy::{PrivateDns, TestProxy};
use crate::support::*;

/// One at a time: together the two tests would pass this process's descriptor limit (16,000 +
/// 9,000), and the in-process one counts this process's descriptors, which the other moves.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _one = ONE_AT_A_TIME.lock().await;
    let (echo, echo_open) = echo_server().await;
    let toml = ConfigBuilder::scenario(aws_net(), PrivateDns::On)
        .proxy("connect_ports", format!("[{}]", echo.port()))
        .build();
    let proxy = TestProxy::start(&toml).await;
    // Start-up resolution holds resolver sockets for a moment: count after it.
    within(HANG_SECS, "the proxy to be started", proxy.handle.wait_started()).await;
    let fds_before = open_fds();
    let mut open = Vec::with_capacity(TUNNELS);
    while open.len() < TUNNELS {
        let batch: Vec<_> = (0..BATCH.min(TUNNELS - open.len()))
            .map(|_| tokio::spawn(open_tunnel(proxy.addr, echo)))
            .collect();
        for t in batch {
            open.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("hang guard")
                    .expect("tunnel"),
            );
        }
    }
    assert_eq!(proxy.handle.open_connections(), TUNNELS, "every tunnel open at once");
    assert_eq!(*echo_open.borrow(), TUNNELS);
    drop(open);
    proxy.assert_no_leaks().await;
    let mut echo_open = echo_open.subscribe();
    let closed = echo_open.wait_for(|n| *n == 0);
    let _ = within(HANG_SECS, "the echo server to see every tunnel closed", closed).await;
    assert_eq!(open_fds(), fds_before, "descriptors back to their starting count");
    let m = proxy.handle.metrics_text();
    let ok = metric(&m, "splitway_requests_total", &[("kind", "connect"), ("outcome", "ok")]);
    assert_eq!(ok, TUNNELS as f64, "zero errors: {m}");
    proxy.stop().await;
}

// --- The real binary: 9,000 tunnels, three processes ---

const UPSTREAM_IP: &str = "127.20.0.1";
/// The proxy holds two descriptors per tunnel: 18,000 of the 20,000 allowed.
const PROCESS_TUNNELS: usize = 9_000;
/// Tunnels being opened at once: well below the listeners' accept backlog of 1024.
const OPENING: usize = 256;
/// Hang guards only: a healthy run takes a fraction of each.
const START_GUARD: Duration = Duration::from_secs(30);
const OPEN_GUARD: Duration = Duration::from_secs(180);
const SETTLE_GUARD: Duration = Duration::from_secs(60);

/// Starts the echo upstream in a child process; returns it and its address.
async fn spawn_upstream() -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", echo_process::TEST_NAME, "--ignored", "--nocapture"])
        .env(echo_process::ENV, UPSTREAM_IP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the upstream process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = async {
        // libtest prints its own lines first.
        while let Some(line) = lines.next_line().await.expect("upstream stdout") {
            if let Some(port) = line.strip_prefix("upstream-port=") {
                return port.parse::<u16>().expect("a port");
            }
        }
        panic!("the upstream process ended without printing its port");
    };
    let port = tokio::time::timeout(START_GUARD, port)
        .await
        .expect("hang guard: upstream start");
    (child, SocketAddr::new(UPSTREAM_IP.parse().expect("ip"), port))
}

/// Starts the real binary in front of `upstream`.
async fn spawn_proxy(upstream: SocketAddr) -> Running {
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nconnect_ports = [{port}]\nmax_connections = {max}\n\
         deny_destinations = [\"169.254.0.0/16\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [resolver.system]\nnameservers = [\"{VPC_DNS_PRIVATE_ON_IP}\"]\nhosts_file = false\n\n\
         [[route]]\nname = \"load\"\nhosts = [\"load.test\"]\naddresses = [\"{ip}\"]\nsni = \"any\"\n",
        port = upstream.port(),
        max = PROCESS_TUNNELS + 1_000,
        ip = upstream.ip(),
    );
    Running::start(&config).await
}

/// CONNECT, expect 200, then one echoed line: the whole pipe works.
async fn open_echoed_tunnel(proxy: SocketAddr, port: u16, i: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(&connect_request(&format!("load.test:{port}"))).await?;
    // The upstream sends nothing unasked, so every byte before our line is the response head.
    let (mut head, mut buf) = (Vec::new(), [0u8; 256]);
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200 ") {
        return Err(std::io::Error::other(format!(
            "tunnel {i}: {}",
            String::from_utf8_lossy(&head)
        )));
    }
    let line = format!("tunnel {i:05}\n");
    s.write_all(line.as_bytes()).await?;
    let mut back = vec![0u8; line.len()];
    s.read_exact(&mut back).await?;
    if back != line.as_bytes() {
        return Err(std::io::Error::other(format!("tunnel {i}: echoed {back:?}")));
    }
    Ok(s)
}

/// Opens every tunnel, `OPENING` at a time; returns the open ones and the errors.
async fn open_all(proxy: SocketAddr, port: u16) -> (Vec<TcpStream>, Vec<String>) {
    let gate = Arc::new(Semaphore::new(OPENING));
    let mut opening = JoinSet::new();
    for i in 0..PROCESS_TUNNELS {
        let gate = gate.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            open_echoed_tunnel(proxy, port, i).await
        });
    }
    let (mut open, mut errors) = (Vec::with_capacity(PROCESS_TUNNELS), Vec::new());
    while let Some(done) = opening.join_next().await {
        match done {
            Ok(Ok(s)) => open.push(s),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (open, errors)
}

/// Every series of `name` summed over its labels.
fn total(text: &str, name: &str) -> f64 {
    let of_name = |l: &&str| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    };
    text.lines()
        .filter(of_name)
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "load test: run explicitly"]
async fn hardening_load_9000_tunnels_through_the_binary() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut upstream, upstream_addr) = spawn_upstream().await;
    let mut proxy = spawn_proxy(upstream_addr).await;
    let (listen, admin) = (proxy.listen, proxy.admin());
    let (pid, upstream_pid) = (proxy.child.id().expect("running"), upstream.id().expect("running"));
    let (fds_before, upstream_fds_before) = (descriptors(pid, u64::MAX), descriptors(upstream_pid, u64::MAX));

    let (open, errors) = tokio::time::timeout(OPEN_GUARD, open_all(listen, upstream_addr.port()))
        .await
        .expect("hang guard: opening");
    assert!(
        errors.is_empty(),
        "{} of {PROCESS_TUNNELS} tunnels failed; first: {:?}",
        errors.len(),
        errors.first()
    );
    let m = admin_get(admin, "/metrics").await.1;
    let fds_peak = descriptors(pid, u64::MAX);
    let n = PROCESS_TUNNELS as f64;
    assert_eq!(
        metric(&m, "splitway_connections_open", &[]),
        n,
        "every tunnel open at once: {m}"
    );
    assert_eq!(metric(&m, "splitway_tunnels_open", &[("route", "load")]), n, "{m}");
    assert!(
        fds_peak >= fds_before + 2 * PROCESS_TUNNELS,
        "proxy descriptors: {fds_before} before, {fds_peak} at peak"
    );
    assert!(
        descriptors(upstream_pid, u64::MAX) >= upstream_fds_before + PROCESS_TUNNELS,
        "the upstream holds every tunnel's far end"
    );

    drop(open);
    // The proxy is another process: nothing signals us when it has closed everything, so poll
    // /metrics and /proc until all is back, bounded by a hang guard (timing is never asserted).
    let mut last = (String::new(), 0, 0);
    let settle = async {
        loop {
            last = (
                admin_get(admin, "/metrics").await.1,
                descriptors(pid, u64::MAX),
                descriptors(upstream_pid, u64::MAX),
            );
            let (m, fds, up) = &last;
            let idle = metric(m, "splitway_connections_open", &[]) == 0.0
                && metric(m, "splitway_tunnels_open", &[("route", "load")]) == 0.0;
            if idle && *fds == fds_before && *up == upstream_fds_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let settled = tokio::time::timeout(SETTLE_GUARD, settle).await.is_ok();
    let (m, fds_after, upstream_fds_after) = last;
    eprintln!(
        "proxy descriptors: {fds_before} before, {fds_peak} at peak, {fds_after} after; upstream: {upstream_fds_before} -> {upstream_fds_after}"
    );
    assert!(
        settled,
        "not back to the start {SETTLE_GUARD:?} after closing: proxy {fds_after} fds (was {fds_before}), upstream {upstream_fds_after} (was {upstream_fds_before})\n{m}"
    );
    assert_eq!(
        metric(&m, "splitway_requests_total", &[("kind", "connect"), ("outcome", "ok")]),
        n,
        "{m}"
    );
    assert_eq!(total(&m, "splitway_requests_total"), n, "zero errors: {m}");
    assert_eq!(
        metric(&m, "splitway_tunnels_total", &[("route", "load"), ("end", "closed")]),
        n,
        "{m}"
    );
    assert_eq!(
        total(&m, "splitway_connections_rejected_total") + total(&m, "splitway_panics_total"),
        0.0,
        "{m}"
    );

    within(HANG_SECS, "the proxy to be killed", proxy.child.kill())
        .await
        .expect("stop the proxy");
    within(HANG_SECS, "the upstream to be killed", upstream.kill())
        .await
        .expect("stop the upstream");
    let complaints: Vec<String> = proxy
        .rest_of_log()
        .await
        .into_iter()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        complaints.is_empty(),
        "{} WARN/ERROR log lines; first: {}",
        complaints.len(),
        complaints[0]
    );
}
