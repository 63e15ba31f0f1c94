//! ONNX surgery and the numeric side of compression: pure, bytes in, bytes out.
pub mod pages;
pub mod quantise;
