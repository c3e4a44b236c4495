//! The byte pipe of a tunnel: copies both ways until both sides finish or the tunnel has been
//! silent for `idle_timeout`, counting bytes each way.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Copy buffer per direction: bounded, so a tunnel's memory is bounded.
const BUF_SIZE: usize = 8 * 1024;

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// Both directions reached end of stream.
    Closed,
    /// No byte moved for `idle_timeout`.
    Idle,
    /// A read or write failed (e.g. a reset); the error kind is kept for the log.
    Error(io::ErrorKind),
}

/// Bytes moved and last activity, shared between the two directions and the idle watch.
#[derive(Debug, Default)]
pub struct Activity {
    pub client_to_upstream: AtomicU64,
    pub upstream_to_client: AtomicU64,
    /// Milliseconds since the pipe started at the last read.
    last_ms: AtomicU64,
}

struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    started: Instant,
    from_client: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let a = &self.activity;
            let counter = if self.from_client { &a.client_to_upstream } else { &a.upstream_to_client };
            counter.fetch_add(n, Ordering::Relaxed);
            a.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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

/// Copies between `client` and `upstream` (half-closes propagate) until both ends close, an
/// error, or `idle` without a byte either way.
pub async fn run<C, U>(client: C, upstream: U, idle: Duration, activity: Arc<Activity>) -> PipeEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut client = Counted { inner: client, activity: activity.clone(), started, from_client: true };
    let mut upstream = Counted { inner: upstream, activity: activity.clone(), started, from_client: false };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUF_SIZE, BUF_SIZE);
    tokio::pin!(copy);
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
