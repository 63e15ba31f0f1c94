//! cnnpc: collaborative CNN inference across end, edge and cloud.
//!
//! Parts, each using only the ones above it: [`planner`] (pure search) → [`onnx`] (pure model
//! surgery) → `runtime` (shard servers) → `operator` (Kubernetes).
pub mod onnx;
pub mod planner;
