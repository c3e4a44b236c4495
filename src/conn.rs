//! What the server and the proxy share about one client connection, below both of them: its
//! guard (connection-limit permit, drain tracker, the token that cuts it), panic containment
//! of its tasks, and the IO type hyper is handed ([`ClientIo`]), which a tunnel takes back.

mod cancel;
mod contain;
mod prefixed;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use cancel::UntilCancelled;
pub(crate) use contain::contain;
pub(crate) use prefixed::Prefixed;

use crate::metrics::Metrics;

/// Largest request head accepted on any listener (RFC 9112 §2.3 leaves the limit to the
/// server); hyper answers `431` beyond it.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request head; hyper answers `431` beyond it.
pub(crate) const MAX_HEADERS: usize = 100;

/// The IO type the server hands hyper for a client connection. A tunnel downcasts hyper's
/// upgrade to exactly this type to get the client's own `TcpStream` back (the fast path); both
/// sides name it here, so they cannot drift apart.
pub(crate) type ClientIo = TokioIo<Prefixed>;

/// Held by a client connection and by its tunnel: the connection-limit permit, the tracker
/// the drain waits on, and the token that cuts everything at `drain_timeout`.
pub(crate) struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    tracker: TaskTracker,
    cancel: CancellationToken,
    open: Arc<watch::Sender<usize>>,
    metrics: Arc<Metrics>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        // Set inside the update: two connections closing at once could otherwise each read
        // the count after both updates and leave the gauge off by one.
        self.open.send_modify(|n| {
            *n -= 1;
            self.metrics.connections_open(*n as i64);
        });
    }
}

impl ConnGuard {
    /// A guard for a client connection that holds `permit`; `open` counts it until dropped.
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        tracker: TaskTracker,
        cancel: CancellationToken,
        open: Arc<watch::Sender<usize>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        open.send_modify(|n| {
            *n += 1;
            metrics.connections_open(*n as i64);
        });
        Self {
            _permit: permit,
            tracker,
            cancel,
            open,
            metrics,
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `task`'s output, or `None` once the drain cuts connections; the token's lock is taken
    /// once, not on every poll (see `conn/cancel.rs`). For futures polled by one task.
    pub(crate) fn until_cancelled<F: Future>(&self, task: F) -> UntilCancelled<'_, F> {
        cancel::until_cancelled(&self.cancel, task)
    }

    /// Runs `task` tracked for the drain, with a panic in it contained and counted.
    pub(crate) fn spawn(&self, what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let metrics = self.metrics.clone();
        self.tracker.spawn(contain(task, what, metrics));
    }
}
