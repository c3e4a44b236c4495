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
    let mut file = Watched::new(std::fs::read(&path).ok());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if forced {
            tracing::info!("SIGHUP received: reloading");
        }
        let check = file.check(std::fs::read(&path));
        if let Check::Unreadable(e) = &check {
            tracing::warn!(
                config = %path.display(),
                error = %e,
                "cannot read the config file; the running config stays, and the file is \
                 reloaded once it can be read and has changed"
            );
        }
        if !forced && !matches!(check, Check::Changed) {
            continue;
        }
        let _ = reload_file(&handle, &path);
    }
}

/// What the watcher last read of the file, and whether its last read failed.
struct Watched {
    last: Option<Vec<u8>>,
    unreadable: bool,
}

/// One read of the watched file, judged against the one before.
#[derive(Debug)]
enum Check {
    /// Readable and different from the last content read: reload.
    Changed,
    /// Readable and the same.
    Same,
    /// The first failed read after a readable file (or at start): worth one warning.
    Unreadable(std::io::Error),
    /// Failed again: the warning was given.
    StillUnreadable,
}

impl Watched {
    fn new(first: Option<Vec<u8>>) -> Self {
        Self {
            last: first,
            unreadable: false,
        }
    }

    fn check(&mut self, read: std::io::Result<Vec<u8>>) -> Check {
        match read {
            Ok(now) => {
                self.unreadable = false;
                if self.last.as_ref() == Some(&now) {
                    return Check::Same;
                }
                self.last = Some(now);
                Check::Changed
            }
            Err(_) if self.unreadable => Check::StillUnreadable,
            Err(e) => {
                self.unreadable = true;
                Check::Unreadable(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone() -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    #[test]
    fn a_file_that_cannot_be_read_is_reported_once_until_it_can_be_read_again() {
        let mut file = Watched::new(Some(b"a".to_vec()));
        assert!(matches!(file.check(Ok(b"a".to_vec())), Check::Same));
        assert!(matches!(file.check(gone()), Check::Unreadable(_)));
        assert!(matches!(file.check(gone()), Check::StillUnreadable));
        assert!(matches!(file.check(gone()), Check::StillUnreadable));
        // Back with the same bytes: nothing to reload; a later failure is news again.
        assert!(matches!(file.check(Ok(b"a".to_vec())), Check::Same));
        assert!(matches!(file.check(gone()), Check::Unreadable(_)));
        assert!(matches!(file.check(Ok(b"b".to_vec())), Check::Changed));
        assert!(matches!(file.check(Ok(b"b".to_vec())), Check::Same));
    }

    #[test]
    fn a_file_unreadable_at_start_is_reported_and_reloaded_once_it_appears() {
        let mut file = Watched::new(None);
        assert!(matches!(file.check(gone()), Check::Unreadable(_)));
        assert!(matches!(file.check(gone()), Check::StillUnreadable));
        assert!(matches!(file.check(Ok(b"a".to_vec())), Check::Changed));
    }
}
