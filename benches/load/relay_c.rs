//! The second floor, `relay-c`: `relay.c` (a minimal CONNECT relay on one epoll loop), built
//! by the bench at start with the system's `cc -O2` into the target directory. Beside the mio
//! floor it says how much of the floor is the relay's language and library, and how much the
//! kernel's: what a relay in C on raw system calls costs on the same workload.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The source, from the package root (where `cargo bench` and `cargo test` run the bench).
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load/relay.c");

/// Compiles `relay.c` into `out_dir/relay-c`; the binary, or why it could not be built.
pub(crate) fn build(out_dir: &Path) -> io::Result<PathBuf> {
    let bin = out_dir.join("relay-c");
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&bin)
        .arg(SOURCE)
        .output()
        .map_err(|e| io::Error::other(format!("cc: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "cc -O2 {SOURCE}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(bin)
}
