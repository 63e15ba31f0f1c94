//! The shard runtime: the wire format between tiers, link emulation, metrics and the server.
pub mod client;
pub mod compute_pool;
pub mod frame;
pub mod link;
pub mod metrics;
pub mod oip;
pub mod server;
pub mod tract_model;
