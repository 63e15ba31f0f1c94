//! ONNX surgery: pure functions from model bytes to model bytes (no network, no async).
//!
//! - [`graph`]: decode a `ModelProto`, index producers/consumers/weights, know every tensor's shape.
//! - [`cuts`]: candidate cut points (sets of activation tensors that separate inputs from outputs).
//! - [`split`]: cut a model into chained shards with typed, shaped boundaries.
//! - [`verify`]: run the chained shards against the original with tract.
//! - [`calibration`]: the input preprocessing the bundled real models expect.
//! - [`pages`]: rendered, rotated text pages: labelled data for the orientation model.
//! - [`profile`]: measure a model per segment with tract into a planner profile.
//! - [`prune`]: channel pruning at a cut, with least-squares reconstruction in the tail.
//! - [`oracle`]: the live accuracy oracle (prune, split, encode, run, compare).
//! - [`par`]: calibration inputs run one at a time, on every core.
//! - [`quantise`]: the cut-tensor codecs (f32, f16, int8, int4 per channel).
//! - [`frame`]: the wire format between tiers (a header, the codec's payload, optionally zstd):
//!   here, beside the codec it wraps, so profiling can time exactly what the shards send.
//! - [`pb_helpers`]: builders of protobuf pieces the surgery writes.
//! - [`shape`]: the model's input shape, fixed where the export left it symbolic.
//! - [`random`]: a deterministic generator for profiling and verification inputs.

pub mod avx_state;
pub mod calibration;
pub mod cuts;
pub mod error;
pub mod frame;
pub mod graph;
pub mod oracle;
pub mod pages;
pub mod par;
pub mod pb_helpers;
pub mod plan_shards;
pub mod profile;
pub mod prune;
pub mod quantise;
pub mod random;
pub mod shape;
pub mod slice;
pub mod split;
pub mod verify;

pub use cuts::{list_cuts, Cut, CutTensor};
pub use error::OnnxError;
pub use graph::{Dim, Graph, TensorInfo};
pub use split::split;
pub use verify::verify_chain;

/// The protobuf types (prost) of tract's ONNX parser, re-exported so users need no direct prost
/// or tract dependency to edit models.
pub use tract_onnx::pb;
/// The ndarray version tract uses (inputs to [`verify_chain`]).
pub use tract_onnx::prelude::tract_ndarray;
