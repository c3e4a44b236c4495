//! The closed sets of label values for how requests end: RFC 9209 error types, request
//! outcomes, SNI rejection reasons and report-mode actions. Every such label value splitway
//! exports is defined here and nowhere else (a source-rules test keeps it so).

/// RFC 9209 §2.3 error types splitway uses, in `Proxy-Status` and in the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    HttpRequestError,
    HttpRequestDenied,
    DestinationIpProhibited,
    DnsError,
    DnsTimeout,
    ConnectionRefused,
    DestinationUnavailable,
    ConnectionTimeout,
    ConnectionLimitReached,
    HttpResponseTimeout,
    HttpProtocolError,
    HttpResponseIncomplete,
}

impl ErrorType {
    /// The RFC 9209 token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpRequestError => "http_request_error",
            Self::HttpRequestDenied => "http_request_denied",
            Self::DestinationIpProhibited => "destination_ip_prohibited",
            Self::DnsError => "dns_error",
            Self::DnsTimeout => "dns_timeout",
            Self::ConnectionRefused => "connection_refused",
            Self::DestinationUnavailable => "destination_unavailable",
            Self::ConnectionTimeout => "connection_timeout",
            Self::ConnectionLimitReached => "connection_limit_reached",
            Self::HttpResponseTimeout => "http_response_timeout",
            Self::HttpProtocolError => "http_protocol_error",
            Self::HttpResponseIncomplete => "http_response_incomplete",
        }
    }
}

/// Why a tunnel's first flight was refused by SNI pinning (or, on the transparent listener,
/// why it had no usable name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SniReason {
    SniMismatch,
    EchOuterSni,
    NotTls,
    MalformedClientHello,
    ClientHelloTooLarge,
    ClientHelloTimeout,
    ClientClosed,
}

impl SniReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SniMismatch => "sni_mismatch",
            Self::EchOuterSni => "ech_outer_sni",
            Self::NotTls => "not_tls",
            Self::MalformedClientHello => "malformed_client_hello",
            Self::ClientHelloTooLarge => "client_hello_too_large",
            Self::ClientHelloTimeout => "client_hello_timeout",
            Self::ClientClosed => "client_closed",
        }
    }
}

/// How a request ended: the `outcome` label of `splitway_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Refused with this RFC 9209 error type.
    Error(ErrorType),
    /// Transparent listener: the kernel gave no original destination (not redirected).
    NoOriginalDst,
    /// Transparent listener: no usable name and `no_sni = "refuse"`.
    NoSni,
    /// Transparent listener: the first flight could not be read.
    FirstFlight(SniReason),
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error(e) => e.as_str(),
            Self::NoOriginalDst => "no_original_dst",
            Self::NoSni => "no_sni",
            Self::FirstFlight(r) => r.as_str(),
        }
    }
}

/// Report mode: what splitway would have done differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportAction {
    Reroute,
    Deny,
}

impl ReportAction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reroute => "reroute",
            Self::Deny => "deny",
        }
    }
}
