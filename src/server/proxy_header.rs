//! The PROXY protocol header (HAProxy's spec, v1 text and v2 binary) a load balancer puts in
//! front of a connection (`[proxy] proxy_protocol`): read at accept, with the listener's own
//! stream, before the first head; bounded in time and size; believed only from
//! `proxy_protocol_from`. Parsing is the `ppp` crate's; this file decides what to trust.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ipnet::IpNet;
use ppp::v2;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;
use crate::metrics::ProxyHeader;
use crate::policy::Identity;
use crate::proxy::ConnCtx;

/// The v2 signature (spec §2.2).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// What a v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// The largest v2 header read: its 16 fixed bytes and TLVs; an AWS NLB's (addresses, the VPC
/// endpoint ID) is under 100 bytes.
pub const V2_MAX: usize = 4096;
/// TLV type AWS uses for its own values; subtype `0x01` is the VPC endpoint ID.
const PP2_TYPE_AWS: u8 = 0xEA;
const PP2_SUBTYPE_AWS_VPCE_ID: u8 = 0x01;

/// What the start of a connection came to.
#[derive(Debug)]
pub enum Arrival {
    /// Serve it: the client, and the bytes read after the header (the first head's start).
    Serve(Identity, BytesMut),
    /// A `LOCAL` header (a load balancer's health check), and the bytes read after it: the
    /// proxy listener closes it quietly, the admin listener answers the check behind it.
    Local(BytesMut),
    /// Close it: `result` says why (counted; logged unless it is a `LOCAL` health check or a
    /// connection that sent nothing).
    Close(Option<ProxyHeader>),
}

/// Reads the PROXY header of a connection from `peer`, as `mode` and `from` say.
pub async fn read(
    stream: &mut TcpStream,
    peer: SocketAddr,
    mode: ProxyProtocol,
    from: &[IpNet],
    timeout: Duration,
) -> Arrival {
    let direct = || Identity::direct(peer);
    let trusted = from.iter().any(|n| n.contains(&peer.ip().to_canonical()));
    match mode {
        ProxyProtocol::Off => return Arrival::Serve(direct(), BytesMut::new()),
        ProxyProtocol::Required if !trusted => return Arrival::Close(Some(ProxyHeader::Untrusted)),
        _ => {}
    }
    let mut buf = BytesMut::with_capacity(256);
    let deadline = tokio::time::Instant::now() + timeout;
    let len = loop {
        match frame(&buf) {
            Frame::Incomplete => {}
            Frame::None if mode == ProxyProtocol::Required => return Arrival::Close(Some(ProxyHeader::Missing)),
            Frame::None => return Arrival::Serve(direct(), buf),
            Frame::TooLarge => return Arrival::Close(Some(ProxyHeader::TooLarge)),
            Frame::Header(_) if !trusted => return Arrival::Close(Some(ProxyHeader::Untrusted)),
            Frame::Header(len) => break len,
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) if buf.is_empty() => return Arrival::Close(None),
            Ok(Ok(n)) if n > 0 => {}
            _ => return Arrival::Close(Some(ProxyHeader::Timeout)),
        }
    };
    let header = buf.split_to(len);
    match parse(&header, peer) {
        Ok(Some(who)) => Arrival::Serve(who, buf),
        Ok(None) => Arrival::Local(buf),
        Err(Malformed) => Arrival::Close(Some(ProxyHeader::Malformed)),
    }
}

/// The PROXY header, as `[proxy] proxy_protocol` says: the client it names goes into `ctx`
/// and the current span (the connection's); the bytes read after it are returned. `None`: the connection is closed
/// (a `LOCAL` health check, or a refused header, counted and logged).
pub(crate) async fn arrive(stream: &mut TcpStream, ctx: &mut ConnCtx, timeout: Duration) -> Option<BytesMut> {
    let p = &ctx.runtime().config.proxy;
    if p.proxy_protocol == ProxyProtocol::Off {
        return Some(BytesMut::new());
    }
    let peer = ctx.who().client;
    let arrival = read(stream, peer, p.proxy_protocol, &p.proxy_protocol_from, timeout).await;
    let metrics = ctx.guard().metrics();
    match arrival {
        Arrival::Serve(who, read) => {
            metrics.proxy_header(match who.peer {
                Some(_) => ProxyHeader::Proxy,
                None => ProxyHeader::Absent,
            });
            crate::outcome::name_in(&tracing::Span::current(), &who);
            ctx.name_client(who);
            Some(read)
        }
        Arrival::Local(_) => {
            metrics.proxy_header(ProxyHeader::Local);
            None
        }
        Arrival::Close(None) => None,
        Arrival::Close(Some(result)) => {
            metrics.proxy_header(result);
            if result.refused() {
                tracing::warn!(
                    %peer,
                    reason = result.as_str(),
                    proxy_protocol = p.proxy_protocol.as_str(),
                    "PROXY protocol header refused: connection closed ([proxy] proxy_protocol_from lists the trusted load balancers)"
                );
            }
            None
        }
    }
}

/// A complete header that is not a valid v1 or v2 header, or names nothing splitway can use
/// (a Unix socket source, a VPC endpoint ID that is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed PROXY protocol header")]
pub struct Malformed;

/// How far the bytes read so far go.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Could still be a header: read more.
    Incomplete,
    /// Not a header.
    None,
    /// A header of this many bytes is complete.
    Header(usize),
    /// A header longer than splitway reads.
    TooLarge,
}

/// Where a header in `buf` (the first bytes of a connection) ends, if it is one; decided as
/// soon as the bytes allow, and never changed by more bytes after that.
pub fn frame(buf: &[u8]) -> Frame {
    let prefix_of = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if buf.starts_with(V2_SIGNATURE) {
        let Some(len) = buf.get(14..16) else {
            return Frame::Incomplete;
        };
        let total = 16 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        return match total {
            t if t > V2_MAX => Frame::TooLarge,
            t if buf.len() >= t => Frame::Header(t),
            _ => Frame::Incomplete,
        };
    }
    if buf.starts_with(V1_PREFIX) {
        return match buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) if i + 2 <= V1_MAX => Frame::Header(i + 2),
            Some(_) => Frame::TooLarge,
            None if buf.len() >= V1_MAX => Frame::TooLarge,
            None => Frame::Incomplete,
        };
    }
    if buf.is_empty() || prefix_of(V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        Frame::Incomplete
    } else {
        Frame::None
    }
}

/// The client a complete header names: `None` for `LOCAL` (a health check), the peer itself
/// for `UNKNOWN` / `UNSPEC` (spec: use the real connection's addresses).
pub fn parse(header: &[u8], peer: SocketAddr) -> Result<Option<Identity>, Malformed> {
    if header.starts_with(V1_PREFIX) {
        // v1 is US-ASCII (HAProxy's spec §2.1); ppp's text parser slices by byte offsets and
        // panics inside a multi-byte character, so nothing else reaches it.
        if !header.is_ascii() {
            return Err(Malformed);
        }
        let text = std::str::from_utf8(header).map_err(|_| Malformed)?;
        let h = ppp::v1::Header::try_from(text).map_err(|_| Malformed)?;
        let client = match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
            ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
            ppp::v1::Addresses::Unknown => peer,
        };
        return Ok(Some(proxied(client, peer, None)));
    }
    let h = v2::Header::try_from(header).map_err(|_| Malformed)?;
    if h.command == v2::Command::Local {
        return Ok(None);
    }
    let client = match h.addresses {
        v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::Unspecified => peer,
        // A Unix socket source says nothing a policy could match on.
        v2::Addresses::Unix(_) => return Err(Malformed),
    };
    let mut vpce = None;
    for tlv in h.tlvs() {
        let tlv = tlv.map_err(|_| Malformed)?;
        if tlv.kind == PP2_TYPE_AWS && tlv.value.first() == Some(&PP2_SUBTYPE_AWS_VPCE_ID) {
            let id = std::str::from_utf8(&tlv.value[1..]).map_err(|_| Malformed)?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(Malformed);
            }
            vpce = Some(Arc::from(id));
        }
    }
    Ok(Some(proxied(client, peer, vpce)))
}

fn proxied(client: SocketAddr, peer: SocketAddr, vpc_endpoint: Option<Arc<str>>) -> Identity {
    Identity {
        client,
        peer: Some(peer),
        vpc_endpoint,
    }
}

#[cfg(test)]
mod tests;
