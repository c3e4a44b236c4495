//! Absolute-form requests (`GET http://host/path`, RFC 9112 §3.2.2) forwarded as plain HTTP
//! through hyper-util's pooled client, whose connector is splitway's own: the same routes and
//! the same resolve-check-connect path as tunnels, so nothing resolves behind our back.

mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use self::pool::Budget;
pub use self::pool::{POOL_MAX_CONNECTIONS, POOL_MAX_IDLE_PER_HOST, UpstreamIo};
use super::Body;
use crate::error::ProxyError;
use crate::routes::{Route, RouteTable};
use crate::upstream::connect::Connector;
use crate::upstream::target::Target;

/// How long an upstream may take to send its response head.
pub const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle pooled upstream connections are closed after this.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled HTTP/1.1 client for forwarded requests.
pub type ForwardClient = Client<RouteConnector, Incoming>;

/// Builds the client of one runtime (routes and connector of one config).
pub fn client(routes: Arc<RouteTable>, connector: Arc<Connector>) -> ForwardClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .set_host(false)
        .build(RouteConnector {
            routes,
            connector,
            budget: Budget::new(POOL_MAX_CONNECTIONS),
        })
}

/// hyper-util connector that routes and connects like a tunnel does.
#[derive(Clone)]
pub struct RouteConnector {
    routes: Arc<RouteTable>,
    connector: Arc<Connector>,
    budget: Budget,
}

impl tower::Service<Uri> for RouteConnector {
    type Response = UpstreamIo;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let target = target_of(&uri)?;
            let route = this.routes.lookup(&target.host).clone();
            let (stream, _, via) = this.connector.connect_http(&route, &target).await?;
            Ok(this.budget.wrap(stream, via.is_some()))
        })
    }
}

/// The target of an absolute-form `http://` URI; port 80 by default.
pub fn target_of(uri: &Uri) -> Result<Target, ProxyError> {
    if uri.scheme_str() != Some("http") {
        let scheme = uri.scheme_str().unwrap_or("none");
        return Err(ProxyError::BadRequest(format!(
            "scheme `{scheme}` cannot be forwarded: send http:// URLs, and https through CONNECT (HTTPS_PROXY)"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::BadRequest(format!("`{uri}` has no host")))?;
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "userinfo is not allowed in a request target".into(),
        ));
    }
    Ok(Target::parse_host_port(authority.as_str(), 80)?)
}

/// RFC 9110 §7.6.1: hop-by-hop fields, plus those `Connection` names, never cross the proxy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
}

/// RFC 9110 §7.6.3.
const VIA: HeaderValue = HeaderValue::from_static("1.1 splitway");

/// Rewrites the request for the origin (origin-form, `Host` from the target, no hop-by-hop
/// fields, `Via`) and sends it; returns the response with its own hop-by-hop fields removed.
pub async fn forward(
    client: &ForwardClient,
    route: &Route,
    target: &Target,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    strip_hop_by_hop(req.headers_mut());
    let host = if target.port == 80 {
        target.host.to_string()
    } else {
        target.to_string()
    };
    // RFC 9112 §3.2.2: the target URI's authority replaces any Host the client sent.
    let host = HeaderValue::from_str(&host).map_err(|_| ProxyError::BadRequest("invalid host".into()))?;
    req.headers_mut().insert(header::HOST, host);
    req.headers_mut().append(header::VIA, VIA);
    // A parent gets the route's credentials; the client's own were stripped above.
    if let Some(auth) = route.via.as_ref().and_then(|v| v.authorization()) {
        let mut value =
            HeaderValue::from_str(&auth).map_err(|_| ProxyError::BadRequest("invalid parent credentials".into()))?;
        value.set_sensitive(true);
        req.headers_mut().insert(header::PROXY_AUTHORIZATION, value);
    }
    let sent = tokio::time::timeout(RESPONSE_HEADER_TIMEOUT, client.request(req)).await;
    let mut resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(upstream_error(route, target, e)),
        Err(_) => {
            return Err(ProxyError::Unreachable {
                route: route.name.to_string(),
                host: target.to_string(),
                reason: format!("no response head within {RESPONSE_HEADER_TIMEOUT:?}"),
            });
        }
    };
    strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut().append(header::VIA, VIA);
    Ok(resp.map(|b| b.boxed()))
}

/// The connector's own `ProxyError` when connecting failed; otherwise the upstream broke.
fn upstream_error(route: &Route, target: &Target, e: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<ProxyError>() {
            return p.clone();
        }
        source = err.source();
    }
    ProxyError::Unreachable {
        route: route.name.to_string(),
        host: target.to_string(),
        reason: e.to_string(),
    }
}
