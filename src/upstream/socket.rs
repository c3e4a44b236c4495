//! Outbound sockets: a plain TCP connect, or one whose socket carries `SO_MARK` (`[transparent]
//! mark`) so the capture rules let splitway's own connections through instead of looping.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Connects to `addr`; with `mark`, the socket is marked before the SYN leaves.
pub(crate) async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    match mark {
        None => TcpStream::connect(addr).await,
        Some(mark) => marked(addr, mark)?.connect(addr).await,
    }
}

/// Whether this process may mark sockets (`CAP_NET_ADMIN`); checked once at start-up so a
/// missing capability is a start-up error, not a failure of every connection.
pub(crate) fn check_mark(mark: u32) -> io::Result<()> {
    marked(SocketAddr::from(([127, 0, 0, 1], 0)), mark).map(drop)
}

#[cfg(target_os = "linux")]
fn marked(addr: SocketAddr, mark: u32) -> io::Result<tokio::net::TcpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
}

#[cfg(not(target_os = "linux"))]
fn marked(_: SocketAddr, _: u32) -> io::Result<tokio::net::TcpSocket> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_MARK exists only on Linux",
    ))
}
