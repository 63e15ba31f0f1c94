//! Accuracy: the expensive oracle, the measured-point store, and the CAE estimator.
//!
//! Accuracy is a function of *how the model is compressed*: which cut points are pruned, to how
//! many channels, and how the cut tensors are encoded on the wire. Where the cuts sit in the
//! deployment (which tier runs what) does not matter, so one measurement serves every deployment
//! that compresses the same way. That is what [`CompressionPoint`] captures.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a cut tensor is encoded on the wire. The planner only needs its size; the runtime and the
/// ONNX oracle implement it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireEncoding {
    F32,
    F16,
    Int8,
    Int4,
}

/// One pruned cut: `kept` of `channels` channels survive. A cut with `kept == channels` is not
/// pruned and never appears in a [`CompressionPoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CutCompression {
    /// Index of the cut point in the profile (0-based).
    pub cut: usize,
    pub kept: u32,
    pub channels: u32,
}

impl CutCompression {
    /// Fraction of channels removed, as the reference (and the CSV table) counts it.
    pub fn prune_ratio(&self) -> f64 {
        1.0 - f64::from(self.kept) / f64::from(self.channels)
    }
}

/// A way of compressing the model: the pruned cuts (sorted by cut index, unpruned cuts left out)
/// and the wire encoding used at every cut. `cuts` empty and the baseline encoding = the
/// unmodified model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CompressionPoint {
    pub cuts: Vec<CutCompression>,
    pub encoding: WireEncoding,
}

/// Why an accuracy measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// The oracle has no data for this point (a table without that row).
    #[error("no accuracy known for {0}")]
    Unknown(String),
    /// Building or evaluating the compressed model failed.
    #[error("accuracy measurement failed: {0}")]
    Failed(String),
}

/// Measures the accuracy (in `[0, 1]`) of the model compressed as a [`CompressionPoint`].
///
/// Implementations are expensive (the live one builds and runs a compressed model on a
/// calibration set), which is why the search counts calls and keeps every answer.
pub trait AccuracyOracle {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError>;
}
