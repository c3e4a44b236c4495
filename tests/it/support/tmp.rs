//! Temporary files for tests (configs, a CA file): a directory of its own per guard, removed
//! when the guard drops, so a run leaves nothing behind in the temp dir.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir; removed with its content on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `splitway-{label}-{pid}-{n}`, unique within the process and across processes.
    pub(crate) fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("splitway-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One file in a directory of its own, both removed on drop; derefs to the file's path.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    _dir: TempDir,
}

impl TempFile {
    /// Writes `contents` to a new temporary file called `name`.
    pub(crate) fn new(name: &str, contents: impl AsRef<[u8]>) -> TempFile {
        let dir = TempDir::new("it");
        TempFile {
            path: dir.write(name, contents),
            _dir: dir,
        }
    }

    /// Replaces the file's content.
    pub(crate) fn rewrite(&self, contents: impl AsRef<[u8]>) {
        std::fs::write(&self.path, contents).unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
    }

    /// The path as `&str`, for command lines.
    pub(crate) fn arg(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// An address on `ip` whose port nothing listens on now: for a program of the test's that
/// must be told its own port (squid, HAProxy).
pub(crate) fn free_addr(ip: std::net::IpAddr) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind a port on {ip}: {e}"));
    l.local_addr().expect("a bound listener has an address")
}

impl Deref for TempFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}
