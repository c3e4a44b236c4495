//! N fresh tunnels through a proxy, 16 at once, each `CONNECT TARGET`, [a TLS handshake,] one
//! `GET` with `connection: close`, read to the end. Blocking std sockets (and rustls's blocking
//! stream) on plain threads: a fixed, known load for `syscalls.rs`, which counts the proxy's
//! system calls per tunnel.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::upstream::TLS_NAME;

const THREADS: usize = 16;

/// Runs the N tunnels, in TLS when `tls` says how; how many failed.
pub(crate) fn run(proxy: SocketAddr, target: SocketAddr, tls: Option<&Arc<ClientConfig>>, n: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, failed, tls) = (next.clone(), failed.clone(), tls.cloned());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    if one(proxy, target, tls.as_ref()).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    failed.load(Ordering::Relaxed)
}

fn one(proxy: SocketAddr, target: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> io::Result<()> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing of the tunnel is read along with the proxy's answer.
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 || head.len() > 4096 {
            return Err(io::Error::other("no CONNECT answer"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(io::Error::other("CONNECT refused"));
    }
    let mut rest = Vec::new();
    match tls {
        Some(config) => {
            let name = ServerName::try_from(TLS_NAME).map_err(io::Error::other)?;
            let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
            let mut s = StreamOwned::new(conn, s);
            write!(s, "GET / HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n")?;
            s.read_to_end(&mut rest)?;
        }
        None => {
            write!(s, "GET / HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n")?;
            s.read_to_end(&mut rest)?;
        }
    }
    if rest.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(io::Error::other("bad response"))
    }
}
