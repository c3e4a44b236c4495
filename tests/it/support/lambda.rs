//! A test-only Lambda Extensions API (2020-01-01), as AWS documents it: `register` answers
//! with an extension identifier, `event/next` blocks until the test sends an event,
//! `init/error` and `exit/error` are accepted and recorded. Every call is logged in order.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::bound::{HANG_SECS, within};

/// The identifier `register` hands out.
pub(crate) const EXTENSION_ID: &str = "3f0c1a9e-splitway-test-extension";

/// One call the extension made.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// `register`, `event/next`, `init/error`, `exit/error`, or the unknown path.
    pub(crate) path: String,
    pub(crate) method: String,
    pub(crate) name: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) error_type: Option<String>,
    pub(crate) body: serde_json::Value,
}

struct Shared {
    calls: Mutex<Vec<Call>>,
    count: watch::Sender<usize>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<serde_json::Value>>,
}

/// The Extensions API of one emulated Lambda sandbox.
pub(crate) struct ExtensionsApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<serde_json::Value>,
    task: AbortHandle,
}

impl ExtensionsApi {
    pub(crate) async fn start() -> ExtensionsApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Extensions API");
        let addr = listener.local_addr().expect("bound address");
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            events: tokio::sync::Mutex::new(rx),
        });
        let task = tokio::spawn(accept(listener, shared.clone())).abort_handle();
        ExtensionsApi {
            addr,
            shared,
            events,
            task,
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API`: `host:port`.
    pub(crate) fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The call paths so far, in order.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.path).collect()
    }

    /// Waits until `n` calls to `path` have been made; returns the last of them.
    pub(crate) async fn wait_call(&self, path: &str, n: usize) -> Call {
        let count = |calls: &[Call]| calls.iter().filter(|c| c.path == path).count();
        let mut rx = self.shared.count.subscribe();
        let wait = rx.wait_for(|_| count(&self.calls()) >= n);
        within(HANG_SECS, format!("call {n} to {path}"), wait)
            .await
            .expect("the API lives as long as the test");
        let calls = self.calls();
        calls
            .into_iter()
            .filter(|c| c.path == path)
            .nth(n - 1)
            .expect("counted")
    }

    /// Answers the pending (or next) `event/next` with a `SHUTDOWN` due in `deadline`.
    pub(crate) fn shutdown(&self, deadline: Duration) {
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis()
            + deadline.as_millis();
        let event = serde_json::json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": "spindown",
            "deadlineMs": deadline_ms as u64,
        });
        self.events.send(event).expect("the API is running");
    }
}

impl Drop for ExtensionsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = req
        .uri()
        .path()
        .strip_prefix("/2020-01-01/extension/")
        .unwrap_or(req.uri().path())
        .to_owned();
    let mut call = Call {
        method: req.method().to_string(),
        name: header("Lambda-Extension-Name"),
        id: header("Lambda-Extension-Identifier"),
        error_type: header("Lambda-Extension-Function-Error-Type"),
        body: serde_json::Value::Null,
        path,
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    call.body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let path = call.path.clone();
    let registered = call.id.as_deref() == Some(EXTENSION_ID);
    record(shared, call);
    match (path.as_str(), registered) {
        ("register", _) => reply(
            StatusCode::OK,
            r#"{"functionName":"f","functionVersion":"$LATEST","handler":"h"}"#,
        )
        .map(|mut r| {
            r.headers_mut()
                .insert("Lambda-Extension-Identifier", EXTENSION_ID.parse().expect("header"));
            r
        })
        .expect("response"),
        ("event/next", true) => {
            let event = shared.events.lock().await.recv().await.unwrap_or_default();
            reply(StatusCode::OK, &event.to_string()).expect("response")
        }
        ("init/error" | "exit/error", true) => reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#).expect("response"),
        (_, false) => reply(StatusCode::FORBIDDEN, r#"{"errorType":"Extension.Forbidden"}"#).expect("response"),
        _ => reply(StatusCode::NOT_FOUND, "{}").expect("response"),
    }
}

fn record(shared: &Shared, call: Call) {
    shared.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    shared.count.send_modify(|n| *n += 1);
}

fn reply(status: StatusCode, body: &str) -> hyper::http::Result<Response<Full<Bytes>>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::from(Bytes::from(body.to_owned())))
}
