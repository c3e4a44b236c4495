//! Fake API Gateway endpoints: TLS + HTTP/1.1 servers that answer like the public endpoint
//! or a VPC endpoint would, and say in every response which one served it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::names::{
    CUSTOM_DOMAIN, CUSTOM_DOMAIN_2, PRIVATE_API_ID, PRIVATE_DOMAIN, PUBLIC_API_ID, REGION, UNLISTED_DOMAIN,
    WEST_PRIVATE_API_ID, WEST_PRIVATE_DOMAIN, WEST_REGION, execute_api_host,
};
use super::pki::TestCa;

/// Header naming the endpoint that served a response.
pub(crate) const SERVED_BY: &str = "x-served-by";
/// Header a VPC endpoint routes on when the Host is not the API's name (as AWS does).
pub(crate) const API_ID_HEADER: &str = "x-apigw-api-id";

/// What one endpoint presents and serves.
#[derive(Clone, Debug)]
pub(crate) struct EndpointSpec {
    /// Goes into `x-served-by` and the body's `endpoint`, e.g. "vpce-us-east-1".
    pub(crate) name: &'static str,
    /// Subject alternative names of its certificate.
    pub(crate) sans: Vec<String>,
    /// Hosts answered 200, each with the `api` its body names; any other host gets 403.
    pub(crate) serves: Vec<(String, String)>,
    /// Region whose `x-apigw-api-id` header is honoured (VPC endpoints only).
    pub(crate) api_id_header_region: Option<&'static str>,
}

impl EndpointSpec {
    /// The public endpoint of us-east-1: custom domains and public APIs.
    pub(crate) fn public_us_east_1() -> Self {
        let public = execute_api_host(PUBLIC_API_ID, REGION);
        Self {
            name: "public-us-east-1",
            sans: strings(&[
                "*.execute-api.us-east-1.amazonaws.com",
                CUSTOM_DOMAIN,
                CUSTOM_DOMAIN_2,
                UNLISTED_DOMAIN,
            ]),
            serves: vec![
                (CUSTOM_DOMAIN.into(), CUSTOM_DOMAIN.into()),
                (CUSTOM_DOMAIN_2.into(), CUSTOM_DOMAIN_2.into()),
                (UNLISTED_DOMAIN.into(), UNLISTED_DOMAIN.into()),
                (public, PUBLIC_API_ID.into()),
            ],
            api_id_header_region: None,
        }
    }

    /// The us-east-1 VPC endpoint (regional ENI): private APIs only, and a certificate that
    /// covers only AWS names and the private custom domain associated with it (its ACM
    /// certificate), so a public custom domain fails the TLS name check.
    pub(crate) fn vpce_us_east_1() -> Self {
        Self {
            name: "vpce-us-east-1",
            sans: strings(&[
                "*.execute-api.us-east-1.amazonaws.com",
                "*.execute-api.us-east-1.vpce.amazonaws.com",
                PRIVATE_DOMAIN,
            ]),
            serves: vec![
                (execute_api_host(PRIVATE_API_ID, REGION), PRIVATE_API_ID.into()),
                (PRIVATE_DOMAIN.into(), PRIVATE_DOMAIN.into()),
            ],
            api_id_header_region: Some(REGION),
        }
    }

    /// The same VPC endpoint's zonal ENI in us-east-1a.
    pub(crate) fn vpce_us_east_1a() -> Self {
        Self {
            name: "vpce-us-east-1a",
            ..Self::vpce_us_east_1()
        }
    }

    /// The peered VPC's endpoint in us-west-2.
    pub(crate) fn vpce_us_west_2() -> Self {
        let private = execute_api_host(WEST_PRIVATE_API_ID, WEST_REGION);
        Self {
            name: "vpce-us-west-2",
            sans: strings(&[
                "*.execute-api.us-west-2.amazonaws.com",
                "*.execute-api.us-west-2.vpce.amazonaws.com",
                WEST_PRIVATE_DOMAIN,
            ]),
            serves: vec![
                (private, WEST_PRIVATE_API_ID.into()),
                (WEST_PRIVATE_DOMAIN.into(), WEST_PRIVATE_DOMAIN.into()),
            ],
            api_id_header_region: Some(WEST_REGION),
        }
    }

    /// The response to one request, routed by Host (port stripped) or `x-apigw-api-id`.
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let by_id = self
            .api_id_header_region
            .and_then(|region| Some(execute_api_host(header(API_ID_HEADER)?, region)));
        let host = by_id
            .or_else(|| header("host").map(strip_port))
            .or_else(|| request.uri().host().map(str::to_owned))
            .unwrap_or_default()
            .to_ascii_lowercase();
        match self.serves.iter().find(|(served, _)| *served == host) {
            Some((_, api)) => self.ok(api),
            None => self.forbidden(),
        }
    }

    fn ok(&self, api: &str) -> Response<Full<Bytes>> {
        self.response(StatusCode::OK)
            .body(Full::from(ok_body(self.name, api)))
            .expect("response")
    }

    /// API Gateway's real answer for an API it does not serve on this endpoint.
    fn forbidden(&self) -> Response<Full<Bytes>> {
        self.response(StatusCode::FORBIDDEN)
            .header("x-amzn-ErrorType", "ForbiddenException")
            .body(Full::from(Bytes::from_static(br#"{"message":"Forbidden"}"#)))
            .expect("response")
    }

    fn response(&self, status: StatusCode) -> hyper::http::response::Builder {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header(SERVED_BY, self.name)
    }
}

/// The body of a 200 from `endpoint` for `api` (an API ID or a custom domain).
pub(crate) fn ok_body(endpoint: &str, api: &str) -> String {
    format!(r#"{{"endpoint":"{endpoint}","api":"{api}"}}"#)
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn strip_port(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => host.to_owned(),
    }
}

/// A running endpoint. Its tasks live on the runtime that started it.
pub(crate) struct ApiGw {
    spec: Arc<EndpointSpec>,
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ApiGw {
    /// Binds `addr` and serves `spec` with a certificate from `ca`.
    pub(crate) async fn start(addr: SocketAddr, spec: EndpointSpec, ca: &TestCa) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener, spec, ca))
    }

    /// Serves `spec` on an already bound listener (so a caller can reserve ports first).
    pub(crate) fn serve(listener: TcpListener, spec: EndpointSpec, ca: &TestCa) -> Self {
        let addr = listener.local_addr().expect("bound listener has an address");
        let sans: Vec<&str> = spec.sans.iter().map(String::as_str).collect();
        let acceptor = TlsAcceptor::from(ca.server_config(&sans));
        let spec = Arc::new(spec);
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let counters = (connections.clone(), requests.clone());
        let task = tokio::spawn(accept_loop(listener, acceptor, spec.clone(), counters));
        Self {
            spec,
            addr,
            connections,
            requests,
            task: Mutex::new(Some(task)),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.spec.name
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far, whether or not TLS then succeeded. A client's
    /// `connect()` returning does not mean the accept happened yet; a TLS handshake's
    /// outcome (success or a certificate error) does.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// HTTP requests answered so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection; when this returns the port refuses.
    /// Stop only servers your test started: the shared ones serve every test.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
            // Awaiting the aborted task means its listener has been dropped.
            let _ = task.await;
        }
    }
}

impl Drop for ApiGw {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>);

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    spec: Arc<EndpointSpec>,
    (connections, requests): Counters,
) {
    // Owned here so aborting this task closes every connection too.
    let mut tasks = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_connection(
            stream,
            acceptor.clone(),
            spec.clone(),
            requests.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    spec: Arc<EndpointSpec>,
    requests: Arc<AtomicUsize>,
) {
    // A failed handshake is the point of some tests; the client reports it.
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let service = service_fn(move |request: Request<Incoming>| {
        requests.fetch_add(1, Ordering::SeqCst);
        let response = spec.respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}
