//! The load generator's protocol pieces: open a tunnel with `CONNECT`, wrap it in TLS, send a
//! request and read its response. Deliberately small: the generator must cost the same for
//! every contender, and a bug here shows up as an error count, never as a hang.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Every single operation (connect, handshake, one request) finishes within this or fails.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;
/// The error of a connection that ended before a response began.
pub(crate) const CLOSED_BEFORE_HEAD: &str = "closed before a response head";

/// How the generator reaches the upstream: straight, or through a proxy listening here.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Via {
    Direct,
    Proxy(SocketAddr),
    /// A proxy behind a load balancer: a PROXY v2 header (as an AWS NLB sends it, with a VPC
    /// endpoint TLV) precedes the CONNECT, in the same write.
    ProxyV2(SocketAddr),
}

pub(crate) fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Bounds a future by [`OP_TIMEOUT`].
pub(crate) async fn timed<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| err("timed out"))?
}

pub(crate) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A TCP stream to `target` (`host:port`, reaching `direct` when there is no proxy): for a
/// proxy, connected, `CONNECT` sent and its `200` read.
pub(crate) async fn open(via: Via, direct: SocketAddr, target: &str, buf: &mut Vec<u8>) -> io::Result<TcpStream> {
    match via {
        Via::Direct => connect(direct).await,
        Via::Proxy(proxy) | Via::ProxyV2(proxy) => {
            let mut s = connect(proxy).await?;
            let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            match via {
                Via::ProxyV2(_) => {
                    let local = s.local_addr()?;
                    s.write_all(&[proxy_v2(local, proxy), req.into_bytes()].concat())
                        .await?;
                }
                _ => s.write_all(req.as_bytes()).await?,
            }
            buf.clear();
            let end = read_head(&mut s, buf).await?;
            let status = status_of(&buf[..end])?;
            if status != 200 {
                return Err(err(format!("CONNECT answered {status}")));
            }
            if buf.len() > end {
                return Err(err("bytes after the CONNECT response"));
            }
            Ok(s)
        }
    }
}

/// A PROXY v2 header from `source` to `destination` with an AWS VPC endpoint ID TLV.
fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let vpce = [&[0x01u8][..], b"vpce-0a1b2c3d4e5f60789"].concat();
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (source, destination))
        .write_tlv(0xEA, &vpce)
        .and_then(Builder::build)
        .unwrap_or_default()
}

pub(crate) async fn tls(config: &Arc<ClientConfig>, name: &str, s: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).map_err(|e| err(e.to_string()))?;
    TlsConnector::from(config.clone()).connect(name, s).await
}

/// What one response was.
pub(crate) struct Response {
    pub(crate) body_bytes: u64,
    /// The server will close the connection (or already did): no further request on it.
    pub(crate) closing: bool,
}

/// Sends `req` and reads the whole response (body discarded); `200` or an error.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<Response> {
    s.write_all(req).await?;
    buf.clear();
    let end = read_head(s, buf).await?;
    let status = status_of(&buf[..end])?;
    if status != 200 {
        return Err(err(format!("response {status}")));
    }
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let closing =
        head.contains("\r\nconnection: close") || head.starts_with("http/1.0") && !head.contains("keep-alive");
    let header = |name: &str| head.split("\r\n").find_map(|l| l.strip_prefix(name)).map(str::trim);
    if header("transfer-encoding:").is_some() {
        return Err(err("chunked responses are not expected from this upstream"));
    }
    let mut have = (buf.len() - end) as u64;
    let body_bytes = match header("content-length:") {
        Some(n) => {
            let want: u64 = n.parse().map_err(|_| err("bad content-length"))?;
            while have < want {
                buf.clear();
                let n = read_some(s, buf).await?;
                if n == 0 {
                    return Err(err("body cut short"));
                }
                have += n as u64;
            }
            if have > want {
                return Err(err("bytes after the response body"));
            }
            want
        }
        None => {
            // Close-delimited (RFC 9112 §6.3): read to the end.
            loop {
                buf.clear();
                match read_some(s, buf).await? {
                    0 => break have,
                    n => have += n as u64,
                }
            }
        }
    };
    Ok(Response {
        body_bytes,
        closing: closing || header("content-length:").is_none(),
    })
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() < 64 * 1024 {
        buf.reserve(64 * 1024);
    }
    s.read_buf(buf).await
}

/// Reads until `buf` holds a whole response head; returns its length.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(err("response head too large"));
        }
        if read_some(s, buf).await? == 0 {
            return Err(err(CLOSED_BEFORE_HEAD));
        }
    }
}

fn status_of(head: &[u8]) -> io::Result<u16> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let code = line.split(|&b| b == b' ').nth(1).ok_or_else(|| err("no status code"))?;
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err("bad status code"))
}
