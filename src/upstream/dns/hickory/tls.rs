//! The rustls client config for `tls://` and `https://` nameservers (the webpki roots plus
//! `ca_file`), and a probe that says why a server cannot be reached: hickory's pool reports
//! every failed connection as "no connections available", which tells a user nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::Nameserver;

/// RFC 8484 §5.2 / RFC 7540 §3.3: DoH runs over HTTP/2, negotiated with ALPN `h2`.
const ALPN_H2: &[u8] = b"h2";

/// Why the TLS client config of a `tls://` or `https://` resolver cannot be built. The
/// messages carry rustls' own text: its types stay in this file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file `{path}`: cannot read it: {source}")]
    Read { path: String, source: Arc<std::io::Error> },
    #[error("ca_file `{path}`: certificate {index}: not PEM: {reason}")]
    NotPem { path: String, index: usize, reason: String },
    #[error("ca_file `{path}`: certificate {index}: not a CA certificate: {reason}")]
    NotCa { path: String, index: usize, reason: String },
    #[error("ca_file `{path}`: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)")]
    Empty { path: String },
    #[error("TLS setup: {0}")]
    Versions(String),
}

/// The webpki roots plus every certificate in the PEM bundle at `ca_file` (if any).
pub(super) fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        add_pem_bundle(&mut roots, path)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Versions(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn add_pem_bundle(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsSetupError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| TlsSetupError::Read {
        path: shown(),
        source: Arc::new(e),
    })?;
    let mut added = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| TlsSetupError::NotPem {
            path: shown(),
            index: i + 1,
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsSetupError::NotCa {
            path: shown(),
            index: i + 1,
            reason: e.to_string(),
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsSetupError::Empty { path: shown() });
    }
    Ok(())
}

/// The first connection-oriented server of a resolver, to probe when every connection failed.
pub(super) struct Probe {
    server: Nameserver,
    config: Arc<ClientConfig>,
}

impl Probe {
    /// `None` when the first server is reached over UDP (its failures are timeouts).
    pub(super) fn new(servers: &[Nameserver], config: &ClientConfig) -> Option<Self> {
        let server = servers.first()?.clone();
        let mut config = config.clone();
        match &server {
            Nameserver::Tcp(_) | Nameserver::Tls { .. } => {}
            Nameserver::Https { .. } => config.alpn_protocols = vec![ALPN_H2.to_vec()],
            Nameserver::UdpTcp(_) | Nameserver::Udp(_) => return None,
        }
        let config = Arc::new(config);
        Some(Self { server, config })
    }

    /// Connects (and shakes hands) as hickory would; the failure, said with the server, or
    /// `None` if the server can be reached after all.
    pub(super) async fn why_unreachable(&self) -> Option<ServerUnreachable> {
        let (addr, name) = match &self.server {
            Nameserver::Tcp(addr) => (*addr, None),
            Nameserver::Tls { addr, name } | Nameserver::Https { addr, name, .. } => (*addr, Some(name)),
            Nameserver::UdpTcp(_) | Nameserver::Udp(_) => return None,
        };
        let server = label(&self.server);
        let tcp = match TcpStream::connect(addr).await {
            Ok(tcp) => tcp,
            Err(source) => return Some(ServerUnreachable::Connect { server, source }),
        };
        let name = name?;
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            return Some(ServerUnreachable::NotCertificateName {
                server,
                name: name.clone(),
            });
        };
        match TlsConnector::from(self.config.clone()).connect(server_name, tcp).await {
            Ok(_) => None,
            Err(e) => Some(ServerUnreachable::Handshake {
                server,
                reason: tls_reason(&e),
            }),
        }
    }
}

/// Why the probe could not reach a `tcp://`, `tls://` or `https://` server (`server` as the
/// config writes it).
#[derive(Debug, thiserror::Error)]
pub(super) enum ServerUnreachable {
    #[error("{server}: cannot connect")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{server}: `{name}` is not a certificate name")]
    NotCertificateName { server: String, name: String },
    /// `reason`: rustls' own words, with the usual fix.
    #[error("{server}: TLS handshake failed: {reason}")]
    Handshake { server: String, reason: String },
}

/// The rustls error inside an I/O error, which tokio-rustls wraps it in, with the fix when
/// it is the usual one (a private CA not given as `ca_file`).
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls @ rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            format!("{tls} (its CA is not trusted: name it in `ca_file`)")
        }
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// A nameserver as the config writes it.
fn label(ns: &Nameserver) -> String {
    let socket = |a: &SocketAddr| a.to_string();
    match ns {
        Nameserver::UdpTcp(a) => socket(a),
        Nameserver::Udp(a) => format!("udp://{a}"),
        Nameserver::Tcp(a) => format!("tcp://{a}"),
        Nameserver::Tls { addr, name } => format!("tls://{addr}#{name}"),
        Nameserver::Https { addr, name, path } => format!("https://{addr}{path}#{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("splitway-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not-pem.pem");
        std::fs::write(&not_pem, "not a certificate\n").expect("write");
        let e = client_config(Some(&not_pem)).expect_err("no certificate").to_string();
        assert_eq!(
            e,
            format!(
                "ca_file `{}`: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)",
                not_pem.display()
            )
        );
        let missing = dir.join("missing.pem");
        let e = client_config(Some(&missing)).expect_err("missing").to_string();
        assert!(
            e.starts_with(&format!("ca_file `{}`: cannot read it: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert!(client_config(None).is_ok());
    }

    #[tokio::test]
    async fn a_refused_connection_is_said_with_the_server() {
        // A port just closed on loopback refuses.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let config = client_config(None).expect("config");
        let server = Nameserver::Tls {
            addr,
            name: "dns.example".into(),
        };
        let probe = Probe::new(&[server], &config).expect("a TLS server is probed");
        let why = crate::error::chain(&probe.why_unreachable().await.expect("unreachable"));
        assert!(
            why.starts_with(&format!("tls://{addr}#dns.example: cannot connect: ")),
            "{why}"
        );
        assert!(Probe::new(&[Nameserver::UdpTcp(addr)], &config).is_none());
    }
}
