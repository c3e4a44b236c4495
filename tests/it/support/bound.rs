//! Bounds on every wait a test makes on the network: a hung peer fails the test with what it
//! was waiting for, instead of hanging the test binary. Not a synchronisation device.

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

/// The bound most network waits use: generous, so only a hang trips it.
pub(crate) const HANG_SECS: u64 = 20;

/// Awaits `fut` for at most `secs` seconds; past that, panics naming `what` it waited for
/// and the caller's line.
#[track_caller]
pub(crate) fn within<F: Future>(secs: u64, what: impl Into<String>, fut: F) -> impl Future<Output = F::Output> {
    let at = Location::caller();
    let what = what.into();
    async move {
        match tokio::time::timeout(Duration::from_secs(secs), fut).await {
            Ok(out) => out,
            Err(_) => panic!("{at}: hung: no {what} within {secs}s"),
        }
    }
}

/// Re-evaluates `check` every 50 ms until it yields `Some`, for at most `secs` seconds; past
/// that, panics naming `what` it waited for. For state only observable by asking again (a
/// reload seen through the admin listener), never for ordering two events of the test's own.
#[track_caller]
pub(crate) fn poll_until<T, F, Fut>(secs: u64, what: impl Into<String>, mut check: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let at = Location::caller();
    let what = what.into();
    async move {
        let poll = async {
            loop {
                if let Some(found) = check().await {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(secs), poll).await {
            Ok(out) => out,
            Err(_) => panic!("{at}: no {what} within {secs}s"),
        }
    }
}
