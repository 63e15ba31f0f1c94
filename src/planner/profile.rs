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
    /// What crossing a link costs besides its bandwidth, measured where the profile was made
    /// (absent: the reference model's fixed overheads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireCosts>,
}

/// The per-hop costs of the runtime, measured by `cnnpc profile` on the machine it runs on (the
/// device `host`): encoding and decoding a tensor frame in each wire encoding (zstd included
/// for every encoding but f32, as the shards send), and the HTTP cost of a hop. Codec costs are
/// per element and scale with the tier that pays them (a device 18x slower than the host
/// encodes 18x slower); HTTP costs do not.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCosts {
    /// Per encoding: ns per element to frame a tensor (quantise, compress) and to read it back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codec: BTreeMap<WireEncoding, CodecCost>,
    /// ms of one hop between tiers beyond its bytes: the HTTP request and its relayed answer.
    #[serde(default)]
    pub hop_ms: f64,
    /// ms of the client's request into the first tier beyond the input's codec.
    #[serde(default)]
    pub entry_ms: f64,
    /// What a tier pays once per request for starting after idling (absent: nothing).
    #[serde(default, skip_serializing_if = "WakeCost::is_zero")]
    pub wake: WakeCost,
}

/// Host ms a tier pays once per request because its work starts after an idle pause (a shard
/// waits for its input; an emulated slow device sleeps): caches and a core that have gone
/// cold. Measured by the profile as the first segment and its frames run after an idle pause
/// against the same run back to back. A per-start cost, not a per-element one: a short segment
/// pays it in full, a long one barely notices it. Scaled by the tier like compute and codec.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeCost {
    /// Extra ms of the tier's model run: 0 when the profile timed its rounds after an idle
    /// pause (its `run_ms` carry the slower start then, for the whole run, not only the first
    /// segment's).
    pub compute_ms: f64,
    /// Extra ms of reading its input frame and framing its output in f32.
    pub codec_ms: f64,
    /// Further extra ms when the output is framed compressed instead (quantised or f16, then
    /// zstd): paid only by a tier that sends such a frame. Served, tiers that read and write
    /// only f32 showed none of the cost that compressed framing showed (absent: 0, and
    /// `codec_ms` is then the whole cost, as profiles before it measured it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compressed_ms: f64,
}

impl WakeCost {
    pub fn is_zero(&self) -> bool {
        self.compute_ms == 0.0 && self.codec_ms == 0.0 && self.compressed_ms == 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecCost {
    pub encode_ns: f64,
    pub decode_ns: f64,
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
    /// Measured frame bytes of the whole tensor per wire encoding (zstd for all but f32), on
    /// the input the profile ran: what the wire carries, where the formula counts raw bits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frame_bytes: BTreeMap<WireEncoding, f64>,
    /// Measured codec cost of this tensor per wire encoding, ns per element: framing a wide,
    /// sparse early map costs a few ns per value, a deep narrow one with many channels several
    /// times that (per-channel parameters, less compressible data). Absent: `wire.codec`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codec: BTreeMap<WireEncoding, CodecCost>,
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
    /// How much of the segment ending at this cut scales with the channels kept, once pruning
    /// slices the cut's producer (its Conv and the channel-wise ops after it): the segment
    /// runs `run_ms · (1 − sliced_share · (1 − kept / channels))`. Measured by timing the
    /// segment sliced to one channel against the whole one. 0: nothing is sliced.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sliced_share: f64,
    /// Measured frame bytes of the cut tensor with every channel, per wire encoding (see
    /// [`TensorSize::frame_bytes`]); per channel kept, a share of them crosses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frame_bytes: BTreeMap<WireEncoding, f64>,
    /// Measured codec cost of the cut tensor per wire encoding (see [`TensorSize::codec`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codec: BTreeMap<WireEncoding, CodecCost>,
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
        // What was measured per crossing: its frame bytes and its own codec costs.
        let crossings = std::iter::once((
            "input".to_string(),
            &self.input.frame_bytes,
            &self.input.codec,
        ))
        .chain(
            self.cuts
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("cuts[{i}]"), &c.frame_bytes, &c.codec)),
        );
        for (at, sizes, codec) in crossings {
            if let Some((e, b)) = sizes.iter().find(|(_, b)| !(b.is_finite() && **b > 0.0)) {
                return Err(invalid(format!(
                    "{at}.frame_bytes.{e} must be a finite number > 0, got {b}"
                )));
            }
            let bad = |c: &CodecCost| !(finite_nonneg(c.encode_ns) && finite_nonneg(c.decode_ns));
            if let Some((e, c)) = codec.iter().find(|(_, c)| bad(c)) {
                return Err(invalid(format!(
                    "{at}.codec.{e} must be finite numbers >= 0, got {c:?}"
                )));
            }
        }
        if let Some(w) = &self.wire {
            let costs = [
                ("hop_ms", w.hop_ms),
                ("entry_ms", w.entry_ms),
                ("wake compute_ms", w.wake.compute_ms),
                ("wake codec_ms", w.wake.codec_ms),
                ("wake compressed_ms", w.wake.compressed_ms),
            ]
            .into_iter()
            .chain(w.codec.values().flat_map(|c| {
                [
                    ("codec encode_ns", c.encode_ns),
                    ("codec decode_ns", c.decode_ns),
                ]
            }));
            for (what, x) in costs {
                if !finite_nonneg(x) {
                    return Err(invalid(format!(
                        "wire {what} must be a finite number >= 0, got {x}"
                    )));
                }
            }
        }
        for (i, c) in self.cuts.iter().enumerate() {
            if !(0.0..=1.0).contains(&c.sliced_share) {
                return Err(invalid(format!(
                    "cuts[{i}].sliced_share must be in [0, 1], got {}",
                    c.sliced_share
                )));
            }
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
