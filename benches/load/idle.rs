//! `idle`: open N tunnels, use each once, leave them open, and read how much the proxy's
//! resident memory grew per tunnel.
//!
//! Each tunnel goes to the child-process upstream by IP (no SNI wait) and carries one request
//! and response first, so the proxy holds it as it holds a pooled keep-alive connection that
//! has been used: fully set up, then quiet. A fresh proxy process is started for every
//! measurement, because an allocator keeps freed memory and would hide a second run's growth.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::client::{self, Via, timed};
use crate::proxies::Proxy;
use crate::workloads::{Env, Sample};

/// Tunnels opened at once while building up the idle set.
const OPENERS: usize = 64;
/// The whole build-up is bounded by this.
const OPEN_BUDGET: Duration = Duration::from_secs(120);
/// Lets the proxy finish its per-tunnel work (tasks parked, buffers returned) before reading.
const SETTLE: Duration = Duration::from_secs(1);

pub(crate) async fn idle(env: Arc<Env>, proxy: &Proxy, n: usize) -> Sample {
    let mut sample = Sample::default();
    let before = proxy.rss_kib();
    let started = Instant::now();
    let deadline = started + OPEN_BUDGET;
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..OPENERS {
        let (env, next, via) = (env.clone(), next.clone(), Via::Proxy(proxy.addr));
        set.spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut s = Sample::default();
            let mut buf = Vec::with_capacity(1024);
            let target = env.idle.to_string();
            let req = format!("GET / HTTP/1.1\r\nhost: {target}\r\n\r\n");
            while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline && s.errors < 100 {
                let opened = timed(async {
                    let mut t = client::open(via, env.idle, &target, &mut buf).await?;
                    client::exchange(&mut t, req.as_bytes(), &mut buf).await?;
                    Ok(t)
                });
                match opened.await {
                    Ok(t) => held.push(t),
                    Err(e) => s.failed(e),
                }
            }
            (held, s)
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        if let Ok((streams, s)) = done {
            held.extend(streams);
            sample.errors += s.errors;
            sample.first_error = sample.first_error.or(s.first_error);
        }
    }
    sample.secs = started.elapsed().as_secs_f64();
    sample.requests = held.len() as u64;
    tokio::time::sleep(SETTLE).await;
    let after = proxy.rss_kib();
    if let (Some(b), Some(a)) = (before, after)
        && !held.is_empty()
    {
        sample.kib_per_tunnel = Some(a.saturating_sub(b) as f64 / held.len() as f64);
    }
    drop(held);
    sample
}

/// The `idle` upstream, in its own process so that its sockets do not count against the
/// generator's open-file limit. Its stdin is our pipe: it exits when we do.
pub(crate) fn spawn_upstream() -> std::io::Result<(Child, u16)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--upstream-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("upstream child said `{line}`")))?;
    Ok((child, port))
}
