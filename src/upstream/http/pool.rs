//! The forwarding pool's total bound: a connection budget whose permit rides on the upstream
//! connection and is released when it closes. hyper-util caps idle connections per host only
//! (`pool_max_idle_per_host`); this caps the connections it may keep at all.
//!
//! With the budget spent (say, on idle connections to other hosts), a request is not made to
//! wait or fail: it gets a connection of its own, marked so the pool closes it after the
//! response instead of keeping it idle. Idle pooled connections therefore never exceed
//! [`POOL_MAX_CONNECTIONS`]; how many are open at once stays bounded by `max_connections`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upstream connections the forwarding pool of one config keeps, busy or idle, for all hosts
/// together (each is one file descriptor).
pub const POOL_MAX_CONNECTIONS: usize = 128;
/// Idle upstream connections the pool keeps per host (scheme, host and port).
pub const POOL_MAX_IDLE_PER_HOST: usize = 8;

/// Permits for pooled upstream connections, shared by the clones of one connector.
#[derive(Clone)]
pub(super) struct Budget(Arc<Semaphore>);

impl Budget {
    pub(super) fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }

    /// Wraps a new upstream connection: pooled when a permit is free, else single-use;
    /// `proxied` when the peer is a parent proxy (`via`), so hyper-util writes the request in
    /// absolute-form (RFC 9112 §3.2.2) instead of origin-form.
    pub(super) fn wrap(&self, stream: TcpStream, proxied: bool) -> UpstreamIo {
        UpstreamIo {
            io: TokioIo::new(stream),
            permit: self.0.clone().try_acquire_owned().ok(),
            proxied,
        }
    }
}

/// An upstream connection of the forwarding client and, when it may be pooled, its permit.
pub(crate) struct UpstreamIo {
    io: TokioIo<TcpStream>,
    permit: Option<OwnedSemaphorePermit>,
    /// The peer is a parent proxy.
    proxied: bool,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let connected = self.io.connected().proxy(self.proxied);
        if self.permit.is_none() {
            // Over the budget: hyper-util does not return a poisoned connection to the pool.
            connected.poison();
        }
        connected
    }
}

impl Read for UpstreamIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
