//! `ProxyError`: every way a proxied request can fail, and the one place it becomes a status,
//! a `Proxy-Status` error type (RFC 9209 §2.3) and a metric label.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::upstream::target::TargetError;

/// A request that could not be proxied. Each variant names the route (where one was chosen) so
/// the one-line body tells an operator which part of the config to look at.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request head too large: {0}")]
    HeadTooLarge(String),
    #[error("bad CONNECT target")]
    BadTarget(#[from] TargetError),
    #[error("method {0} is not allowed through the proxy")]
    MethodNotAllowed(String),
    #[error("route `{route}` denies {host}")]
    Denied { route: String, host: String },
    #[error("CONNECT to port {port} is not allowed (allowed: {allowed}); add it to [proxy] connect_ports")]
    PortNotAllowed { port: u16, allowed: String },
    #[error(
        "route `{route}`: every address of {host} is in [proxy] deny_destinations ({addrs}); \
         give the route explicit `addresses` if this is intended"
    )]
    DestinationProhibited { route: String, host: String, addrs: String },
    #[error("route `{route}`: {addr} for {host} is this proxy's own listener; the request would loop")]
    LoopToSelf {
        route: String,
        host: String,
        addr: SocketAddr,
    },
    #[error("route `{route}`: no address for {host} via resolver `{resolver}`: {reason}")]
    Dns {
        route: String,
        host: String,
        resolver: String,
        reason: String,
    },
    #[error("route `{route}`: resolver `{resolver}` did not answer for {host} within {after:?}")]
    DnsTimeout {
        route: String,
        host: String,
        resolver: String,
        after: Duration,
    },
    #[error("route `{route}`: {addr} refused the connection for {host}")]
    ConnectionRefused {
        route: String,
        host: String,
        addr: SocketAddr,
    },
    #[error("route `{route}`: cannot reach {host}: {reason}")]
    Unreachable {
        route: String,
        host: String,
        reason: String,
    },
    #[error("route `{route}`: no connection to {host} within {after:?} ([proxy] connect_timeout)")]
    ConnectTimeout {
        route: String,
        host: String,
        after: Duration,
    },
    #[error("proxy is at [proxy] max_connections ({0}); retry later")]
    ConnectionLimit(usize),
    #[error("proxy authentication required")]
    AuthRequired,
}

impl ProxyError {
    /// The status line the client sees (RFC 9110 §15).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadTarget(_) => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Denied { .. }
            | Self::PortNotAllowed { .. }
            | Self::DestinationProhibited { .. }
            | Self::LoopToSelf { .. } => StatusCode::FORBIDDEN,
            Self::Dns { .. } | Self::ConnectionRefused { .. } | Self::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::DnsTimeout { .. } | Self::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectionLimit(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        }
    }

    /// The RFC 9209 §2.3 error type carried in `Proxy-Status`; also the `error` metric label.
    pub fn proxy_status(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::BadTarget(_) | Self::HeadTooLarge(_) | Self::MethodNotAllowed(_) => {
                "http_request_error"
            }
            Self::Denied { .. } | Self::PortNotAllowed { .. } | Self::AuthRequired => "http_request_denied",
            Self::DestinationProhibited { .. } | Self::LoopToSelf { .. } => "destination_ip_prohibited",
            Self::Dns { .. } => "dns_error",
            Self::DnsTimeout { .. } => "dns_timeout",
            Self::ConnectionRefused { .. } => "connection_refused",
            Self::Unreachable { .. } => "destination_unavailable",
            Self::ConnectTimeout { .. } => "connection_timeout",
            Self::ConnectionLimit(_) => "connection_limit_reached",
        }
    }

    /// What the error says with its causes, `outer: inner: …` (the body and `details`).
    pub fn describe(&self) -> String {
        chain(self)
    }

    /// The `Proxy-Status` header value: `splitway; error=<type>; details="<display>"`.
    pub fn proxy_status_header(&self) -> String {
        let details: String = self
            .describe()
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' || c.is_control() {
                    '\''
                } else {
                    c
                }
            })
            .collect();
        format!("splitway; error={}; details=\"{details}\"", self.proxy_status())
    }
}

/// An error and its causes as one line, `outer: inner: …`: each `Display` says only its own
/// level, so logs and bodies print the chain once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
