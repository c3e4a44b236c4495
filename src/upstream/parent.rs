//! Tunnels through parent proxies (`via`): TCP to a parent along the connector's own attempt
//! path, `CONNECT` (RFC 9110 §9.3.6) for the address splitway resolved or the name, and the
//! parent's reply head read with httparse within `connect_timeout`.
//!
//! The reply head is read with `peek` and only its own bytes are consumed, so whatever the
//! parent sends after it (a server-first protocol's banner) stays in the socket for the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::connect::{Connector, Upstream};
use super::plan::{Plan, denied};
use super::walk::Walk;
use crate::config::{Parent, Via, ViaTarget};
use crate::error::{ParentFault, ProxyError};
use crate::metrics::ParentResult;
use crate::routes::Route;
use crate::target::{Host, Target};

/// The resolver a named parent is looked up through: parents are infrastructure of the
/// network splitway runs in, which the system resolver sees (a route's `public` resolver
/// would not know `egress.corp.internal`).
pub(crate) const PARENT_RESOLVER: &str = "system";

/// A parent's reply head larger than this is not a proxy's answer to a CONNECT.
const MAX_REPLY_HEAD: usize = 16 * 1024;
/// Header fields a reply head may carry.
const MAX_REPLY_HEADERS: usize = 64;

/// Opens a tunnel to `target` through the route's parents, in order: the next one is tried
/// when a parent refuses the TCP connection, is unreachable or does not answer in time;
/// whatever a parent answers is final. Each parent gets its own `connect_timeout`.
pub(super) async fn tunnel_through(
    c: &Connector,
    route: &Route,
    target: &Target,
    via: &Arc<Via>,
    ask: &Plan,
    deadline: Instant,
) -> Result<(TcpStream, Upstream), ProxyError> {
    let (asked, upstream) = match via.target {
        ViaTarget::Address => {
            let (addr, upstream) = locate(c, route, target, ask, deadline).await?;
            (
                Target {
                    host: Host::Ip(addr.ip()),
                    port: addr.port(),
                },
                upstream,
            )
        }
        ViaTarget::Name => {
            let asked = ask.first_name().unwrap_or_else(|| target.clone());
            (asked, Upstream::unresolved())
        }
    };
    let authorization = via.authorization();
    let mut last = None;
    for parent in &via.parents {
        let label = parent.authority();
        let started = Instant::now();
        match open(c, route, parent, &asked, authorization.as_deref()).await {
            Ok((stream, addr)) => {
                c.metrics().parent_tunnel(&route.name, &label, ParentResult::Ok);
                let upstream = upstream.through_parent(label.into(), addr, started.elapsed(), Some(asked.to_string()));
                return Ok((stream, upstream));
            }
            Err(fault) => {
                let result = match &fault {
                    f if f.tries_next() => ParentResult::Unreachable,
                    f if f.received_status().is_some() => ParentResult::Refused,
                    _ => ParentResult::Error,
                };
                c.metrics().parent_tunnel(&route.name, &label, result);
                tracing::debug!(route = %route.name, parent = %label, error = %fault, "parent proxy failed");
                let next = fault.tries_next();
                last = Some(ProxyError::Parent {
                    route: route.name.to_string(),
                    parent: label,
                    fault,
                });
                if !next {
                    break;
                }
            }
        }
    }
    // Config validation guarantees at least one parent.
    Err(last.unwrap_or_else(|| ProxyError::Denied {
        route: route.name.to_string(),
        host: target.host.to_string(),
    }))
}

/// The address a parent is asked for (`via_target = "address"`): the first fixed address,
/// or the first allowed address of the first name that resolves; never the proxy's own
/// listener.
async fn locate(
    c: &Connector,
    route: &Route,
    target: &Target,
    plan: &Plan,
    deadline: Instant,
) -> Result<(SocketAddr, Upstream), ProxyError> {
    let own = |addr: SocketAddr| ProxyError::LoopToSelf {
        route: route.name.to_string(),
        host: target.to_string(),
        addr,
    };
    match plan {
        Plan::Fixed(addrs) => {
            let first = addrs.iter().find(|a| !c.is_own(**a));
            match (first, addrs.first()) {
                (Some(a), _) => Ok((*a, Upstream::fixed_at(*a, Duration::ZERO))),
                (None, Some(a)) => Err(own(*a)),
                (None, None) => Err(denied(route, target)),
            }
        }
        Plan::Resolve {
            resolver,
            names,
            on_cname,
            ..
        } => {
            let mut walk = Walk::new(c, route, resolver, on_cname, names, deadline);
            while let Some(found) = walk.next().await {
                match found.candidates.addrs.iter().find(|a| !c.is_own(**a)) {
                    Some(addr) => return Ok((*addr, c.resolved_upstream(route, resolver, &found, *addr))),
                    None => walk.failed(own(found.candidates.addrs[0])),
                }
            }
            Err(walk.failure(target))
        }
        Plan::Deny | Plan::Parent { .. } => Err(denied(route, target)),
    }
}

/// TCP to one parent, then the CONNECT exchange, within one `connect_timeout`.
async fn open(
    c: &Connector,
    route: &Route,
    parent: &Parent,
    asked: &Target,
    authorization: Option<&str>,
) -> Result<(TcpStream, SocketAddr), ParentFault> {
    let timeout = c.timeout();
    let deadline = Instant::now() + timeout;
    let (mut stream, addr) = dial(c, route, parent, deadline).await?;
    let mut request = format!("CONNECT {asked} HTTP/1.1\r\nHost: {asked}\r\n");
    if let Some(auth) = authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(auth);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let exchange = async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| ParentFault::Closed(e.kind().to_string()))?;
        read_reply(&mut stream).await
    };
    let status = timeout_at(deadline, exchange)
        .await
        .map_err(|_| ParentFault::ReplyTimeout(timeout))??;
    match status {
        200..=299 => Ok((stream, addr)),
        407 => Err(match (&parent.user, authorization) {
            (Some(user), Some(_)) => ParentFault::RejectedCredentials(user.clone()),
            _ => ParentFault::WantsCredentials,
        }),
        status => Err(ParentFault::Status {
            status,
            asked: asked.to_string(),
        }),
    }
}

/// A TCP connection to the first parent that accepts one, for plain HTTP: the request goes
/// to it in absolute-form (RFC 9112 §3.2.2), so no CONNECT. Parents are tried as for tunnels.
pub(super) async fn dial_first(c: &Connector, route: &Route, via: &Via) -> Result<(TcpStream, Upstream), ProxyError> {
    let mut last = None;
    for parent in &via.parents {
        let started = Instant::now();
        let deadline = started + c.timeout();
        match dial(c, route, parent, deadline).await {
            Ok((stream, addr)) => {
                let upstream =
                    Upstream::unresolved().through_parent(parent.authority().into(), addr, started.elapsed(), None);
                return Ok((stream, upstream));
            }
            Err(fault) => {
                last = Some(ProxyError::Parent {
                    route: route.name.to_string(),
                    parent: parent.authority(),
                    fault,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| ProxyError::Denied {
        route: route.name.to_string(),
        host: String::new(),
    }))
}

/// Whether `parent` accepts a TCP connection within `connect_timeout` (`/readyz?verbose`).
pub(crate) async fn reachable(c: &Connector, route: &Route, parent: &Parent) -> Result<SocketAddr, ParentFault> {
    let deadline = Instant::now() + c.timeout();
    dial(c, route, parent, deadline).await.map(|(_, addr)| addr)
}

/// The TCP connection to a parent through the connector (own-listener check, Happy Eyeballs);
/// a named parent is resolved through [`PARENT_RESOLVER`] and its addresses checked against
/// `deny_destinations`.
async fn dial(
    c: &Connector,
    route: &Route,
    parent: &Parent,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), ParentFault> {
    let target = Target {
        host: parent.host.clone(),
        port: parent.port,
    };
    // The parent's own name, located like any other (a walk of one name).
    let resolver = Arc::from(PARENT_RESOLVER);
    let name = [(parent.host.clone(), parent.port)];
    let mut walk = Walk::new(c, route, &resolver, &[], &name, deadline);
    let addrs = match walk.next().await {
        Some(found) => found.candidates.addrs,
        None => return Err(ParentFault::Unreachable(Box::new(walk.failure(&target)))),
    };
    c.attempt(route, &target, &addrs, deadline).await.map_err(|e| match e {
        ProxyError::ConnectionRefused { addr, .. } => ParentFault::Refused(addr),
        ProxyError::ConnectTimeout { after, .. } => ParentFault::ConnectTimeout(after),
        other => ParentFault::Unreachable(Box::new(other)),
    })
}

/// Reads the reply head and returns its status. Only the head's bytes are consumed: each
/// round peeks what has arrived, and consumes either all of it (the head is not complete yet)
/// or exactly the rest of the head.
async fn read_reply(stream: &mut TcpStream) -> Result<u16, ParentFault> {
    let closed = |e: std::io::Error| ParentFault::Closed(e.kind().to_string());
    let mut head: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.peek(&mut buf).await.map_err(closed)?;
        if n == 0 {
            return Err(ParentFault::Closed("end of stream".into()));
        }
        let consumed = head.len();
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_REPLY_HEADERS];
        let mut reply = httparse::Response::new(&mut headers);
        let parsed = reply.parse(&head).map_err(|e| ParentFault::Malformed(e.to_string()))?;
        let take = match parsed {
            httparse::Status::Complete(len) => len - consumed,
            httparse::Status::Partial if head.len() > MAX_REPLY_HEAD => {
                return Err(ParentFault::Malformed(format!(
                    "reply head over {MAX_REPLY_HEAD} bytes"
                )));
            }
            httparse::Status::Partial => n,
        };
        stream.read_exact(&mut buf[..take]).await.map_err(closed)?;
        if parsed.is_complete() {
            return reply
                .code
                .ok_or_else(|| ParentFault::Malformed("no status code".into()));
        }
    }
}
