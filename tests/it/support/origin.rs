//! Upstreams of a test's own: a recorder that counts what reaches it (to prove bytes were
//! never sent), and a plain-HTTP origin that keeps connections alive.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::bound::{HANG_SECS, within};

/// What a [`Recorder`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) accepted: usize,
    /// Connections whose peer has closed (EOF or reset).
    pub(crate) closed: usize,
    /// Bytes received over every connection.
    pub(crate) bytes: usize,
}

/// A TCP listener that accepts, reads and counts everything, and never writes.
pub(crate) struct Recorder {
    addr: SocketAddr,
    seen: watch::Receiver<Seen>,
    task: AbortHandle,
}

impl Recorder {
    pub(crate) async fn start(ip: IpAddr) -> Recorder {
        Self::start_at(SocketAddr::new(ip, 0)).await
    }

    /// A recorder on a given address and port (a port a proxy would be asked for).
    pub(crate) async fn start_at(addr: SocketAddr) -> Recorder {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the recorder on {addr}: {e}"));
        let addr = listener.local_addr().expect("recorder address");
        let (tx, seen) = watch::channel(Seen::default());
        let tx = Arc::new(tx);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tx.send_modify(|s| s.accepted += 1);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        tx.send_modify(|s| s.bytes += n);
                    }
                    tx.send_modify(|s| s.closed += 1);
                });
            }
        })
        .abort_handle();
        Recorder { addr, seen, task }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has seen so far.
    pub(crate) fn seen(&self) -> Seen {
        *self.seen.borrow()
    }

    /// Waits until `closed` connections have ended, then returns what was seen.
    pub(crate) async fn when_closed(&self, closed: usize) -> Seen {
        let mut seen = self.seen.clone();
        let wait = seen.wait_for(|s| s.closed >= closed);
        let seen = within(
            HANG_SECS,
            format!("{closed} connection(s) to the recorder to end"),
            wait,
        )
        .await;
        *seen.expect("recorder running")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain-HTTP/1.1 origin that answers every request `200 ok` with a `content-length`
/// and no `Connection` header, and keeps the connection for the next request.
pub(crate) async fn keep_alive_origin(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind the origin");
    let addr = listener.local_addr().expect("origin address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let Ok(b) = s.read_u8().await else { return };
                        head.push(b);
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A plain-HTTP origin that answers each connection's first request with its head, byte for
/// byte, as the body: what a proxy forwarded, header by header.
pub(crate) async fn echo_head_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = s.read_u8().await else { return };
                    head.push(b);
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(&head).await;
            });
        }
    });
    addr
}

/// An upstream that reads what each connection sends until its end, then closes it: a tunnel
/// to it stays open for as long as its client holds it.
pub(crate) async fn sink_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the sink origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
            });
        }
    });
    addr
}
