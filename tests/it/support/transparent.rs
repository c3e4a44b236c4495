//! The transparent-mode tests' pieces: their config, the splitway binary run inside a
//! namespace, `splitway iptables` there, and clients with no proxy settings.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::client::{Served, Via, describe_chain, get_url, https_client, is_connection_refused, is_name_mismatch};
use super::net::{AwsNet, Resolver};
use super::netns::{NetNs, NsNet};
use super::proxy::{PrivateDns, scenario_config};

/// Not a synchronisation device: only turns a hung test into a failed one.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(30);
pub(crate) const ADMIN: &str = "127.0.0.1:9901";
/// Where the no-SNI and non-TLS connections are sent, and the plain-HTTP origin listens.
pub(crate) const SINK_IP: &str = "127.12.0.9";
/// Nothing listens here: a plain-HTTP request to it arrives only by its `Host` route.
pub(crate) const NOWHERE_IP: &str = "127.12.0.8";
pub(crate) const PLAIN_HOST: &str = "plain.example";
/// The UID splitway runs as in the UID-exclusion test.
pub(crate) const NOBODY: u32 = 65534;

/// An IPv6 address added to the namespace's `lo`, where an IPv6 sink listens.
pub(crate) const SINK_IP6: &str = "fd00:5::9";

/// The scenario routes, a plain-HTTP route, and `[transparent]` with `exclusion` (how
/// splitway's own connections are let through) and `extra` keys.
pub(crate) fn config(net: &AwsNet, exclusion: &str, extra: &str) -> String {
    format!(
        r#"{scenario}
[[route]]
name = "plain-http"
hosts = ["{PLAIN_HOST}"]
addresses = ["{SINK_IP}"]

[admin]
listen = "{ADMIN}"

[transparent]
listen = "127.0.0.1:15001"
{exclusion}
capture = ["127.10.0.0/16", "127.11.0.0/16", "127.12.0.0/16", "fd00:5::/64"]
http_ports = [80]
{extra}
"#,
        scenario = scenario_config(net, PrivateDns::On),
    )
}

/// The splitway binary serving inside the namespace; its log kept for assertion messages.
pub(crate) struct Splitway {
    _child: Child,
    log: Arc<Mutex<String>>,
    logged: Arc<tokio::sync::Notify>,
}

impl Splitway {
    /// Runs the binary in `ns`, as user `uid` when given (through util-linux `setpriv`).
    pub(crate) async fn start(ns: &NetNs, config: &Path, uid: Option<u32>) -> Splitway {
        // `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf: where the
        // test wrote one, the system resolver without nameservers reads the test's own file.
        let own_resolv_conf = Path::new("/etc/netns").join(&ns.name).join("resolv.conf");
        if !own_resolv_conf.exists() {
            let toml = std::fs::read_to_string(config).expect("read the test config");
            super::config::assert_hermetic_toml(&toml);
        }
        let mut command = match uid {
            None => ns.command(env!("CARGO_BIN_EXE_splitway")),
            Some(uid) => {
                let mut c = ns.command("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ]);
                c.arg(env!("CARGO_BIN_EXE_splitway"));
                c
            }
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn splitway in the namespace");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let (kept, logged) = (log.clone(), Arc::new(tokio::sync::Notify::new()));
        let notify = logged.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut ready = Some(ready);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(" ready ") {
                    ready.take().map(|r| r.send(()));
                }
                let mut log = kept.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
                notify.notify_waiters();
            }
        });
        let started = tokio::time::timeout(HANG_GUARD, is_ready).await;
        let splitway = Splitway {
            _child: child,
            log,
            logged,
        };
        assert!(
            matches!(started, Ok(Ok(()))),
            "splitway did not turn ready:\n{}",
            splitway.log()
        );
        splitway
    }

    /// Waits until the log holds `needle` (bounded).
    pub(crate) async fn wait_logged(&self, needle: &str) {
        let wait = async {
            loop {
                let next = self.logged.notified();
                if self.log().contains(needle) {
                    return;
                }
                next.await;
            }
        };
        if tokio::time::timeout(HANG_GUARD, wait).await.is_err() {
            panic!("splitway never logged {needle:?}:\n{}", self.log());
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `splitway iptables --config FILE ARGS` inside the namespace.
pub(crate) async fn iptables(ns: &NetNs, config: &Path, args: &[&str]) -> String {
    let path = config.to_str().expect("UTF-8 temp path");
    let mut all = vec!["iptables", "--config", path];
    all.extend(args);
    ns.run_async(env!("CARGO_BIN_EXE_splitway"), &all)
        .await
        .unwrap_or_else(|e| panic!("splitway iptables {args:?}: {e}"))
}

pub(crate) fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("splitway-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write a temp file");
    path
}

/// `GET https://host/` from inside the namespace with a client that has no proxy settings
/// and resolves through the VPC resolver with Private DNS on.
pub(crate) async fn direct_get(ns_net: &NsNet, host: &str) -> Result<Served, String> {
    let client = https_client(ns_net.net, Via::Direct(Resolver::VpcPrivateDnsOn));
    let url = format!("https://{host}/");
    let what = format!("GET {url}");
    ns_net
        .run(&what, async move {
            get_url(&client, &url).await.map_err(|e| {
                let kind = if is_name_mismatch(&e) {
                    "name mismatch"
                } else if is_connection_refused(&e) {
                    "connection refused"
                } else {
                    "other"
                };
                format!("{kind}: {}", describe_chain(&e))
            })
        })
        .await
}

/// `curl https://host/` in the namespace, `--resolve`d to what the VPC resolver answers.
pub(crate) async fn curl_in(ns: &NetNs, net: &AwsNet, ca: &Path, host: &str) -> (bool, String) {
    let ip = net
        .lookup(Resolver::VpcPrivateDnsOn, host)
        .expect("host in the VPC zone");
    let out = ns
        .command("curl")
        .args(["-q", "-sS", "-D", "-", "--max-time", "20", "--noproxy", "*", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:443:{ip}"), &format!("https://{host}/")])
        .output();
    let out = tokio::time::timeout(HANG_GUARD, out)
        .await
        .expect("curl hung")
        .expect("run curl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
