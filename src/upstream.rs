//! Everything on the upstream side: targets, resolution, the connector.

pub mod connect;
pub mod deny;
pub mod detect;
pub mod dns;
pub mod http;
pub mod parent;
pub mod plan;
pub mod socket;
pub mod target;
