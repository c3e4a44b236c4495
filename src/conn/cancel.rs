//! A connection's task cut by the drain's token, without touching the token's locks on every
//! poll.
//!
//! Every connection shares one `CancellationToken` (the one `drain_timeout` cancels). A
//! pending `Notified` takes its `Notify`'s mutex each time it is polled, and even
//! `is_cancelled` locks the token's node: raced against a tunnel, either is a lock of a
//! process-wide mutex per message relayed, taken by every serving thread. [`UntilCancelled`]
//! registers with the token once, with a waker of its own that sets a flag of the
//! connection's and wakes the task; after that it reads only that flag (an atomic load).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project_lite::pin_project! {
    /// [`until_cancelled`]'s future.
    pub(crate) struct UntilCancelled<'a, F> {
        #[pin]
        task: F,
        #[pin]
        cancelled: WaitForCancellationFuture<'a>,
        // Set once registered with the token.
        cut: Option<Arc<Cut>>,
    }
}

/// The waker the token wakes: marks the connection cut, then wakes its task.
struct Cut {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Cut {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// `task`'s output, or `None` once `token` is cancelled (checked before each poll of `task`).
/// Only for a future polled by one task all its life, as a connection's is: the task's waker
/// at the first poll is the one the cancel wakes.
pub(crate) fn until_cancelled<F: Future>(token: &CancellationToken, task: F) -> UntilCancelled<'_, F> {
    UntilCancelled {
        task,
        cancelled: token.cancelled(),
        cut: None,
    }
}

impl<F: Future> Future for UntilCancelled<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.cut {
            Some(cut) if cut.fired.load(Ordering::Acquire) => return Poll::Ready(None),
            Some(_) => {}
            None => {
                let cut = Arc::new(Cut {
                    fired: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = Waker::from(cut.clone());
                if this.cancelled.poll(&mut Context::from_waker(&waker)).is_ready() {
                    return Poll::Ready(None);
                }
                *this.cut = Some(cut);
            }
        }
        this.task.poll(cx).map(Some)
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
        // cancel's own (the future reads its flag on any poll).
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
