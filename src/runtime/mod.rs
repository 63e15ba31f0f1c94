//! The shard runtime: link emulation, metrics and the server.
pub mod client;
pub mod compute_pool;
pub mod link;
pub mod metrics;
pub mod oip;
pub mod server;
pub mod tract_model;
