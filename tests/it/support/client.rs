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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::apigw::SERVED_BY;
use super::net::{AwsNet, Resolver, aws_net};
use super::pki;

/// Not a synchronisation device: only turns a hung test into a failed one.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest response head accepted from a proxy or server.
const MAX_HEAD: usize = 64 * 1024;

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
    let mut stream = TcpStream::connect(proxy).await.expect("connect to the proxy");
    stream.write_all(request).await.expect("send the request to the proxy");
    let (status_line, headers) = read_head(&mut stream).await;
    let body = read_body(&mut stream, status_of(&status_line), &headers).await;
    (status_line, headers, body, stream)
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
    connector.connect(name, stream).await
}

/// `GET /` with `Host: host` over an established stream; returns the status and body.
pub(crate) async fn get_over_tls<S>(mut stream: S, host: &str) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send GET through the tunnel");
    // A TLS writer may hold ciphertext back until flushed (e.g. over a slow socket).
    stream.flush().await.expect("flush the GET");
    let (status_line, headers) = read_head(&mut stream).await;
    let status = status_of(&status_line);
    (status, read_body(&mut stream, status, &headers).await)
}

/// Reads up to and including the blank line, one byte at a time so nothing after it is
/// consumed; returns the status line and the headers with lowercased names.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < MAX_HEAD, "response head longer than {MAX_HEAD} bytes");
        let byte = stream.read_u8().await;
        let partial = String::from_utf8_lossy(&head);
        head.push(byte.unwrap_or_else(|e| panic!("connection ended in the head ({e}): {partial:?}")));
    }
    let head = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"))
        })
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status_line, headers)
}

/// Reads the body the way RFC 9112 §6.3 delimits it; a 2xx without a length (a CONNECT
/// success) has none, so the tunnel's bytes stay unread.
async fn read_body<S>(stream: &mut S, status: u16, headers: &[(String, String)]) -> String
where
    S: AsyncRead + Unpin,
{
    let chunked = header(headers, "transfer-encoding").is_some_and(|te| te.contains("chunked"));
    let length = header(headers, "content-length").map(|l| l.parse().expect("content-length"));
    let mut body = Vec::new();
    match length {
        Some(len) => {
            body.resize(len, 0);
            stream.read_exact(&mut body).await.expect("read the body");
        }
        None if chunked => body = read_chunked(stream).await,
        None if (200..300).contains(&status) || status == 204 || status == 304 => {}
        None => {
            stream
                .read_to_end(&mut body)
                .await
                .expect("read the close-delimited body");
        }
    }
    String::from_utf8(body).expect("body is UTF-8")
}

async fn read_chunked<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream).await;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).expect("chunk size");
        if size == 0 {
            while !read_line(stream).await.is_empty() {}
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await.expect("read a chunk");
        read_line(stream).await;
    }
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(stream.read_u8().await.expect("read a chunked-body line"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("chunk line is UTF-8")
}

/// Whether a `curl` binary can be run.
pub(crate) fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .output()
        .is_ok_and(|out| out.status.success())
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
    command.output().await.expect("run curl")
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
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .expect("handshake through the tunnel");
    get_over_tls(tls, host).await
}

/// `GET path` on an admin listener; returns the status and body.
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.expect("admin listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .expect("send to the admin listener");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the admin answer");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}
