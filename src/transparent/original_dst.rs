//! The destination a connection had before iptables `REDIRECT` rewrote it: `SO_ORIGINAL_DST`
//! (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6), through rustix's safe wrappers.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The original destination of a redirected connection. A connection that was not
/// redirected has no conntrack NAT entry: `ENOENT`, or its own local address.
#[cfg(target_os = "linux")]
pub(crate) fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    use rustix::net::sockopt;
    // A dual-stack listener on `::` sees IPv4 clients as IPv4-mapped: their NAT entry is IPv4.
    Ok(match stream.local_addr()? {
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none() => SocketAddr::V6(sockopt::ipv6_original_dst(stream)?),
        _ => SocketAddr::V4(sockopt::ip_original_dst(stream)?),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn original_dst(_: &TcpStream) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_ORIGINAL_DST exists only on Linux",
    ))
}
