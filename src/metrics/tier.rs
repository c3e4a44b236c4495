//! The shared egress tier's metrics: PROXY protocol headers by result, `[[client]]` policy
//! refusals (enforced or reported), and tunnels cut when the drain ran out of time.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Metrics;
use super::families::Families;

/// What became of a connection's PROXY protocol header (`[proxy] proxy_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyHeader {
    /// A `PROXY` command from a trusted peer: its source is the client.
    Proxy,
    /// A `LOCAL` command (a load balancer's health check): closed quietly.
    Local,
    /// No header, from a trusted peer, with `proxy_protocol = "optional"`.
    Absent,
    /// Refused: a header from a peer outside `proxy_protocol_from`, or (when required) any
    /// connection from such a peer.
    Untrusted,
    /// Refused: no header, with `proxy_protocol = "required"`.
    Missing,
    /// Refused: not a valid v1 or v2 header (or an address family splitway cannot use).
    Malformed,
    /// Refused: longer than splitway reads.
    TooLarge,
    /// Refused: not complete within the header timeout, or the peer closed mid-header.
    Timeout,
}

impl ProxyHeader {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Local => "local",
            Self::Absent => "absent",
            Self::Untrusted => "untrusted",
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
        }
    }

    /// Whether the connection is refused.
    pub fn refused(self) -> bool {
        !matches!(self, Self::Proxy | Self::Local | Self::Absent)
    }
}

/// What a `[[client]]` policy did with a route it does not list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// `mode = "enforce"` (and `unmatched`): refused with 403.
    Denied,
    /// `mode = "report"`: let through, counted.
    Reported,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Reported => "reported",
        }
    }
}

super::labels::label_value_from_as_str!(ProxyHeader, PolicyAction);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HeaderLabels {
    result: ProxyHeader,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct PolicyLabels {
    client: Arc<str>,
    route: Arc<str>,
    action: PolicyAction,
}

/// The tier's families, registered with the rest.
#[derive(Debug, Default)]
pub(super) struct Tier {
    headers: Family<HeaderLabels, Counter>,
    policy: Family<PolicyLabels, Counter>,
    cut: Counter,
}

impl Tier {
    pub(super) fn register(&self, r: &mut Families) {
        r.register(
            "proxy_protocol_headers",
            "Connections to the proxy listener by what their PROXY protocol header came to (proxy, local, absent, or why it was refused)",
            self.headers.clone(),
        );
        r.register(
            "client_policy_refusals",
            "Requests a [[client]] policy does not allow on a route, by client policy, route and action (denied, or reported in report mode)",
            self.policy.clone(),
        );
        r.register(
            "tunnels_cut_at_shutdown",
            "Tunnels still open when drain_timeout ran out on shutdown, closed by the proxy",
            self.cut.clone(),
        );
    }
}

impl Metrics {
    /// A connection's PROXY protocol header came to `result`.
    pub fn proxy_header(&self, result: ProxyHeader) {
        self.tier.headers.get_or_create(&HeaderLabels { result }).inc();
    }

    /// The client policy `client` does not list `route`; `action` says what was done.
    pub fn client_policy_refusal(&self, client: &str, route: &str, action: PolicyAction) {
        let labels = PolicyLabels {
            client: self.names.get(client),
            route: self.names.get(route),
            action,
        };
        self.tier.policy.get_or_create(&labels).inc();
    }

    /// `n` tunnels were open when the drain ran out of time.
    pub fn tunnels_cut_at_shutdown(&self, n: u64) {
        self.tier.cut.inc_by(n);
    }
}
