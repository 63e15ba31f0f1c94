//! The plan: what the search decided, in the form every other part consumes (JSON contract).

use crate::planner::accuracy::{CompressionPoint, MeasuringOracle, WireEncoding};
use crate::planner::latency::Crossing;
use crate::planner::search::{Candidate, Planner};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One cut of a plan: where the model is split and how the tensor crossing it is compressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCut {
    /// Cut point index in the profile.
    pub point: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The tier that computes before the cut and the tier that computes after it.
    pub from: String,
    pub to: String,
    pub channels: u32,
    pub kept_channels: u32,
    /// Fraction of channels removed (the reference's r).
    pub prune_ratio: f64,
    /// Tensors that cross (empty for profiles that do not name them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<String>,
}

/// What one tier runs: segments `[first, last]` inclusive, or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTier {
    pub tier: String,
    pub device: String,
    pub segments: Option<[usize; 2]>,
    pub compute_ms: f64,
    /// Framing what it sends and reading what it receives (priced from the profile's
    /// measured wire costs; 0 without them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub codec_ms: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLink {
    pub from: String,
    pub to: String,
    pub mbps: f64,
    /// `input`, `cut N`, or `none`.
    pub carries: String,
    pub bytes: f64,
    pub transfer_ms: f64,
}

/// What a plan's accuracy was measured on: the shards rebuild exactly the measured model from
/// this record (the same model, the same fit inputs, the same pruning method). Part of the plan
/// JSON and of the CollaborativeInference status (one-word keys suit both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MeasuredOn {
    /// SHA-256 of the model file (lower-case hex), before `shape` was applied.
    pub model: String,
    /// The input shape the model was given (empty: as the model declares it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
    /// The calibration data, for humans: a built-in set's name, a file or a folder.
    pub calibration: String,
    /// The calibration data's identity: a content hash of the files (and preprocessing), or a
    /// built-in generator and its version.
    pub data: String,
    /// What accuracy means for this plan (the floor was compared with it).
    #[serde(default)]
    pub metric: crate::planner::accuracy::Metric,
    /// The inputs the pruning statistics were fitted on.
    pub fit: Items,
    /// The inputs accuracy was measured on (disjoint from the fit inputs).
    pub eval: Items,
    /// The pruning method (channel selection and reconstruction).
    pub pruning: String,
}

/// A run of calibration inputs: `count` items from item `first` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Items {
    pub first: u64,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub model: String,
    pub strategy: String,
    /// The tiers that compute, e.g. `end-edge-cloud`, `edge-cloud`, `end-only`.
    pub deployment: String,
    pub latency_ms: f64,
    /// Measured accuracy of this compression; null when no oracle was given.
    pub accuracy: Option<f64>,
    /// What the accuracy rests on when it was measured on samples: the whole evaluation set's
    /// size and the interval (absent for a table, a synthetic surface or the unmodified model,
    /// whose accuracy is not an estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_interval: Option<crate::planner::accuracy::AccuracyEvidence>,
    /// Fresh accuracy measurements this search made (known points are free).
    pub oracle_calls: usize,
    /// Evaluation samples those measurements ran (sequential measurements stop early).
    #[serde(default)]
    pub oracle_samples: usize,
    pub wire_encoding: WireEncoding,
    pub cuts: Vec<PlanCut>,
    /// Per tier, ms.
    pub compute_ms: BTreeMap<String, f64>,
    /// Per tier, ms of encoding and decoding frames (empty without measured wire costs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codec_ms: BTreeMap<String, f64>,
    /// Per link (`end->edge`), ms.
    pub transfer_ms: BTreeMap<String, f64>,
    /// Per link, bytes per request.
    pub bytes: BTreeMap<String, f64>,
    pub overhead_ms: f64,
    pub tiers: Vec<PlanTier>,
    pub links: Vec<PlanLink>,
    /// What the accuracy was measured on (live measurements only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_on: Option<MeasuredOn>,
}

impl Plan {
    /// The compression this plan serves, whose accuracy it claims (as [`Planner::point`]
    /// builds it): its pruned cuts; and in an encoding coarser than `native`, the profile's,
    /// its unpruned cuts and the input when its first tier only relays it to one that computes.
    pub fn compression_point(&self, native: WireEncoding) -> CompressionPoint {
        let cuts: Vec<usize> = self.cuts.iter().map(|c| c.point).collect();
        let kept: Vec<u32> = self.cuts.iter().map(|c| c.kept_channels).collect();
        let channels: Vec<u32> = self.cuts.iter().map(|c| c.channels).collect();
        let lossy = self.wire_encoding.loses_against(native);
        let relayed = self.tiers.first().is_some_and(|t| t.segments.is_none())
            && self.tiers.iter().any(|t| t.segments.is_some());
        CompressionPoint::crossing(&cuts, &kept, &channels, self.wire_encoding, lossy)
            .with_input(relayed && lossy)
    }

    /// The tier boundaries of this plan (see `latency::Deployment`), recovered from its tiers.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut next = 0;
        let mut out = Vec::new();
        for t in &self.tiers[..self.tiers.len().saturating_sub(1)] {
            if let Some([_, last]) = t.segments {
                next = last + 1;
            }
            out.push(next);
        }
        out
    }
}

pub fn link_name(from: &str, to: &str) -> String {
    format!("{from}->{to}")
}

impl Planner<'_> {
    /// [`Self::plan`] for a candidate the search measured through `m`: the accuracy it reports
    /// is the estimate on the whole evaluation set, with its interval, not the search value.
    pub fn plan_measured(&self, strategy: &str, c: &Candidate, m: &MeasuringOracle) -> Plan {
        let mut plan = self.plan(strategy, c, m.calls);
        plan.oracle_samples = m.samples;
        if c.accuracy.is_some() {
            if let Some(e) = m.evidence(&self.point(c.layout, &c.kept, c.encoding)) {
                plan.accuracy = Some(e.estimate);
                plan.accuracy_interval = Some(e);
            }
        }
        plan
    }

    pub fn plan(&self, strategy: &str, c: &Candidate, oracle_calls: usize) -> Plan {
        let layout = &self.layouts[c.layout];
        let model = self.model(c.encoding);
        let b = model.breakdown(layout, &c.kept);
        let tiers = &self.topology.tiers;
        let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
        let active: Vec<usize> = (0..tiers.len())
            .filter(|&t| layout.ranges[t].0 < layout.ranges[t].1)
            .collect();
        let cuts = layout
            .cuts
            .iter()
            .zip(&c.kept)
            .map(|(&point, &kept)| {
                let cut = &self.profile.cuts[point];
                // The cut ends the segment `point`: its producer is the tier running that segment.
                let from = active
                    .iter()
                    .copied()
                    .find(|&t| layout.ranges[t].0 <= point && point < layout.ranges[t].1);
                let to = active
                    .iter()
                    .copied()
                    .find(|&t| layout.ranges[t].0 == point + 1);
                PlanCut {
                    point,
                    name: cut.name.clone(),
                    from: from.map_or("", |t| names[t]).to_string(),
                    to: to.map_or("", |t| names[t]).to_string(),
                    channels: cut.channels,
                    kept_channels: kept,
                    prune_ratio: 1.0 - f64::from(kept) / f64::from(cut.channels),
                    tensors: cut.tensors.iter().map(|t| t.name.clone()).collect(),
                }
            })
            .collect();
        let links: Vec<PlanLink> = (0..self.topology.links.len())
            .map(|l| PlanLink {
                from: names[l].to_string(),
                to: names[l + 1].to_string(),
                mbps: self.topology.links[l].mbps,
                carries: match layout.crossings[l] {
                    None => "none".into(),
                    Some(Crossing::Input) => "input".into(),
                    Some(Crossing::Cut(i)) => format!("cut {i}"),
                },
                bytes: b.bytes[l],
                transfer_ms: b.transfer_ms[l],
            })
            .collect();
        Plan {
            model: self.profile.model.clone(),
            strategy: strategy.to_string(),
            deployment: layout.name(self.topology),
            latency_ms: b.total_ms,
            accuracy: c.accuracy,
            accuracy_interval: None,
            oracle_calls,
            oracle_samples: 0,
            wire_encoding: c.encoding,
            cuts,
            compute_ms: names
                .iter()
                .zip(&b.compute_ms)
                .map(|(n, ms)| (n.to_string(), *ms))
                .collect(),
            codec_ms: names
                .iter()
                .zip(&b.codec_ms)
                .filter(|_| self.profile.wire.is_some())
                .map(|(n, ms)| (n.to_string(), *ms))
                .collect(),
            transfer_ms: links
                .iter()
                .map(|l| (link_name(&l.from, &l.to), l.transfer_ms))
                .collect(),
            bytes: links
                .iter()
                .map(|l| (link_name(&l.from, &l.to), l.bytes))
                .collect(),
            overhead_ms: b.overhead_ms,
            tiers: tiers
                .iter()
                .zip(&layout.ranges)
                .zip(b.compute_ms.iter().zip(&b.codec_ms))
                .map(|((t, &(s, e)), (&ms, &codec_ms))| PlanTier {
                    tier: t.name.clone(),
                    device: t.device.clone(),
                    segments: (s < e).then(|| [s, e - 1]),
                    compute_ms: ms,
                    codec_ms,
                })
                .collect(),
            links,
            measured_on: None,
        }
    }
}
