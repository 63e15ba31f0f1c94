//! cnnpc: collaborative CNN inference across end, edge and cloud.
//!
//! Floors, each using only the ones above it (`tests/architecture.rs` checks it):
//!
//! 1. [`planner`]: pure search over a profile, a topology and an accuracy oracle.
//! 2. [`onnx`]: pure model surgery (bytes in, bytes out), profiling, the live oracle.
//! 3. [`dataset`], [`digest`]: calibration inputs and content hashes.
//! 4. [`session`]: the one planning pipeline (profile → oracle → search → plan).
//! 5. [`runtime`]: the shard server and its wire frames.
//! 6. [`demo`], [`bench`]: the embedded default and the benchmarks.
//! 7. [`operator`]: the Kubernetes operator, the only part that imports kube.
//! 8. [`cli`], [`output`]: the command line.
pub mod bench;
pub mod cli;
pub mod dataset;
pub mod demo;
pub mod digest;
pub mod onnx;
pub mod operator;
pub mod output;
pub mod planner;
pub mod runtime;
pub mod session;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
