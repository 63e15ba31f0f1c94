//! The shard runtime: the wire format between tiers, and (later) the servers.
pub mod frame;
