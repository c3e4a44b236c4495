//! The floor: the least a CONNECT relay can do, the contender every figure is judged against.
//!
//! One thread, one mio `Poll` (epoll, edge-triggered), no logging, no limits, no routes. It reads
//! the CONNECT head (until `\r\n\r\n`), takes `host:port` from it (an IP literal; `localhost` is
//! 127.0.0.1, since the TLS workloads ask for the certificate's name), connects, answers
//! `200 Connection Established`, and then relays: one `recv` into a 64 KiB scratch buffer and one
//! `send` per message. Readiness is tracked per socket, so a read that comes back shorter than
//! the buffer ends the turn instead of being followed by a `recv` that can only say EAGAIN
//! (splitway does the same). `TCP_NODELAY` is set on both sockets, as every real relay does.
//! Runs as a child process of the bench (`--floor-child ADDR`), so that its CPU time is its own;
//! exits when its stdin closes (the bench went away).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// The relay's one buffer, shared by every tunnel.
const SCRATCH: usize = 64 * 1024;
/// A CONNECT head longer than this is dropped.
const MAX_HEAD: usize = 8 * 1024;
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// Serves `addr` until stdin closes.
pub(crate) fn run_child(addr: &str) -> io::Result<()> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| io::Error::other(format!("--floor-child: `{addr}` is not an address")))?;
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    Floor::new(addr)?.run()
}

/// Which way the bytes go: 0 is client → upstream, 1 upstream → client; also the index of the
/// socket a direction reads from (0 the client, 1 the upstream).
type Dir = usize;

enum State {
    /// Reading the CONNECT head into `head`.
    Head,
    /// Waiting for the upstream connect to finish.
    Connecting,
    Open,
}

struct Tunnel {
    socks: [Option<TcpStream>; 2],
    state: State,
    head: Vec<u8>,
    /// Readiness seen and not yet used up, per socket.
    readable: [bool; 2],
    /// The peer's FIN (or an error) was seen: a short read then does not mean drained, since
    /// no new edge will come for the end; read on until it shows.
    closed: [bool; 2],
    writable: [bool; 2],
    /// Bytes the destination of each direction would not take yet.
    pending: [Vec<u8>; 2],
    /// The source of each direction has ended, and the destination was shut down for writing.
    ended: [bool; 2],
}

struct Floor {
    poll: Poll,
    listener: TcpListener,
    tunnels: Vec<Option<Tunnel>>,
    free: Vec<usize>,
    /// Freed in this batch of events: reused only after it, so a stale event never reaches a
    /// new tunnel.
    freed: Vec<usize>,
    scratch: Box<[u8]>,
}

impl Floor {
    fn new(addr: SocketAddr) -> io::Result<Floor> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Floor {
            poll,
            listener,
            tunnels: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept();
                    continue;
                }
                let (i, side) = (ev.token().0 / 2, ev.token().0 % 2);
                let Some(Some(t)) = self.tunnels.get_mut(i) else {
                    continue;
                };
                t.readable[side] |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                t.closed[side] |= ev.is_read_closed() || ev.is_error();
                t.writable[side] |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                if self.drive(i).is_err() {
                    self.tunnels[i] = None;
                    self.freed.push(i);
                }
            }
            self.free.append(&mut self.freed);
        }
    }

    fn accept(&mut self) {
        loop {
            let mut sock = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EMFILE and friends: the next connection will tell.
                Err(_) => return,
            };
            let i = self.free.pop().unwrap_or_else(|| {
                self.tunnels.push(None);
                self.tunnels.len() - 1
            });
            let _ = sock.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut sock, Token(2 * i), interest)
                .is_err()
            {
                self.free.push(i);
                continue;
            }
            self.tunnels[i] = Some(Tunnel {
                socks: [Some(sock), None],
                state: State::Head,
                head: Vec::new(),
                readable: [false; 2],
                closed: [false; 2],
                writable: [false; 2],
                pending: [Vec::new(), Vec::new()],
                ended: [false; 2],
            });
        }
    }

    /// Does all the work the readiness seen so far allows; an error closes the tunnel.
    fn drive(&mut self, i: usize) -> io::Result<()> {
        let Floor {
            poll, tunnels, scratch, ..
        } = self;
        let t = tunnels[i].as_mut().ok_or_else(|| io::Error::other("no tunnel"))?;
        if let State::Head = t.state {
            if !t.readable[0] {
                return Ok(());
            }
            let Some(target) = read_head(t)? else {
                return Ok(());
            };
            let mut up = TcpStream::connect(target)?;
            let _ = up.set_nodelay(true);
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut up, Token(2 * i + 1), interest)?;
            t.socks[1] = Some(up);
            t.state = State::Connecting;
        }
        if let State::Connecting = t.state {
            if !t.writable[1] {
                return Ok(());
            }
            if let Some(e) = sock(t, 1)?.take_error()? {
                return Err(e);
            }
            t.state = State::Open;
            send(t, 1, ESTABLISHED)?;
            // Bytes the client sent after its head go first.
            let early = std::mem::take(&mut t.head);
            send(t, 0, &early)?;
        }
        pump(t, 0, scratch)?;
        pump(t, 1, scratch)?;
        if t.ended == [true, true] && t.pending[0].is_empty() && t.pending[1].is_empty() {
            return Err(io::Error::other("done"));
        }
        Ok(())
    }
}

fn sock(t: &mut Tunnel, side: usize) -> io::Result<&mut TcpStream> {
    t.socks[side].as_mut().ok_or_else(|| io::Error::other("no socket"))
}

/// Reads what the client sent of its head; the target once the head is complete. Bytes after
/// the head stay in `t.head`.
fn read_head(t: &mut Tunnel) -> io::Result<Option<SocketAddr>> {
    loop {
        let len = t.head.len();
        t.head.resize(len + 1024, 0);
        let client = t.socks[0].as_mut().ok_or_else(|| io::Error::other("no socket"))?;
        let n = match client.read(&mut t.head[len..]) {
            Ok(0) => return Err(io::Error::other("closed before its head")),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        t.head.truncate(len + n);
        if n == 0 || (n < 1024 && !t.closed[0]) {
            t.readable[0] = false;
        }
        let from = len.saturating_sub(3);
        if let Some(end) = t.head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + end + 4;
            let target = parse_target(&t.head[..end])?;
            t.head.drain(..end);
            return Ok(Some(target));
        }
        if t.head.len() > MAX_HEAD {
            return Err(io::Error::other("head too long"));
        }
        if !t.readable[0] {
            return Ok(None);
        }
    }
}

/// `CONNECT host:port …`: the address, with `localhost` as 127.0.0.1.
fn parse_target(head: &[u8]) -> io::Result<SocketAddr> {
    let bad = || io::Error::other("not a CONNECT to an IP literal");
    let line = std::str::from_utf8(head).map_err(|_| bad())?;
    let target = line
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split(' ').next())
        .ok_or_else(bad)?;
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        h => h.parse().map_err(|_| bad())?,
    };
    Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
}

/// Sends `bytes` in direction `d` (to socket `1 - d`), keeping what the socket does not take.
fn send(t: &mut Tunnel, d: Dir, bytes: &[u8]) -> io::Result<()> {
    let dst = 1 - d;
    let mut sent = 0;
    if t.pending[d].is_empty() && t.writable[dst] {
        while sent < bytes.len() {
            match sock(t, dst)?.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    t.writable[dst] = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    t.pending[d].extend_from_slice(&bytes[sent..]);
    Ok(())
}

/// Moves bytes in direction `d` while readiness allows: what is pending first, then one read
/// and one write per message; the source's end shuts the destination down for writing.
fn pump(t: &mut Tunnel, d: Dir, scratch: &mut [u8]) -> io::Result<()> {
    let (src, dst) = (d, 1 - d);
    loop {
        if !t.pending[d].is_empty() {
            if !t.writable[dst] {
                return Ok(());
            }
            let pending = std::mem::take(&mut t.pending[d]);
            send(t, d, &pending)?;
            if !t.pending[d].is_empty() {
                return Ok(());
            }
        }
        if t.ended[d] || !t.readable[src] {
            return Ok(());
        }
        match sock(t, src)?.read(scratch) {
            Ok(0) => {
                t.ended[d] = true;
                t.readable[src] = false;
                let _ = sock(t, dst)?.shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(n) => {
                if n < scratch.len() && !t.closed[src] {
                    t.readable[src] = false;
                }
                send(t, d, &scratch[..n])?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                t.readable[src] = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
