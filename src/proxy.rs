//! The one hyper service: `CONNECT` opens a tunnel, absolute-form requests are forwarded,
//! anything else is 400.
//!
//! A CONNECT gets `200` only after the upstream connection succeeded (RFC 9110 §9.3.6), so a
//! failure reaches the client as a status with `Proxy-Status` (RFC 9209).

mod answer;
pub(crate) mod forward;
pub(crate) mod pipe;
pub(crate) mod report;
pub mod sni;
pub(crate) mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;

use crate::config::Mode;
use crate::conn::ConnGuard;
use crate::error::ProxyError;
use crate::metrics::RequestKind;
use crate::outcome::{Exchange, How};
use crate::policy::{Identity, Policy};
use crate::routes::Route;
use crate::runtime::{Current, Runtime};
use crate::target::Target;
use tracing::Instrument;

pub(crate) use answer::error_response;
pub(crate) use answer::write_refusal;

/// Response body type of the proxy service.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Per-client-connection context handed to each request: made once at accept; the client
/// named by a PROXY header replaces the peer once, before the first request.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    /// The client (a PROXY header's source, or the peer), its peer and VPC endpoint.
    who: Arc<Identity>,
    /// Cancelled when the proxy starts draining.
    draining: tokio_util::sync::CancellationToken,
    /// The runtime of the request being served.
    runtime: Arc<Runtime>,
    /// Where the next request reads its runtime (reloads replace it).
    current: Arc<Current>,
    guard: Arc<ConnGuard>,
    /// How long a pinned tunnel waits for the whole ClientHello.
    client_hello_timeout: Duration,
}

impl ConnCtx {
    /// `runtime`: the one current at accept (read from `current` once, by the accept loop).
    pub(crate) fn new(
        who: Identity,
        draining: tokio_util::sync::CancellationToken,
        runtime: Arc<Runtime>,
        current: Arc<Current>,
        guard: Arc<ConnGuard>,
        client_hello_timeout: Duration,
    ) -> ConnCtx {
        ConnCtx {
            who: Arc::new(who),
            draining,
            runtime,
            current,
            guard,
            client_hello_timeout,
        }
    }

    /// The client a PROXY header named replaces the peer (before the first request).
    pub(crate) fn name_client(&mut self, who: Identity) {
        self.who = Arc::new(who);
    }

    /// The context of a connection's next request, on the runtime current now.
    pub(crate) fn next_request(&self) -> ConnCtx {
        ConnCtx {
            runtime: self.current.load(),
            ..self.clone()
        }
    }

    pub(crate) fn who(&self) -> &Arc<Identity> {
        &self.who
    }

    /// The runtime this connection (or its current request) is served on.
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub(crate) fn guard(&self) -> &Arc<ConnGuard> {
        &self.guard
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    pub(crate) fn client_hello_timeout(&self) -> Duration {
        self.client_hello_timeout
    }
}

/// Serves one request from a client connection.
pub(crate) async fn serve(ctx: ConnCtx, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let method = req.method().clone();
    let kind = if method == Method::CONNECT {
        RequestKind::Connect
    } else {
        RequestKind::Forward
    };
    let authorized = ctx
        .runtime
        .auth
        .as_ref()
        .map_or(Ok(()), |basic| basic.check(req.headers()));
    let exchange = Exchange::start(kind, ctx.who.clone()).with_policy(policy_of(&ctx, authorized.is_ok()));
    let mut resp = if let Err(e) = authorized {
        refuse(&ctx, exchange, method.as_str(), e.into())
    } else if method == Method::CONNECT {
        match tunnel_after_request(&ctx, exchange.clone(), req).await {
            Ok(resp) => resp,
            Err(refusal) => refuse(&ctx, exchange, method.as_str(), refusal),
        }
    } else if req.uri().scheme().is_some() {
        forward_to(&ctx, exchange, req, |req| forward::target_of(req.uri())).await
    } else {
        let e = ProxyError::BadRequest(format!(
            "`{} {}` is neither CONNECT nor an absolute http:// URL; set HTTPS_PROXY / HTTP_PROXY",
            req.method(),
            req.uri()
        ));
        refuse(&ctx, exchange, method.as_str(), e.into())
    };
    let refused_connect = method == Method::CONNECT && !resp.status().is_success();
    if refused_connect || (ctx.draining.is_cancelled() && method != Method::CONNECT) {
        // A refused CONNECT: what the client sent after it may be tunnel bytes, never a
        // request (RFC 9110 §9.3.6). Draining: let keep-alive clients go.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Forwards a plain-HTTP request, on either listener, to the target `target_of` reads from
/// it, and ends its exchange: the one forwarding path (TRACE refused, the route the pooled
/// client connects by, the canonical line).
pub(crate) async fn forward_to(
    ctx: &ConnCtx,
    exchange: Exchange,
    req: Request<Incoming>,
    target_of: impl FnOnce(&mut Request<Incoming>) -> Result<Target, ProxyError>,
) -> Response<Body> {
    let method = req.method().clone();
    if method == Method::TRACE {
        let e = ProxyError::MethodNotAllowed("TRACE".into());
        return refuse(ctx, exchange, method.as_str(), e.into());
    }
    let mut req = req;
    let target = match target_of(&mut req) {
        Ok(target) => target,
        Err(e) => return refuse(ctx, exchange, method.as_str(), e.into()),
    };
    if let Err(e) = may_use(ctx, &exchange, ctx.runtime.client.route(&target), &target) {
        let route = ctx.runtime.client.route(&target).clone();
        return refuse(ctx, exchange, method.as_str(), Refusal::on(target, route, e));
    }
    let path = req.uri().path().to_owned();
    match forward::forward(&ctx.runtime.client, &target, req).await {
        (route, Ok(resp)) => {
            let how = How::Forwarded {
                status: resp.status().as_u16(),
            };
            (exchange.ended(method.as_str(), how))
                .target(Some(&target))
                .route(Some(&route))
                .path(&path)
                .finish(ctx.guard.metrics());
            resp
        }
        (route, Err(e)) => refuse(ctx, exchange, method.as_str(), Refusal::on(target, route, e)),
    }
}

pub(crate) use crate::outcome::NO_ROUTE;

/// The `[[client]]` policy of the connection's client, `authenticated` as `[proxy] auth`'s
/// user or not; `None` without policies.
fn policy_of(ctx: &ConnCtx, authenticated: bool) -> Option<Policy> {
    let user = ctx.runtime.config.proxy.auth.as_ref().filter(|_| authenticated);
    ctx.runtime
        .policies
        .for_client(&ctx.who, user.map(|a| a.username.as_str()))
}

/// Whether the exchange's client may use `route`: the one place a `[[client]]` policy is
/// applied, wherever a route is chosen (CONNECT, transparent, forwarded requests).
fn may_use(ctx: &ConnCtx, exchange: &Exchange, route: &Route, target: &Target) -> Result<(), ProxyError> {
    exchange
        .policy()
        .map_or(Ok(()), |p| p.check(ctx.guard.metrics(), &route.name, target))
}

/// A request refused before it was forwarded or tunnelled: the error, with the target and
/// route when they were known.
pub(crate) struct Refusal {
    target: Option<Target>,
    route: Option<Arc<Route>>,
    error: ProxyError,
}

impl Refusal {
    /// Refused after routing: the canonical line names the target and the route.
    pub(crate) fn on(target: Target, route: Arc<Route>, error: ProxyError) -> Self {
        Self {
            target: Some(target),
            route: Some(route),
            error,
        }
    }

    /// Refused once the target was known, before a route was chosen.
    pub(crate) fn at(target: Target, error: ProxyError) -> Self {
        Self {
            target: Some(target),
            route: None,
            error,
        }
    }
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        Self {
            target: None,
            route: None,
            error,
        }
    }
}

/// Counts and logs a refusal; the error to answer.
fn refused(ctx: &ConnCtx, exchange: Exchange, method: &str, refusal: Refusal) -> ProxyError {
    let Refusal { target, route, error } = refusal;
    let detail = error.describe();
    (exchange.refused(method, &error, &detail))
        .target(target.as_ref())
        .route(route.as_deref())
        .finish(ctx.guard.metrics());
    error
}

/// Counts and logs a refusal, and answers it.
pub(crate) fn refuse(ctx: &ConnCtx, exchange: Exchange, method: &str, refusal: Refusal) -> Response<Body> {
    error_response(&refused(ctx, exchange, method, refusal))
}

/// A `CONNECT` on a kept-alive connection, after another request: hyper's upgrade hands the
/// client back to the tunnel task. The first request of a connection, when it is a
/// `CONNECT`, is [`serve_connect`]'s.
async fn tunnel_after_request(
    ctx: &ConnCtx,
    exchange: Exchange,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let tunnel = open_tunnel(ctx, exchange, req.uri()).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    // The tunnel outlives this request's future: it takes the connection's span along.
    ctx.guard
        .spawn("tunnel", tunnel.run(upgrade).instrument(tracing::Span::current()));
    Ok(Response::new(empty()))
}

/// What a `CONNECT` to `uri` connects to: RFC 9112 §3.2.3 allows the authority-form only, so
/// `CONNECT http://host:443` is not a target (hyper's URI would hand out its authority all
/// the same).
fn connect_target(uri: &http::Uri) -> Result<Target, ProxyError> {
    let authority_form = uri.scheme().is_none() && uri.path_and_query().is_none_or(|p| p.as_str().is_empty());
    match uri.authority().filter(|_| authority_form) {
        Some(a) => Ok(Target::parse_authority(a.as_str())?),
        None => Err(ProxyError::BadRequest(format!(
            "CONNECT target `{uri}` is not host:port"
        ))),
    }
}

/// Routes and connects a `CONNECT`'s tunnel, and counts it answered: its `200` is the
/// caller's to send.
async fn open_tunnel(ctx: &ConnCtx, exchange: Exchange, uri: &http::Uri) -> Result<tunnel::Tunnel, Refusal> {
    let target = connect_target(uri)?;
    let rt = &ctx.runtime;
    if let Err(e) = rt.check_connect_port(&target) {
        return Err(Refusal::at(target, e));
    }
    let (route, connected) = connect_for(ctx, &exchange, &target).await;
    let (stream, upstream) = match connected {
        Ok(c) => c,
        Err(e) => return Err(Refusal::on(target, route, e)),
    };
    exchange.answered(ctx.guard.metrics(), &route, &upstream);
    Ok(tunnel::Tunnel::connect(
        ctx,
        exchange,
        target,
        route,
        (stream, upstream),
    ))
}

/// A connection's first head when it is a `CONNECT` without a body, as `server::head` read
/// it: the request of almost every connection to a forward proxy, which splitway answers and
/// tunnels itself, in the connection's own task ([`serve_connect`]), with no hyper
/// connection, upgrade or second task. Everything else, and whatever follows a refused
/// `CONNECT` on a kept-alive connection, is hyper's.
#[derive(Debug)]
pub struct Connect {
    /// The request target, as hyper would have parsed it.
    pub uri: http::Uri,
    /// Where the head ends in the bytes read: what follows went early to the tunnel.
    pub len: usize,
    /// The `Proxy-Authorization` fields (nothing else is kept).
    pub auth: http::HeaderMap,
}

/// The `200` that opens a tunnel.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

/// What a connection does after its first `CONNECT` ([`serve_connect`]).
#[expect(
    clippy::large_enum_variant,
    reason = "the tunnel is the common case, held in the connection's task: boxing it costs an allocation per tunnel"
)]
pub(crate) enum Next {
    /// Answered `200`: its tunnel, to run in the connection's task.
    Tunnel(tunnel::Tunnel, tunnel::Client),
    /// Not a connection's first `CONNECT`: the socket, the bytes read so far, the
    /// connection's context and span, and the header read timeout, for hyper.
    Hyper(
        Bytes,
        tokio::net::TcpStream,
        ConnCtx,
        tracing::Span,
        std::time::Duration,
    ),
    /// Nothing more: the answer was a close, or the client left.
    Closed,
}

/// Serves a connection's first request when it is a `CONNECT` (see [`Connect`]): connects
/// and answers it. The tunnel then runs in the connection's own task, from the head to the
/// close, with no hyper connection, upgrade or second task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments in the connection's state"
)]
pub(crate) fn serve_connect(
    ctx: &ConnCtx,
    head: Connect,
    prefix: Bytes,
    mut client: tokio::net::TcpStream,
) -> impl Future<Output = Next> + '_ {
    async move {
        use tokio::io::AsyncWriteExt;
        let authorized = ctx
            .runtime
            .auth
            .as_ref()
            .map_or(Ok(()), |basic| basic.check(&head.auth));
        let policy = policy_of(ctx, authorized.is_ok());
        let exchange = Exchange::start(RequestKind::Connect, ctx.who.clone()).with_policy(policy);
        let opened = match authorized {
            // Boxed: the connect's state (DNS, happy eyeballs) is freed once it is done.
            Ok(()) => Box::pin(open_tunnel(ctx, exchange.clone(), &head.uri)).await,
            Err(e) => Err(e.into()),
        };
        let rest = prefix.slice(head.len..);
        drop(prefix);
        let tunnel = match opened {
            Ok(tunnel) => tunnel,
            Err(refusal) => {
                let e = refused(ctx, exchange, "CONNECT", refusal);
                // RFC 9110 §9.3.6: after a refused CONNECT the client cannot tell its tunnel
                // bytes from a next request, so nothing it sent after the head is read as one.
                write_refusal(&mut client, &e, true).await;
                return Next::Closed;
            }
        };
        match client.write_all(ESTABLISHED).await {
            Ok(()) => Next::Tunnel(tunnel, tunnel::Client::Tcp(client, rest)),
            Err(e) => {
                tracing::debug!(error = %e, "client left before the tunnel opened");
                Next::Closed
            }
        }
    }
}

/// Routes `target`, applies the client's policy to the route, and connects along it (report
/// mode: along the system path, and the route actually taken is the one returned). CONNECT
/// and the transparent listener share it.
pub(crate) async fn connect_for(
    ctx: &ConnCtx,
    exchange: &Exchange,
    target: &Target,
) -> (
    Arc<Route>,
    Result<(tokio::net::TcpStream, crate::upstream::connect::Upstream), ProxyError>,
) {
    let rt = &ctx.runtime;
    let route = rt.routes.lookup(&target.host).clone();
    if let Err(e) = may_use(ctx, exchange, &route, target) {
        return (route, Err(e));
    }
    if rt.config.proxy.mode == Mode::Report {
        // Boxed: report mode's two connects take no room in every connection in flight.
        let result = Box::pin(report::connect_and_compare(rt, &route, target)).await;
        (rt.system_route.clone(), result)
    } else {
        let result = rt.connector.connect(&route, target).await;
        (route, result)
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
