//! A fake recursive DNS server over UDP and TCP, answering from a `Zone`, with fault modes
//! and a query log for tests.
//!
//! TCP is served on the same port as UDP because a client retries over TCP when an answer
//! comes back truncated (RFC 7766); real resolvers listen on both.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

use super::bound::{HANG_SECS, within};
use super::zone::{RecordData, Zone, ZoneRecord, normalize};

/// How the server treats the queries it receives (every query is logged in every mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DnsMode {
    /// Answer from the zone.
    Normal,
    /// Read the query and never answer: a resolver that is down or filtered.
    Blackhole,
    /// Answer SERVFAIL to everything.
    ServFail,
}

struct Shared {
    zone: Mutex<Zone>,
    mode: Mutex<DnsMode>,
    log: Mutex<Vec<(String, String)>>,
    /// How many queries were logged, for tests that wait on them.
    count: tokio::sync::watch::Sender<usize>,
}

/// A running fake DNS server. Its tasks live on the runtime that started it and are aborted
/// when it is dropped.
pub(crate) struct FakeDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl FakeDns {
    /// Starts a server on `ip` with an ephemeral port, UDP and TCP alike.
    pub(crate) async fn start(ip: IpAddr, zone: Zone) -> Self {
        let (udp, tcp) = bind_udp_and_tcp(ip).await;
        Self::serve(udp, tcp, zone)
    }

    /// A server on port 53 of `ip`, for programs that cannot be told another port (Squid's
    /// `dns_nameservers`); `None` when port 53 cannot be bound (not root).
    pub(crate) async fn start_on_53(ip: IpAddr, zone: Zone) -> Option<Self> {
        let udp = UdpSocket::bind((ip, 53)).await.ok()?;
        let tcp = TcpListener::bind((ip, 53)).await.ok()?;
        Some(Self::serve(udp, tcp, zone))
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, zone: Zone) -> Self {
        let addr = udp.local_addr().expect("bound UDP socket has an address");
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone),
            mode: Mutex::new(DnsMode::Normal),
            log: Mutex::new(Vec::new()),
            count: tokio::sync::watch::Sender::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, shared.clone())).abort_handle(),
            tokio::spawn(serve_tcp(tcp, shared.clone())).abort_handle(),
        ];
        Self { addr, shared, tasks }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn set_mode(&self, mode: DnsMode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Replaces the data answered from now on (e.g. to change where a name points).
    pub(crate) fn set_zone(&self, zone: Zone) {
        *lock(&self.shared.zone) = zone;
    }

    /// Every query received so far: (name lowercased without trailing dot, type as "A"/"AAAA").
    pub(crate) fn queries(&self) -> Vec<(String, String)> {
        lock(&self.shared.log).clone()
    }

    pub(crate) fn query_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// What this server would answer for `host` (first address, following CNAMEs), read from
    /// its zone without a network round trip.
    pub(crate) fn lookup(&self, host: &str) -> Option<IpAddr> {
        lock(&self.shared.zone).lookup(host)
    }

    /// Resolves once `host` has been asked about `n` times in all (any type).
    pub(crate) async fn wait_queries_for(&self, host: &str, n: usize) {
        let mut rx = self.shared.count.subscribe();
        let _ = rx
            .wait_for(|_| self.queries().iter().filter(|(name, _)| name == host).count() >= n)
            .await;
    }

    pub(crate) fn clear_queries(&self) {
        lock(&self.shared.log).clear();
    }

    /// This server's answering (zone, mode, query log) for a front end on another transport.
    pub(crate) fn responder(&self) -> Responder {
        Responder(self.shared.clone())
    }
}

/// Answers queries exactly as its `FakeDns` does, logged in its query log: DNS over TLS and
/// over HTTPS (`dns_tls.rs`) are other ways in to the same server.
#[derive(Clone)]
pub(crate) struct Responder(Arc<Shared>);

impl Responder {
    /// The encoded reply to one encoded query; `None` for garbage or in blackhole mode.
    pub(crate) fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.0.answer(packet)
    }

    /// Serves length-prefixed messages on `stream` until the client closes it.
    pub(crate) async fn serve_stream<S>(self, stream: S) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        serve_tcp_connection(stream, self.0).await
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.tasks.iter().for_each(AbortHandle::abort);
    }
}

/// A panicking test must not turn every later use of the shared servers into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn bind_udp_and_tcp(ip: IpAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..32 {
        let udp = UdpSocket::bind((ip, 0)).await.expect("bind fake DNS UDP socket");
        let port = udp.local_addr().expect("UDP socket address").port();
        match TcpListener::bind((ip, port)).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("bind fake DNS TCP listener on {ip}:{port}: {e}"),
        }
    }
    panic!("no port free for both UDP and TCP on {ip}")
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = shared.answer(&buf[..len]) {
            // A lost reply is what UDP does; the client's retry covers it.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so aborting this task closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_tcp_connection(stream, shared.clone()));
    }
}

/// Two-byte length-prefixed messages, several per connection (RFC 1035 §4.2.2, RFC 7766);
/// DNS over TLS frames its messages the same way inside TLS (RFC 7858 §3.3).
async fn serve_tcp_connection<S>(mut stream: S, shared: Arc<Shared>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        if let Some(reply) = shared.answer(&buf) {
            let len = u16::try_from(reply.len()).map_err(io::Error::other)?;
            stream.write_u16(len).await?;
            stream.write_all(&reply).await?;
        }
    }
}

impl Shared {
    /// The encoded reply to one encoded query; `None` for garbage or in blackhole mode.
    fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        let query = request.queries.first()?.clone();
        let name = normalize(&query.name.to_ascii());
        lock(&self.log).push((name.clone(), query.query_type.to_string()));
        self.count.send_modify(|n| *n += 1);
        let mut reply = reply_to(&request);
        match *lock(&self.mode) {
            DnsMode::Blackhole => return None,
            DnsMode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
            DnsMode::Normal => fill(&mut reply, &query, &name, &lock(&self.zone)),
        }
        reply.to_vec().ok()
    }
}

fn reply_to(request: &Message) -> Message {
    let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    // A server must answer EDNS with EDNS (RFC 6891 §6.1.1).
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        reply.edns = Some(edns);
    }
    reply
}

/// Answers from the zone; a negative answer carries an SOA so it can be cached (RFC 2308).
fn fill(reply: &mut Message, query: &Query, name: &str, zone: &Zone) {
    let resolution = zone.resolve(name, query.query_type);
    reply.metadata.response_code = resolution.rcode;
    for record in &resolution.answers {
        // The first owner keeps the question's spelling: clients match it case-sensitively.
        let owner = if record.name == name {
            query.name.clone()
        } else {
            fqdn(&record.name)
        };
        reply.answers.push(to_record(owner, record));
    }
    let positive = resolution
        .answers
        .iter()
        .any(|r| r.data.record_type() == query.query_type);
    if !positive && resolution.rcode != ResponseCode::ServFail {
        reply
            .authorities
            .push(soa(resolution.last_name(name), zone.get_negative_ttl()));
    }
}

fn to_record(owner: Name, record: &ZoneRecord) -> Record {
    let data = match &record.data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(target) => RData::CNAME(CNAME(fqdn(target))),
    };
    Record::from_rdata(owner, record.ttl, data)
}

/// An SOA for the zone apex of `name`, taken to be its last two labels (e.g. `amazonaws.com`).
fn soa(name: &str, negative_ttl: u32) -> Record {
    let labels: Vec<&str> = name.split('.').collect();
    let apex = labels[labels.len().saturating_sub(2)..].join(".");
    let data = SOA::new(
        fqdn("ns.fake-dns.test"),
        fqdn("hostmaster.fake-dns.test"),
        1,
        3600,
        600,
        86400,
        negative_ttl,
    );
    Record::from_rdata(fqdn(&apex), negative_ttl, RData::SOA(data))
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).expect("zone names are valid DNS names")
}

/// Sends one query over UDP and returns the decoded reply (for tests of the fake itself).
pub(crate) async fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(fqdn(&normalize(name)), qtype));
    let socket = UdpSocket::bind((server.ip(), 0)).await.expect("bind UDP client");
    socket.connect(server).await.expect("connect UDP client");
    let query = request.to_vec().expect("encode query");
    within(HANG_SECS, "the query sent", socket.send(&query))
        .await
        .expect("send query");
    let mut buf = vec![0u8; 4096];
    let len = within(HANG_SECS, format!("a DNS reply from {server}"), socket.recv(&mut buf))
        .await
        .expect("receive DNS reply");
    Message::from_vec(&buf[..len]).expect("decode DNS reply")
}
