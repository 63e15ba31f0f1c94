//! ONNX surgery: pure functions from model bytes to model bytes (no network, no async).
//!
//! - [`calibration`]: the input preprocessing the bundled real models expect.

pub mod calibration;
