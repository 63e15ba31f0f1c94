//! Accuracy: the expensive oracle, the measured-point store, and the CAE estimator.
//!
//! Accuracy is a function of *how the model is compressed*: which cut points are pruned, to how
//! many channels, and how the cut tensors are encoded on the wire. Where the cuts sit in the
//! deployment (which tier runs what) does not matter, so one measurement serves every deployment
//! that compresses the same way. That is what [`CompressionPoint`] captures.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::planner::sequential::{Decision, Rule, Tally};

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

/// One cut the wire encoding crosses: `kept` of `channels` channels survive. A cut with `kept ==
/// channels` is not pruned; a [`CompressionPoint`] lists it only when its encoding loses
/// against the data's own (an unpruned cut in the profile's encoding costs nothing).
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

/// A way of compressing the model: the cuts the wire encoding is applied at (sorted by cut
/// index: every pruned cut, and, in an encoding coarser than the profile's, the unpruned cuts
/// that cross a link too), that encoding, and whether the raw input crosses a link in it (a
/// plan whose end device only relays the input). `cuts` empty and no encoded input = the
/// unmodified model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CompressionPoint {
    pub cuts: Vec<CutCompression>,
    pub encoding: WireEncoding,
    /// The input is quantised (or rounded to f16) on its way: never set with f32, which is the
    /// client's own encoding and loses nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input: bool,
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
/// calibration set), which is why the search counts calls and keeps every answer. An oracle
/// that measures on samples (the live one) says how many it has, and measures any run of
/// them, so a point can be measured in batches and stopped early ([`sequential`]).
///
/// [`sequential`]: crate::planner::sequential
pub trait AccuracyOracle {
    /// The accuracy on the whole evaluation set.
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError>;

    /// The evaluation samples this oracle measures on; `None` for an exact oracle (a table, a
    /// synthetic surface), whose answers are not estimates.
    fn samples(&self) -> Option<usize> {
        None
    }

    /// Whether per-sample scores are 0 or 1 (agreement, accuracy), so the accuracy is a
    /// proportion with a binomial interval. Cosine similarity is not; it is measured whole.
    fn binary(&self) -> bool {
        true
    }

    /// Whether `point`'s accuracy is known without sampling: the unmodified model agrees with
    /// itself on every input.
    fn exact(&self, _point: &CompressionPoint) -> bool {
        self.samples().is_none()
    }

    /// The sum of per-sample scores over evaluation samples `from..to`, in the oracle's fixed
    /// order. Only oracles with [`samples`](Self::samples) implement it.
    fn measure_samples(
        &mut self,
        point: &CompressionPoint,
        _from: usize,
        _to: usize,
    ) -> Result<f64, OracleError> {
        Err(OracleError::Failed(format!(
            "{point}: this oracle measures only its whole set"
        )))
    }
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

    /// Whether data that came in `native` (a profile's own encoding) loses anything crossing in
    /// this encoding: only a coarser one does.
    pub fn loses_against(self, native: WireEncoding) -> bool {
        self.bits() < native.bits()
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
            input: false,
        }
    }

    /// The same point with the raw input crossing in its encoding when `relayed` (and the
    /// encoding loses anything: an f32 input is the client's own).
    pub fn with_input(mut self, relayed: bool) -> Self {
        self.input = relayed && self.encoding != WireEncoding::F32;
        self
    }

    /// Whether this is the unmodified model: nothing pruned, nothing encoded on the way.
    pub fn is_unmodified(&self) -> bool {
        self.cuts.is_empty() && !self.input
    }

    /// Builds the canonical point for `kept[i]` channels at `cuts[i]` (channel counts from
    /// `channels`), leaving unpruned cuts out so equal compressions compare equal.
    pub fn new(cuts: &[usize], kept: &[u32], channels: &[u32], encoding: WireEncoding) -> Self {
        Self::crossing(cuts, kept, channels, encoding, false)
    }

    /// The point a plan serves with `cuts` crossing links: its pruned cuts, and when `lossy`
    /// (its encoding is coarser than the data's own) its unpruned ones too, since the encoding
    /// still loses there.
    pub fn crossing(
        cuts: &[usize],
        kept: &[u32],
        channels: &[u32],
        encoding: WireEncoding,
        lossy: bool,
    ) -> Self {
        let mut pruned: Vec<CutCompression> = cuts
            .iter()
            .zip(kept)
            .zip(channels)
            .filter(|((_, k), c)| k < c || lossy)
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
            input: false,
        }
    }

    /// True when `self` encodes the tensors at least as finely as `other` (as many bits or
    /// more), the input only if `other` does too, and every cut only where `other` encodes it
    /// too, keeping no fewer channels there (a cut `other` leaves out it neither prunes nor
    /// encodes): under the usual monotonicity — fewer channels, fewer bits never help —
    /// `self` is then at least as accurate as `other`.
    pub fn dominates(&self, other: &CompressionPoint) -> bool {
        self.encoding.bits() >= other.encoding.bits()
            && (!self.input || other.input)
            && self.cuts.iter().all(|c| {
                other
                    .cuts
                    .iter()
                    .any(|o| o.cut == c.cut && o.kept <= c.kept)
            })
    }
}

impl std::fmt::Display for CompressionPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unmodified() {
            write!(f, "the uncompressed model")?;
        }
        if self.input {
            write!(f, "the input")?;
        }
        for (i, c) in self.cuts.iter().enumerate() {
            let sep = if i == 0 && !self.input { "" } else { ", " };
            write!(f, "{sep}cut {} keeping {}/{}", c.cut, c.kept, c.channels)?;
        }
        write!(f, " ({})", self.encoding)
    }
}

/// One measured point: an exact accuracy, or a tally of samples (see [`sequential`]).
///
/// [`sequential`]: crate::planner::sequential
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measured {
    Exact(f64),
    Sampled(Tally),
}

impl Measured {
    /// The accuracy itself: the exact value, or the tally's estimate.
    pub fn estimate(&self) -> f64 {
        match self {
            Measured::Exact(a) => *a,
            Measured::Sampled(t) => t.estimate(),
        }
    }
}

/// Every accuracy measured so far. Kept across searches (and persisted by the CLI), so a replan
/// never pays twice for the same point, nor twice for the same sample of a point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    points: BTreeMap<CompressionPoint, Measured>,
}

impl Measurements {
    /// The accuracy of `p` (a tally's estimate).
    pub fn get(&self, p: &CompressionPoint) -> Option<f64> {
        self.points.get(p).map(Measured::estimate)
    }
    pub fn entry(&self, p: &CompressionPoint) -> Option<Measured> {
        self.points.get(p).copied()
    }
    pub fn insert(&mut self, p: CompressionPoint, accuracy: f64) {
        self.points.insert(p, Measured::Exact(accuracy));
    }
    pub fn insert_tally(&mut self, p: CompressionPoint, tally: Tally) {
        self.points.insert(p, Measured::Sampled(tally));
    }
    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
    /// Every point with its accuracy (a tally's estimate).
    pub fn iter(&self) -> impl Iterator<Item = (&CompressionPoint, f64)> {
        self.points.iter().map(|(p, a)| (p, a.estimate()))
    }
    pub fn entries(&self) -> impl Iterator<Item = (&CompressionPoint, Measured)> {
        self.points.iter().map(|(p, a)| (p, *a))
    }
}

/// Wraps an oracle with the measurement store: answers known points for free, counts fresh
/// points and samples, and, for an oracle that samples, measures in batches under the
/// sequential [`Rule`] against the threshold the search is working to.
///
/// Every value it hands the search is a *search value*: the exact accuracy, or the lower
/// confidence bound of a tally ([`Rule::value`]). The search compares it with
/// [`threshold_for`](Self::threshold_for) of the floor.
pub struct MeasuringOracle<'a> {
    oracle: &'a mut dyn AccuracyOracle,
    pub known: &'a mut Measurements,
    /// Points measured fresh (known points are free).
    pub calls: usize,
    /// Samples evaluated fresh, over every point.
    pub samples: usize,
    /// Plans a search found that then failed on the whole evaluation set (searched again).
    pub failed_in_full: usize,
    pub rule: Rule,
    /// The threshold sequential measurements are decided against; `None`: measure whole.
    threshold: Option<f64>,
}

impl<'a> MeasuringOracle<'a> {
    pub fn new(oracle: &'a mut dyn AccuracyOracle, known: &'a mut Measurements) -> Self {
        MeasuringOracle {
            oracle,
            known,
            calls: 0,
            samples: 0,
            failed_in_full: 0,
            rule: Rule::default(),
            threshold: None,
        }
    }

    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rule = rule;
        self
    }

    /// The evaluation set's size when measurements are sequential (a sampling oracle with a
    /// binary metric).
    pub fn sequential(&self) -> Option<usize> {
        self.oracle.samples().filter(|_| self.oracle.binary())
    }

    /// What a search value must reach for the floor `a0`: `a0` itself for an exact oracle,
    /// `a0 − tolerance` for lower bounds.
    pub fn threshold_for(&self, a0: f64) -> f64 {
        match self.sequential() {
            Some(_) => self.rule.threshold(a0),
            None => a0,
        }
    }

    /// Sets the threshold measurements are decided against; returns the previous one.
    pub fn set_threshold(&mut self, threshold: Option<f64>) -> Option<f64> {
        std::mem::replace(&mut self.threshold, threshold)
    }

    fn entry_value(&self, m: Measured) -> f64 {
        match m {
            Measured::Exact(a) => a,
            Measured::Sampled(t) => self.rule.value(t),
        }
    }

    /// Whether `m` needs no more samples for the current threshold.
    fn settled(&self, m: Measured) -> bool {
        let (Measured::Sampled(t), Some(total)) = (m, self.sequential()) else {
            return true;
        };
        match self.threshold {
            Some(theta) => self.rule.decide(t, total, theta) != Decision::Open,
            None => t.samples >= total,
        }
    }

    /// The search value of a known, settled point.
    pub fn known_value(&self, p: &CompressionPoint) -> Option<f64> {
        self.known
            .entry(p)
            .filter(|m| self.settled(*m))
            .map(|m| self.entry_value(m))
    }

    /// Every known, settled point with its search value (unsettled tallies, left by a search
    /// to another floor, are measured further when asked for, not guessed from).
    pub fn values(&self) -> Vec<(&CompressionPoint, f64)> {
        self.known
            .entries()
            .filter(|(_, m)| self.settled(*m))
            .map(|(p, m)| (p, self.entry_value(m)))
            .collect()
    }

    /// Upper bound on the search value of `p` from monotonicity: no point is more accurate
    /// than a measured point that prunes at least as little and encodes at least as finely.
    pub fn upper_bound(&self, p: &CompressionPoint) -> Option<f64> {
        self.values()
            .into_iter()
            .filter(|(q, _)| q.dominates(p))
            .map(|(_, a)| a)
            .reduce(f64::min)
    }

    /// Lower bound on the search value of `p` from monotonicity: `p` is at least as accurate as
    /// any measured point it dominates (one that prunes as much or more, as coarsely or more).
    pub fn lower_bound(&self, p: &CompressionPoint) -> Option<f64> {
        self.values()
            .into_iter()
            .filter(|(q, _)| p.dominates(q))
            .map(|(_, a)| a)
            .reduce(f64::max)
    }

    /// The search value of `p` as far as floor `a0` needs it: known, or (with `reuse`) the best
    /// lower bound from a point it dominates when that already meets `a0`, else measured. A
    /// bound stands in only for points the search may replace later: the plan it returns is
    /// measured in full (`Planner::judged`).
    pub fn value_against(
        &mut self,
        p: &CompressionPoint,
        a0: f64,
        reuse: bool,
    ) -> Result<f64, OracleError> {
        if let Some(a) = self.known_value(p) {
            return Ok(a);
        }
        match reuse.then(|| self.lower_bound(p)).flatten() {
            Some(floor) if floor >= a0 => Ok(floor),
            _ => self.accuracy(p),
        }
    }

    /// The search value of `p`, measuring only as many samples as the threshold needs.
    pub fn accuracy(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
        match (self.sequential(), self.known.entry(p)) {
            (_, Some(m)) if self.settled(m) => return Ok(self.entry_value(m)),
            (Some(total), known) if !self.oracle.exact(p) => {
                let t = match known {
                    Some(Measured::Sampled(t)) => t,
                    _ => Tally::default(),
                };
                return self.sample(p, t, total, false);
            }
            _ => {}
        }
        let a = self.oracle.measure(p)?;
        check_range(a, p)?;
        self.calls += 1;
        self.known.insert(p.clone(), a);
        Ok(a)
    }

    /// The search value of `p` on the whole evaluation set (what a returned plan is judged
    /// by).
    pub fn full(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
        match (self.sequential(), self.known.entry(p)) {
            (Some(total), Some(Measured::Sampled(t))) if t.samples < total => {
                self.sample(p, t, total, true)
            }
            (Some(total), None) if !self.oracle.exact(p) => {
                self.sample(p, Tally::default(), total, true)
            }
            _ => self.accuracy(p),
        }
    }

    fn sample(
        &mut self,
        p: &CompressionPoint,
        mut t: Tally,
        total: usize,
        whole: bool,
    ) -> Result<f64, OracleError> {
        if t.samples == 0 {
            self.calls += 1;
        }
        loop {
            let done = t.samples >= total
                || (!whole
                    && self
                        .threshold
                        .is_some_and(|theta| self.rule.decide(t, total, theta) != Decision::Open));
            if done {
                return Ok(self.rule.value(t));
            }
            let next = self.rule.next_look(t.samples, total);
            let hits = self.oracle.measure_samples(p, t.samples, next)?;
            let n = (next - t.samples) as f64;
            if !(hits.is_finite() && (0.0..=n).contains(&hits)) {
                return Err(OracleError::Failed(format!(
                    "oracle scored {hits} over {n} samples of {p}; expected a number in [0, {n}]"
                )));
            }
            self.samples += next - t.samples;
            t = Tally {
                hits: t.hits + hits,
                samples: next,
            };
            self.known.insert_tally(p.clone(), t);
        }
    }

    /// What `p`'s accuracy rests on: its samples and interval (`None` for an exact answer).
    pub fn evidence(&self, p: &CompressionPoint) -> Option<AccuracyEvidence> {
        let Some(Measured::Sampled(t)) = self.known.entry(p) else {
            return None;
        };
        let (lower, upper) = self.rule.interval(t);
        Some(AccuracyEvidence {
            samples: t.samples,
            estimate: t.estimate(),
            lower,
            upper,
            confidence: self.rule.confidence,
            tolerance: self.rule.tolerance,
        })
    }
}

fn check_range(a: f64, p: &CompressionPoint) -> Result<(), OracleError> {
    if a.is_finite() && (0.0..=1.0).contains(&a) {
        Ok(())
    } else {
        Err(OracleError::Failed(format!(
            "oracle returned accuracy {a} for {p}; expected a number in [0, 1]"
        )))
    }
}

/// What a plan's accuracy rests on, when it was measured on samples: how many, and the
/// interval at `confidence`. The plan meets a floor A0 when `lower` ≥ A0 − `tolerance`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccuracyEvidence {
    pub samples: usize,
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    pub confidence: f64,
    pub tolerance: f64,
}

impl std::fmt::Display for AccuracyEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.4} on {} samples, {:.0}% interval [{:.4}, {:.4}]",
            self.estimate,
            self.samples,
            self.confidence * 100.0,
            self.lower,
            self.upper
        )
    }
}
