//! What the server and the proxy share about one client connection, below both of them: its
//! guard (connection-limit permit, drain tracker, the token that cuts it), panic containment
//! of its tasks, and the IO type hyper is handed ([`ClientIo`]), which a tunnel takes back.

mod cancel;
mod contain;
mod prefixed;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, OwnedSemaphorePermit};
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

/// Client connections open now, for [`ConnGuard`] to count: two atomic operations a
/// connection, and a wake-up only for whoever waits for none to be open (the drain, tests).
#[derive(Debug, Default)]
pub(crate) struct OpenCount {
    n: AtomicUsize,
    none: Notify,
}

impl OpenCount {
    fn opened(&self) {
        self.n.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&self) {
        if self.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none.notify_waiters();
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub(crate) async fn wait_none(&self) {
        loop {
            let mut notified = std::pin::pin!(self.none.notified());
            // Registered before the count is read: a close between the two still wakes it.
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a client connection and by its tunnel: the connection-limit permit, the tracker
/// the drain waits on, and the token that cuts everything at `drain_timeout`.
pub(crate) struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    tracker: TaskTracker,
    cancel: CancellationToken,
    open: Arc<OpenCount>,
    metrics: Arc<Metrics>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.open.closed();
        self.metrics.connection_closed();
    }
}

impl ConnGuard {
    /// A guard for a client connection that holds `permit`; `open` counts it until dropped.
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        tracker: TaskTracker,
        cancel: CancellationToken,
        open: Arc<OpenCount>,
        metrics: Arc<Metrics>,
    ) -> Self {
        open.opened();
        metrics.connection_opened();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_no_open_connection_ends_at_the_last_close_only() {
        let open = Arc::new(OpenCount::default());
        open.opened();
        open.opened();
        let waiter = tokio::spawn({
            let open = open.clone();
            async move { open.wait_none().await }
        });
        open.closed();
        tokio::task::yield_now().await;
        assert_eq!(open.get(), 1);
        assert!(!waiter.is_finished(), "one connection is still open");
        open.closed();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the last close wakes the waiter")
            .expect("waiter");
        assert_eq!(open.get(), 0);
        tokio::time::timeout(std::time::Duration::from_secs(10), open.wait_none())
            .await
            .expect("none open: at once");
    }
}
