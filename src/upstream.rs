//! Everything on the upstream side: targets, resolution, the connector.

pub(crate) mod backoff;
pub(crate) mod connect;
pub(crate) mod deny;
pub(crate) mod detect;
pub(crate) mod dial;
pub mod dns;
pub(crate) mod eyeballs;
pub(crate) mod http;
pub(crate) mod parent;
pub(crate) mod plan;
pub(crate) mod socket;
pub(crate) mod walk;
