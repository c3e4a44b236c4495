//! The realistic origin: nginx (OpenSSL) as a child process with its own config in a temp dir,
//! presenting an RSA-2048 chain of API Gateway's size (`pki.rs`) on a TLS port, plus a plain
//! port. One process (`master_process off`, so killing the child kills nginx), one worker
//! loop, no access log, keep-alive without nginx's default cap of 1,000 requests per
//! connection (which would silently end keep-alive runs). It answers `/` with the same 64-byte
//! body as the in-process upstream and `/bytes/N` with N zero bytes (a sparse file: no disk).
//!
//! Clients reach it by IP literal (`CONNECT 127.0.0.1:P`: no DNS, no SNI check in splitway)
//! and do a full handshake every time (no session resumption), so every fresh tunnel carries
//! the whole certificate flight.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};

use crate::pki;
use crate::proxies::{Children, Running, free_port};
use crate::upstream::SMALL_BODY;

/// A running nginx; killed when dropped.
pub(crate) struct Nginx {
    pub(crate) tls: SocketAddr,
    pub(crate) plain: SocketAddr,
    /// Trusts the chain's root; resumption off, so each handshake sends the chain.
    pub(crate) client_config: Arc<ClientConfig>,
    /// DER bytes of the certificates nginx sends.
    pub(crate) chain_bytes: usize,
    child: Running,
}

impl Nginx {
    /// Makes the certificates, writes the config under `dir`, starts `bin` and waits until both
    /// ports accept connections. `bulk_bytes`: the size of the one `/bytes/N` file.
    pub(crate) fn start(bin: &Path, dir: &Path, bulk_bytes: u64, children: &Children) -> io::Result<Nginx> {
        let dir = dir.join("nginx");
        let pki = pki::make(&dir.join("pki"))?;
        let www = dir.join("www");
        std::fs::create_dir_all(www.join("bytes"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::File::create(www.join("bytes").join(bulk_bytes.to_string()))?.set_len(bulk_bytes)?;
        let tls: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let plain: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, &www, &pki, tls, plain))?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let child = Running::new(child, children);
        let mut roots = RootCertStore::empty();
        roots.add(pki.root).map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = Resumption::disabled();
        let mut nginx = Nginx {
            tls,
            plain,
            client_config: Arc::new(client),
            chain_bytes: pki.chain_bytes,
            child,
        };
        nginx.wait_listening(&dir)?;
        Ok(nginx)
    }

    fn wait_listening(&mut self, dir: &Path) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !self.child.alive() {
                let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
                let err = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                return Err(io::Error::other(format!("nginx exited at start-up: {err}{log}")));
            }
            if TcpStream::connect(self.tls).is_ok() && TcpStream::connect(self.plain).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other("nginx did not listen within 20s"))
    }
}

/// `nginx -V` is not needed: the config uses only what nginx-light (Debian) builds in.
fn config(dir: &Path, www: &Path, pki: &pki::Pki, tls: SocketAddr, plain: SocketAddr) -> String {
    let d = |p: &Path| p.display().to_string();
    let tmp = |name: &str| d(&dir.join(name));
    let body = String::from_utf8_lossy(SMALL_BODY).replace('\n', "\\n");
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {pid};
error_log {log} warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {cbt};
    proxy_temp_path {pt};
    fastcgi_temp_path {ft};
    uwsgi_temp_path {ut};
    scgi_temp_path {st};
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    sendfile on;
    tcp_nodelay on;
    server {{
        listen {plain};
        listen {tls} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {www};
        location = / {{ return 200 "{body}"; }}
        location /bytes/ {{ }}
    }}
}}
"#,
        pid = tmp("nginx.pid"),
        log = tmp("logs/error.log"),
        cbt = tmp("client_body"),
        pt = tmp("proxy"),
        ft = tmp("fastcgi"),
        ut = tmp("uwsgi"),
        st = tmp("scgi"),
        chain = d(&pki.chain),
        key = d(&pki.key),
        www = d(www),
    )
}

/// Where `which` looked for nginx; the bench's note names the package.
pub(crate) fn binary() -> Option<PathBuf> {
    crate::binaries::which("nginx")
}
