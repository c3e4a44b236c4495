//! `distinct-N`: N fresh tunnels to N distinct host names, and how much the proxy's resident
//! memory grew per 10,000 names: what a resolver cache costs when traffic names many hosts.
//!
//! The names (`nI.distinct.bench`) are answered by a bench DNS server on loopback (every A
//! query gets 127.0.0.1 for an hour, so nothing expires during the run). splitway asks it
//! through a named resolver; squid through `dns_nameservers`, which takes port 53 only, so
//! squid runs this workload only when the bench may bind 127.0.0.153:53. tinyproxy resolves
//! with getaddrinfo (the machine's resolver) and cannot be pointed at it: it is skipped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use crate::client::{self, Via, timed};
use crate::proxies::{Proxy, SUFFIX};
use crate::workloads::{Env, Sample};

/// Where the bench DNS listens (port 53 when allowed, for squid).
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 153);
/// Tunnels opened at once.
const OPENERS: usize = 16;
/// The whole run is bounded by this.
const BUDGET: Duration = Duration::from_secs(300);
/// Lets the proxy finish its per-tunnel work before reading its memory.
const SETTLE: Duration = Duration::from_secs(1);

/// Starts the bench DNS on its own thread; its address (port 53 if it could be bound).
pub(crate) fn start_dns() -> std::io::Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind((DNS_IP, 53)).or_else(|_| std::net::UdpSocket::bind((DNS_IP, 0)))?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            let Ok(socket) = tokio::net::UdpSocket::from_std(socket) else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answer(&buf[..len]) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
    });
    Ok(addr)
}

/// 127.0.0.1 for every A query, an empty NOERROR for any other type.
fn answer(packet: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(packet).ok()?;
    let q = req.queries.first()?.clone();
    let mut reply = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = req.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = req.queries.clone();
    if q.query_type == RecordType::A {
        let a = RData::A(A(Ipv4Addr::LOCALHOST));
        reply.answers.push(Record::from_rdata(q.name.clone(), 3600, a));
    }
    reply.to_vec().ok()
}

/// N tunnels, each to its own name, each used for one request and closed.
pub(crate) async fn distinct(env: Arc<Env>, proxy: &Proxy, n: usize) -> Sample {
    let mut sample = Sample::default();
    let before = proxy.rss_kib();
    let started = Instant::now();
    let deadline = started + BUDGET;
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..OPENERS {
        let (env, next, via) = (env.clone(), next.clone(), Via::Proxy(proxy.addr));
        set.spawn(async move {
            let mut s = Sample::default();
            let mut buf = Vec::with_capacity(1024);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline || s.errors >= 100 {
                    return s;
                }
                let target = format!("n{i}.{SUFFIX}:{}", env.plain.port());
                let t0 = Instant::now();
                let one = timed(async {
                    let mut t = client::open(via, env.plain, &target, &mut buf).await?;
                    let req = format!("GET / HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n");
                    client::exchange(&mut t, req.as_bytes(), &mut buf).await?;
                    while t.read(&mut [0u8; 512]).await? > 0 {}
                    Ok(())
                });
                match one.await {
                    Ok(()) => {
                        s.requests += 1;
                        s.latencies_us.push(t0.elapsed().as_micros() as u32);
                    }
                    Err(e) => s.failed(e),
                }
            }
        });
    }
    while let Some(done) = set.join_next().await {
        if let Ok(s) = done {
            sample.requests += s.requests;
            sample.errors += s.errors;
            sample.first_error = sample.first_error.or(s.first_error);
            sample.latencies_us.extend(s.latencies_us);
        }
    }
    sample.secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = proxy.rss_kib();
    if let (Some(b), Some(a)) = (before, after)
        && sample.requests > 0
    {
        sample.kib_per_10k_names = Some(a.saturating_sub(b) as f64 * 10_000.0 / sample.requests as f64);
    }
    sample
}

/// One `distinct-N` measurement per contender that can resolve the bench names, each on a
/// fresh process (an allocator keeps freed memory and would hide growth).
pub(crate) fn run_each(
    rt: &tokio::runtime::Runtime,
    setup: &crate::proxies::Setup,
    env: &Arc<Env>,
    kinds: &[crate::proxies::Kind],
    runs: &mut crate::report::Runs,
    rep: usize,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("distinct-{n}");
    for &k in kinds {
        let resolves = match k {
            crate::proxies::Kind::Splitway | crate::proxies::Kind::SplitwayB | crate::proxies::Kind::G3proxy => true,
            // Its PROXY header is fresh-proxy-v2's alone.
            crate::proxies::Kind::SplitwayPp => false,
            crate::proxies::Kind::Squid => env.dns.port() == 53,
            // The floors take IP literals only; tinyproxy asks the machine's resolver.
            crate::proxies::Kind::Floor | crate::proxies::Kind::RelayC | crate::proxies::Kind::Tinyproxy => false,
        };
        if !resolves {
            continue;
        }
        let p = setup.start(k)?;
        let s = rt.block_on(distinct(env.clone(), &p, n));
        eprintln!("rep {} {name:<12} {:<10} {}", rep + 1, k.name(), crate::brief(&s));
        runs.add(&name, k.name(), s);
        drop(p);
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
