//! Model profiles: what the planner knows about a CNN, as measured on each device.
//!
//! A profile cuts the model into segments at candidate cut points. Segment `k < P` ends at cut
//! point `k`; segment `P` is the tail after the last cut point (`P` = number of cut points). For
//! each cut point it records what crosses the wire there (channels, elements, bytes), and for each
//! device the run time of every segment.

use crate::planner::accuracy::WireEncoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub model: String,
    /// How the numbers were obtained; free text, kept with the data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// The encoding that `bytes` below counts (f32 for a measured ONNX model).
    pub wire_encoding: WireEncoding,
    pub input: TensorSize,
    pub cuts: Vec<CutPoint>,
    /// Device name → which tier it can serve as and its per-segment run time (ms).
    pub devices: BTreeMap<String, Device>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSize {
    /// Scalar values that cross the wire.
    pub elements: u64,
    /// Bytes that cross the wire, uncompressed, in the profile's `wire_encoding`.
    pub bytes: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<TensorInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutPoint {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Channels that pruning acts on at this cut.
    pub channels: u32,
    pub elements: u64,
    pub bytes: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<TensorInfo>,
    /// The share of the segment ending at this cut that computes the cut's channels alone (its
    /// producing Conv and the channel-wise ops after it), by multiply-adds. Pruning slices that
    /// producer, so the share shrinks with the channels kept. 0: nothing is sliced.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sliced_share: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The tier this device serves as: `end`, `edge` or `cloud` (or any name a topology uses).
    pub tier: String,
    /// Run time of each segment in milliseconds; one entry per segment (cut points + 1).
    pub run_ms: Vec<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("profile is not valid YAML/JSON: {0}")]
    Parse(String),
    #[error("profile {model}: {what}")]
    Invalid { model: String, what: String },
}

impl Profile {
    /// Parses a profile from YAML or JSON text (JSON is valid YAML) and validates it.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let profile: Profile =
            serde_yaml::from_str(text).map_err(|e| ProfileError::Parse(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    pub fn segments(&self) -> usize {
        self.cuts.len() + 1
    }

    /// Checks every number a latency computation relies on, so the planner never meets a NaN.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |what: String| ProfileError::Invalid {
            model: self.model.clone(),
            what,
        };
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_nonneg(self.input.bytes) {
            return Err(invalid(format!(
                "input.bytes must be a finite number >= 0, got {}",
                self.input.bytes
            )));
        }
        for (i, cut) in self.cuts.iter().enumerate() {
            if cut.channels == 0 {
                return Err(invalid(format!("cuts[{i}].channels must be >= 1")));
            }
            if !finite_nonneg(cut.bytes) {
                return Err(invalid(format!(
                    "cuts[{i}].bytes must be a finite number >= 0, got {}",
                    cut.bytes
                )));
            }
        }
        if self.devices.is_empty() {
            return Err(invalid("no devices".into()));
        }
        for (name, device) in &self.devices {
            if device.run_ms.len() != self.segments() {
                return Err(invalid(format!(
                    "device {name} has {} run_ms entries, expected {} (cut points + 1)",
                    device.run_ms.len(),
                    self.segments()
                )));
            }
            if let Some((k, x)) = device
                .run_ms
                .iter()
                .enumerate()
                .find(|(_, x)| !finite_nonneg(**x))
            {
                return Err(invalid(format!(
                    "device {name} run_ms[{k}] must be a finite number >= 0, got {x}"
                )));
            }
        }
        Ok(())
    }

    /// Devices that can serve as `tier`, by name.
    pub fn devices_for(&self, tier: &str) -> Vec<&str> {
        self.devices
            .iter()
            .filter(|(_, d)| d.tier == tier)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}
