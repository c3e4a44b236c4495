//! DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484) in front of a `FakeDns`: the same
//! zone, mode and query log, reached through TLS with a certificate from the test CA.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::dns::{FakeDns, Responder};
use super::pki::TestCa;

/// RFC 8484 §6: the media type of a DNS message in a request or response body.
const DNS_MESSAGE: &str = "application/dns-message";
/// The path DoH servers conventionally answer on (and splitway's default).
pub(crate) const DOH_PATH: &str = "/dns-query";
/// The largest DNS message (RFC 8484 §6 allows up to 65535 bytes).
const MAX_MESSAGE: usize = 65535;

#[derive(Clone, Copy)]
enum Transport {
    Tls,
    Https,
}

/// A running DoT or DoH server. Its tasks live on the runtime that started it.
pub(crate) struct EncryptedDns {
    addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl EncryptedDns {
    /// DNS over TLS on `ip` (ephemeral port): a certificate for `cert_name`, no ALPN, the TCP
    /// framing inside.
    pub(crate) async fn dot(dns: &FakeDns, ip: IpAddr, ca: &TestCa, cert_name: &str) -> Self {
        let config = ca.server_config_alpn(&[cert_name], &[]);
        Self::start(dns, ip, config, Transport::Tls).await
    }

    /// DNS over HTTPS on `ip` (ephemeral port): HTTP/2 only (ALPN `h2`), POST and GET at
    /// [`DOH_PATH`], a certificate for `cert_name`.
    pub(crate) async fn doh(dns: &FakeDns, ip: IpAddr, ca: &TestCa, cert_name: &str) -> Self {
        let config = ca.server_config_alpn(&[cert_name], &[b"h2"]);
        Self::start(dns, ip, config, Transport::Https).await
    }

    async fn start(dns: &FakeDns, ip: IpAddr, config: Arc<rustls::ServerConfig>, transport: Transport) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind encrypted DNS listener");
        let addr = listener.local_addr().expect("bound listener has an address");
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(listener, acceptor, dns.responder(), transport));
        Self {
            addr,
            task: Mutex::new(Some(task)),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every connection; when this returns the port refuses.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
            // Awaiting the aborted task means its listener and connections have been dropped.
            let _ = task.await;
        }
    }
}

impl Drop for EncryptedDns {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, responder: Responder, transport: Transport) {
    // Owned here so aborting this task closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(stream, acceptor.clone(), responder.clone(), transport));
    }
}

async fn serve_connection(stream: TcpStream, acceptor: TlsAcceptor, responder: Responder, transport: Transport) {
    // A failed handshake (an untrusted CA, a wrong name) is the point of some tests.
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    match transport {
        Transport::Tls => {
            let _ = responder.serve_stream(tls).await;
        }
        Transport::Https => {
            let service = service_fn(move |request: Request<Incoming>| {
                let responder = responder.clone();
                async move { Ok::<_, Infallible>(doh_response(request, responder).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    }
}

/// RFC 8484 §4.1: the query is the body of a POST, or the `dns` parameter (base64url, no
/// padding) of a GET; the answer is the body of a 200. In blackhole mode no answer comes.
async fn doh_response(request: Request<Incoming>, responder: Responder) -> Response<Full<Bytes>> {
    if request.uri().path() != DOH_PATH {
        return status(StatusCode::NOT_FOUND);
    }
    let query = match *request.method() {
        Method::GET => match dns_param(request.uri().query()) {
            Some(query) => query,
            None => return status(StatusCode::BAD_REQUEST),
        },
        Method::POST => {
            let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            if content_type != Some(DNS_MESSAGE) {
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            }
            match Limited::new(request.into_body(), MAX_MESSAGE).collect().await {
                Ok(body) => body.to_bytes().to_vec(),
                Err(_) => return status(StatusCode::BAD_REQUEST),
            }
        }
        _ => return status(StatusCode::METHOD_NOT_ALLOWED),
    };
    let Some(reply) = responder.answer(&query) else {
        return std::future::pending().await;
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .body(Full::new(Bytes::from(reply)))
        .expect("a static response head is valid")
}

fn dns_param(query: Option<&str>) -> Option<Vec<u8>> {
    let value = query?.split('&').find_map(|pair| pair.strip_prefix("dns="))?;
    URL_SAFE_NO_PAD.decode(value).ok()
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
