//! ONNX surgery: pure functions from model bytes to model bytes (no network, no async).
//!
//! - [`graph`]: decode a `ModelProto`, index producers/consumers/weights, know every tensor's shape.
//! - [`cuts`]: candidate cut points (sets of activation tensors that separate inputs from outputs).
//! - [`calibration`]: the input preprocessing the bundled real models expect.

pub mod calibration;
pub mod cuts;
pub mod error;
pub mod graph;

pub use cuts::{list_cuts, Cut, CutTensor};
pub use error::OnnxError;
pub use graph::{Dim, Graph, TensorInfo};

/// The protobuf types (prost) of tract's ONNX parser, re-exported so users need no direct prost
/// or tract dependency to edit models.
pub use tract_onnx::pb;
/// The ndarray version tract uses.
pub use tract_onnx::prelude::tract_ndarray;
