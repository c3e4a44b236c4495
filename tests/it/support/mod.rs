//! The emulated AWS network the integration tests run against: fake resolvers and API
//! Gateway endpoints on loopback addresses, and hermetic clients to call them with.
//!
//! `aws_net()` starts it once per test binary; `names` holds every name and address.
#![allow(dead_code)]

pub(crate) mod apigw;
pub(crate) mod bin;
pub(crate) mod bound;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod dns;
pub(crate) mod dns_tls;
pub(crate) mod echo_process;
pub(crate) mod haproxy;
pub(crate) mod lambda;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod origin;
pub(crate) mod parent;
pub(crate) mod pki;
pub(crate) mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod raw;
pub(crate) mod relay;
pub(crate) mod require;
pub(crate) mod squid;
pub(crate) mod tmp;
pub(crate) mod transparent;
pub(crate) mod wire;
pub(crate) mod zone;

// Shortcuts for `use crate::support::*`; no one test module uses all of them.
#[allow(unused_imports)]
pub(crate) use self::{
    apigw::{ApiGw, EndpointSpec, ok_body},
    bound::{HANG_SECS, poll_until, within},
    client::{
        Served, Via, connect_raw, connect_request, curl, describe_chain, get, get_over_tls, header, https_client,
        status_of, tls_over, url,
    },
    dns::{DnsMode, FakeDns},
    names::*,
    net::{AwsNet, Resolver, aws_net},
    require::{require, tool},
    zone::Zone,
};
