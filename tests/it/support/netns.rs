//! Network namespaces a test creates for itself (transparent mode needs iptables rules that
//! must not touch the machine's own), and the emulated AWS network started inside one.
//!
//! Creating one needs root (`ip netns add`). Without it a test is skipped with its reason,
//! unless `CI` is set: there the environment is meant to allow it, so the test fails
//! ([`super::require`]).

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::net::{AwsNet, spawn_net};

/// Not a synchronisation device: only turns a hung test into a failed one.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A named network namespace with `lo` up, deleted on drop.
pub(crate) struct NetNs {
    pub(crate) name: String,
}

impl NetNs {
    /// A fresh namespace, or why none could be made.
    pub(crate) fn create() -> Result<NetNs, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "splitway-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace for test `test`, or `None` where none can be made (skipped with the reason
    /// printed; a failure under `CI`, see [`super::require`]).
    #[track_caller]
    pub(crate) fn for_test(test: &str) -> Option<NetNs> {
        let what = format!("a network namespace for {test} (root and iproute2)");
        super::require(&what, Self::create())
    }

    /// Runs `program args` inside the namespace and waits for it; `Err` holds its stderr.
    pub(crate) fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend(args);
        run("ip", &all)
    }

    /// [`NetNs::run`] without blocking the test's runtime, bounded.
    pub(crate) async fn run_async(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = tokio::time::timeout(HANG_GUARD, self.command(program).args(args).output())
            .await
            .map_err(|_| format!("`{program} {}` did not finish within {HANG_GUARD:?}", args.join(" ")))?
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "`{program} {}` failed: {}{text}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `ip netns exec NAME program`, for the caller to add arguments and spawn (async).
    pub(crate) fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Whether IPv6 loopback works in the namespace.
    pub(crate) fn has_ipv6(&self) -> bool {
        self.ipv6().is_ok()
    }

    /// `Ok` when IPv6 loopback works in the namespace, else why not.
    pub(crate) fn ipv6(&self) -> Result<(), String> {
        let out = self.run("ip", &["-6", "addr", "show", "dev", "lo"])?;
        if out.contains("::1/128") {
            Ok(())
        } else {
            Err(format!("`ip -6 addr show dev lo` lists no ::1/128: {out:?}"))
        }
    }

    /// Moves the calling thread into the namespace: sockets it (and threads it spawns)
    /// creates from then on live there.
    fn enter_fn(&self) -> impl FnOnce() -> std::io::Result<()> + Send + 'static {
        let path = format!("/var/run/netns/{}", self.name);
        move || {
            let file = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(())
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            text
        ))
    }
}

/// The emulated AWS network inside a namespace, endpoints on port 443, with a runtime there
/// to run clients on; stopped on drop.
pub(crate) struct NsNet {
    pub(crate) net: &'static AwsNet,
    pub(crate) runtime: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl NsNet {
    pub(crate) fn start(ns: &NetNs) -> NsNet {
        let (stop, stopped) = oneshot::channel::<()>();
        let (net, runtime) = spawn_net("aws-net-ns", 443, ns.enter_fn(), async move {
            let _ = stopped.await;
        });
        NsNet {
            // 'static as the shared network is, for the clients that borrow it; one per test.
            net: Box::leak(Box::new(net)),
            runtime,
            _stop: stop,
        }
    }

    /// Runs `task` on the namespace's runtime (its sockets are in the namespace), bounded.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        what: &str,
        task: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let joined = tokio::time::timeout(HANG_GUARD, self.runtime.spawn(task))
            .await
            .unwrap_or_else(|_| panic!("{what}: no result within {HANG_GUARD:?}"));
        joined.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}
