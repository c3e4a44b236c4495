//! `ProxyError`: every way a proxied request can fail, and the one place it becomes a status,
//! a `Proxy-Status` error type (RFC 9209 §2.3) and a metric label.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::metrics::{ErrorType, Outcome};
use crate::target::TargetError;

/// A request that could not be proxied. Each variant names the route (where one was chosen) so
/// the one-line body tells an operator which part of the config to look at.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request head too large: {0}")]
    HeadTooLarge(String),
    #[error("bad request target")]
    BadTarget(#[from] TargetError),
    #[error("method {0} is not allowed through the proxy")]
    MethodNotAllowed(String),
    #[error("route `{route}` denies {host}")]
    Denied { route: String, host: String },
    /// A `[[client]]` policy does not list the route (`client` is the policy's name, or
    /// `unmatched`).
    #[error(
        "client policy `{client}` may not use route `{route}` (for {host}); list the route in its [[client]] routes"
    )]
    ClientDenied {
        client: String,
        route: String,
        host: String,
    },
    #[error("CONNECT to port {port} is not allowed (allowed: {allowed}); add it to [proxy] connect_ports")]
    PortNotAllowed { port: u16, allowed: String },
    #[error(
        "route `{route}`: every address of {host} is in [proxy] deny_destinations ({addrs}); \
         give the route explicit `addresses` if this is intended"
    )]
    DestinationProhibited { route: String, host: String, addrs: String },
    /// Every address left is `0.0.0.0` or `::`: this host itself, never a destination, whatever
    /// `deny_destinations` says. `fix` says what the user can change.
    #[error(
        "route `{route}`: {host} leads only to the unspecified address ({addrs}), which stands \
         for this host itself and is never a destination; {fix}"
    )]
    UnspecifiedDestination {
        route: String,
        host: String,
        addrs: String,
        fix: &'static str,
    },
    #[error("route `{route}`: {addr} for {host} is this proxy's own listener; the request would loop")]
    LoopToSelf {
        route: String,
        host: String,
        addr: SocketAddr,
    },
    #[error("route `{route}`: no address for {host} via resolver `{resolver}`")]
    Dns {
        route: String,
        host: String,
        resolver: String,
        #[source]
        cause: DnsError,
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
    #[error("route `{route}`: cannot reach {host}")]
    Unreachable {
        route: String,
        host: String,
        #[source]
        cause: Unreachable,
    },
    #[error("route `{route}`: no connection to {host} within {after:?} ([proxy] connect_timeout)")]
    ConnectTimeout {
        route: String,
        host: String,
        after: Duration,
    },
    /// A parent proxy (`via`) failed the connection; `parent` is its `host:port`, never its
    /// credentials.
    #[error("route `{route}`: parent proxy {parent} {fault}")]
    Parent {
        route: String,
        parent: String,
        fault: ParentFault,
    },
    #[error("proxy is at [proxy] max_connections ({0}); retry later")]
    ConnectionLimit(usize),
    /// `accept` found no free descriptor: the open-file limit is reached.
    #[error("proxy is out of file descriptors (its open-file limit); retry later")]
    OutOfDescriptors,
    #[error("proxy authentication required")]
    AuthRequired,
}

/// How a parent proxy failed a connection: what the client's error names, and whether the
/// next parent of the list is tried (only when this one could not be talked to at all).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParentFault {
    #[error("refused the connection at {0}")]
    Refused(SocketAddr),
    /// Its name did not resolve, or no address of it could be connected to.
    #[error("is unreachable: {}", unreachable_parent(.0))]
    Unreachable(Box<ProxyError>),
    #[error("did not accept the connection within {0:?} ([proxy] connect_timeout)")]
    ConnectTimeout(Duration),
    #[error("did not answer the CONNECT within {0:?} ([proxy] connect_timeout)")]
    ReplyTimeout(Duration),
    /// A non-2xx answer: the parent's decision, final (a 403 is its policy).
    #[error("answered {status} to CONNECT {asked}")]
    Status { status: u16, asked: String },
    #[error(
        "answered 407: it wants credentials; write the user in `via` (http://USER@host:port) and set \
         `via_password_env` or `via_password_file`"
    )]
    WantsCredentials,
    #[error(
        "answered 407: it rejected the credentials of user `{0}`; check the route's via_password_env or via_password_file"
    )]
    RejectedCredentials(String),
    #[error("answered something that is not an HTTP response: {0}")]
    Malformed(String),
    #[error("closed the connection before its answer was complete ({0})")]
    Closed(String),
}

/// Why no connection to a destination (or from it, an answer) was had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unreachable {
    /// Every address was tried and failed, each with its own error.
    #[error("{}", attempts(.0))]
    Attempts(Arc<[(SocketAddr, std::io::Error)]>),
    /// The upstream took the request but sent no response head in time.
    #[error("no response head within {0:?}")]
    NoResponseHead(Duration),
    /// The forwarding client failed (the connection broke, or the answer was not HTTP).
    #[error("{}", chain(.0.as_ref()))]
    Forward(Arc<hyper_util::client::legacy::Error>),
}

impl DnsError {
    /// What the error says with its causes (a probe's I/O error, hickory's own).
    pub fn describe(&self) -> String {
        chain(self)
    }
}

fn attempts(failed: &[(SocketAddr, std::io::Error)]) -> String {
    let each: Vec<String> = failed.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    each.join("; ")
}

/// A parent that could not be reached, said without the route and name the error around it
/// already gives: the connection attempts, or the whole error of locating it.
fn unreachable_parent(e: &ProxyError) -> String {
    match e {
        ProxyError::Unreachable { cause, .. } => cause.to_string(),
        other => other.describe(),
    }
}

/// Why a name has no addresses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The servers answered: no such name, or no address records (`reason` says which).
    #[error("{reason}")]
    NotFound {
        reason: String,
        negative_ttl: Option<Duration>,
    },
    #[error("no answer in time")]
    Timeout,
    /// The query failed: the resolver library's error, or why its servers cannot be reached.
    #[error(transparent)]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
    /// The query's task ended without an answer (the runtime is shutting down).
    #[error("query ended without an answer")]
    NoAnswer,
    /// A route names a resolver the runtime does not have (config validation prevents it).
    #[error("no such resolver")]
    NoSuchResolver,
}

impl ParentFault {
    /// Whether the next parent is tried: the parent could not be reached or did not answer
    /// in time. Anything it answered is final.
    pub fn tries_next(&self) -> bool {
        matches!(
            self,
            Self::Refused(_) | Self::Unreachable(_) | Self::ConnectTimeout(_) | Self::ReplyTimeout(_)
        )
    }

    /// The status the parent answered, for `received-status` (RFC 9209 §2.1.7).
    pub fn received_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::WantsCredentials | Self::RejectedCredentials(_) => Some(407),
            _ => None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::ConnectTimeout(_) | Self::ReplyTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// RFC 9209 §2.3: the error type. A 4xx from the parent is its refusal of the request.
    fn error_type(&self) -> ErrorType {
        match self {
            Self::Refused(_) => ErrorType::ConnectionRefused,
            Self::Unreachable(_) => ErrorType::DestinationUnavailable,
            Self::ConnectTimeout(_) => ErrorType::ConnectionTimeout,
            Self::ReplyTimeout(_) => ErrorType::HttpResponseTimeout,
            Self::Status { status, .. } if (400..500).contains(status) => ErrorType::HttpRequestDenied,
            Self::Status { .. } => ErrorType::DestinationUnavailable,
            Self::WantsCredentials | Self::RejectedCredentials(_) => ErrorType::HttpRequestDenied,
            Self::Malformed(_) => ErrorType::HttpProtocolError,
            Self::Closed(_) => ErrorType::HttpResponseIncomplete,
        }
    }
}

impl ProxyError {
    /// The status line the client sees (RFC 9110 §15).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadTarget(_) => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Denied { .. }
            | Self::ClientDenied { .. }
            | Self::PortNotAllowed { .. }
            | Self::DestinationProhibited { .. }
            | Self::UnspecifiedDestination { .. }
            | Self::LoopToSelf { .. } => StatusCode::FORBIDDEN,
            Self::Dns { .. } | Self::ConnectionRefused { .. } | Self::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::DnsTimeout { .. } | Self::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Parent { fault, .. } => fault.status(),
            Self::ConnectionLimit(_) | Self::OutOfDescriptors => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        }
    }

    /// The RFC 9209 §2.3 error type carried in `Proxy-Status`; also the `outcome` metric label.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Self::BadRequest(_) | Self::BadTarget(_) | Self::HeadTooLarge(_) | Self::MethodNotAllowed(_) => {
                ErrorType::HttpRequestError
            }
            Self::Denied { .. } | Self::ClientDenied { .. } | Self::PortNotAllowed { .. } | Self::AuthRequired => {
                ErrorType::HttpRequestDenied
            }
            Self::DestinationProhibited { .. } | Self::UnspecifiedDestination { .. } | Self::LoopToSelf { .. } => {
                ErrorType::DestinationIpProhibited
            }
            Self::Dns { .. } => ErrorType::DnsError,
            Self::DnsTimeout { .. } => ErrorType::DnsTimeout,
            Self::ConnectionRefused { .. } => ErrorType::ConnectionRefused,
            Self::Unreachable { .. } => ErrorType::DestinationUnavailable,
            Self::ConnectTimeout { .. } => ErrorType::ConnectionTimeout,
            Self::ConnectionLimit(_) | Self::OutOfDescriptors => ErrorType::ConnectionLimitReached,
            Self::Parent { fault, .. } => fault.error_type(),
        }
    }

    /// [`ProxyError::error_type`] as its RFC 9209 token.
    pub fn proxy_status(&self) -> &'static str {
        self.error_type().as_str()
    }

    /// The `outcome` label of a request refused with this error.
    pub fn outcome(&self) -> Outcome {
        Outcome::Error(self.error_type())
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
        let received = match self {
            Self::Parent { fault, .. } => fault
                .received_status()
                .map(|s| format!("; received-status={s}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        format!(
            "splitway; error={}{received}; details=\"{details}\"",
            self.proxy_status()
        )
    }
}

/// Whether an I/O error means no file descriptor was free: `EMFILE` (the process's open-file
/// limit) or `ENFILE` (the system's). The same numbers on Linux and the BSDs; std has no
/// `ErrorKind` for them. Then the fault is the proxy's, not the destination's or the client's.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// An error and its causes, each after a `: `.
pub use crate::config::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_target_names_the_request_target_and_its_cause_once() {
        // The same error answers CONNECT targets and absolute-form http:// URLs.
        let e = ProxyError::from(TargetError::PortOutOfRange("0".into()));
        assert_eq!(e.describe(), "bad request target: port `0` out of range 1-65535");
        assert_eq!(e.to_string(), "bad request target");
    }

    #[test]
    fn a_parents_answer_is_its_received_status_in_proxy_status() {
        let e = ProxyError::Parent {
            route: "corp".into(),
            parent: "10.0.0.5:3128".into(),
            fault: ParentFault::WantsCredentials,
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let h = e.proxy_status_header();
        assert!(
            h.starts_with("splitway; error=http_request_denied; received-status=407; details=\"route `corp`: parent proxy 10.0.0.5:3128 answered 407"),
            "{h}"
        );
        let timeout = ProxyError::Parent {
            route: "corp".into(),
            parent: "p:1".into(),
            fault: ParentFault::ReplyTimeout(Duration::from_secs(5)),
        };
        assert_eq!(
            (timeout.status(), timeout.proxy_status()),
            (StatusCode::GATEWAY_TIMEOUT, "http_response_timeout")
        );
        assert!(!timeout.proxy_status_header().contains("received-status"));
        assert!(ParentFault::ReplyTimeout(Duration::ZERO).tries_next());
        assert!(
            !ParentFault::Status {
                status: 403,
                asked: String::new()
            }
            .tries_next()
        );
    }

    #[test]
    fn out_of_descriptors_is_emfile_or_enfile_only() {
        assert!(
            super::out_of_descriptors(&std::io::Error::from_raw_os_error(24)),
            "EMFILE"
        );
        assert!(
            super::out_of_descriptors(&std::io::Error::from_raw_os_error(23)),
            "ENFILE"
        );
        assert!(
            !super::out_of_descriptors(&std::io::Error::from_raw_os_error(104)),
            "a reset is not"
        );
        assert!(!super::out_of_descriptors(&std::io::Error::other("no errno")));
    }
}
