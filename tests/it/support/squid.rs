//! A real Squid as the corporate egress proxy: started per test on its own loopback address
//! with a temp config (no cache, CONNECT allowed to the emulated endpoints' port, names
//! resolved by a VPC resolver of the test's own on port 53), stopped when dropped.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

use super::dns::FakeDns;
use super::net::{AwsNet, vpc_private_dns_on_zone};

/// How long Squid may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Squid {
    pub(crate) addr: SocketAddr,
    service: String,
    /// Removed when it drops, after the process is gone (fields drop after `drop`).
    dir: super::tmp::TempDir,
    child: Child,
    _dns: FakeDns,
}

impl Squid {
    /// Starts Squid on `ip` (each test its own), its resolver on `dns_ip:53` answering as the
    /// VPC resolver with Private DNS on. With `user`, Squid asks for Basic credentials
    /// (`basic_ncsa_auth` over an htpasswd file). `Err` says why Squid cannot run here: not
    /// installed, or port 53 cannot be bound (not root); see [`super::require`].
    pub(crate) async fn start(
        net: &AwsNet,
        ip: IpAddr,
        dns_ip: IpAddr,
        user: Option<(&str, &str)>,
    ) -> Result<Squid, String> {
        super::tool("squid", "-v")?;
        let dns = FakeDns::start_on_53(dns_ip, vpc_private_dns_on_zone())
            .await
            .ok_or_else(|| format!("its resolver needs port 53 on {dns_ip}, which only root may bind"))?;
        let addr = super::tmp::free_addr(ip);
        let dir = super::tmp::TempDir::new("squid");
        // Squid drops to `cache_effective_user`, which must write its logs here.
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
        let auth = match user {
            Some((user, password)) => {
                super::tool("openssl", "version")?;
                let out = Command::new("openssl")
                    .args(["passwd", "-1", password])
                    .output()
                    .expect("openssl passwd");
                let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
                let _ = Command::new("chmod").arg("0644").arg(dir.join("htpasswd")).status();
                format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd\n\
                     auth_param basic realm corp\nacl authed proxy_auth REQUIRED\nhttp_access allow authed\n",
                    d = dir.display()
                )
            }
            None => "http_access allow all\n".to_owned(),
        };
        let conf = format!(
            "http_port {addr}
visible_hostname squid-test
acl SSL_ports port {port}
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
{auth}http_access deny all
cache deny all
cache_mem 0 MB
dns_nameservers {dns_ip}
hosts_file none
access_log stdio:{d}/access.log
cache_log {d}/cache.log
cache_store_log none
pid_filename {d}/squid.pid
coredump_dir {d}
netdb_filename none
cache_effective_user proxy
shutdown_lifetime 0 seconds
",
            port = net.port,
            d = dir.display(),
        );
        let conf_path = dir.join("squid.conf");
        std::fs::write(&conf_path, conf).expect("write squid.conf");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("squid stderr");
        // Squid names its shared-memory segments after the service name: one per instance, so
        // Squids of tests running side by side do not collide.
        let service = format!(
            "splitway{}x{}",
            std::process::id(),
            u32::from(match ip {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            })
        );
        let child = Command::new("squid")
            .arg("-n")
            .arg(&service)
            .arg("-N")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start squid: {e}"))?;
        let mut squid = Squid {
            addr,
            service,
            dir,
            child,
            _dns: dns,
        };
        squid.wait_listening().await;
        Ok(squid)
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("squid exited at start-up ({status}): {}", self.logs());
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "squid not listening on {} within {START_TIMEOUT:?}: {}",
                self.addr,
                self.logs()
            );
            // Polling a child process's port: there is nothing to wait on instead.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Squid's access log so far; it writes each line when a transaction ends.
    pub(crate) fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the access log has a line containing `needle`.
    pub(crate) async fn wait_access(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let log = self.access_log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "squid's access log has no `{needle}`: {log}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("stderr: {}\ncache.log: {}", read("stderr.log"), read("cache.log"))
    }
}

impl Drop for Squid {
    /// SIGTERM (with `shutdown_lifetime 0` Squid exits at once and removes its segments),
    /// SIGKILL if it has not exited within a few seconds; then its files.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.service) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
