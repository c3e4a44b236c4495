//! Where the bench's builds go, and the binaries it measures: splitway's own release build,
//! and the peers found on the machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/` of this build: the bench executable lives in `target/release/deps/`.
pub(crate) fn target_dir() -> std::io::Result<PathBuf> {
    let profile = profile_dir()?;
    profile
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other("no target dir above the bench executable"))
}

/// The splitway binary to measure. The smoke run (`cargo test`) takes the debug one cargo built
/// beside it. A real run measures the binary users run: the one beside the bench is built with
/// the dev-dependencies' features unified in (tokio's `full` and `test-util`: a mutex locked on
/// every clock read, the child-process reaper on every park), so the bench builds its own the
/// way the Dockerfile does, `cargo build --release --locked --bin splitway`, into
/// `target/bench-splitway/` (cached after the first run).
pub(crate) fn splitway_binary(smoke: bool) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if smoke {
        let bin = profile_dir()?.join("splitway");
        return match bin.exists() {
            true => Ok(bin),
            false => Err("no splitway binary beside the bench: run `cargo test --all-targets`, which builds it".into()),
        };
    }
    let dir = target_dir()?.join("bench-splitway");
    eprintln!(
        "building the measured binary: cargo build --release --locked --bin splitway --target-dir {}",
        dir.display()
    );
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "splitway", "--target-dir"])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("running {} to build the measured splitway: {e}", env!("CARGO")))?;
    if !status.success() {
        return Err(format!(
            "building the measured splitway into {} failed ({status}): see cargo's output above",
            dir.display()
        )
        .into());
    }
    Ok(dir.join("release").join("splitway"))
}

/// `target/release/` (or `target/debug/` in the smoke run): where the bench's own builds go.
pub(crate) fn profile_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other("no profile dir above the bench executable"))
}

/// The path of the installed program `name`, looked for where Debian installs them.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
