//! Zero-copy bursts with `splice(2)` (Linux): socket → pipe → socket, the bytes never
//! crossing into user space. Off unless [`enable`]d (`SPLITWAY_SPLICE=on`): on loopback it moves
//! CPU from the proxy to the processes at either end rather than saving it, and slows a
//! transfer whose sender writes one TLS record per call (docs/performance.md).
//!
//! A direction turns to splice only while it is moving bulk data (a copy read filled the
//! whole scratch buffer) and turns back to copying as soon as a read comes up short, so small
//! request/response traffic keeps the one-`recv`-one-`send` path, which is cheaper for a few
//! hundred bytes than two `splice` calls.
//!
//! Pipes cost two file descriptors each, and the open-file limit is shared with the tunnels'
//! sockets, so a tunnel never owns one: a burst borrows a pipe from a small process-wide pool
//! and gives it back once the pipe is empty again. At most [`MAX_PIPES`] exist at once (so at
//! most 2 × [`MAX_PIPES`] descriptors); when all are in use, a burst simply copies instead.
//! A pipe that still holds bytes when its burst ends abnormally (an error, the tunnel dropped)
//! is closed, never pooled: the next user must start empty.

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most pipes alive at once, pooled or lent.
const MAX_PIPES: usize = 64;
/// Capacity asked of each pipe, and the most one `splice` into it moves: four times the
/// default, so a bulk transfer takes a quarter of the calls. 64 such pipes stay well under
/// the kernel's per-user pipe budget (`fs.pipe-user-pages-soft`, 64 MiB); a pipe the kernel
/// will not grow keeps its default 64 KiB and the bursts are merely shorter.
const CHUNK: usize = 256 * 1024;
/// A splice read shorter than this ends the burst: the direction is back to small messages.
const BULK_READ: usize = 16 * 1024;

/// The process-wide pool every tunnel borrows from.
static POOL: Pool = Pool::new(MAX_PIPES);

/// Whether bulk directions splice: set once at start ([`enable`]), read at each switch.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets bulk directions splice from now on (the binary calls it for `SPLITWAY_SPLICE=on`).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether a direction that filled the scratch buffer turns to splicing.
pub(super) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Empty pipes waiting to be lent, and how many exist (pooled or lent), at most `max`.
struct Pool {
    idle: Mutex<Vec<(OwnedFd, OwnedFd)>>,
    live: AtomicUsize,
    max: usize,
}

impl Pool {
    const fn new(max: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            max,
        }
    }

    /// A pooled pipe, a new one, or `None` when `max` are in use or the system refuses one
    /// (then the caller copies).
    fn take(&self) -> Option<Lent<'_>> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let ends = match pooled {
            Some(ends) => ends,
            None => {
                if self.live.fetch_add(1, Ordering::Relaxed) >= self.max {
                    self.live.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
                    Ok(ends) => {
                        let _ = fcntl_setpipe_size(&ends.1, CHUNK);
                        ends
                    }
                    Err(_) => {
                        self.live.fetch_sub(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        };
        Some(Lent {
            pool: self,
            ends: Some(ends),
            pending: Cell::new(0),
        })
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A pipe lent from a pool; `pending` bytes sit in it. Dropped, it goes back to the pool if
/// empty, and is closed otherwise.
struct Lent<'p> {
    pool: &'p Pool,
    ends: Option<(OwnedFd, OwnedFd)>,
    pending: Cell<usize>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(ends) = self.ends.take() {
            if self.pending.get() == 0 {
                self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(ends);
            } else {
                drop(ends);
                self.pool.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a burst ended.
pub(super) enum Burst {
    /// Reads came up short again (or no pipe was free): back to copying.
    Done,
    /// The source reached end of stream.
    Eof,
}

/// One burst of one direction: bytes move from `from` to `to` through a pooled pipe until a
/// read comes up short or the source ends. A state polled by the relay's own future (no
/// future of its own to store, so an idle tunnel holds nothing for it).
pub(super) struct Splicing {
    /// `None` when no pipe was to be had: the burst ends at once, having moved nothing.
    pipe: Option<Lent<'static>>,
    /// The last read came up short: once the pipe is drained, the burst is over.
    short: bool,
}

impl Splicing {
    /// A burst with a pipe from the pool, if one is free.
    pub(super) fn start() -> Self {
        Self {
            pipe: POOL.take(),
            short: false,
        }
    }

    /// Moves what `from` has, reporting each chunk read to `moved`; ready when the burst is
    /// over.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        moved: &mut impl FnMut(usize),
    ) -> Poll<io::Result<Burst>> {
        let Some(pipe) = self.pipe.as_ref() else {
            return Poll::Ready(Ok(Burst::Done));
        };
        let Some((pipe_r, pipe_w)) = pipe.ends.as_ref() else {
            return Poll::Ready(Ok(Burst::Done));
        };
        loop {
            if pipe.pending.get() > 0 {
                ready!(to.poll_write_ready(cx))?;
                let sent = to.try_io(Interest::WRITABLE, || {
                    splice(pipe_r, None, to, None, pipe.pending.get(), FLAGS).map_err(io::Error::from)
                });
                match sent {
                    Ok(m) => pipe.pending.set(pipe.pending.get() - m),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.short {
                return Poll::Ready(Ok(Burst::Done));
            }
            ready!(from.poll_read_ready(cx))?;
            let read = from.try_io(Interest::READABLE, || {
                splice(from, None, pipe_w, None, CHUNK, FLAGS).map_err(io::Error::from)
            });
            match read {
                Ok(0) => return Poll::Ready(Ok(Burst::Eof)),
                Ok(n) => {
                    pipe.pending.set(n);
                    moved(n);
                    self.short = n < BULK_READ;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

#[cfg(test)]
mod tests;
