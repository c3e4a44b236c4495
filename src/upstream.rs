//! Everything on the upstream side: targets, resolution, the connector.

pub mod backoff;
pub mod connect;
pub(crate) mod deny;
pub(crate) mod detect;
pub(crate) mod dial;
pub mod dns;
pub(crate) mod eyeballs;
pub mod http;
pub(crate) mod parent;
pub mod plan;
pub(crate) mod socket;
pub(crate) mod walk;
