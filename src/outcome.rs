//! The outcome edge: one value says how a request or tunnel ended, and [`Ended::finish`] is the
//! one place it is counted and written as the canonical log line (smokescreen's decision
//! line), on every listener (proxy, transparent) and every path (refusal, forward, tunnel).
//!
//! A tunnel has two moments: its `CONNECT` is answered (`200`, counted in `requests_total` at
//! once, so a long tunnel shows up on dashboards while it lasts: [`answered`]) and it closes
//! (`tunnels_total`, bytes, the canonical line: [`Ended::finish`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ProxyError;
use crate::metrics::{Metrics, Outcome, RequestKind, RouteSeries, SniReason, TunnelEnd};
use crate::policy::{Identity, Policy};
use crate::routes::Route;
use crate::target::Target;
use crate::upstream::connect::Upstream;

/// The `route` label of refusals made before a route was chosen.
pub(crate) const NO_ROUTE: &str = "none";

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// `[proxy] listen`: `HTTPS_PROXY` clients.
    Proxy,
    /// `[transparent] listen`: connections iptables redirected.
    Transparent,
}

impl Listener {
    /// Its name in the log (the connection span's `listener`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Transparent => "transparent",
        }
    }
}

/// The span of a connection of `who` on the `listener`: `client`
/// is the TCP peer until a PROXY header names someone else (then `client` is recorded again
/// and the peer is `peer`). An idle tunnel holds no span: its close makes this same span
/// again for its line, so the line reads as if the span had been held all along.
pub(crate) fn conn_span(who: &Identity, listener: Listener) -> tracing::Span {
    let peer = who.peer.unwrap_or(who.client);
    let listener = listener.as_str();
    let span = tracing::info_span!("conn", client = %peer, peer = tracing::field::Empty, listener);
    name_in(&span, who);
    span
}

/// Records the client a PROXY header named, and its peer, on a connection's `span`; nothing
/// when there was no such header.
pub(crate) fn name_in(span: &tracing::Span, who: &Identity) {
    if let Some(peer) = who.peer {
        span.record("client", tracing::field::display(who.client));
        span.record("peer", tracing::field::display(peer));
    }
}

/// One client exchange — a request, or a tunnel — on the listener it came in on: made once
/// where it starts, and every way it can end (refused, forwarded, tunnelled) goes through
/// [`Exchange::ended`] or [`Exchange::refused`], the only places an [`Ended`] is made.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    kind: RequestKind,
    /// The client, its peer and VPC endpoint, as the connection's accept learnt them.
    who: Arc<Identity>,
    /// Its `[[client]]` policy; `None` without `[[client]]` tables.
    policy: Option<Policy>,
    /// Transparent listener: the destination the kernel redirected.
    original: Option<SocketAddr>,
    started: Instant,
}

impl Exchange {
    /// An exchange of `client`'s starting now.
    pub(crate) fn start(kind: RequestKind, who: Arc<Identity>) -> Self {
        Self {
            kind,
            who,
            policy: None,
            original: None,
            started: Instant::now(),
        }
    }

    /// The same exchange, its original destination known (transparent listener).
    pub(crate) fn redirected(self, original: SocketAddr) -> Self {
        Self {
            original: Some(original),
            ..self
        }
    }

    /// The same exchange under its client's `[[client]]` policy.
    pub(crate) fn with_policy(self, policy: Option<Policy>) -> Self {
        Self { policy, ..self }
    }

    /// The connection's span ([`conn_span`]) made again, for a line logged outside it: the
    /// listener is the one this exchange's kind comes in on.
    pub(crate) fn conn_span(&self) -> tracing::Span {
        let listener = match self.kind {
            RequestKind::Transparent => Listener::Transparent,
            RequestKind::Connect | RequestKind::Forward => Listener::Proxy,
        };
        conn_span(&self.who, listener)
    }

    pub(crate) fn client(&self) -> SocketAddr {
        self.who.client
    }

    pub(crate) fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// The `client` label of its metrics: the policy's name, when there are policies.
    fn client_label(&self) -> Option<&str> {
        self.policy.as_ref().map(Policy::name)
    }

    /// How it ended, to complete with what is known ([`Ended::target`] …) and then
    /// [`Ended::finish`].
    pub(crate) fn ended<'a>(&self, method: &'a str, how: How<'a>) -> Ended<'a> {
        Ended {
            kind: self.kind,
            who: self.who.clone(),
            policy: self.policy.clone(),
            method,
            original: self.original,
            target: None,
            route: None,
            upstream: None,
            sni: None,
            path: None,
            took: self.started.elapsed(),
            how,
        }
    }

    /// Refused by `e`, with its status and Proxy-Status type; `detail` is `e` described.
    pub(crate) fn refused<'a>(&self, method: &'a str, e: &ProxyError, detail: &'a str) -> Ended<'a> {
        self.ended(
            method,
            How::Refused {
                status: e.status().as_u16(),
                outcome: e.outcome(),
                detail,
            },
        )
    }

    /// Its tunnel's `CONNECT` (or transparent connection) was answered: counted now, logged
    /// when it closes.
    pub(crate) fn answered(&self, metrics: &Metrics, route: &Route, upstream: &Upstream) {
        metrics.request_ok(&route.series, self.kind, self.client_label());
        let (dns, connect) = upstream.setup_time();
        metrics.connect_duration(&route.series, (dns + connect).as_secs_f64());
    }
}

/// How one request or tunnel ended: made by an [`Exchange`] only.
pub(crate) struct Ended<'a> {
    kind: RequestKind,
    who: Arc<Identity>,
    policy: Option<Policy>,
    /// The request method, `CONNECT`, or on the transparent listener `TLS` / `TCP`.
    method: &'a str,
    original: Option<SocketAddr>,
    target: Option<&'a Target>,
    route: Option<&'a Route>,
    upstream: Option<&'a Upstream>,
    /// The ClientHello's server name, once read.
    sni: Option<&'a str>,
    /// Plain HTTP: the request path.
    path: Option<&'a str>,
    took: Duration,
    how: How<'a>,
}

/// The way it ended.
pub(crate) enum How<'a> {
    /// Refused with an HTTP error (or, on the transparent listener, closed): `status` 0 when
    /// no status was sent.
    Refused {
        status: u16,
        outcome: Outcome,
        detail: &'a str,
    },
    /// Forwarded; the upstream answered `status`.
    Forwarded { status: u16 },
    /// A tunnel closed; `rejected` when SNI pinning closed it.
    Tunnel {
        end: TunnelEnd,
        rejected: Option<SniReason>,
        up: u64,
        down: u64,
    },
}

impl<'a> Ended<'a> {
    pub(crate) fn target(self, target: Option<&'a Target>) -> Self {
        Self { target, ..self }
    }

    pub(crate) fn route(self, route: Option<&'a Route>) -> Self {
        Self { route, ..self }
    }

    pub(crate) fn upstream(self, upstream: &'a Upstream) -> Self {
        Self {
            upstream: Some(upstream),
            ..self
        }
    }

    pub(crate) fn sni(self, sni: Option<&'a str>) -> Self {
        Self { sni, ..self }
    }

    pub(crate) fn path(self, path: &'a str) -> Self {
        Self {
            path: Some(path),
            ..self
        }
    }

    /// Counts it and writes the canonical line.
    pub(crate) fn finish(&self, metrics: &Metrics) {
        let route = self.route.map_or(NO_ROUTE, |r| &*r.name);
        let client = self.policy.as_ref().map(Policy::name);
        match &self.how {
            How::Refused { outcome, .. } => metrics.request(self.kind, route, client, *outcome),
            How::Forwarded { .. } => match self.route {
                Some(r) => metrics.request_ok(&r.series, self.kind, client),
                None => metrics.request(self.kind, route, client, Outcome::Ok),
            },
            How::Tunnel {
                end,
                rejected,
                up,
                down,
            } => {
                if let Some(reason) = rejected {
                    metrics.sni_rejected(route, *reason);
                }
                match self.route {
                    Some(r) => metrics.tunnel_closed(&r.series, client, *end, *up, *down),
                    // Every tunnel has its route; counted all the same if one had none.
                    None => metrics.tunnel_closed(&RouteSeries::new(route.into()), client, *end, *up, *down),
                }
                if *end == TunnelEnd::Cancelled {
                    metrics.tunnels_cut_at_shutdown(1);
                }
            }
        }
        self.log();
    }

    fn log(&self) {
        let (status, error, detail, end, up, down) = match &self.how {
            How::Refused {
                status,
                outcome,
                detail,
            } => (*status, outcome.as_str(), *detail, "", 0, 0),
            How::Forwarded { status } => (*status, "", "", "", 0, 0),
            How::Tunnel {
                end,
                rejected,
                up,
                down,
            } => (
                200,
                rejected.map_or("", SniReason::as_str),
                "",
                end.as_str(),
                *up,
                *down,
            ),
        };
        let up_ = self.upstream;
        // The fields of the contract are always there; the ones that only apply to some
        // connections (a transparent destination, a path, a parent, a CNAME, a refusal's
        // detail, a tunnel's end) are left out where they don't.
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    target: crate::logging::ACCESS_TARGET,
                    kind = self.kind.as_str(),
                    client = %self.who.client,
                    peer = self.who.peer.map(tracing::field::display),
                    vpc_endpoint = self.who.vpc_endpoint.as_deref(),
                    client_name = self.policy.as_ref().map(Policy::name),
                    method = self.method,
                    original = self.original.map(tracing::field::display),
                    host = %Shown(self.target),
                    route = self.route.map_or("", |r| &*r.name),
                    resolver = up_.and_then(Upstream::resolver).or(self.route.map(|r| &*r.resolver)).unwrap_or(""),
                    path = self.path,
                    upstream = %Shown(up_.map(Upstream::addr)),
                    parent = up_.and_then(Upstream::parent),
                    asked = up_.and_then(Upstream::asked),
                    detected = up_.and_then(Upstream::detected),
                    status,
                    error,
                    detail = (!detail.is_empty()).then_some(detail),
                    sni = self.sni.unwrap_or(""),
                    bytes_up = up,
                    bytes_down = down,
                    dns_ms = up_.map_or(0, |u| u.setup_time().0.as_millis() as u64),
                    connect_ms = up_.map_or(0, |u| u.setup_time().1.as_millis() as u64),
                    duration_ms = self.took.as_millis() as u64,
                    end = (!end.is_empty()).then_some(end),
                    $message
                )
            };
        }
        match &self.how {
            How::Refused { .. } => line!(info, "refused"),
            How::Forwarded { .. } => line!(info, "request forwarded"),
            How::Tunnel { rejected: Some(_), .. } => line!(warn, "tunnel closed by SNI pinning"),
            How::Tunnel { .. } => line!(info, "tunnel closed"),
        }
    }
}

/// A field shown as its value, or empty when absent: the canonical line is formatted
/// straight into the log writer's buffer, with no `String` per field.
struct Shown<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer that keeps what the text formatter wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `key=value` pairs of one text line, values quoted per the formatter's escaping.
    fn fields(line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = line;
        while let Some(eq) = rest.find('=') {
            let key = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
            let after = &rest[eq + 1..];
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let mut end = 0;
                let mut escaped = false;
                for (i, c) in quoted.char_indices() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = i;
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                (quoted[..end].to_owned(), &quoted[end + 1..])
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            };
            out.push((key, value));
            rest = next;
        }
        out
    }

    #[test]
    fn text_line_quotes_free_text_so_it_cannot_add_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let e = ProxyError::BadRequest("bad".into());
        let detail = r#"evil route="payments" status=200 x\"y"#;
        let client = SocketAddr::from(([10, 0, 0, 1], 40000));
        tracing::subscriber::with_default(subscriber, || {
            Exchange::start(RequestKind::Connect, Arc::new(Identity::direct(client)))
                .refused("CONNECT", &e, detail)
                .log();
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let fields = fields(text.trim_end());
        let count = |k: &str| fields.iter().filter(|(key, _)| key == k).count();
        assert_eq!(count("route"), 1, "one route field: {text}");
        assert_eq!(count("status"), 1, "one status field: {text}");
        let route = fields.iter().find(|(k, _)| k == "route").map(|(_, v)| v.as_str());
        assert_eq!(route, Some(""), "the real route, empty: {text}");
        let status = fields.iter().find(|(k, _)| k == "status").map(|(_, v)| v.as_str());
        assert_eq!(status, Some("400"), "{text}");
        assert!(
            fields.iter().any(|(k, v)| k == "detail" && v.contains("evil route")),
            "detail kept whole, quoted: {text}"
        );
    }
}
