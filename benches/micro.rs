//! Criterion micro-benchmarks of the per-request hot paths: `cargo bench --bench micro`.
//!
//! - route lookup in a table of 10,000 routes (exact, wildcard, miss);
//! - SNI extraction from a real ClientHello (made by rustls);
//! - CONNECT target parsing;
//! - a DNS answer served from a resolver's cache (filled once from a fake UDP server): a
//!   pinned route host, and one name of a full bounded cache of 10,000.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use rustls::pki_types::ServerName;
use splitway::Config;
use splitway::RouteTable;
use splitway::dns::Resolver;
use splitway::metrics::Metrics;
use splitway::sni::{self, Hello};
use splitway::target::{Host, Target};
use std::hint::black_box;

/// Routes in the table under `cargo bench`. `cargo test --all-targets` runs this binary too
/// (without `--bench`), once per benchmark in a debug build, where parsing 10,000 routes takes
/// minutes (config line lookup is quadratic), so the test run uses a smaller table.
fn routes() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        1_000
    }
}

/// Half exact names, half wildcards, one host each, and two resolvers to pick from.
fn big_config(routes: usize) -> String {
    let mut toml = String::from("[resolver.public]\nnameservers = [\"192.0.2.1\"]\n");
    for i in 0..routes {
        let (host, resolver) = if i % 2 == 0 {
            (format!("api{i}.tenant{}.example.com", i % 97), "system")
        } else {
            (format!("*.svc{i}.region{}.example.net", i % 13), "public")
        };
        toml.push_str(&format!(
            "\n[[route]]\nname = \"r{i}\"\nhosts = [\"{host}\"]\nresolver = \"{resolver}\"\n"
        ));
    }
    toml
}

fn route_lookup(c: &mut Criterion) {
    let n = routes();
    let config = Config::from_toml(&big_config(n), "bench.toml").expect("generated config is valid");
    let table = RouteTable::new(&config.routes).expect("no clashes");
    let (e, w) = (n / 2, n / 2 + 1);
    let exact = Host::Name(format!("api{e}.tenant{}.example.com", e % 97));
    let wildcard = Host::Name(format!("a.b.c.svc{w}.region{}.example.net", w % 13));
    let miss = Host::Name("nothing.here.example.org".into());
    assert_eq!(*table.lookup(&exact).name, *format!("r{e}"));
    assert_eq!(*table.lookup(&wildcard).name, *format!("r{w}"));
    assert_eq!(&*table.lookup(&miss).name, "default");
    let mut g = c.benchmark_group(format!("route_lookup_{n}"));
    g.bench_function("exact", |b| b.iter(|| black_box(table.lookup(black_box(&exact)))));
    g.bench_function("wildcard_depth3", |b| {
        b.iter(|| black_box(table.lookup(black_box(&wildcard))))
    });
    g.bench_function("miss", |b| b.iter(|| black_box(table.lookup(black_box(&miss)))));
    g.finish();
}

/// The first flight of a real rustls client (TLS 1.2 + 1.3, SNI, ALPN, key shares).
fn client_hello(name: &'static str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = ServerName::try_from(name).expect("valid name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("client connection");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("write to a Vec");
    out
}

fn sni_parse(c: &mut Criterion) {
    let hello = client_hello("bmf11pk5je.execute-api.us-east-1.amazonaws.com");
    let expected = Hello::Complete {
        sni: Some("bmf11pk5je.execute-api.us-east-1.amazonaws.com".into()),
        ech: false,
    };
    assert_eq!(sni::parse_client_hello(&hello, sni::MAX_CLIENT_HELLO), expected);
    let half = &hello[..hello.len() / 2];
    let mut g = c.benchmark_group("sni");
    g.bench_function("client_hello_complete", |b| {
        b.iter(|| sni::parse_client_hello(black_box(&hello), sni::MAX_CLIENT_HELLO))
    });
    g.bench_function("client_hello_half", |b| {
        b.iter(|| sni::parse_client_hello(black_box(half), sni::MAX_CLIENT_HELLO))
    });
    g.finish();
}

fn target_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("connect_target");
    for (label, s) in [
        ("name", "bmf11pk5je.execute-api.us-east-1.amazonaws.com:443"),
        ("ipv4", "10.1.5.20:443"),
        ("ipv6", "[2001:db8::1]:443"),
    ] {
        assert!(Target::parse_authority(s).is_ok());
        g.bench_function(label, |b| b.iter(|| Target::parse_authority(black_box(s))));
    }
    g.finish();
}

/// A DNS server that answers every A query with 10.0.0.1 (TTL 1h) and every other type with
/// an empty NOERROR: all a cache-hit benchmark needs.
async fn fake_dns() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 53), 0))
        .await
        .expect("bind fake DNS");
    let addr = socket.local_addr().expect("bound");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let Ok(req) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(q) = req.queries.first().cloned() else {
                continue;
            };
            let mut reply = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
            reply.metadata.recursion_desired = req.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.queries = req.queries.clone();
            if q.query_type == RecordType::A {
                reply.answers.push(Record::from_rdata(
                    q.name.clone(),
                    3600,
                    RData::A(A(Ipv4Addr::new(10, 0, 0, 1))),
                ));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// Polls a future that must finish without waiting (a cache hit does).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit should not wait"),
    }
}

/// Names in the full cache under `cargo bench` (the default `cache_size`); fewer in a test run.
fn cached_names() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    }
}

/// The hit path on every connection: a pinned route host, and one name among a full
/// bounded cache (`cache_size` names, each resolved once from the fake server).
fn dns_cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(fake_dns());
    let n = cached_names();
    let toml = format!(
        "[resolver.fake]\nnameservers = [\"udp://{server}\"]\nmin_ttl = \"1h\"\nmax_ttl = \"1h\"\ncache_size = {n}\n"
    );
    let config = Config::from_toml(&toml, "bench.toml").expect("valid resolver config");
    let resolver = Resolver::new("fake", &config.resolvers["fake"], Arc::new(Metrics::new())).expect("resolver");
    let host = "api.bench.test";
    resolver.pin([host]);
    let (first, _) = rt.block_on(resolver.resolve(host));
    assert!(first.is_ok(), "the fake server answers: {first:?}");
    let names: Vec<String> = (0..n).map(|i| format!("n{i}.bench.test")).collect();
    for name in &names {
        assert!(rt.block_on(resolver.resolve(name)).0.is_ok());
    }
    let kept = names
        .iter()
        .rev()
        .find(|n| now(resolver.resolve(n)).1 == splitway::dns::Source::Hit);
    let kept = kept.expect("the full cache holds names").clone();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("dns_cache_hit");
    g.bench_function("pinned", |b| b.iter(|| now(resolver.resolve(black_box(host)))));
    g.bench_function(format!("bounded_full_{n}"), |b| {
        b.iter(|| now(resolver.resolve(black_box(&kept))))
    });
    g.finish();
}

criterion_group!(benches, route_lookup, sni_parse, target_parse, dns_cache_hit);
criterion_main!(benches);
