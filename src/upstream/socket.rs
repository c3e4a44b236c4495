//! Outbound sockets: a plain TCP connect, or one whose socket carries `SO_MARK` (`[transparent]
//! mark`) so the capture rules let splitway's own connections through instead of looping; TCP
//! keepalive (`[proxy] tcp_keepalive`) on client and upstream sockets alike.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Connects to `addr` with `TCP_NODELAY`; with `mark`, the socket is marked before the SYN
/// leaves. The socket's error is asked for (`SO_ERROR`) only when the readiness that ends the
/// connect says there is one: a connection that succeeds costs the four calls a minimal relay
/// makes (`socket`, `setsockopt`, `connect`, `epoll_ctl`).
pub(crate) async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream
        .ready(tokio::io::Interest::WRITABLE | tokio::io::Interest::ERROR)
        .await?;
    if (ready.is_error() || ready.is_write_closed())
        && let Some(e) = stream.take_error()?
    {
        return Err(e);
    }
    Ok(stream)
}

/// TCP keepalive after `idle` on a socket (`[proxy] tcp_keepalive`): an idle tunnel through a
/// load balancer or NAT is probed before its flow is forgotten and reset.
pub(crate) fn keepalive(stream: &TcpStream, idle: Option<Duration>) {
    let Some(idle) = idle else { return };
    set_keepalive(socket2::SockRef::from(stream), Some(idle));
}

/// A listening address bound `n` times: the first listener, on the caller's runtime, and
/// `n - 1` siblings for runtimes of their own (not yet registered with any: the runtime that
/// serves one makes it a `TcpListener`). Siblings share the port with `SO_REUSEPORT`, the
/// kernel spreading new connections across the group. Before the group is bound, the port is
/// bound once without it: a port another process holds fails with "address in use", as with a
/// single listener, even when that process is another splitway with a group of its own.
pub(crate) fn bind_group(addr: SocketAddr, n: usize) -> io::Result<(TcpListener, Vec<std::net::TcpListener>)> {
    if n <= 1 {
        return Ok((TcpListener::from_std(listen(addr, false)?)?, Vec::new()));
    }
    let port = listen(addr, false)?.local_addr()?.port();
    let addr = SocketAddr::new(addr.ip(), port);
    let first = TcpListener::from_std(listen(addr, true)?)?;
    let siblings = (1..n).map(|_| listen(addr, true)).collect::<io::Result<_>>()?;
    Ok((first, siblings))
}

/// A non-blocking listening socket, as tokio's `TcpListener::bind` makes one
/// (`SO_REUSEADDR`, a backlog of 1024), with `SO_REUSEPORT` when `shared`.
fn listen(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// `TCP_NODELAY` and `tcp_keepalive` on a listening socket, set once at bind: Linux copies
/// both into every connection it accepts, so a client connection costs no `setsockopt`.
pub(crate) fn prepare_listener(listener: &impl std::os::fd::AsFd, keepalive: Option<Duration>) {
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on the listener");
    }
    keepalive_listener(listener, keepalive);
}

/// The same on a listening socket, whose accepted sockets inherit it (Linux copies the
/// listener's keepalive settings into each connection it accepts): the client side costs no
/// system call per connection. `None` turns it off (a reload may).
pub(crate) fn keepalive_listener(listener: &impl std::os::fd::AsFd, idle: Option<Duration>) {
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
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    set_mark(&socket, mark)
}

#[cfg(target_os = "linux")]
fn set_mark(socket: &socket2::Socket, mark: u32) -> io::Result<()> {
    socket.set_mark(mark)
}

#[cfg(not(target_os = "linux"))]
fn set_mark(_: &socket2::Socket, _: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_MARK exists only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use crate::test_util::within;

    /// The accept loop sets nothing on a client socket: what the listener had, it has.
    #[tokio::test]
    async fn an_accepted_socket_inherits_nodelay_and_keepalive_from_its_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        super::prepare_listener(&listener, Some(Duration::from_secs(42)));
        let addr = listener.local_addr().expect("addr");
        let (_client, accepted) = within("connect and accept", async {
            tokio::join!(TcpStream::connect(addr), listener.accept())
        })
        .await;
        let (accepted, _) = accepted.expect("accept");
        assert!(accepted.nodelay().expect("TCP_NODELAY"), "TCP_NODELAY not inherited");
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"), "SO_KEEPALIVE not inherited");
        assert_eq!(
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(42)
        );
    }
}
