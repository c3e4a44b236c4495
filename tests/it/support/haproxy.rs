//! A real HAProxy as the Network Load Balancer stand-in: TCP mode on its own loopback address,
//! `send-proxy-v2` to the splitway replicas, HTTP health checks (`GET /healthz`) on their admin
//! ports, round robin, connections to the replicas from a source address of its own (what the
//! replicas see as `peer`), and its runtime API for deregistering and re-pointing a replica.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::bound::{HANG_SECS, poll_until, within};

/// Debian's package; what CI installs.
pub(crate) const INSTALL: &str = "apt-get install -y haproxy";

/// One backend server: its proxy and admin addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replica {
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
}

pub(crate) struct HaProxy {
    pub(crate) addr: SocketAddr,
    /// Removed when it drops, after the process is gone (fields drop after `drop`).
    dir: super::tmp::TempDir,
    child: Child,
}

/// Whether the `haproxy` binary runs here.
pub(crate) fn haproxy_available() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl HaProxy {
    /// Starts HAProxy on `ip` in front of `replicas` (named `r0`, `r1`, …), connecting to them
    /// from `source`; returns once every replica passes its health check.
    pub(crate) async fn start(ip: IpAddr, source: IpAddr, replicas: &[Replica]) -> HaProxy {
        let addr = super::tmp::free_addr(ip);
        let dir = super::tmp::TempDir::new("haproxy");
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} {} check port {}\n", r.proxy, r.admin.port()))
            .collect();
        // `option httpchk` in TCP mode: the checks are HTTP on the admin port; `check-send-proxy`
        // puts a PROXY header in front of them, as an AWS NLB does on every health check once
        // its target group has proxy protocol on.
        let conf = format!(
            "global
  stats socket {sock} level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend egress
  bind {addr}
  default_backend splitway
backend splitway
  balance roundrobin
  source {source}
  option httpchk GET /healthz
  http-check expect status 200
  default-server inter 100ms fall 2 rise 1 send-proxy-v2 check-send-proxy
{servers}",
            sock = dir.join("admin.sock").display(),
        );
        let conf_path = dir.join("haproxy.cfg");
        std::fs::write(&conf_path, conf).expect("write haproxy.cfg");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("haproxy stderr");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start haproxy");
        let haproxy = HaProxy { addr, dir, child };
        for i in 0..replicas.len() {
            haproxy.wait_state(&format!("r{i}"), "UP").await;
        }
        haproxy
    }

    /// One command on the runtime API (`show servers state`, `set server …`); its answer.
    pub(crate) async fn command(&self, line: &str) -> String {
        self.try_command(line)
            .await
            .unwrap_or_else(|e| panic!("haproxy runtime API `{line}`: {e}\n{}", self.logs()))
    }

    async fn try_command(&self, line: &str) -> std::io::Result<String> {
        let sock = self.dir.join("admin.sock");
        let talk = async {
            let mut s = UnixStream::connect(&sock).await?;
            s.write_all(format!("{line}\n").as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        within(HANG_SECS, format!("haproxy `{line}`"), talk).await
    }

    /// Waits until `server`'s operational state is `state` (`UP`, `DOWN`); a health check
    /// runs every 100 ms.
    pub(crate) async fn wait_state(&self, server: &str, state: &str) {
        let want = match state {
            "UP" => "2",
            _ => "0",
        };
        poll_until(HANG_SECS, format!("haproxy to see {server} {state}"), || async move {
            // The socket appears once HAProxy has started.
            let table = self
                .try_command("show servers state splitway")
                .await
                .unwrap_or_default();
            // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state …
            table
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .any(|c| c.get(3) == Some(&server) && c.get(5) == Some(&want))
                .then_some(())
        })
        .await;
    }

    /// Points `server` at a replica that took its place, and lets it take traffic again.
    pub(crate) async fn replace(&self, server: &str, replica: Replica) {
        let p = replica.proxy;
        let out = self
            .command(&format!(
                "set server splitway/{server} addr {} port {}",
                p.ip(),
                p.port()
            ))
            .await;
        assert!(!out.contains("rror"), "{out}");
        let out = self
            .command(&format!(
                "set server splitway/{server} check-port {}",
                replica.admin.port()
            ))
            .await;
        assert!(!out.contains("rror"), "{out}");
        self.command(&format!("set server splitway/{server} state ready")).await;
        self.wait_state(server, "UP").await;
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Connects to the load balancer from `source` (port chosen by the kernel).
    pub(crate) async fn connect_from(&self, source: IpAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the client's source address");
        within(HANG_SECS, "connect to haproxy", socket.connect(self.addr))
            .await
            .expect("connect to haproxy")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a synchronisation device: a replica that never drains fails the test.
pub(crate) const DRAIN_GUARD: Duration = Duration::from_secs(30);
