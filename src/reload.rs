//! Config reload: on SIGHUP and when the file's content changes on disk. A valid config
//! replaces routes and resolvers for new connections; an invalid one is logged, counted, and
//! the running config stays. Open tunnels keep the runtime they started with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Config, ProxyHandle};

/// How often the config file is re-read to notice changes (ConfigMap updates swap symlinks,
/// which file-event APIs report unreliably; a small read every few seconds always works).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Why a reload was rejected (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// Loads `path` and applies it; on error the running config stays and the error is returned.
pub fn reload_file(handle: &ProxyHandle, path: &Path) -> Result<(), ReloadError> {
    let result = Config::load(path)
        .map_err(ReloadError::from)
        .and_then(|config| Ok(handle.reload(config)?));
    match &result {
        Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
        Err(e) => {
            let error = crate::error::chain(e);
            tracing::error!(config = %path.display(), error, "config reload rejected; keeping the running config")
        }
    }
    handle.count_reload(result.is_ok());
    result
}

/// Reloads on SIGHUP and whenever the file's bytes change; runs until the process ends.
pub async fn watch(handle: ProxyHandle, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload only on file change");
            None
        }
    };
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = std::fs::read(&path).ok();
        if forced || (now.is_some() && now != last) {
            if forced {
                tracing::info!("SIGHUP received: reloading");
            }
            let _ = reload_file(&handle, &path);
            last = now;
        }
    }
}
