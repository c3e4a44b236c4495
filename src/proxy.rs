//! The one hyper service: `CONNECT` opens a tunnel, absolute-form requests are forwarded,
//! anything else is 400.
//!
//! A CONNECT gets `200` only after the upstream connection succeeded (RFC 9110 §9.3.6), so a
//! failure reaches the client as a status with `Proxy-Status` (RFC 9209).

pub mod forward;
pub(crate) mod pipe;
pub(crate) mod report;
pub mod sni;
pub(crate) mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Mode;
use crate::conn::ConnGuard;
use crate::error::ProxyError;
use crate::metrics::RequestKind;
use crate::outcome::{self, Ended, How};
use crate::routes::Route;
use crate::runtime::Runtime;
use crate::upstream::target::Target;
use tracing::Instrument;

/// Response body type of the proxy service.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Per-client-connection context handed to each request.
#[derive(Clone)]
pub struct ConnCtx {
    pub client: SocketAddr,
    /// Cancelled when the proxy starts draining.
    pub draining: tokio_util::sync::CancellationToken,
    pub runtime: Arc<Runtime>,
    pub guard: Arc<ConnGuard>,
    /// How long a pinned tunnel waits for the whole ClientHello.
    pub client_hello_timeout: Duration,
}

/// Serves one request from a client connection.
pub async fn serve(ctx: ConnCtx, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let authorized = ctx
        .runtime
        .auth
        .as_ref()
        .is_none_or(|basic| basic.allows(req.headers()));
    let result = if !authorized {
        Err((None, None, ProxyError::AuthRequired))
    } else if method == Method::CONNECT {
        connect(&ctx, req, started).await
    } else if req.uri().scheme().is_some() {
        forward(&ctx, req, started).await
    } else {
        Err((
            None,
            None,
            ProxyError::BadRequest(format!(
                "`{} {}` is neither CONNECT nor an absolute http:// URL; set HTTPS_PROXY / HTTP_PROXY",
                req.method(),
                req.uri()
            )),
        ))
    };
    let mut resp = result.unwrap_or_else(|(target, route, e)| {
        let kind = if method == Method::CONNECT {
            RequestKind::Connect
        } else {
            RequestKind::Forward
        };
        let detail = e.describe();
        Ended {
            target: target.as_ref(),
            route: route.as_deref(),
            took: started.elapsed(),
            ..Ended::refused(kind, ctx.client, method.as_str(), &e, &detail)
        }
        .finish(ctx.guard.metrics());
        error_response(&e)
    });
    if ctx.draining.is_cancelled() && method != Method::CONNECT {
        // Draining: let keep-alive clients go, so the drain can finish.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

async fn forward(ctx: &ConnCtx, req: Request<Incoming>, started: Instant) -> Result<Response<Body>, Refusal> {
    if req.method() == Method::TRACE {
        return Err((None, None, ProxyError::MethodNotAllowed("TRACE".into())));
    }
    let target = forward::target_of(req.uri()).map_err(|e| (None, None, e))?;
    let rt = &ctx.runtime;
    let route = rt.routes.lookup(&target.host).clone();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match forward::forward(&rt.client, &route, &target, req).await {
        Ok(resp) => {
            Ended {
                target: Some(&target),
                route: Some(&route),
                path: Some(&path),
                took: started.elapsed(),
                ..Ended::new(
                    RequestKind::Forward,
                    ctx.client,
                    method.as_str(),
                    How::Forwarded {
                        status: resp.status().as_u16(),
                    },
                )
            }
            .finish(ctx.guard.metrics());
            Ok(resp)
        }
        Err(e) => Err((Some(target), Some(route), e)),
    }
}

pub use crate::outcome::NO_ROUTE;

type Refusal = (Option<Target>, Option<Arc<Route>>, ProxyError);

async fn connect(ctx: &ConnCtx, mut req: Request<Incoming>, started: Instant) -> Result<Response<Body>, Refusal> {
    // RFC 9112 §3.2.3: CONNECT takes the authority-form only; `CONNECT http://host:443` is
    // not a target (hyper's URI would hand out its authority all the same).
    let uri = req.uri();
    let authority_form = uri.scheme().is_none() && uri.path_and_query().is_none_or(|p| p.as_str().is_empty());
    let authority = uri
        .authority()
        .filter(|_| authority_form)
        .map(|a| a.as_str().to_owned());
    let target = match authority.as_deref().map(Target::parse_authority) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err((None, None, e.into())),
        None => {
            return Err((
                None,
                None,
                ProxyError::BadRequest(format!("CONNECT target `{}` is not host:port", req.uri())),
            ));
        }
    };
    let rt = &ctx.runtime;
    let settings = &rt.config.proxy;
    if let Err(e) = rt.check_connect_port(&target) {
        return Err((Some(target), None, e));
    }
    let (route, connected) = connect_for(rt, &target).await;
    let (stream, upstream) = match connected {
        Ok(c) => c,
        Err(e) => return Err((Some(target), Some(route), e)),
    };
    outcome::answered(ctx.guard.metrics(), RequestKind::Connect, &route, &upstream);
    let upgrade = hyper::upgrade::on(&mut req);
    let tunnel = tunnel::Tunnel {
        client: ctx.client,
        expect_sni: tunnel::expected_sni(&route, &target),
        target,
        route,
        stream,
        upstream,
        idle_timeout: settings.idle_timeout,
        hello_timeout: ctx.client_hello_timeout,
        started,
        guard: ctx.guard.clone(),
        sni: None,
    };
    // The tunnel outlives this request's future: it takes the connection's span along.
    ctx.guard
        .spawn("tunnel", tunnel.run(upgrade).instrument(tracing::Span::current()));
    Ok(Response::new(empty()))
}

/// Routes `target` and connects along its route (report mode: along the system path, and the
/// route actually taken is the one returned). CONNECT and the transparent listener share it.
pub async fn connect_for(
    rt: &Runtime,
    target: &Target,
) -> (
    Arc<Route>,
    Result<(tokio::net::TcpStream, crate::upstream::connect::Upstream), ProxyError>,
) {
    let route = rt.routes.lookup(&target.host).clone();
    if rt.config.proxy.mode == Mode::Report {
        let result = report::connect(rt, &route, target).await;
        (rt.system_route.clone(), result)
    } else {
        let result = rt.connector.connect(&route, target).await;
        (route, result)
    }
}

/// The one place a `ProxyError` becomes an HTTP response.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let body = error_body(e);
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&e.proxy_status_header()) {
        h.insert("proxy-status", v);
    }
    if e.status() == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if e.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static(crate::auth::CHALLENGE),
        );
    } else if e.status().is_client_error() && e.status() != StatusCode::FORBIDDEN {
        // A malformed request leaves the connection in an unknown state.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The one-line plain-text body of every error splitway answers.
pub fn error_body(e: &ProxyError) -> String {
    format!("splitway: {}\n", e.describe())
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
