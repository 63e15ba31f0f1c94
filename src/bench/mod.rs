//! The benchmarks (`cnnpc bench …`, `make bench-*`): each writes JSON and prints Markdown.
//!
//! - [`plan`]: the CNNPC search against the exhaustive optimum on every reference setting.
//! - [`compress`]: bytes on the wire against agreement at one cut of a real model.
//! - [`runtime`]: the shard runtime on loopback (per-hop overhead, throughput, load).
//! - [`oip`]: the Open Inference Protocol's JSON and binary paths against the frame.
//! - [`pace`]: how steady this machine's speed stays between a profile and serving.

pub mod compress;
pub mod oip;
pub mod pace;
pub mod plan;
pub mod runtime;
