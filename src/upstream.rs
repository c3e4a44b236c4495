//! Everything on the upstream side: targets, resolution, the connector.

pub mod connect;
pub mod deny;
pub mod dns;
pub mod socket;
pub mod target;
