//! The workloads, each a bounded loop (in time and in count) on the generator's single thread.
//!
//! Fresh connections send `connection: close` and read to EOF, so the *server* closes first
//! and holds the TIME_WAIT; the generator's ephemeral ports are never exhausted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinSet;

use crate::client::{self, Via, err, timed};
use crate::upstream::TLS_NAME;

/// What every workload needs to know: the origin it reaches (the in-process upstream, or nginx
/// for the `-nginx` workloads) and the run's bounds.
pub(crate) struct Env {
    pub(crate) tls: SocketAddr,
    pub(crate) plain: SocketAddr,
    /// The CONNECT host (and `Host`) for the TLS port: `localhost` for the in-process upstream
    /// (splitway checks the SNI against it), `127.0.0.1` for nginx (an IP literal: no SNI
    /// check, no route by name). The SNI is [`TLS_NAME`] either way.
    pub(crate) tls_host: &'static str,
    /// The child-process upstream for `idle`.
    pub(crate) idle: SocketAddr,
    pub(crate) client_config: Arc<ClientConfig>,
    /// The bench DNS that answers the `distinct` names.
    pub(crate) dns: SocketAddr,
    /// Length of one timed run.
    pub(crate) run: Duration,
    pub(crate) bulk_bytes: u64,
}

/// What one run of one workload against one contender measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sample {
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latencies_us: Vec<u32>,
    /// Proxy CPU time over the measured phase.
    pub(crate) cpu: Option<Duration>,
    /// The whole machine's busy time over the measured phase (bulk): the load generator, the
    /// origin and the proxy, which share the CPUs as an application and its sidecar do.
    pub(crate) machine_cpu: Option<Duration>,
    /// RSS growth per tunnel (idle).
    pub(crate) kib_per_tunnel: Option<f64>,
    /// RSS growth per 10,000 distinct names (distinct).
    pub(crate) kib_per_10k_names: Option<f64>,
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latencies_us.extend(other.latencies_us);
    }

    pub(crate) fn failed(&mut self, e: std::io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// Clients at once in the connection workloads.
pub(crate) const CONCURRENCY: usize = 16;
/// Upper bound on requests in one run, whatever its length.
const MAX_REQUESTS: u64 = 5_000_000;
/// A run stops early after this many errors: the contender is broken, not slow.
const MAX_ERRORS: u64 = 1_000;

/// `fresh-tls` (`tls`) or `fresh-plain`: connect, CONNECT, [TLS], one GET, close.
pub(crate) async fn fresh(env: Arc<Env>, via: Via, tls: bool, cpu: impl Fn() -> Option<Duration>) -> Sample {
    let cpu0 = cpu();
    let started = Instant::now();
    let deadline = started + env.run;
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let env = env.clone();
        set.spawn(async move {
            let mut s = Sample::default();
            let mut buf = Vec::with_capacity(4096);
            while Instant::now() < deadline && s.requests < MAX_REQUESTS / CONCURRENCY as u64 && s.errors < MAX_ERRORS {
                let t0 = Instant::now();
                match timed(fresh_one(&env, via, tls, &mut buf)).await {
                    Ok(()) => {
                        s.requests += 1;
                        s.latencies_us.push(t0.elapsed().as_micros() as u32);
                    }
                    Err(e) => s.failed(e),
                }
            }
            s
        });
    }
    finish(set, started, cpu0, cpu).await
}

async fn fresh_one(env: &Env, via: Via, tls: bool, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if tls {
        let target = format!("{}:{}", env.tls_host, env.tls.port());
        let s = client::open(via, env.tls, &target, buf).await?;
        let mut s = client::tls(&env.client_config, TLS_NAME, s).await?;
        let req = format!("GET / HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n");
        client::exchange(&mut s, req.as_bytes(), buf).await?;
        // TLS close_notify then EOF: the server is done.
        while s.read(&mut [0u8; 512]).await? > 0 {}
    } else {
        let target = env.plain.to_string();
        let mut s = client::open(via, env.plain, &target, buf).await?;
        let req = format!("GET / HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n");
        client::exchange(&mut s, req.as_bytes(), buf).await?;
        while s.read(&mut [0u8; 512]).await? > 0 {}
    }
    Ok(())
}

/// `keepalive` (`tls`) or `keepalive-plain`: 16 tunnels with GETs back to back on each.
pub(crate) async fn keepalive(env: Arc<Env>, via: Via, tls: bool, cpu: impl Fn() -> Option<Duration>) -> Sample {
    let (addr, target) = match tls {
        true => (env.tls, format!("{}:{}", env.tls_host, env.tls.port())),
        false => (env.plain, env.plain.to_string()),
    };
    let mut setup = Sample::default();
    let mut tls_streams = Vec::new();
    let mut plain_streams = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut buf = Vec::new();
        let opened = timed(async {
            let s = client::open(via, addr, &target, &mut buf).await?;
            match tls {
                true => client::tls(&env.client_config, TLS_NAME, s)
                    .await
                    .map(|s| Opened::Tls(Box::new(s))),
                false => Ok(Opened::Plain(s)),
            }
        });
        match opened.await {
            Ok(Opened::Plain(s)) => plain_streams.push(s),
            Ok(Opened::Tls(s)) => tls_streams.push(*s),
            Err(e) => setup.failed(e),
        }
    }
    let req: Arc<[u8]> = format!("GET / HTTP/1.1\r\nhost: {target}\r\n\r\n").into_bytes().into();
    let cpu0 = cpu();
    let started = Instant::now();
    let deadline = started + env.run;
    let mut set = JoinSet::new();
    for s in tls_streams {
        set.spawn(back_to_back(s, req.clone(), deadline));
    }
    for s in plain_streams {
        set.spawn(back_to_back(s, req.clone(), deadline));
    }
    let mut sample = finish(set, started, cpu0, cpu).await;
    sample.merge(setup);
    sample
}

enum Opened {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Requests on one connection until the deadline, the cap, an error or the server's close.
async fn back_to_back<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: Arc<[u8]>, deadline: Instant) -> Sample {
    let mut out = Sample::default();
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline && out.requests < MAX_REQUESTS / CONCURRENCY as u64 {
        match timed(client::exchange(&mut s, &req, &mut buf)).await {
            Ok(r) if !r.closing => out.requests += 1,
            Ok(_) => return out,
            Err(e) => {
                out.failed(e);
                return out;
            }
        }
    }
    out
}

/// `bulk`: one download of `bulk_bytes` through one TLS tunnel, bounded by 30 s.
pub(crate) async fn bulk(env: Arc<Env>, via: Via, cpu: impl Fn() -> Option<Duration>) -> Sample {
    let mut sample = Sample::default();
    let target = format!("{}:{}", env.tls_host, env.tls.port());
    let mut buf = Vec::new();
    let opened = timed(async {
        let s = client::open(via, env.tls, &target, &mut buf).await?;
        client::tls(&env.client_config, TLS_NAME, s).await
    });
    let mut s = match opened.await {
        Ok(s) => s,
        Err(e) => {
            sample.failed(e);
            return sample;
        }
    };
    let req = format!("GET /bytes/{} HTTP/1.1\r\nhost: {target}\r\n\r\n", env.bulk_bytes);
    let (cpu0, machine0) = (cpu(), machine_busy());
    let started = Instant::now();
    match tokio::time::timeout(
        Duration::from_secs(30),
        client::exchange(&mut s, req.as_bytes(), &mut buf),
    )
    .await
    {
        Ok(Ok(r)) => {
            sample.requests = 1;
            sample.bytes = r.body_bytes;
        }
        Ok(Err(e)) => sample.failed(e),
        Err(_) => sample.failed(err("bulk download not done within 30s")),
    }
    sample.secs = started.elapsed().as_secs_f64();
    sample.cpu = cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    sample.machine_cpu = machine_busy().zip(machine0).map(|(b, a)| b.saturating_sub(a));
    sample
}

/// The machine's busy CPU time since boot: user, nice, system, irq and softirq of the `cpu`
/// line of `/proc/stat`, in its ticks of 10 ms (`USER_HZ`, 100 on Linux).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq …
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

/// `forward`: 16 keep-alive connections sending absolute-form `GET http://…/` (origin-form
/// when direct), reconnecting when the other end closes.
pub(crate) async fn forward(env: Arc<Env>, via: Via, cpu: impl Fn() -> Option<Duration>) -> Sample {
    let (addr, req) = match via {
        Via::Direct => (env.plain, format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", env.plain)),
        Via::Proxy(p) | Via::ProxyV2(p) => (p, format!("GET http://{0}/ HTTP/1.1\r\nhost: {0}\r\n\r\n", env.plain)),
    };
    let req: Arc<[u8]> = req.into_bytes().into();
    let cpu0 = cpu();
    let started = Instant::now();
    let deadline = started + env.run;
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let req = req.clone();
        set.spawn(async move {
            let mut out = Sample::default();
            let mut buf = Vec::with_capacity(4096);
            let mut conn = None;
            while Instant::now() < deadline
                && out.requests < MAX_REQUESTS / CONCURRENCY as u64
                && out.errors < MAX_ERRORS
            {
                let result = timed(async {
                    if let Some(s) = conn.as_mut() {
                        match client::exchange(s, &req, &mut buf).await {
                            // A kept-alive connection the server closed without saying so
                            // (tinyproxy does): retry on a new one, as HTTP clients do.
                            Err(e) if e.to_string() == client::CLOSED_BEFORE_HEAD => {}
                            other => return other,
                        }
                    }
                    let s = conn.insert(client::connect(addr).await?);
                    client::exchange(s, &req, &mut buf).await
                })
                .await;
                match result {
                    Ok(r) => {
                        out.requests += 1;
                        if r.closing {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        conn = None;
                        out.failed(e);
                    }
                }
            }
            out
        });
    }
    finish(set, started, cpu0, cpu).await
}

async fn finish(
    mut set: JoinSet<Sample>,
    started: Instant,
    cpu0: Option<Duration>,
    cpu: impl Fn() -> Option<Duration>,
) -> Sample {
    let mut total = Sample::default();
    while let Some(s) = set.join_next().await {
        match s {
            Ok(s) => total.merge(s),
            Err(e) => total.failed(err(format!("worker panicked: {e}"))),
        }
    }
    total.secs = started.elapsed().as_secs_f64();
    total.cpu = cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    total
}
