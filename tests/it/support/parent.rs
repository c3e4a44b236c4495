//! A parent proxy in Rust for the faults a real one (Squid) cannot be made to do on cue: it
//! records every CONNECT it receives (request line and headers) and answers as told.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::bound::{HANG_SECS, poll_until};
use super::net::{AwsNet, Resolver};

/// How the parent answers a CONNECT.
#[derive(Clone, Debug)]
pub(crate) enum Behaviour {
    /// Connects to the asked target (a name resolved as the VPC resolver with Private DNS on
    /// answers, as a parent inside the VPC would), answers 200 and relays. With `auth`, a
    /// request without exactly this `Proxy-Authorization` gets 407.
    Relay { auth: Option<String> },
    /// Answers this status (with `Content-Length: 0`).
    Status(u16),
    /// Reads the CONNECT and never answers.
    Silent,
    /// Sends half a status line, then resets the connection.
    ResetMidReply,
    /// Sends bytes that are not HTTP, then closes.
    Garbage,
    /// Answers 200, then this banner in the same write (a server-first protocol), then
    /// keeps the connection open and silent until the client closes it.
    OkThen(&'static [u8]),
}

/// What the parent received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// `CONNECT host:port HTTP/1.1`.
    pub(crate) line: String,
    /// Header names lowercased.
    pub(crate) headers: Vec<(String, String)>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub(crate) struct TestParent {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl TestParent {
    pub(crate) async fn start(ip: IpAddr, net: &'static AwsNet, behaviour: Behaviour) -> TestParent {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the test parent");
        let addr = listener.local_addr().expect("parent address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, behaviour) = (log.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, net, behaviour, log).await;
                });
            }
        });
        TestParent { addr, received, task }
    }

    /// Every CONNECT received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().expect("parent log").clone()
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on: a parent that is down.
pub(crate) async fn down_parent(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    addr
}

async fn serve(
    mut stream: TcpStream,
    net: &'static AwsNet,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let Some(req) = read_head(&mut stream).await? else {
        return Ok(());
    };
    log.lock().expect("parent log").push(req.clone());
    if !req.line.starts_with("CONNECT ") {
        // Plain HTTP in absolute-form: answered by the parent itself, saying what it got.
        let body = format!("parent got {}", req.line);
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        return stream.write_all(reply.as_bytes()).await;
    }
    match behaviour {
        Behaviour::Relay { auth } => {
            if auth.is_some() && req.header("proxy-authorization") != auth.as_deref() {
                let reply = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n";
                return stream.write_all(reply.as_bytes()).await;
            }
            let asked = req.line.split(' ').nth(1).unwrap_or_default().to_owned();
            let Some(upstream) = resolve(net, &asked) else {
                return stream
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    .await;
            };
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    .await;
            };
            stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
            tokio::io::copy_bidirectional(&mut stream, &mut up).await.map(|_| ())
        }
        Behaviour::Status(code) => {
            let reply = format!("HTTP/1.1 {code} Refused\r\nContent-Length: 0\r\n\r\n");
            stream.write_all(reply.as_bytes()).await
        }
        Behaviour::Silent => {
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).await? > 0 {}
            Ok(())
        }
        Behaviour::ResetMidReply => {
            stream.write_all(b"HTTP/1.1 200 Conn").await?;
            stream.flush().await?;
            // The reset must come after the proxy has read the half reply: a reset with bytes
            // still unsent or unread would discard them, and the fault would be another one.
            let (me, proxy) = (stream.local_addr()?, stream.peer_addr()?);
            poll_until(HANG_SECS, "the proxy to read the half reply", || async move {
                let sent = tcp_queues(me, proxy)?.0 == 0;
                let read = tcp_queues(proxy, me)?.1 == 0;
                (sent && read).then_some(())
            })
            .await;
            stream.set_zero_linger()?;
            drop(stream);
            Ok(())
        }
        Behaviour::Garbage => stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await,
        Behaviour::OkThen(banner) => {
            let mut reply = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
            reply.extend_from_slice(banner);
            stream.write_all(&reply).await?;
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).await? > 0 {}
            Ok(())
        }
    }
}

/// The queues of this namespace's TCP socket bound to `local` and connected to `remote`, from
/// /proc/net/tcp (or tcp6): bytes sent and not yet acknowledged, and bytes received and not
/// yet read by the socket's owner. `None` if there is no such socket.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || proc_addr(f[1])? != local || proc_addr(f[2])? != remote {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        Some((u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?))
    })
}

/// `0100007F:1F90` as /proc/net/tcp prints an address: 32-bit words in host byte order.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend(word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?))
}

/// `host:port` → an address, names as the VPC resolver with Private DNS on answers.
fn resolve(net: &AwsNet, asked: &str) -> Option<SocketAddr> {
    if let Ok(addr) = asked.parse() {
        return Some(addr);
    }
    let (host, port) = asked.rsplit_once(':')?;
    let ip = net.lookup(Resolver::VpcPrivateDnsOn, host)?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// Reads a request head byte by byte (so nothing past it is consumed); `None` if the peer
/// closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Received>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some(Received { line, headers }))
}
