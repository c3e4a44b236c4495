//! Panic containment: a panic in one connection or tunnel task ends that task only, and is
//! logged and counted (`splitway_panics_total`) instead of vanishing into a JoinHandle no one
//! awaits.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::metrics::Metrics;

pin_project_lite::pin_project! {
    /// [`contain`]'s future.
    pub struct Contained<F> {
        #[pin]
        task: F,
        what: &'static str,
        metrics: Arc<Metrics>,
    }
}

/// Polls `task` inside `catch_unwind`. No allocation and no extra task: the cost on the hot
/// path is one landing pad per poll. A future type rather than an `async fn`, so the task's
/// state is pinned where it lies and not reserved twice (the argument and a pinned copy).
/// Once it has caught a panic it is done, and the task's state is dropped with it, so
/// whatever it held (sockets, the connection guard) is released.
///
/// `AssertUnwindSafe` is sound here because nothing observes the task's state after the
/// panic: it is dropped, never polled again.
pub(crate) fn contain<F: Future<Output = ()>>(task: F, what: &'static str, metrics: Arc<Metrics>) -> Contained<F> {
    Contained { task, what, metrics }
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    /// `false` when the task panicked.
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut this = self.project();
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.task.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(true),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                this.metrics.panic_caught();
                tracing::error!(
                    task = *this.what,
                    panic = panic_message(payload.as_ref()),
                    "panic caught; the task was ended"
                );
                Poll::Ready(false)
            }
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_panic_after_a_pending_poll_is_caught_counted_and_its_state_dropped() {
        let metrics = Arc::new(Metrics::new());
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let task = async move {
            let _held = flag;
            tokio::task::yield_now().await;
            panic!("boom in a connection");
        };
        assert!(!contain(task, "test", metrics.clone()).await);
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the task's state is released"
        );
        assert!(
            metrics.encode().contains("splitway_panics_total 1"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_normally_is_not_counted() {
        let metrics = Arc::new(Metrics::new());
        assert!(contain(async { tokio::task::yield_now().await }, "test", metrics.clone()).await);
        assert!(
            metrics.encode().contains("splitway_panics_total 0"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test]
    async fn a_spawned_contained_panic_leaves_the_runtime_serving() {
        let metrics = Arc::new(Metrics::new());
        let handle = tokio::spawn(contain(
            async { panic!("{}", String::from("formatted")) },
            "test",
            metrics.clone(),
        ));
        assert!(!handle.await.expect("the JoinHandle sees a normal end, not a panic"));
        assert_eq!(tokio::spawn(async { 7 }).await.expect("runtime still serves"), 7);
    }

    /// Every connection and tunnel task is a contained future: containing must not hold the
    /// task's state twice (an `async fn` taking the task and pinning it did, ~2 KiB a tunnel).
    #[test]
    fn containing_a_task_adds_a_few_bytes_not_a_second_copy() {
        let big = [0u8; 4096];
        let task = async move {
            tokio::task::yield_now().await;
            std::hint::black_box(&big);
        };
        let alone = std::mem::size_of_val(&task);
        let contained = std::mem::size_of_val(&contain(task, "test", Arc::new(Metrics::new())));
        assert!(alone >= 4096, "the probe task holds its array ({alone} bytes)");
        assert!(contained <= alone + 64, "{contained} bytes contained vs {alone} alone");
    }
}
