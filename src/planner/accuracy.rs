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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
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

/// What "accuracy" means for a model: the number an objective's floor A0 is compared with.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Top-1 agreement with the unmodified model (needs no labels).
    #[default]
    Agreement,
    /// Top-1 accuracy against the calibration data's labels.
    Accuracy,
    /// Mean cosine similarity of the outputs with the unmodified model's: for models whose
    /// output is not class scores (detection or segmentation maps).
    Cosine,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Agreement => "agreement",
            Metric::Accuracy => "accuracy",
            Metric::Cosine => "cosine",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agreement" => Ok(Metric::Agreement),
            "accuracy" => Ok(Metric::Accuracy),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(format!(
                "unknown metric {s:?} (accuracy, agreement or cosine)"
            )),
        }
    }
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

impl WireEncoding {
    pub const ALL: [WireEncoding; 4] = [Self::F32, Self::F16, Self::Int8, Self::Int4];

    pub fn bits(self) -> u32 {
        match self {
            Self::F32 => 32,
            Self::F16 => 16,
            Self::Int8 => 8,
            Self::Int4 => 4,
        }
    }

    /// The encoding the raw input crosses a link in when this is the plan's wire encoding:
    /// the same, but never below 8 bits. An 8-bit image is what a camera gives anyway; a 4-bit
    /// one would lose accuracy that no measurement covers (accuracy points encode cut
    /// tensors only).
    pub fn for_input(self) -> WireEncoding {
        if self.bits() < 8 {
            Self::Int8
        } else {
            self
        }
    }

    /// Per-channel quantisation ships a scale and a zero point (two f32) with every channel.
    pub fn is_quantised(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }
}

impl std::str::FromStr for WireEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown wire encoding {s:?} (expected f32, f16, int8 or int4)"))
    }
}

impl std::fmt::Display for WireEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl CompressionPoint {
    /// The unmodified model in the given encoding.
    pub fn uncompressed(encoding: WireEncoding) -> Self {
        CompressionPoint {
            cuts: Vec::new(),
            encoding,
        }
    }

    /// Builds the canonical point for `kept[i]` channels at `cuts[i]` (channel counts from
    /// `channels`), leaving unpruned cuts out so equal compressions compare equal.
    pub fn new(cuts: &[usize], kept: &[u32], channels: &[u32], encoding: WireEncoding) -> Self {
        let mut pruned: Vec<CutCompression> = cuts
            .iter()
            .zip(kept)
            .zip(channels)
            .filter(|((_, k), c)| k < c)
            .map(|((&cut, &kept), &channels)| CutCompression {
                cut,
                kept,
                channels,
            })
            .collect();
        pruned.sort();
        CompressionPoint {
            cuts: pruned,
            encoding,
        }
    }

    /// Channels kept at `cut` (all of them when the cut is not pruned).
    pub fn kept_at(&self, cut: usize, channels: u32) -> u32 {
        self.cuts
            .iter()
            .find(|c| c.cut == cut)
            .map_or(channels, |c| c.kept)
    }

    /// True when `self` prunes no cut harder than `other` does (same encoding): under the usual
    /// monotonicity, `self` is then at least as accurate as `other`.
    pub fn dominates(&self, other: &CompressionPoint) -> bool {
        self.encoding == other.encoding
            && self
                .cuts
                .iter()
                .all(|c| c.kept >= other.kept_at(c.cut, c.channels))
    }
}

impl std::fmt::Display for CompressionPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cuts.is_empty() {
            write!(f, "the uncompressed model")?;
        }
        for (i, c) in self.cuts.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}cut {} keeping {}/{}", c.cut, c.kept, c.channels)?;
        }
        write!(f, " ({})", self.encoding)
    }
}

/// Every accuracy measured so far. Kept across searches (and persisted by the CLI), so a replan
/// never pays twice for the same point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    points: BTreeMap<CompressionPoint, f64>,
}

impl Measurements {
    pub fn get(&self, p: &CompressionPoint) -> Option<f64> {
        self.points.get(p).copied()
    }
    pub fn insert(&mut self, p: CompressionPoint, accuracy: f64) {
        self.points.insert(p, accuracy);
    }
    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&CompressionPoint, f64)> {
        self.points.iter().map(|(p, a)| (p, *a))
    }

    /// Upper bound on the accuracy of `p` from monotonicity: no point is more accurate than a
    /// measured point that prunes at least as little.
    pub fn upper_bound(&self, p: &CompressionPoint) -> Option<f64> {
        self.points
            .iter()
            .filter(|(q, _)| q.dominates(p))
            .map(|(_, a)| *a)
            .reduce(f64::min)
    }
}

/// Wraps an oracle with the measurement store: answers known points for free, counts fresh calls.
pub struct MeasuringOracle<'a> {
    oracle: &'a mut dyn AccuracyOracle,
    pub known: &'a mut Measurements,
    pub calls: usize,
}

impl<'a> MeasuringOracle<'a> {
    pub fn new(oracle: &'a mut dyn AccuracyOracle, known: &'a mut Measurements) -> Self {
        MeasuringOracle {
            oracle,
            known,
            calls: 0,
        }
    }

    pub fn accuracy(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
        if let Some(a) = self.known.get(p) {
            return Ok(a);
        }
        let a = self.oracle.measure(p)?;
        if !(a.is_finite() && (0.0..=1.0).contains(&a)) {
            return Err(OracleError::Failed(format!(
                "oracle returned accuracy {a} for {p}; expected a number in [0, 1]"
            )));
        }
        self.calls += 1;
        self.known.insert(p.clone(), a);
        Ok(a)
    }
}
