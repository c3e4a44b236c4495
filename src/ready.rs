//! Readiness: the proxy's lifecycle (starting, running, draining) and the latest dependency
//! checks, which `/readyz` reports and the server moves forward; below both of them.

use std::sync::Arc;

use tokio::sync::watch;

use crate::runtime::Check;

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;

/// Readiness: not ready until start-up is done; not ready again once draining.
///
/// The states only move forward (starting → running → draining), so a late `set_ready` from
/// start-up cannot undo a drain that a signal already began.
#[derive(Debug)]
pub struct Readiness {
    // A watch rather than an atomic so tests and the drain can wait for a state change.
    state: watch::Sender<u8>,
    /// Results of the latest dependency checks (resolvers, `connect` names).
    checks: std::sync::Mutex<Vec<Check>>,
    /// The `[transparent]` listeners (empty when off), shown by `/readyz?verbose`.
    transparent: std::sync::Mutex<Vec<std::net::SocketAddr>>,
    /// The running connector's addresses in `address_backoff`, shown by `/readyz?verbose`.
    backoffs: std::sync::Mutex<Option<BackoffView>>,
}

/// Reads the addresses in backoff of whatever runtime is current (it changes on reload).
#[derive(Clone)]
pub struct BackoffView(pub Arc<dyn Fn() -> Vec<crate::upstream::backoff::Backoff> + Send + Sync>);

impl std::fmt::Debug for BackoffView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackoffView")
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Starting: `/readyz` answers 503 until [`Readiness::set_ready`].
    pub fn new() -> Self {
        Self {
            state: watch::Sender::new(STARTING),
            checks: std::sync::Mutex::new(Vec::new()),
            transparent: std::sync::Mutex::new(Vec::new()),
            backoffs: std::sync::Mutex::new(None),
        }
    }

    /// Where `/readyz?verbose` reads the addresses in `address_backoff` from.
    pub fn set_backoffs(&self, view: BackoffView) {
        *self.backoffs.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// Start-up is done: config loaded, proxy listener bound, start-up resolution finished.
    /// Does nothing once draining.
    pub fn set_ready(&self) {
        self.state.send_if_modified(|s| {
            let starting = *s == STARTING;
            if starting {
                *s = RUNNING;
            }
            starting
        });
    }

    /// Shutdown began: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.state.send_replace(DRAINING);
    }

    /// Whether `/readyz` answers 200: started, not draining, every dependency check passing.
    pub fn is_ready(&self) -> bool {
        *self.state.borrow() == RUNNING && self.checks().iter().all(|c| c.ok)
    }

    /// Replaces the dependency check results.
    pub fn set_checks(&self, checks: Vec<Check>) {
        *self.checks.lock().unwrap_or_else(|p| p.into_inner()) = checks;
    }

    /// The latest dependency check results.
    pub fn checks(&self) -> Vec<Check> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the `[transparent]` listeners' addresses.
    pub fn set_transparent(&self, addrs: Vec<std::net::SocketAddr>) {
        *self.transparent.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    /// `/readyz?verbose`: the state and every check, as JSON.
    pub(crate) fn verbose(&self) -> String {
        let transparent = self.transparent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let transparent = (!transparent.is_empty()).then(|| serde_json::json!({ "listen": transparent }));
        let view = self.backoffs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let body = serde_json::json!({
            "ready": self.is_ready(),
            // Where the process is in its life, apart from whether its checks pass: "running"
            // with "ready": false means started, but a dependency check is failing.
            "lifecycle": self.lifecycle(),
            "checks": self.checks(),
            "transparent": transparent,
            // Not a readiness failure: the other addresses carry the traffic meanwhile.
            "address_backoff": view.map(|v| (v.0)()).unwrap_or_default(),
        });
        format!("{body:#}\n")
    }

    /// The failing checks, a line each.
    pub(crate) fn failing(&self) -> String {
        let failing: Vec<String> = self
            .checks()
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{} {}: {}", c.kind, c.name, c.reason.unwrap_or_default()))
            .collect();
        failing.join("\n")
    }

    /// The lifecycle phase: `"starting"`, `"running"` (start-up done; readiness then also
    /// needs every check to pass) or `"draining"`.
    pub fn lifecycle(&self) -> &'static str {
        match *self.state.borrow() {
            STARTING => "starting",
            RUNNING => "running",
            _ => "draining",
        }
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        let _ = self.state.subscribe().wait_for(|s| *s == DRAINING).await;
    }

    /// Resolves once the state is not `starting` any more.
    pub async fn started(&self) {
        let _ = self.state.subscribe().wait_for(|s| *s != STARTING).await;
    }
}
