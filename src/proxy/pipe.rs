//! The byte pipe of a tunnel: copies both ways until both sides finish or the tunnel has been
//! silent for `idle_timeout`, counting bytes each way.
//!
//! A tunnel holds no copy buffer while it waits. Each direction waits for its destination to
//! be writable and its source readable, then reads into the worker thread's scratch buffer
//! and writes straight out; only bytes the destination would not take at once are copied to
//! the heap, until written. An idle tunnel costs its task and sockets, not 2 × buffer size, and
//! the scratch buffer can be large (fewer system calls per byte on bulk transfers).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Scratch buffer per worker thread: the most one read moves.
const SCRATCH_SIZE: usize = 64 * 1024;
/// Buffer per direction in [`run_generic`]: bounded, so a tunnel's memory is bounded.
const GENERIC_BUF_SIZE: usize = 8 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeEnd {
    /// Both directions reached end of stream.
    Closed,
    /// No byte moved for `idle_timeout`.
    Idle,
    /// A read or write failed (e.g. a reset); the error kind is kept for the log.
    Error(io::ErrorKind),
}

/// Bytes moved and last activity, shared between the two directions and the idle watch.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    pub client_to_upstream: AtomicU64,
    pub upstream_to_client: AtomicU64,
    /// Milliseconds since the pipe started at the last read.
    last_ms: AtomicU64,
}

impl Activity {
    fn moved(&self, from_client: bool, n: usize, started: Instant) {
        let counter = if from_client {
            &self.client_to_upstream
        } else {
            &self.upstream_to_client
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.last_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// How long a tunnel lasts before its upstream socket gets `tcp_keepalive`: most tunnels end
/// sooner and never pay its four `setsockopt` calls; one that lasts is probed at most this
/// much later than the setting says (the client socket has it from the listener).
const KEEPALIVE_AFTER: Duration = Duration::from_secs(1);

/// Copies between `client` and `upstream` (half-closes propagate) until both ends close, an
/// error, or `idle` without a byte either way. `keepalive` (`[proxy] tcp_keepalive`) is set on
/// `upstream` once the pipe has run for [`KEEPALIVE_AFTER`].
pub(crate) fn run<'a>(
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    idle: Duration,
    keepalive: Option<Duration>,
    activity: &'a Activity,
) -> Relay<'a> {
    Relay {
        client,
        upstream,
        up: Way::new(true),
        down: Way::new(false),
        activity,
        watch: IdleWatch::new(idle, keepalive),
    }
}

pin_project_lite::pin_project! {
    /// The idle timeout of a pipe: ready once a whole `idle` passed after the last read
    /// (`Activity::last_ms`, counted from `started`) with no read since. Its one timer also
    /// fires once at [`KEEPALIVE_AFTER`] while `keepalive` is still to be set.
    struct IdleWatch {
        started: Instant,
        idle: Duration,
        // The last activity the watch has seen.
        seen: Duration,
        keepalive: Option<Duration>,
        // The timer holds this task's waker: polled again only once it fired.
        armed: bool,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl IdleWatch {
    fn new(idle: Duration, keepalive: Option<Duration>) -> Self {
        let started = Instant::now();
        let first = match keepalive {
            Some(_) => idle.min(KEEPALIVE_AFTER),
            None => idle,
        };
        Self {
            started,
            idle,
            seen: Duration::ZERO,
            keepalive,
            armed: false,
            sleep: tokio::time::sleep_until(started + first),
        }
    }

    /// `upstream`: where `keepalive` goes when its time comes (none for a generic pipe, whose
    /// caller set it).
    fn poll_idle(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        activity: &Activity,
        upstream: Option<&TcpStream>,
    ) -> Poll<()> {
        let mut this = self.project();
        // A pending timer keeps the waker it was last polled with, and the pipe is polled by
        // one task all its life: until it fires, polling it on every message would only
        // register the same waker again.
        if *this.armed && !this.sleep.is_elapsed() {
            return Poll::Pending;
        }
        while this.sleep.as_mut().poll(cx).is_ready() {
            let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
            if let Some(keepalive) = this.keepalive.take() {
                if let Some(upstream) = upstream {
                    crate::upstream::socket::keepalive(upstream, Some(keepalive));
                }
                this.sleep.as_mut().reset(*this.started + last + *this.idle);
                continue;
            }
            if last == *this.seen {
                return Poll::Ready(());
            }
            *this.seen = last;
            this.sleep.as_mut().reset(*this.started + last + *this.idle);
        }
        *this.armed = true;
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// [`run`]'s future: both directions and the idle watch in one state, polled in one
    /// place (no future per direction, no select), so an idle tunnel holds a few hundred
    /// bytes for its pipe.
    pub(crate) struct Relay<'a> {
        client: &'a mut TcpStream,
        upstream: &'a mut TcpStream,
        up: Way,
        down: Way,
        activity: &'a Activity,
        #[pin]
        watch: IdleWatch,
    }
}

impl Future for Relay<'_> {
    type Output = PipeEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PipeEnd> {
        let this = self.project();
        let (activity, started) = (*this.activity, this.watch.started);
        let up = this
            .up
            .poll(cx, this.client, this.upstream, activity, started, this.down.is_done());
        let down = this
            .down
            .poll(cx, this.upstream, this.client, activity, started, this.up.is_done());
        match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => return Poll::Ready(PipeEnd::Error(e.kind())),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(PipeEnd::Closed),
            _ => {}
        }
        this.watch
            .poll_idle(cx, activity, Some(&**this.upstream))
            .map(|()| PipeEnd::Idle)
    }
}

/// One direction of a [`Relay`].
struct Way {
    from_client: bool,
    /// Bytes read that the destination has not taken yet (empty, unallocated, while idle).
    pending: Vec<u8>,
    state: WayState,
}

enum WayState {
    /// Read into the scratch buffer, write straight out.
    Copy,
    /// Bulk data: spliced while it keeps coming (a full scratch buffer started it). Boxed:
    /// an idle tunnel's two directions hold no room for a burst's state.
    #[cfg(target_os = "linux")]
    Splice(Box<splice::Splicing>),
    /// The source ended while the other direction goes on: half-close the destination
    /// (RFC 9112 §9.6 leaves the rest to the ends). When the other direction has ended too,
    /// there is no `shutdown`: both sources are read to their end, so closing the sockets
    /// sends the same FIN (a minimal relay's behaviour, one system call less per tunnel).
    Shutdown,
    Done,
}

impl Way {
    fn new(from_client: bool) -> Self {
        Self {
            from_client,
            pending: Vec::new(),
            state: WayState::Copy,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, WayState::Done)
    }

    /// Moves what `from` has to `to`; ready once the source ended and `to` is shut down (or
    /// left for the close, when the `other` direction is done already).
    /// A writable destination comes first, so a slow reader throttles the source.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        activity: &Activity,
        started: Instant,
        other_done: bool,
    ) -> Poll<io::Result<()>> {
        let from_client = self.from_client;
        let mut moved = |n| activity.moved(from_client, n, started);
        let ended = || match other_done {
            true => WayState::Done,
            false => WayState::Shutdown,
        };
        loop {
            match &mut self.state {
                WayState::Done => return Poll::Ready(Ok(())),
                WayState::Shutdown => {
                    ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                    self.state = WayState::Done;
                }
                #[cfg(target_os = "linux")]
                WayState::Splice(splicing) => match ready!(splicing.poll(cx, from, to, &mut moved))? {
                    splice::Burst::Eof => self.state = ended(),
                    splice::Burst::Done => self.state = WayState::Copy,
                },
                WayState::Copy if !self.pending.is_empty() => {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.pending))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pending.drain(..n);
                    if self.pending.is_empty() {
                        self.pending = Vec::new();
                    }
                }
                WayState::Copy => {
                    ready!(to.poll_write_ready(cx))?;
                    match ready!(step(cx, from, to))? {
                        #[cfg(target_os = "linux")]
                        Step::Moved(n) if n == SCRATCH_SIZE && splice::enabled() => {
                            moved(n);
                            self.state = WayState::Splice(Box::new(splice::Splicing::start()));
                        }
                        Step::Moved(n) => moved(n),
                        Step::Partial { n, rest } => {
                            moved(n);
                            self.pending = rest;
                        }
                        Step::Eof => self.state = ended(),
                    }
                }
            }
        }
    }
}

/// What one read-and-write step did.
enum Step {
    /// Read `n` bytes and wrote them all.
    Moved(usize),
    /// Read `n` bytes; the destination took only part: `rest` is still to be written.
    Partial {
        n: usize,
        rest: Vec<u8>,
    },
    Eof,
}

/// Reads through `poll_read`, not `try_read`: tokio then takes a short read as proof the
/// socket is drained and waits for the next edge, instead of one more `recv` that would
/// answer EAGAIN after every message.
fn step(cx: &mut Context<'_>, from: &mut TcpStream, to: &TcpStream) -> Poll<io::Result<Step>> {
    SCRATCH.with_borrow_mut(|buf| {
        let mut read = ReadBuf::new(buf);
        if let Err(e) = std::task::ready!(Pin::new(from).poll_read(cx, &mut read)) {
            return Poll::Ready(Err(e));
        }
        let data = read.filled();
        if data.is_empty() {
            return Poll::Ready(Ok(Step::Eof));
        }
        let mut sent = 0;
        while sent < data.len() {
            match to.try_write(&data[sent..]) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = data.len();
        Poll::Ready(Ok(if sent == n {
            Step::Moved(n)
        } else {
            Step::Partial {
                n,
                rest: data[sent..].to_vec(),
            }
        }))
    })
}

/// Counts bytes read through a generic stream (for [`run_generic`]).
struct Counted<'a, S> {
    inner: S,
    activity: &'a Activity,
    started: Instant,
    from_client: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.moved(self.from_client, n, self.started);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// [`run`] for a client that is not a plain `TcpStream` (hyper handed the connection back in
/// another type): tokio's `copy_bidirectional` with a bounded buffer per direction, which it
/// holds for the tunnel's whole life.
pub(crate) async fn run_generic<C, U>(client: C, upstream: U, idle: Duration, activity: &Activity) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut watch = std::pin::pin!(IdleWatch::new(idle, None));
    let started = watch.started;
    let mut client = Counted {
        inner: client,
        activity,
        started,
        from_client: true,
    };
    let mut upstream = Counted {
        inner: upstream,
        activity,
        started,
        from_client: false,
    };
    let mut copy = std::pin::pin!(tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        GENERIC_BUF_SIZE,
        GENERIC_BUF_SIZE
    ));
    std::future::poll_fn(|cx| match copy.as_mut().poll(cx) {
        Poll::Ready(Ok(_)) => Poll::Ready(PipeEnd::Closed),
        Poll::Ready(Err(e)) => Poll::Ready(PipeEnd::Error(e.kind())),
        Poll::Pending => watch.as_mut().poll_idle(cx, activity, None).map(|()| PipeEnd::Idle),
    })
    .await
}

#[cfg(target_os = "linux")]
pub(crate) mod splice;
#[cfg(test)]
mod tests;
