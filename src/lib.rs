//! cnnpc: collaborative CNN inference across end, edge and cloud.
//!
//! Parts, each using only the ones above it: [`planner`] (pure search) → `onnx` (pure model
//! surgery) → `runtime` (shard servers) → `operator` (Kubernetes). [`cli`] and [`bench`] wire
//! them to the command line.
pub mod bench;
pub mod cli;
pub mod planner;
