//! The contenders: the two floors (this bench's own minimal relays: `floor.rs` on mio and
//! `relay.c` in C), splitway (the release binary), squid, tinyproxy and g3proxy, each a child process on a loopback port with a config
//! written to a temp dir, plus what /proc says about them.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The suffix of every `distinct` name (`distinct.rs`): splitway's config routes
/// `*.distinct.bench` to the bench DNS.
pub(crate) const SUFFIX: &str = "distinct.bench";

/// Which proxy a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The minimal relay every figure is judged against (`floor.rs`).
    Floor,
    /// The second floor: a minimal relay in C on one epoll loop (`relay.c`).
    RelayC,
    Splitway,
    /// A second splitway build or setting, for A/B comparisons while optimising.
    SplitwayB,
    /// splitway behind a load balancer: `proxy_protocol = "required"`, every connection
    /// starting with a PROXY v2 header (the `fresh-proxy-v2` workload only).
    SplitwayPp,
    Squid,
    Tinyproxy,
    /// ByteDance's g3proxy, when `BENCH_G3PROXY` names a binary.
    G3proxy,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::RelayC => "relay-c",
            Kind::Splitway => "splitway",
            Kind::SplitwayB => "splitway-b",
            Kind::SplitwayPp => "splitway-pp",
            Kind::Squid => "squid",
            Kind::Tinyproxy => "tinyproxy",
            Kind::G3proxy => "g3proxy",
        }
    }

    /// A proxy splitway is compared with (not direct, not the floor, not splitway itself).
    pub(crate) fn is_peer(name: &str) -> bool {
        matches!(name, "squid" | "tinyproxy" | "g3proxy")
    }

    /// The minimal relays: CONNECT to IP literals (and `localhost`) only, nothing else.
    pub(crate) fn is_floor(self) -> bool {
        matches!(self, Kind::Floor | Kind::RelayC)
    }
}

/// Where things are and which ports CONNECT must allow.
pub(crate) struct Setup {
    pub(crate) splitway_bin: PathBuf,
    /// `BENCH_SPLITWAY_B` (a binary) and `BENCH_SPLITWAY_B_ENV` (`KEY=VALUE,…` for it).
    pub(crate) splitway_b: Option<(PathBuf, Vec<(String, String)>)>,
    pub(crate) squid_bin: Option<PathBuf>,
    pub(crate) tinyproxy_bin: Option<PathBuf>,
    /// `BENCH_G3PROXY`.
    pub(crate) g3proxy_bin: Option<PathBuf>,
    /// This bench's own executable, which is the floor with `--floor-child`.
    pub(crate) floor_bin: PathBuf,
    /// `relay.c`, compiled at start (`relay_c.rs`); `None` when `cc` failed (noted).
    pub(crate) relay_c_bin: Option<PathBuf>,
    pub(crate) ports: Vec<u16>,
    /// The bench DNS for the `distinct` names.
    pub(crate) dns: SocketAddr,
    pub(crate) dir: PathBuf,
    /// Every child alive now, for the signal handler to kill (Drop does not run on a signal).
    pub(crate) children: Children,
}

/// Pids of running children.
pub(crate) type Children = Arc<Mutex<Vec<u32>>>;

/// On SIGINT or SIGTERM, kills every child still running, then exits.
pub(crate) fn kill_children_on_signal(children: Children) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        for pid in children.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        std::process::exit(130);
    });
}

/// A child process of the bench, on the signal handler's list (`children`) while it runs;
/// killed, reaped and taken off the list when dropped.
pub(crate) struct Running {
    child: Child,
    children: Children,
}

impl Running {
    pub(crate) fn new(child: Child, children: &Children) -> Running {
        children.lock().unwrap_or_else(|p| p.into_inner()).push(child.id());
        Running {
            child,
            children: children.clone(),
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has not exited.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != pid);
    }
}

/// A running proxy; killed when dropped.
pub(crate) struct Proxy {
    pub(crate) kind: Kind,
    pub(crate) addr: SocketAddr,
    child: Running,
}

impl Proxy {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time the process (all its threads) has used.
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        self.cpu_user_sys().map(|(u, s)| u + s)
    }

    /// User and system CPU time apart.
    pub(crate) fn cpu_user_sys(&self) -> Option<(Duration, Duration)> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the `(comm)`, which may itself hold spaces; utime and stime are fields
        // 14 and 15, in USER_HZ ticks (100 per second on Linux, whatever the kernel HZ).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks = |i: usize| Some(Duration::from_millis(fields.get(i)?.parse::<u64>().ok()? * 10));
        Some((ticks(11)?, ticks(12)?))
    }

    /// Resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.child.alive()
    }
}

impl Setup {
    /// The contenders that are installed, in report order.
    pub(crate) fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::Floor];
        if self.relay_c_bin.is_some() {
            kinds.push(Kind::RelayC);
        }
        kinds.extend([Kind::Splitway, Kind::SplitwayPp]);
        if self.splitway_b.is_some() {
            kinds.push(Kind::SplitwayB);
        }
        if self.squid_bin.is_some() {
            kinds.push(Kind::Squid);
        }
        if self.tinyproxy_bin.is_some() {
            kinds.push(Kind::Tinyproxy);
        }
        if self.g3proxy_bin.is_some() {
            kinds.push(Kind::G3proxy);
        }
        kinds
    }

    /// Starts one proxy and waits until it accepts connections.
    pub(crate) fn start(&self, kind: Kind) -> io::Result<Proxy> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = self.dir.join(format!("{}-{port}", kind.name()));
        fs::create_dir_all(&dir)?;
        // squid drops to its `proxy` user, which must be able to write here.
        let _ = Command::new("chmod").arg("0777").arg(&dir).status();
        let ports = self.ports.iter().map(u16::to_string).collect::<Vec<_>>();
        let mut cmd = match kind {
            Kind::Floor => {
                let mut c = Command::new(&self.floor_bin);
                c.arg("--floor-child").arg(addr.to_string());
                c
            }
            Kind::RelayC => {
                let mut c = Command::new(self.relay_c_bin.as_ref().expect("built"));
                c.arg(addr.to_string());
                c
            }
            Kind::Splitway | Kind::SplitwayB | Kind::SplitwayPp => {
                let conf = dir.join("splitway.toml");
                let mut toml = splitway_config(addr, &ports, self.dns);
                if kind == Kind::SplitwayPp {
                    toml = toml.replacen(
                        "[proxy]\n",
                        "[proxy]\nproxy_protocol = \"required\"\nproxy_protocol_from = [\"127.0.0.1\"]\n",
                        1,
                    );
                }
                fs::write(&conf, toml)?;
                let (bin, vars) = match (&self.splitway_b, kind) {
                    (Some((bin, vars)), Kind::SplitwayB) => (bin, vars.as_slice()),
                    _ => (&self.splitway_bin, &[][..]),
                };
                let mut c = Command::new(bin);
                c.arg("run")
                    .arg("--config")
                    .arg(conf)
                    .envs(vars.iter().map(|(k, v)| (k, v)));
                c
            }
            Kind::Squid => {
                let conf = dir.join("squid.conf");
                fs::write(&conf, squid_config(addr, &ports, &dir, self.dns))?;
                let mut c = Command::new(self.squid_bin.as_ref().expect("installed"));
                c.arg("-N").arg("-f").arg(conf);
                c
            }
            Kind::Tinyproxy => {
                let conf = dir.join("tinyproxy.conf");
                fs::write(&conf, tinyproxy_config(addr, &ports, &dir))?;
                let mut c = Command::new(self.tinyproxy_bin.as_ref().expect("installed"));
                c.arg("-d").arg("-c").arg(conf);
                c
            }
            Kind::G3proxy => {
                let conf = dir.join("g3proxy.yaml");
                fs::write(&conf, g3proxy_config(addr, self.dns))?;
                let mut c = Command::new(self.g3proxy_bin.as_ref().expect("given"));
                c.arg("-c").arg(conf).arg("-C").arg(&dir);
                c
            }
        };
        let log = fs::File::create(dir.join("stderr.log"))?;
        // The floors exit when their stdin closes: they hold our pipe (kept in `Child` until drop).
        let stdin = if kind.is_floor() { Stdio::piped() } else { Stdio::null() };
        let child = Running::new(
            cmd.stdin(stdin).stdout(Stdio::null()).stderr(log).spawn()?,
            &self.children,
        );
        let mut proxy = Proxy { kind, addr, child };
        wait_listening(&mut proxy, &dir)?;
        Ok(proxy)
    }
}

fn wait_listening(proxy: &mut Proxy, dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !proxy.alive() {
            let log = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(io::Error::other(format!(
                "{} exited at start-up: {log}",
                proxy.kind.name()
            )));
        }
        if std::net::TcpStream::connect(proxy.addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other(format!(
        "{} did not listen on {} within 20s",
        proxy.kind.name(),
        proxy.addr
    )))
}

/// A port free now; the proxy binds it a moment later (a small race, fine on a quiet loopback).
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Routes with `addresses`, as a sidecar config would pin an endpoint; the deny list is
/// emptied because the upstream is on loopback. Logging stays at its default (`info`: one
/// line per tunnel), as deployed; the peers log each request too. The `distinct` names go to
/// the bench DNS through a resolver with the default cache size (`sni = "any"`: their tunnels
/// carry plain HTTP).
fn splitway_config(addr: SocketAddr, ports: &[String], dns: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "{addr}"
connect_ports = [{ports}]
max_connections = 20000
deny_destinations = []

[[route]]
name = "bench-upstream"
hosts = ["{name}"]
addresses = ["127.0.0.1"]

[[route]]
name = "bench-loopback"
hosts = ["127.0.0.1"]
addresses = ["127.0.0.1"]

[resolver.bench]
nameservers = ["udp://{dns}"]

[[route]]
name = "bench-distinct"
hosts = ["*.{suffix}"]
resolver = "bench"
sni = "any"
"#,
        ports = ports.join(", "),
        name = super::upstream::TLS_NAME,
        suffix = SUFFIX,
    )
}

/// Cache off, every client and CONNECT port allowed, no `to_localhost` denial, access log
/// written (to /dev/null) as splitway writes its own; the bench DNS when it is on port 53
/// (squid's `dns_nameservers` takes no port).
fn squid_config(addr: SocketAddr, ports: &[String], dir: &Path, dns: SocketAddr) -> String {
    let d = dir.display();
    let dns = match dns.port() {
        53 => format!("dns_nameservers {}\n", dns.ip()),
        _ => String::new(),
    };
    format!(
        "http_port {addr}
acl SSL_ports port {ports}
acl Safe_ports port {ports}
acl CONNECT method CONNECT
http_access allow all
cache deny all
cache_mem 0 MB
access_log stdio:/dev/null
cache_log {d}/cache.log
cache_store_log none
pid_filename {d}/squid.pid
coredump_dir {d}
max_filedescriptors 20000
shutdown_lifetime 0 seconds
via on
{dns}",
        ports = ports.join(" "),
    )
}

/// `MaxClients` raised: its default of 100 would cap concurrency, not measure it.
fn tinyproxy_config(addr: SocketAddr, ports: &[String], dir: &Path) -> String {
    let connect_ports: String = ports.iter().map(|p| format!("ConnectPort {p}\n")).collect();
    format!(
        "User nobody
Group nogroup
Port {port}
Listen {ip}
Timeout 600
MaxClients 20000
LogLevel Info
LogFile \"/dev/null\"
PidFile \"{d}/tinyproxy.pid\"
{connect_ports}",
        port = addr.port(),
        ip = addr.ip(),
        d = dir.display(),
    )
}

/// One `http_proxy` server on loopback and a `direct_fixed` escaper allowed to reach loopback
/// (its default filter forbids it), resolving through the bench DNS with c-ares (which answers
/// every name, `localhost` included, with 127.0.0.1), IPv4 only. Each task is logged to stdout,
/// which is /dev/null, as the other peers log to /dev/null. Worker threads: g3proxy's default,
/// one per core (splitway's default is one serving thread): each runs as its users run it.
fn g3proxy_config(addr: SocketAddr, dns: SocketAddr) -> String {
    format!(
        r#"---
log: stdout

server:
  - name: bench
    type: http_proxy
    escaper: bench
    listen:
      address: "{addr}"

resolver:
  - name: bench
    type: c-ares
    server: "{dns}"

escaper:
  - name: bench
    type: direct_fixed
    resolver: bench
    resolve_strategy: IPv4Only
    no_ipv6: true
    egress_network_filter:
      default: allow
      allow:
        - 127.0.0.0/8
"#
    )
}
