//! cnnpc: collaborative CNN inference across end, edge and cloud.
//!
//! Parts, each using only the ones above it: [`planner`] (pure search) → [`onnx`] (pure model
//! surgery and the cut-tensor codecs) → [`runtime`] (shard servers, wire frames) → `operator`
//! (Kubernetes). [`cli`], [`bench`], [`bench_compress`] and [`bench_runtime`] wire them to the command line.
pub mod bench;
pub mod bench_compress;
pub mod bench_runtime;
pub mod cli;
pub mod demo;
pub mod live;
pub mod onnx;
pub mod operator;
pub mod output;
pub mod planner;
pub mod runtime;
