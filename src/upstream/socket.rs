//! Outbound sockets: a plain TCP connect, or one whose socket carries `SO_MARK` (`[transparent]
//! mark`) so the capture rules let splitway's own connections through instead of looping; TCP
//! keepalive (`[proxy] tcp_keepalive`) on client and upstream sockets alike.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr`; with `mark`, the socket is marked before the SYN leaves.
pub(crate) async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    match mark {
        None => TcpStream::connect(addr).await,
        Some(mark) => marked(addr, mark)?.connect(addr).await,
    }
}

/// TCP keepalive after `idle` on a socket (`[proxy] tcp_keepalive`): an idle tunnel through a
/// load balancer or NAT is probed before its flow is forgotten and reset.
pub(crate) fn keepalive(stream: &TcpStream, idle: Option<Duration>) {
    let Some(idle) = idle else { return };
    set_keepalive(socket2::SockRef::from(stream), Some(idle));
}

/// The same on a listening socket, whose accepted sockets inherit it (Linux copies the
/// listener's keepalive settings into each connection it accepts): the client side costs no
/// system call per connection. `None` turns it off (a reload may).
pub(crate) fn keepalive_listener(listener: &tokio::net::TcpListener, idle: Option<Duration>) {
    set_keepalive(socket2::SockRef::from(listener), idle);
}

fn set_keepalive(socket: socket2::SockRef<'_>, idle: Option<Duration>) {
    let set = match idle {
        Some(idle) => {
            let params = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES);
            socket.set_tcp_keepalive(&params)
        }
        None => socket.set_keepalive(false),
    };
    if let Err(e) = set {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Between keepalive probes once the idle time passed, and how many go unanswered before the
/// kernel gives the connection up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 4;

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
