//! The serving threads beyond the caller's ([`super::Limits::threads`]): each runs a
//! single-threaded runtime with accept loops on its own listeners (`SO_REUSEPORT` siblings of
//! the caller's), and the connections it accepts, until the drain is over.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Listener, Shared, accept_loop};

/// The other threads of [`Limits::threads`]: each runs a single-threaded runtime with accept
/// loops on its own listeners, and the connections it accepts, until the drain is over.
pub(super) struct Threads {
    stop_accepting: CancellationToken,
    done: CancellationToken,
    joins: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// One thread for each share of `siblings` (one listener of each address per thread).
    pub(super) fn start(siblings: Vec<(std::net::TcpListener, Listener)>, shared: &Arc<Shared>) -> Threads {
        let (stop_accepting, done) = (CancellationToken::new(), CancellationToken::new());
        let n = shared.limits.threads.saturating_sub(1).max(1);
        let mut shares: Vec<Vec<(std::net::TcpListener, Listener)>> = (0..n).map(|_| Vec::new()).collect();
        for (i, sibling) in siblings.into_iter().enumerate() {
            shares[i % n].push(sibling);
        }
        let joins = shares
            .into_iter()
            .enumerate()
            .filter(|(_, share)| !share.is_empty())
            .filter_map(|(i, share)| {
                let (shared, stop, done) = (shared.clone(), stop_accepting.clone(), done.clone());
                std::thread::Builder::new()
                    .name(format!("splitway-{}", i + 1))
                    .spawn(move || serve_share(share, shared, stop, done))
                    .inspect_err(|e| tracing::error!(error = %e, "cannot start a serving thread; the others serve"))
                    .ok()
            })
            .collect();
        Threads {
            stop_accepting,
            done,
            joins,
        }
    }

    /// Their listeners close (`drain_delay` is over); their connections go on.
    pub(super) fn stop_accepting(&self) {
        self.stop_accepting.cancel();
    }

    /// The drain is over: the threads end (their connections are done or cut).
    pub(super) async fn finish(self) {
        self.stop_accepting.cancel();
        self.done.cancel();
        let joins = self.joins;
        let _ = tokio::task::spawn_blocking(move || joins.into_iter().for_each(|j| drop(j.join()))).await;
    }
}

/// One thread's runtime: its accept loops until `stop`, then its connections until `done`.
fn serve_share(
    share: Vec<(std::net::TcpListener, Listener)>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    let served = block_on_serving(async move {
        let mut accepting = JoinSet::new();
        for (listener, kind) in share {
            match TcpListener::from_std(listener) {
                Ok(l) => drop(accepting.spawn(accept_loop(l, kind, shared.clone()))),
                Err(e) => tracing::error!(error = %e, "cannot serve a listener on this thread"),
            }
        }
        stop.cancelled().await;
        accepting.shutdown().await;
        done.cancelled().await;
    });
    if let Err(e) = served {
        tracing::error!(error = %e, "cannot start a serving thread's runtime; the others serve");
    }
}

/// Runs `work` to its end on this thread as a serving thread: on a single-threaded runtime of
/// its own, its log lines held until the runtime parks (`logging`) and all written before this
/// returns. `splitway run`'s own thread and every other serving thread run this way.
pub fn block_on_serving<F: Future>(work: F) -> std::io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::logging::flush)
        .build()?;
    crate::logging::hold_on_this_thread();
    let out = rt.block_on(work);
    // The runtime's tasks are dropped with it, and may log as they go.
    drop(rt);
    crate::logging::flush();
    Ok(out)
}
