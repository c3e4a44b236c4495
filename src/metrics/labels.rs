//! The label sets of splitway's metrics: the closed enums of label values, one struct per
//! label set (field names are label names), and the interned route and resolver names.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::values::{Outcome, ReportAction, SniReason};

/// What a client asked the proxy for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `CONNECT host:port` (RFC 9110 §9.3.6): a tunnel.
    Connect,
    /// An absolute-form request (RFC 9112 §3.2.2) forwarded as plain HTTP.
    Forward,
    /// A connection iptables redirected to the `[transparent]` listener (TLS or plain HTTP).
    Transparent,
}

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelEnd {
    /// One side closed and the other followed.
    Closed,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// A read or write failed on either side.
    Error,
    /// The ClientHello named a server the route does not allow.
    SniRejected,
    /// Cut by the proxy: `drain_timeout` passed during shutdown.
    Cancelled,
}

/// How a named resolver answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsResult {
    /// Answered from the cache.
    Hit,
    /// Asked upstream and got an answer.
    Miss,
    /// Upstream failed; answered with an expired record (RFC 8767 serve-stale).
    Stale,
    /// No answer.
    Error,
}

/// How a parent proxy (`via`) took one tunnel's CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParentResult {
    /// It answered 2xx: the tunnel goes through it.
    Ok,
    /// No TCP connection or no answer in time; the next parent is tried.
    Unreachable,
    /// It answered non-2xx (its policy, or 407).
    Refused,
    /// It answered something that is not an HTTP response, or closed mid-answer.
    Error,
}

/// Which way bytes went through a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

impl RequestKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Forward => "forward",
            Self::Transparent => "transparent",
        }
    }
}

impl TunnelEnd {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle",
            Self::Error => "error",
            Self::SniRejected => "sni_rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

impl DnsResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Error => "error",
        }
    }
}

impl ParentResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

impl Direction {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::ClientToUpstream => "client_to_upstream",
            Self::UpstreamToClient => "upstream_to_client",
        }
    }
}

// The crate's derive would print the variant names as written (`SniRejected`); Prometheus
// convention is snake_case, so the enums encode through `as_str`.
macro_rules! label_value_from_as_str {
    ($($t:ty),*) => {$(
        impl prometheus_client::encoding::EncodeLabelValue for $t {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
pub(super) use label_value_from_as_str;
label_value_from_as_str!(
    RequestKind,
    TunnelEnd,
    DnsResult,
    Direction,
    ParentResult,
    Outcome,
    SniReason,
    ReportAction
);

// Label sets. Field names are the label names, in this order in the output.
/// `client` (a `[[client]]` policy's name) is left out when the config has no policies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RequestLabels {
    pub(super) kind: RequestKind,
    pub(super) route: Arc<str>,
    pub(super) client: Option<Arc<str>>,
    pub(super) outcome: Outcome,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("kind", self.kind).encode(encoder.encode_label())?;
        ("route", &*self.route).encode(encoder.encode_label())?;
        if let Some(client) = &self.client {
            ("client", &**client).encode(encoder.encode_label())?;
        }
        ("outcome", self.outcome).encode(encoder.encode_label())
    }
}

/// `client` as in [`RequestLabels`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TunnelLabels {
    pub(super) route: Arc<str>,
    pub(super) client: Option<Arc<str>>,
    pub(super) end: TunnelEnd,
}

impl EncodeLabelSet for TunnelLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("route", &*self.route).encode(encoder.encode_label())?;
        if let Some(client) = &self.client {
            ("client", &**client).encode(encoder.encode_label())?;
        }
        ("end", self.end).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RouteLabels {
    pub(super) route: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct BytesLabels {
    pub(super) route: Arc<str>,
    pub(super) direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct DnsLabels {
    pub(super) resolver: Arc<str>,
    pub(super) result: DnsResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ResolverLabels {
    pub(super) resolver: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct SniLabels {
    pub(super) route: Arc<str>,
    pub(super) reason: SniReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ReportLabels {
    pub(super) route: Arc<str>,
    pub(super) action: ReportAction,
}

/// `parent` is a parent's `host:port` as the config writes it: a closed set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ParentLabels {
    pub(super) route: Arc<str>,
    pub(super) parent: Arc<str>,
    pub(super) result: ParentResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ReloadLabels {
    pub(super) result: &'static str,
}

/// Route and resolver names as shared strings. A label set is an owned key, and the hot path
/// gets names as `&str`: interning makes building the key an `Arc` clone instead of a `String`
/// allocation per request. The set only grows with the names the configs ever had.
#[derive(Debug, Default)]
pub(super) struct Names(RwLock<HashSet<Arc<str>>>);

impl Names {
    pub(super) fn get(&self, name: &str) -> Arc<str> {
        // A panic elsewhere while holding the lock leaves the set valid: ignore the poison.
        if let Some(n) = self.0.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            return n.clone();
        }
        let mut set = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = set.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        set.insert(n.clone());
        n
    }
}
