//! The planner: pure functions from a model profile, a topology and an objective to a plan.
//! No I/O, no async, no Kubernetes, no tract.
pub mod accuracy;
mod cnnpc;
pub mod interval;
pub mod latency;
pub mod plan;
pub mod profile;
pub mod search;
pub mod sequential;
pub mod surface;
pub mod table;
pub mod topology;
