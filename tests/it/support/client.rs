//! Clients of the emulated network: reqwest (direct, or through a proxy), a raw CONNECT
//! speaker for driving a tunnel by hand, and curl.
//!
//! All of them are hermetic: they trust only the test CA, resolve only from the emulated
//! zones (never the system resolver) and ignore the proxy variables of the environment.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, Error as TlsError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::apigw::SERVED_BY;
use super::bound::{HANG_SECS, within};
use super::net::{AwsNet, Resolver, aws_net};
use super::pki;
use super::wire::read_response;

/// Not a synchronisation device: only turns a hung test into a failed one.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client reaches the APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through an HTTP proxy at this address (`HTTPS_PROXY=http://ADDR`); the client
    /// itself resolves nothing.
    Proxy(SocketAddr),
    /// Straight to the API, resolving as an application that asks this resolver would.
    Direct(Resolver),
}

/// `https://{host}:{port}/`, at the emulated endpoints' port.
pub(crate) fn url(host: &str) -> String {
    format!("https://{host}:{}/", aws_net().port)
}

/// A reqwest client that trusts only the test CA and reaches the APIs `via`.
pub(crate) fn https_client(net: &'static AwsNet, via: Via) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(pki::client_config(&net.ca_der))
        .timeout(SAFETY_TIMEOUT);
    let builder = match via {
        // An explicit proxy turns off reqwest's reading of HTTPS_PROXY / NO_PROXY.
        Via::Proxy(addr) => {
            let proxy = reqwest::Proxy::https(format!("http://{addr}")).expect("proxy URL");
            builder.proxy(proxy.no_proxy(None)).dns_resolver(Arc::new(NoResolver))
        }
        Via::Direct(which) => builder.no_proxy().dns_resolver(Arc::new(ZoneResolver { net, which })),
    };
    builder.build().expect("build reqwest client")
}

/// What a test usually asserts on about one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) status: u16,
    /// `x-served-by`: which endpoint answered ("" if none said).
    pub(crate) served_by: String,
    /// `x-amzn-ErrorType` ("" if absent).
    pub(crate) error_type: String,
    pub(crate) body: String,
}

/// `GET url(host)` with `client`, summarised.
pub(crate) async fn get(client: &reqwest::Client, host: &str) -> Result<Served, reqwest::Error> {
    get_url(client, &url(host)).await
}

/// `GET url` with `client`, summarised.
pub(crate) async fn get_url(client: &reqwest::Client, url: &str) -> Result<Served, reqwest::Error> {
    let response = client.get(url).send().await?;
    let header = |name: &str| {
        let value = response.headers().get(name).and_then(|v| v.to_str().ok());
        value.unwrap_or_default().to_owned()
    };
    let status = response.status().as_u16();
    let served_by = header(SERVED_BY);
    let error_type = header("x-amzn-errortype");
    let body = response.text().await?;
    Ok(Served {
        status,
        served_by,
        error_type,
        body,
    })
}

/// Answers from an emulated resolver's zone; an unknown name is an error, never a fallback.
struct ZoneResolver {
    net: &'static AwsNet,
    which: Resolver,
}

impl Resolve for ZoneResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.net.lookup(self.which, name.as_str());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ip = found
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: NXDOMAIN in emulated DNS")))?;
            Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

/// For proxied clients: the proxy resolves, the client must not (and the proxy's address
/// is an IP literal, which reqwest connects to without resolving).
struct NoResolver;

impl Resolve for NoResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let message = format!("{}: a proxied test client must not resolve", name.as_str());
        Box::pin(async move { Err(io::Error::other(message).into()) })
    }
}

/// Every error in `err`'s chain, including those wrapped in an `io::Error`, whose
/// `source()` skips the error it wraps and returns that error's source.
pub(crate) fn error_chain<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    chain
}

/// The first error of type `T` in `err`'s chain.
pub(crate) fn find_cause<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    error_chain(err).into_iter().find_map(|e| e.downcast_ref::<T>())
}

/// The chain as one line, for assertion messages.
pub(crate) fn describe_chain(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = error_chain(err).iter().map(|e| e.to_string()).collect();
    // An io::Error displays as the error it wraps: say it once.
    parts.dedup();
    parts.join(": ")
}

/// Whether the chain holds rustls' "certificate not valid for this name".
pub(crate) fn is_name_mismatch(err: &(dyn Error + 'static)) -> bool {
    matches!(
        find_cause::<TlsError>(err),
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ))
    )
}

/// Whether the chain holds a refused TCP connection.
pub(crate) fn is_connection_refused(err: &(dyn Error + 'static)) -> bool {
    error_chain(err)
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

/// A `CONNECT authority HTTP/1.1` request with its Host header.
pub(crate) fn connect_request(authority: &str) -> Vec<u8> {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
}

/// Sends `request` to the proxy and reads its response head (header names lowercased) and
/// body without reading one byte past them, so a 2xx leaves the tunnel's first byte unread.
pub(crate) async fn connect_raw(
    proxy: SocketAddr,
    request: &[u8],
) -> (String, Vec<(String, String)>, String, TcpStream) {
    let mut stream = within(HANG_SECS, "connect to the proxy", TcpStream::connect(proxy))
        .await
        .expect("connect to the proxy");
    within(HANG_SECS, "send to the proxy", stream.write_all(request))
        .await
        .expect("send the request to the proxy");
    let response = read_response(&mut stream)
        .await
        .expect("the proxy closed the connection without a response");
    (response.status_line, response.headers, response.body, stream)
}

/// The status code of an HTTP/1.1 status line.
pub(crate) fn status_of(status_line: &str) -> u16 {
    let code = status_line.split(' ').nth(1);
    code.and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
}

/// The value of header `name` (case-insensitive) in `headers`.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    found.map(|(_, v)| v.as_str())
}

/// A TLS handshake over `stream` (e.g. a tunnel) trusting only `ca`.
pub(crate) async fn tls_over(
    stream: TcpStream,
    sni: &str,
    ca: &CertificateDer<'_>,
) -> Result<TlsStream<TcpStream>, io::Error> {
    let connector = TlsConnector::from(Arc::new(pki::client_config(ca)));
    let name = ServerName::try_from(sni.to_owned()).map_err(io::Error::other)?;
    within(
        HANG_SECS,
        format!("TLS handshake with {sni}"),
        connector.connect(name, stream),
    )
    .await
}

/// `GET /` with `Host: host` over an established stream; returns the status and body.
pub(crate) async fn get_over_tls<S>(mut stream: S, host: &str) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    within(
        HANG_SECS,
        "send GET through the tunnel",
        stream.write_all(request.as_bytes()),
    )
    .await
    .expect("send GET through the tunnel");
    // A TLS writer may hold ciphertext back until flushed (e.g. over a slow socket).
    within(HANG_SECS, "flush the GET", stream.flush())
        .await
        .expect("flush the GET");
    let response = read_response(&mut stream)
        .await
        .unwrap_or_else(|| panic!("GET {host}: the connection ended without a response"));
    (response.status, response.body)
}

/// Runs `curl` on `url(host)` reaching it `via`, trusting only the test CA, with `extra`
/// arguments before the URL. Async, so a proxy on the test's own runtime keeps running.
pub(crate) async fn curl(net: &AwsNet, via: Via, host: &str, extra: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("curl");
    // -q first: no ~/.curlrc. An empty environment: no proxy variables.
    command.args(["-q", "--silent", "--show-error", "--max-time", "30", "--cacert"]);
    command.arg(ca_file(net)).env_clear();
    command.envs(std::env::var_os("PATH").map(|path| ("PATH", path)));
    match via {
        Via::Proxy(addr) => command.args(["--proxy", &format!("http://{addr}")]),
        Via::Direct(which) => {
            let ip = net
                .lookup(which, host)
                .unwrap_or_else(|| panic!("{host} not in {which:?}"));
            let pin = format!("{host}:{}:{ip}", net.port);
            command.args(["--noproxy", "*", "--resolve", &pin])
        }
    };
    command.args(extra).arg(url(host));
    within(HANG_SECS * 2, format!("curl {host} to exit"), command.output())
        .await
        .expect("run curl")
}

/// The test CA as a PEM file, written once per process, for curl's `--cacert`.
pub(crate) fn ca_file(net: &AwsNet) -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("splitway-test-ca-{}.pem", std::process::id()));
        std::fs::write(&path, &net.ca_pem).expect("write the test CA for curl");
        path
    })
    .clone()
}

/// A TLS handshake with `config` over `stream` (any transport, e.g. one that slices writes),
/// then `GET /` with `Host: host`; returns the status and body.
pub(crate) async fn handshake_and_get<S>(config: ClientConfig, stream: S, host: &str) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).expect("a valid server name");
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, stream);
    let tls = within(HANG_SECS, format!("TLS handshake with {host}"), handshake)
        .await
        .expect("handshake through the tunnel");
    get_over_tls(tls, host).await
}

/// `GET path` on an admin listener; returns the status and body.
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = within(HANG_SECS, "connect to the admin listener", TcpStream::connect(admin))
        .await
        .expect("admin listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    within(HANG_SECS, "send to the admin listener", s.write_all(request.as_bytes()))
        .await
        .expect("send to the admin listener");
    let response = read_response(&mut s)
        .await
        .unwrap_or_else(|| panic!("admin GET {path}: the connection ended without a response"));
    (response.status, response.body)
}

/// Whether a real client the test needs is here. When it is not: under CI (`CI` set) the test
/// fails, naming what to install; elsewhere it prints why and the caller skips
/// ([`super::require`]).
#[track_caller]
pub(crate) fn client_or_skip(client: &str, present: bool, install: &str) -> bool {
    let found = if present {
        Ok(())
    } else {
        Err(format!("not installed (install {install}; see .ci/run)"))
    };
    super::require(client, found).is_some()
}

/// Whether `program ARGS…` runs and exits 0 (with only `PATH` and `HOME` in its environment).
pub(crate) fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .into_iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .output()
        .is_ok_and(|out| out.status.success())
}
