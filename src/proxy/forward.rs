//! Absolute-form requests (`GET http://host/path`, RFC 9112 §3.2.2) forwarded as plain HTTP
//! through hyper-util's pooled client, whose connector is splitway's own: the same routes and
//! the same resolve-check-connect path as tunnels, so nothing resolves behind our back.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Body;
use crate::error::{ProxyError, Unreachable};
use crate::routes::Route;
use crate::target::Target;
pub(crate) use crate::upstream::http::{ForwardClient, target_of};

/// How long an upstream may take to send its response head.
pub(crate) const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

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
/// fields, `Via`) and sends it along the route `client` connects by (returned: in report mode
/// it is the system path, not the enforcing table's route); the response comes back with its
/// own hop-by-hop fields removed.
pub(crate) async fn forward(
    client: &ForwardClient,
    target: &Target,
    req: Request<Incoming>,
) -> (Arc<Route>, Result<Response<Body>, ProxyError>) {
    let route = client.route(target).clone();
    let result = send(client, &route, target, req).await;
    (route, result)
}

async fn send(
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
    // A parent gets the route's credentials, and only a parent: `route` is the one the
    // client's connector connects by, so the header goes where the parent connection goes.
    // The client's own credentials were stripped above.
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
                cause: Unreachable::NoResponseHead(RESPONSE_HEADER_TIMEOUT),
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
        cause: Unreachable::Forward(std::sync::Arc::new(e)),
    }
}
