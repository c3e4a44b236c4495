//! The origin every contender reaches: a minimal HTTP/1.1 server, over TLS (rustls, a cert for
//! `localhost` from a throwaway CA) and in the clear, on its own multi-thread runtime so that
//! its work never shares the load generator's thread.
//!
//! It answers every request head with a fixed 64-byte body, except `GET /bytes/N`, which
//! streams N zero bytes (the bulk download). Keep-alive unless the request says `close`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The name the certificate covers, the SNI every TLS client sends, and the CONNECT host.
pub(crate) const TLS_NAME: &str = "localhost";
pub(crate) const SMALL_BODY: &[u8] = b"splitway bench upstream: a small fixed response body of 64 bytes\n";
/// Chunk of zeros the bulk response is written from.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// Largest request head read; the load generator sends a few dozen bytes.
const MAX_HEAD: usize = 16 * 1024;

/// The in-process origin: where it listens, and the client config that trusts it.
pub(crate) struct Upstream {
    pub(crate) tls: SocketAddr,
    pub(crate) plain: SocketAddr,
    pub(crate) client_config: Arc<ClientConfig>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Starts both listeners on a runtime of its own (2 workers: the machine's cores).
    pub(crate) fn start() -> io::Result<Upstream> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (server, client_config) = tls_configs();
        let (tls, plain) = runtime.block_on(async {
            let tls = TcpListener::bind("127.0.0.1:0").await?;
            let plain = TcpListener::bind("127.0.0.1:0").await?;
            io::Result::Ok((tls, plain))
        })?;
        let addrs = (tls.local_addr()?, plain.local_addr()?);
        runtime.spawn(serve_tls(tls, TlsAcceptor::from(server)));
        runtime.spawn(serve_plain(plain));
        Ok(Upstream {
            tls: addrs.0,
            plain: addrs.1,
            client_config,
            _runtime: runtime,
        })
    }
}

/// The plain listener alone, for a child process (the `idle` workload needs its 10,000
/// upstream sockets outside the generator's file-descriptor budget). Prints the port, then
/// serves until stdin closes (the parent went away).
pub(crate) fn run_child() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        tokio::spawn(serve_plain(listener));
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while stdin.read(&mut sink).await? > 0 {}
        Ok(())
    })
}

async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = serve_http(tls).await;
            }
        });
    }
}

async fn serve_plain(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_http(tcp));
    }
}

/// Answers request heads until the client closes or asks to close.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(end) = read_head(&mut s, &mut buf).await? else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let close = head.contains("\r\nconnection: close");
        let bulk = head
            .split(' ')
            .nth(1)
            .and_then(|p| p.rsplit_once("/bytes/"))
            .and_then(|(_, n)| n.parse::<u64>().ok());
        let conn = if close { "close" } else { "keep-alive" };
        match bulk {
            None => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: {conn}\r\n\r\n",
                    SMALL_BODY.len()
                )
                .into_bytes();
                out.extend_from_slice(SMALL_BODY);
                s.write_all(&out).await?;
            }
            Some(mut left) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {left}\r\nconnection: {conn}\r\n\r\n");
                s.write_all(head.as_bytes()).await?;
                while left > 0 {
                    let n = left.min(ZEROS.len() as u64) as usize;
                    s.write_all(&ZEROS[..n]).await?;
                    left -= n as u64;
                }
            }
        }
        s.flush().await?;
        if close {
            return s.shutdown().await;
        }
    }
}

/// Reads until `buf` holds a whole head; returns its length, or `None` at a clean end.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A CA, a leaf for [`TLS_NAME`] signed by it, the server config presenting the leaf and a
/// client config trusting only the CA (a self-signed leaf is not a valid trust anchor).
fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name.push(DnType::CommonName, "splitway bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![TLS_NAME.to_owned()]).expect("leaf params");
    let leaf = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let key = PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_no_client_auth()
        .with_single_cert(chain, key.into())
        .expect("server cert");
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("CA cert parses");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}
