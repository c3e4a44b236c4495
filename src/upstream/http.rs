//! The pooled HTTP/1.1 client for plain-HTTP forwarding (hyper-util's), whose connector is
//! splitway's own: the same routes and the same plan-resolve-check-connect path as tunnels, so
//! nothing resolves behind our back; bounded per host and in total (`pool.rs`).

mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use self::pool::Budget;
pub(crate) use self::pool::UpstreamIo;
pub use self::pool::{POOL_MAX_CONNECTIONS, POOL_MAX_IDLE_PER_HOST};
use crate::error::ProxyError;
use crate::routes::{Route, RouteTable};
use crate::target::Target;
use crate::upstream::connect::Connector;

/// Idle pooled upstream connections are closed after this.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled HTTP/1.1 client for forwarded requests, with the route table its connector
/// routes by: the route that says whether a request goes to a parent (and so carries the
/// parent's credentials) is always the one its connection was made by.
pub struct ForwardClient {
    inner: Client<RouteConnector, Incoming>,
    routes: Arc<RouteTable>,
}

impl ForwardClient {
    /// The route this client's connections to `target` take.
    pub fn route(&self, target: &Target) -> &Arc<Route> {
        self.routes.lookup(&target.host)
    }

    /// Sends `req` on a pooled connection made along [`ForwardClient::route`].
    pub fn request(&self, req: http::Request<Incoming>) -> hyper_util::client::legacy::ResponseFuture {
        self.inner.request(req)
    }
}

/// Builds the client of one runtime (routes and connector of one config).
pub(crate) fn client(routes: Arc<RouteTable>, connector: Arc<Connector>) -> ForwardClient {
    let inner = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .set_host(false)
        .build(RouteConnector {
            routes: routes.clone(),
            connector,
            budget: Budget::new(POOL_MAX_CONNECTIONS),
        });
    ForwardClient { inner, routes }
}

/// hyper-util connector that routes and connects like a tunnel does.
#[derive(Clone)]
pub(crate) struct RouteConnector {
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
            // A pooled connection idles between requests: keepalive from the start.
            super::socket::keepalive(&stream, this.connector.keepalive());
            Ok(this.budget.wrap(stream, via.is_some()))
        })
    }
}

/// The target of an absolute-form `http://` URI; port 80 by default.
pub(crate) fn target_of(uri: &Uri) -> Result<Target, ProxyError> {
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
