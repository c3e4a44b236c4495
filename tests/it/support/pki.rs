//! A test certificate authority made at run time, and the rustls configs built from it.
//!
//! Both sides use the `ring` provider explicitly, as the proxy does: a second provider in the
//! process would make rustls' process-wide default ambiguous.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The CA every emulated AWS server's certificate chains to; clients trust only it.
pub(crate) struct TestCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, "splitway test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf certificate for `sans` (wildcards allowed) and its private key.
    pub(crate) fn issue(&self, sans: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, sans.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        (cert.der().clone(), key.into())
    }

    /// A TLS server config presenting a certificate for `sans`, speaking HTTP/1.1 only.
    pub(crate) fn server_config(&self, sans: &[&str]) -> Arc<ServerConfig> {
        self.server_config_alpn(sans, &[b"http/1.1"])
    }

    /// A TLS server config presenting a certificate for `sans`, offering `alpn` (none: the
    /// client's ALPN, if any, is ignored).
    pub(crate) fn server_config_alpn(&self, sans: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let (cert, key) = self.issue(sans);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert, self.cert_der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A client config that trusts only `ca` (never the system or webpki roots).
pub(crate) fn client_config(ca: &CertificateDer<'_>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned()).expect("CA certificate parses");
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The first flight a real TLS client sends for `sni` (rustls' ClientHello, whole).
pub(crate) fn client_hello(sni: &str) -> Vec<u8> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("a DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("the ClientHello");
    hello
}
