//! `splitway lambda-extension`: splitway as an AWS Lambda external extension, beside a
//! function in a VPC whose execute-api endpoint has Private DNS on.
//!
//! The Extensions API protocol (2020-01-01): register for `SHUTDOWN` (the name is the
//! executable's file name, as Lambda starts it from `/opt/extensions/`), load the config and
//! bind, and only then ask for the next event, so the function's first invocation finds the
//! proxy listening. A config that does not load is reported to `/extension/init/error` with the
//! message `splitway check` prints, and the process exits non-zero. On `SHUTDOWN` the proxy
//! drains, cut at the event's deadline, and the process exits 0.
//!
//! The Extensions API is the sandbox's own control plane on a local address, so it is called
//! directly over plain HTTP/1.1 (hyper's client connection), not through the connector: like
//! `splitway health`, it is not traffic splitway routes.

use std::error::Error as StdError;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::{Config, ConfigError, Proxy, StartError};

/// Where Lambda says its runtime and Extensions APIs listen (`host:port`).
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";
/// The config in the layer when neither `--config` nor `SPLITWAY_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/opt/splitway/splitway.toml";
/// Bound on every Extensions API call but `event/next`, which blocks until there is an event
/// (the sandbox is frozen meanwhile): that wait is the protocol, not a hang.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long start-up resolution may hold back the first `event/next` (init counts against the
/// function's init timeout; names not warm by then resolve on first use).
pub const WARM_WAIT: Duration = Duration::from_secs(2);
/// Left of the shutdown deadline for the process to exit after the drain is cut.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// Largest Extensions API response read (events are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

const API: &str = "/2020-01-01/extension";
const ID_HEADER: &str = "Lambda-Extension-Identifier";

/// Why the extension stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error(
        "{RUNTIME_API_ENV} is not set: `splitway lambda-extension` runs inside AWS Lambda, started from the \
         layer's /opt/extensions/; use `splitway run` elsewhere"
    )]
    NoRuntimeApi,
    #[error("Extensions API {call} at {addr}")]
    Io {
        call: &'static str,
        addr: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("Extensions API {call} at {addr}: no answer within {API_TIMEOUT:?}")]
    Timeout { call: &'static str, addr: String },
    #[error("Extensions API {call} at {addr} answered HTTP {status}: {body}")]
    Status {
        call: &'static str,
        addr: String,
        status: StatusCode,
        body: String,
    },
    #[error("Extensions API register at {addr} answered without a {ID_HEADER} header")]
    NoIdentifier { addr: String },
    #[error("Extensions API event/next at {addr}: the event is not JSON with eventType: {body}")]
    BadEvent {
        addr: String,
        body: String,
        #[source]
        source: serde_json::Error,
    },
    /// Reported to `/extension/init/error` first.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reported to `/extension/init/error` first.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// One event from `event/next` (only the fields splitway reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `SHUTDOWN` (what splitway registers for) or `INVOKE`.
    pub event_type: String,
    /// When the sandbox is stopped, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub deadline_ms: u64,
    /// `spindown`, `timeout` or `failure`, on `SHUTDOWN`.
    #[serde(default)]
    pub shutdown_reason: Option<String>,
}

/// A registered extension's client of the Extensions API.
pub struct Extension {
    addr: String,
    id: String,
}

impl Extension {
    /// `POST /extension/register` for `SHUTDOWN` as `name` (the executable's file name).
    pub async fn register(addr: &str, name: &str) -> Result<Extension, LambdaError> {
        let body = br#"{"events":["SHUTDOWN"]}"#.to_vec();
        let headers = [("Lambda-Extension-Name", name)];
        let call = call(addr, "register", Method::POST, "register", &headers, body);
        let (status, id, body) = bounded(addr, "register", call).await?;
        check(addr, "register", status, &body)?;
        let id = id.ok_or_else(|| LambdaError::NoIdentifier { addr: addr.into() })?;
        Ok(Extension { addr: addr.into(), id })
    }

    /// `GET /extension/event/next`: blocks until Lambda has an event for this extension.
    pub async fn next(&self) -> Result<Event, LambdaError> {
        let headers = [(ID_HEADER, self.id.as_str())];
        let (status, _, body) = call(&self.addr, "event/next", Method::GET, "event/next", &headers, vec![]).await?;
        check(&self.addr, "event/next", status, &body)?;
        serde_json::from_slice(&body).map_err(|source| LambdaError::BadEvent {
            addr: self.addr.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            source,
        })
    }

    /// `POST /extension/init/error`: init failed with `message`; `kind` is `Category.Reason`.
    pub async fn init_error(&self, kind: &str, message: &str) -> Result<(), LambdaError> {
        let body = serde_json::json!({ "errorMessage": message, "errorType": kind, "stackTrace": [] });
        let headers = [
            (ID_HEADER, self.id.as_str()),
            ("Lambda-Extension-Function-Error-Type", kind),
        ];
        let call = call(
            &self.addr,
            "init/error",
            Method::POST,
            "init/error",
            &headers,
            body.to_string().into(),
        );
        let (status, _, body) = bounded(&self.addr, "init/error", call).await?;
        check(&self.addr, "init/error", status, &body)
    }
}

type Reply = (StatusCode, Option<String>, Bytes);

async fn bounded(
    addr: &str,
    what: &'static str,
    call: impl Future<Output = Result<Reply, LambdaError>>,
) -> Result<Reply, LambdaError> {
    timeout(API_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(LambdaError::Timeout {
            call: what,
            addr: addr.into(),
        })
    })
}

fn check(addr: &str, what: &'static str, status: StatusCode, body: &[u8]) -> Result<(), LambdaError> {
    if status.is_success() {
        return Ok(());
    }
    Err(LambdaError::Status {
        call: what,
        addr: addr.into(),
        status,
        body: String::from_utf8_lossy(body).trim().to_owned(),
    })
}

/// One request on a connection of its own (the API is local; `next` holds its connection open
/// until the event, and a frozen sandbox may find a pooled one dead).
async fn call(
    addr: &str,
    what: &'static str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, LambdaError> {
    let io = |source: Box<dyn StdError + Send + Sync>| LambdaError::Io {
        call: what,
        addr: addr.into(),
        source,
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| io(e.into()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io(e.into()))?;
    let driver = tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{API}/{path}"))
        .header(http::header::HOST, addr);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| io(e.into()))?;
    let response = sender.send_request(request).await.map_err(|e| io(e.into()))?;
    let status = response.status();
    let id = response
        .headers()
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(io)?
        .to_bytes();
    driver.abort();
    Ok((status, id, body))
}

/// The message `splitway check` prints for `e`: each cause after a `: `.
pub fn message(e: &(dyn StdError + 'static)) -> String {
    crate::config::chain(e)
}

/// Runs the extension: register, load `config` and bind, serve until `SHUTDOWN` (or `signal`),
/// drain within the event's deadline. `name` is the executable's file name.
pub async fn run(
    runtime_api: &str,
    name: &str,
    config: &Path,
    signal: impl Future<Output = ()>,
) -> Result<(), LambdaError> {
    let ext = Extension::register(runtime_api, name).await?;
    tracing::info!(extension = name, "registered with the Lambda Extensions API");
    let proxy = match load_and_bind(config).await {
        Ok(proxy) => proxy,
        Err((kind, e)) => {
            if let Err(report) = ext.init_error(kind, &message(&e)).await {
                tracing::error!(error = %message(&report), "cannot report the init error to Lambda");
            }
            return Err(e);
        }
    };
    let admin = proxy.admin_addr().map_or_else(|| "off".into(), |a| a.to_string());
    tracing::info!(listen = %proxy.local_addr(), admin, config = %config.display(), mode = "lambda-extension", "splitway serving");
    let handle = proxy.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    // The first invocation should find the route names resolved; never hold init for long.
    let _ = timeout(WARM_WAIT, handle.wait_started()).await;
    let deadline = tokio::select! {
        shutdown = until_shutdown(&ext) => Some(shutdown?),
        () = signal => None,
    };
    let _ = stop.send(());
    match deadline {
        Some(at) => {
            if timeout_at(at, &mut serving).await.is_err() {
                tracing::warn!(
                    open = handle.open_connections(),
                    "drain cut at the Lambda shutdown deadline"
                );
                serving.abort();
            }
        }
        None => drop(serving.await),
    }
    tracing::info!("drained; exiting");
    Ok(())
}

async fn load_and_bind(path: &Path) -> Result<Proxy, (&'static str, LambdaError)> {
    let config = Config::load(path).map_err(|e| ("Extension.ConfigInvalid", e.into()))?;
    crate::routes::RouteTable::new(&config.routes)
        .map_err(|clash| ("Extension.ConfigInvalid", clash.located(&config.origin).into()))?;
    Proxy::bind(config)
        .await
        .map_err(|e| ("Extension.StartFailed", e.into()))
}

/// Asks for events until `SHUTDOWN`; returns when the drain must be over.
async fn until_shutdown(ext: &Extension) -> Result<Instant, LambdaError> {
    loop {
        let event = ext.next().await?;
        if event.event_type != "SHUTDOWN" {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = Duration::from_millis(event.deadline_ms.saturating_sub(now_ms)).saturating_sub(DEADLINE_MARGIN);
        tracing::info!(
            reason = event.shutdown_reason.as_deref().unwrap_or("-"),
            left_ms = left.as_millis() as u64,
            "SHUTDOWN from Lambda; draining"
        );
        return Ok(Instant::now() + left);
    }
}
