//! Panic containment: a panic in one connection or tunnel task ends that task only, and is
//! logged and counted (`splitway_panics_total`) instead of vanishing into a JoinHandle no one
//! awaits.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use crate::metrics::Metrics;

/// Polls `task` inside `catch_unwind`. No allocation and no extra task: the cost on the hot
/// path is one landing pad per poll. The task's state is dropped after a panic, so whatever
/// it held (sockets, the connection guard) is released.
///
/// `AssertUnwindSafe` is sound here because nothing observes the task's state after the
/// panic: it is dropped, never polled again.
pub async fn contain<F: Future<Output = ()>>(task: F, what: &'static str, metrics: Arc<Metrics>) -> bool {
    let mut task = pin!(task);
    let outcome =
        std::future::poll_fn(
            |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
                Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                Ok(Poll::Pending) => Poll::Pending,
                Err(payload) => Poll::Ready(Err(payload)),
            },
        )
        .await;
    match outcome {
        Ok(()) => true,
        Err(payload) => {
            metrics.panic_caught();
            tracing::error!(
                task = what,
                panic = panic_message(payload.as_ref()),
                "panic caught; the task was ended"
            );
            false
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
}
