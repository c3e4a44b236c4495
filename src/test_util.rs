//! Unit-test helper: a bound on every wait on a socket, so a hung peer fails the test with
//! what it was waiting for instead of hanging the test binary. Not a synchronisation device.

use std::future::Future;
use std::time::Duration;

/// Generous: only a hang trips it.
const HANG: Duration = Duration::from_secs(20);

/// Awaits `fut` for at most 20 s; past that, panics naming `what` it waited for. Not for
/// tests on a paused clock, where it would fire as soon as the runtime idles on I/O.
pub(crate) async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hung: no {what} within {HANG:?}"),
    }
}

/// Retries `attempt` until it gives a value, for at most [`within`]'s bound: for a state
/// another task reaches in its own time (a connection's end seen by the server).
pub(crate) async fn poll_until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(value) = attempt().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
