//! A connection's task cut by the drain's token, without touching the token's lock on every
//! poll.
//!
//! Every connection shares one `CancellationToken` (the one `drain_timeout` cancels), and a
//! pending `Notified` takes its `Notify`'s mutex each time it is polled. Raced with `select!`
//! against a tunnel, that is one lock of a process-wide mutex per message relayed, taken by
//! every worker. [`UntilCancelled`] registers the task's waker with the token once, then only
//! reads the token's flag (an atomic load): a task's waker stays valid for the task's life, so
//! the cancellation still wakes it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project_lite::pin_project! {
    /// [`until_cancelled`]'s future.
    pub(crate) struct UntilCancelled<'a, F> {
        #[pin]
        task: F,
        #[pin]
        cancelled: WaitForCancellationFuture<'a>,
        token: &'a CancellationToken,
        registered: bool,
    }
}

/// `task`'s output, or `None` once `token` is cancelled (checked before each poll of `task`).
/// Only for a future polled by one task all its life, as a connection's is.
pub(crate) fn until_cancelled<F: Future>(token: &CancellationToken, task: F) -> UntilCancelled<'_, F> {
    UntilCancelled {
        task,
        cancelled: token.cancelled(),
        token,
        registered: false,
    }
}

impl<F: Future> Future for UntilCancelled<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(out) = this.task.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !*this.registered {
            if this.cancelled.poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            *this.registered = true;
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_task_finishing_first_gives_its_output() {
        let token = CancellationToken::new();
        assert_eq!(until_cancelled(&token, async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_cancel_after_many_polls_still_wakes_and_ends_the_task() {
        let token = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (polled_tx, mut polled) = tokio::sync::mpsc::unbounded_channel::<()>();
        let task = async move {
            // Woken and polled again for every message, never finishing on its own.
            while rx.recv().await.is_some() {
                let _ = polled_tx.send(());
            }
        };
        // Another task sends, waits until each message was seen, then cancels: only the
        // waker registered on the first poll can wake the task now (the sender stays open).
        let cutter = tokio::spawn({
            let token = token.clone();
            async move {
                for _ in 0..100 {
                    tx.send(()).expect("send");
                    polled.recv().await.expect("seen");
                }
                token.cancel();
                std::future::pending::<()>().await;
                drop(tx);
            }
        });
        // Biased, the guard first: a wake-up by the guard's timer must not pass for the
        // cancel's own (the future reads the token's flag on any poll).
        let ended = tokio::select! {
            biased;
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => panic!("the cancel did not wake the task"),
            out = until_cancelled(&token, task) => out,
        };
        assert_eq!(ended, None, "cancelled, not finished");
        cutter.abort();
    }

    #[tokio::test]
    async fn an_already_cancelled_token_ends_it_before_the_task_runs() {
        let token = CancellationToken::new();
        token.cancel();
        let ran = std::cell::Cell::new(false);
        assert_eq!(until_cancelled(&token, async { ran.set(true) }).await, None);
        assert!(!ran.get());
    }
}
