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
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
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

/// Copies between `client` and `upstream` (half-closes propagate) until both ends close, an
/// error, or `idle` without a byte either way.
pub(crate) async fn run(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    activity: &Activity,
) -> PipeEnd {
    let started = Instant::now();
    let (client_r, client_w) = client.split();
    let (upstream_r, upstream_w) = upstream.split();
    // Pinned where it is built: moved into `until_idle`, the future's space would be
    // reserved twice in the task (the argument and the pinned copy).
    let copy = std::pin::pin!(async {
        tokio::try_join!(
            one_way(client_r, upstream_w, true, activity, started),
            one_way(upstream_r, client_w, false, activity, started),
        )
    });
    until_idle(copy, started, idle, activity).await
}

/// Drives `copy` until it ends or `idle` passes with no read.
async fn until_idle<T>(
    mut copy: Pin<&mut impl Future<Output = io::Result<T>>>,
    started: Instant,
    idle: Duration,
    activity: &Activity,
) -> PipeEnd {
    loop {
        let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        tokio::select! {
            result = &mut copy => return match result {
                Ok(_) => PipeEnd::Closed,
                Err(e) => PipeEnd::Error(e.kind()),
            },
            () = tokio::time::sleep_until(started + last + idle) => {
                let now_last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                if now_last == last {
                    return PipeEnd::Idle;
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

/// One direction: a writable destination first (so a slow reader throttles the source), then
/// a read and a write within one poll, so the scratch buffer is never held across an await.
async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    from_client: bool,
    activity: &Activity,
    started: Instant,
) -> io::Result<()> {
    loop {
        to.writable().await?;
        match std::future::poll_fn(|cx| step(cx, &mut from, &to)).await? {
            #[cfg(target_os = "linux")]
            Step::Moved(n) if n == SCRATCH_SIZE => {
                // A full scratch buffer: bulk data. Splice it while it keeps coming.
                let moved = |n| activity.moved(from_client, n, started);
                moved(n);
                // Boxed: an idle tunnel's task then holds no room for a burst's state.
                if let splice::Burst::Eof = Box::pin(splice::burst(from.as_ref(), to.as_ref(), moved)).await? {
                    return to.shutdown().await;
                }
            }
            Step::Moved(n) => activity.moved(from_client, n, started),
            Step::Partial { n, rest } => {
                activity.moved(from_client, n, started);
                to.write_all(&rest).await?;
            }
            // Half-close: the other direction keeps going (RFC 9112 §9.6 leaves it to the ends).
            Step::Eof => return to.shutdown().await,
        }
    }
}

/// Reads through `poll_read`, not `try_read`: tokio then takes a short read as proof the
/// socket is drained and waits for the next edge, instead of one more `recv` that would
/// answer EAGAIN after every message.
fn step(cx: &mut Context<'_>, from: &mut ReadHalf<'_>, to: &WriteHalf<'_>) -> Poll<io::Result<Step>> {
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
    let started = Instant::now();
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
    let copy = std::pin::pin!(tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        GENERIC_BUF_SIZE,
        GENERIC_BUF_SIZE
    ));
    until_idle(copy, started, idle, activity).await
}

#[cfg(target_os = "linux")]
mod splice;
#[cfg(test)]
mod tests;
