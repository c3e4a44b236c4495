//! The real `splitway` binary: one-shot commands (`check`, `explain`) and a serving process
//! with its config in a temporary file, its JSON log read line by line, signals sent by pid.

use std::net::SocketAddr;
use std::process::{ExitStatus, Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::bound::{HANG_SECS, within};
use super::tmp::TempFile;

/// The binary cargo built for these tests.
pub(crate) const SPLITWAY: &str = env!("CARGO_BIN_EXE_splitway");

/// Runs `splitway ARGS…` to its exit, with an empty environment.
pub(crate) async fn run(args: &[&str]) -> Output {
    run_with_env(args, &[]).await
}

/// Runs `splitway ARGS…` to its exit, with only `env` in its environment.
pub(crate) async fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let command = Command::new(SPLITWAY)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    within(HANG_SECS * 3, format!("`splitway {}` to exit", args.join(" ")), command)
        .await
        .expect("run splitway")
}

/// `splitway run` serving a config from a temporary file; killed on drop.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) listen: SocketAddr,
    /// `None` when the config has no `[admin]`.
    pub(crate) admin: Option<SocketAddr>,
    /// The config file: rewrite it to exercise the watcher.
    pub(crate) config: TempFile,
    log: mpsc::UnboundedReceiver<String>,
}

impl Running {
    /// Writes `toml` to a temporary file, starts `splitway run --log-format json` on it and
    /// waits until it logs that it serves and is ready.
    pub(crate) async fn start(toml: &str) -> Running {
        let mut running = Self::spawn(toml, &["run"], &[]);
        running.wait_serving().await;
        running
    }

    /// Writes `toml` to a temporary file and starts `splitway COMMAND… --config FILE
    /// --log-format json` with only `env` in its environment; waits for nothing.
    pub(crate) fn spawn(toml: &str, command: &[&str], env: &[(&str, &str)]) -> Running {
        Self::spawn_from(Command::new(SPLITWAY), toml, command, env)
    }

    /// [`Running::spawn`] of `splitway run` under an open-file limit of `nofile` (soft and
    /// hard, so the process cannot raise it), through util-linux's `prlimit`.
    pub(crate) fn spawn_with_nofile(toml: &str, nofile: u64) -> Running {
        let mut prlimit = Command::new("prlimit");
        prlimit
            .arg(format!("--nofile={nofile}:{nofile}"))
            .args(["--", SPLITWAY]);
        Self::spawn_from(prlimit, toml, &["run"], &[])
    }

    fn spawn_from(mut base: Command, toml: &str, command: &[&str], env: &[(&str, &str)]) -> Running {
        super::config::assert_hermetic_toml(toml);
        let config = TempFile::new("splitway.toml", toml);
        let mut child = base
            .args(command)
            .args(["--config", config.arg(), "--log-format", "json"])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start splitway");
        let (tx, log) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        // Read the log as it comes so the process never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: None,
            config,
            log,
        }
    }

    /// Waits until the process logs that it serves (taking its addresses) and is ready.
    pub(crate) async fn wait_serving(&mut self) {
        let serving = self.next_log("splitway serving").await;
        let addr = |key: &str| {
            serving[key]
                .as_str()
                .filter(|s| *s != "off")
                .map(|s| s.parse().unwrap_or_else(|e| panic!("{key}: {e}")))
        };
        self.listen = addr("listen").unwrap_or_else(|| panic!("no listen address in {serving}"));
        self.admin = addr("admin");
        self.next_log("\"ready\"").await;
    }

    /// The admin listener; panics when the config has none.
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin.expect("the config has an [admin] listener")
    }

    /// The next log line containing `needle`, parsed; earlier lines are skipped.
    pub(crate) async fn next_log(&mut self, needle: &str) -> serde_json::Value {
        let wait = async {
            while let Some(line) = self.log.recv().await {
                if line.contains(needle) {
                    return serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line {line:?}: {e}"));
                }
            }
            panic!("splitway ended before logging {needle:?}");
        };
        within(HANG_SECS * 3, format!("{needle:?} in splitway's log"), wait).await
    }

    /// Every log line not yet consumed by `next_log`, up to the end of the log (call it once
    /// the process has exited or been killed).
    pub(crate) async fn rest_of_log(&mut self) -> Vec<String> {
        let rest = async {
            let mut lines = Vec::new();
            while let Some(line) = self.log.recv().await {
                lines.push(line);
            }
            lines
        };
        within(HANG_SECS, "the end of splitway's log", rest).await
    }

    /// The names of the process's threads (`/proc/PID/task/*/comm`), sorted.
    pub(crate) fn threads(&self) -> Vec<String> {
        let pid = self.child.id().expect("splitway is running");
        let dir = format!("/proc/{pid}/task");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|comm| comm.trim_end().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Sends `signal` (e.g. "HUP", "TERM") to the process with `kill`.
    pub(crate) async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("splitway is running").to_string();
        let kill = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        let status = within(HANG_SECS, "kill to exit", kill).await.expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// Waits for the process to exit (after a signal that ends it).
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        within(HANG_SECS * 3, "splitway to exit", self.child.wait())
            .await
            .expect("wait for splitway")
    }
}

/// The open descriptors of process `pid`: each number with what it points at (`socket:[…]`,
/// `pipe:[…]`, a path), from `/proc/PID/fd`. One that closes while it is read is left out.
pub(crate) fn open_fds(pid: u32) -> Vec<(u64, String)> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse::<u64>().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The open descriptors of process `pid` numbered below `below` (`u64::MAX`: all of them); a
/// bound leaves out one the test harness passed down above a child's limit (a jobserver pipe).
pub(crate) fn descriptors(pid: u32, below: u64) -> usize {
    open_fds(pid).into_iter().filter(|(fd, _)| *fd < below).count()
}
