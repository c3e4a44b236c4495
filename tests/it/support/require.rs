//! The one rule for a test that needs something this machine may lack (a tool, root, IPv6 in
//! a namespace): locally the test (or the part of it that needs the thing) is skipped with its
//! reason printed; under `CI` the environment is meant to provide everything, so it fails,
//! naming what is missing. No test skips any other way (tests/it/source_rules.rs checks).

use std::io::Write;

/// `found` unwrapped, or `None` after printing why the caller skips: `what` the test needs
/// and the reason it is missing. Panics instead when `CI` is set.
#[track_caller]
pub(crate) fn require<T>(what: &str, found: Result<T, String>) -> Option<T> {
    let why = match found {
        Ok(found) => return Some(found),
        Err(why) => why,
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let at = std::panic::Location::caller();
    if std::env::var_os("CI").is_some() {
        panic!("{test} ({at}) needs {what}: {why} (CI is set, so this fails instead of skipping)");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of a passing test, and a
    // skip must be seen without `--nocapture`.
    let _ = writeln!(std::io::stderr(), "skipped: {test} ({at}) needs {what}: {why}");
    None
}

/// `Ok` when `program ARG` runs and exits 0 (a tool is installed), else why not.
pub(crate) fn tool(program: &str, arg: &str) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .arg(arg)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program} {arg}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {arg}` exited with {}", out.status))
    }
}
