//! `explain --probe`: opens TLS with the host as SNI over a given connection and reports what
//! the server presents — certificate subject and SANs, whether they cover the host, whether
//! they chain to a trusted root, and the HTTP status of `GET /`. The certificate is recorded,
//! never trusted blindly for anything else: the probe sends nothing but that one GET.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe (handshake and GET) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one path presented.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Probe {
    /// `splitway` (the route) or `system` (what the system resolver would do).
    pub path: String,
    pub address: Option<SocketAddr>,
    pub subject: Option<String>,
    pub sans: Vec<String>,
    /// The certificate names the host (RFC 6125 §6.4: exact, or `*.` over one label).
    pub covers_host: Option<bool>,
    /// The chain verifies against the trust roots (webpki roots plus `--ca-file`).
    pub trusted: Option<bool>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// Why a probe could not say more (rustls' own words, its types kept in this file).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--ca-file: {0}")]
    CaFile(String),
    #[error("trust roots: {0}")]
    Roots(String),
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("`{0}` is not a server name")]
    Name(String),
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("sending the request")]
    Send(#[source] std::io::Error),
    #[error("reading the response")]
    Read(#[source] std::io::Error),
    #[error("no HTTP status line")]
    NoStatus,
}

/// Trust roots for probes: the public web PKI plus any PEM certificates given.
pub fn roots(extra_pem: Option<&[u8]>) -> Result<RootCertStore, ProbeError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ProbeError::CaFile(e.to_string()))?;
            roots.add(cert).map_err(|e| ProbeError::CaFile(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// Probes `host` over an established connection to `address`.
pub async fn probe(path: &str, stream: TcpStream, address: SocketAddr, host: &str, roots: &RootCertStore) -> Probe {
    let mut out = Probe {
        path: path.into(),
        address: Some(address),
        ..Probe::default()
    };
    let recorder = match Recorder::new(roots) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let result = tokio::time::timeout(PROBE_TIMEOUT, handshake_and_get(stream, host, recorder.clone())).await;
    if let Some((cert, verdict)) = recorder.seen.lock().unwrap_or_else(|p| p.into_inner()).take() {
        describe_certificate(&cert, host, &mut out);
        out.trusted = Some(verdict.is_ok());
        if let Err(e) = verdict {
            out.error = Some(format!("certificate not trusted: {e}"));
        }
    }
    match result {
        Ok(Ok(status)) => out.http_status = Some(status),
        Ok(Err(e)) => {
            let e = crate::error::chain(&e);
            out.error = Some(out.error.take().map_or(e.clone(), |t| format!("{t}; {e}")));
        }
        Err(_) => out.error = Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
    out
}

async fn handshake_and_get(stream: TcpStream, host: &str, recorder: Arc<Recorder>) -> Result<u16, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|_| ProbeError::Name(host.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector.connect(name, stream).await.map_err(ProbeError::Handshake)?;
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: splitway-explain\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(ProbeError::Send)?;
    tls.flush().await.map_err(ProbeError::Send)?;
    let mut head = Vec::with_capacity(256);
    while !head.contains(&b'\n') && head.len() < 4096 {
        let mut buf = [0u8; 256];
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(ProbeError::Read(e)),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(ProbeError::NoStatus)
}

fn describe_certificate(der: &CertificateDer<'_>, host: &str, out: &mut Probe) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        out.error = Some("the certificate does not parse".into());
        return;
    };
    out.subject = Some(cert.subject().to_string());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                out.sans.push((*n).to_owned());
            }
        }
    }
    out.covers_host = Some(out.sans.iter().any(|san| name_matches(san, host)));
}

/// RFC 6125 §6.4.3: a wildcard stands for exactly one left-most label.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (
        pattern.trim_end_matches('.').to_ascii_lowercase(),
        host.trim_end_matches('.').to_ascii_lowercase(),
    );
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// Accepts any certificate so the probe can report on it, recording it and the verdict of
/// real webpki verification.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<(CertificateDer<'static>, Result<(), rustls::Error>)>>,
}

impl Recorder {
    fn new(roots: &RootCertStore) -> Result<Self, ProbeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider)
            .build()
            .map_err(|e| ProbeError::Roots(e.to_string()))?;
        Ok(Self {
            inner,
            seen: Mutex::new(None),
        })
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((end_entity.clone().into_owned(), verdict));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches(
            "*.execute-api.us-east-1.amazonaws.com",
            "abc.execute-api.us-east-1.amazonaws.com"
        ));
        assert!(!name_matches(
            "*.execute-api.us-east-1.amazonaws.com",
            "a.b.execute-api.us-east-1.amazonaws.com"
        ));
        assert!(!name_matches(
            "*.execute-api.us-east-1.amazonaws.com",
            "api.mydomain.com"
        ));
        assert!(name_matches("API.mydomain.com.", "api.mydomain.com"));
        assert!(!name_matches("*.mydomain.com", "mydomain.com"));
    }
}
