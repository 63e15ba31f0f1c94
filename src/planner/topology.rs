//! Topology: the tiers a request passes through, in order, and the links between them.

use crate::planner::profile::Profile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fixed costs of a request that do not depend on where the model is cut.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// Added when the whole model runs on the first tier and nothing crosses a link.
    pub local_ms: f64,
    /// Added when anything crosses a link.
    pub remote_ms: f64,
}

impl Overhead {
    /// The reference code adds 0.53 + 1.127 ms to end-only and 0.53 + 1.13 ms to every other plan.
    pub const REFERENCE: Overhead = Overhead {
        local_ms: 0.53 + 1.127,
        remote_ms: 0.53 + 1.13,
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// `end`, `edge`, `cloud`: the name plans and metrics use.
    pub name: String,
    /// The profile device whose run times this tier uses.
    pub device: String,
    /// Run time of each segment on this tier, ms (already scaled by any measured speed factor).
    pub run_ms: Vec<f64>,
    /// How much slower than the profiling host this tier encodes and decodes frames: its
    /// device's run times over the host's, times its slowdown (1 without a `host` device).
    #[serde(default = "one")]
    pub codec_scale: f64,
    /// How much slower than the profiling host this tier computes: its device's run times over
    /// the host's, times its slowdown. What scales the profile's host-measured wake cost.
    #[serde(default = "one")]
    pub compute_scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Bandwidth in Mbit/s (10^6 bits per second).
    pub mbps: f64,
    /// Fixed cost of one hop (propagation, request handling), ms.
    pub hop_ms: f64,
}

impl Link {
    pub fn transfer_ms(&self, bytes: f64) -> f64 {
        bytes * 8.0 / (self.mbps * 1e6) * 1e3
    }
}

/// The request enters at `tiers[0]`; `links[i]` joins `tiers[i]` and `tiers[i + 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub tiers: Vec<Tier>,
    pub links: Vec<Link>,
    pub overhead: Overhead,
    /// Reproduce a quirk of the reference code: a cloud-only plan pays only the last link for the
    /// input (as if the device reached the cloud directly at that bandwidth), while every other
    /// plan pays each link the data crosses. Off by default; on to reproduce its numbers.
    pub reference_cloud_only: bool,
}

/// A device's run times over the profiling host's (1 when the profile has no `host` device or
/// either sums to nothing): how much slower it runs anything, the codec included.
fn host_factor(profile: &Profile, run_ms: &[f64]) -> f64 {
    let Some(host) = profile.devices.get("host") else {
        return 1.0;
    };
    let (h, d): (f64, f64) = (host.run_ms.iter().sum(), run_ms.iter().sum());
    if h > 0.0 && d > 0.0 {
        d / h
    } else {
        1.0
    }
}

/// How a user describes a topology: which device each tier is, link speeds, speed factors.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologySpec {
    /// `(tier name, device name, slowdown factor)` in request order; slowdown multiplies run times
    /// (1.0 = as profiled; replanning feeds observed/predicted ratios here).
    pub tiers: Vec<(String, String, f64)>,
    /// Per tier name, a factor on its codec costs on top of its slowdown (absent = 1; the
    /// operator's feedback corrects the codec term apart from compute).
    pub codec_scale: BTreeMap<String, f64>,
    /// Bandwidth of each link in Mbit/s, `tiers.len() - 1` entries.
    pub link_mbps: Vec<f64>,
    pub hop_ms: f64,
    pub overhead: Overhead,
    pub reference_cloud_only: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopologyError {
    #[error("unknown device {device:?} for tier {tier}; the profile has {available}")]
    UnknownDevice {
        tier: String,
        device: String,
        available: String,
    },
    #[error("device {device:?} is profiled as a {actual} device, not {tier}")]
    WrongTier {
        tier: String,
        device: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl TopologySpec {
    /// The reference setting: end device `end_device`, the profile's `edge` and `cloud` devices,
    /// reference overheads, no per-hop cost.
    pub fn end_edge_cloud(end_device: &str, end_edge_mbps: f64, edge_cloud_mbps: f64) -> Self {
        TopologySpec {
            tiers: vec![
                ("end".into(), end_device.into(), 1.0),
                ("edge".into(), "edge".into(), 1.0),
                ("cloud".into(), "cloud".into(), 1.0),
            ],
            codec_scale: BTreeMap::new(),
            link_mbps: vec![end_edge_mbps, edge_cloud_mbps],
            hop_ms: 0.0,
            overhead: Overhead::REFERENCE,
            reference_cloud_only: false,
        }
    }

    pub fn build(&self, profile: &Profile) -> Result<Topology, TopologyError> {
        if self.tiers.is_empty() {
            return Err(TopologyError::Invalid(
                "a topology needs at least one tier".into(),
            ));
        }
        if self.link_mbps.len() + 1 != self.tiers.len() {
            return Err(TopologyError::Invalid(format!(
                "{} tiers need {} link bandwidths, got {}",
                self.tiers.len(),
                self.tiers.len() - 1,
                self.link_mbps.len()
            )));
        }
        if let Some(bad) = self
            .link_mbps
            .iter()
            .find(|b| !(b.is_finite() && **b > 0.0))
        {
            return Err(TopologyError::Invalid(format!(
                "link bandwidth must be a finite number > 0 Mbit/s, got {bad}"
            )));
        }
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        if !nonneg(self.hop_ms)
            || !nonneg(self.overhead.local_ms)
            || !nonneg(self.overhead.remote_ms)
        {
            return Err(TopologyError::Invalid(
                "hop and overhead times must be finite and >= 0".into(),
            ));
        }
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for (tier, device, slowdown) in &self.tiers {
            if !(slowdown.is_finite() && *slowdown > 0.0) {
                return Err(TopologyError::Invalid(format!(
                    "slowdown of tier {tier} must be > 0, got {slowdown}"
                )));
            }
            let codec = self.codec_scale.get(tier).copied().unwrap_or(1.0);
            if !(codec.is_finite() && codec > 0.0) {
                return Err(TopologyError::Invalid(format!(
                    "codec factor of tier {tier} must be > 0, got {codec}"
                )));
            }
            let profiled =
                profile
                    .devices
                    .get(device)
                    .ok_or_else(|| TopologyError::UnknownDevice {
                        tier: tier.clone(),
                        device: device.clone(),
                        available: profile
                            .devices
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            if profiled.tier != *tier {
                return Err(TopologyError::WrongTier {
                    tier: tier.clone(),
                    device: device.clone(),
                    actual: profiled.tier.clone(),
                });
            }
            let compute_scale = host_factor(profile, &profiled.run_ms) * slowdown;
            tiers.push(Tier {
                name: tier.clone(),
                device: device.clone(),
                run_ms: profiled.run_ms.iter().map(|ms| ms * slowdown).collect(),
                codec_scale: compute_scale * codec,
                compute_scale,
            });
        }
        Ok(Topology {
            tiers,
            links: self
                .link_mbps
                .iter()
                .map(|&mbps| Link {
                    mbps,
                    hop_ms: self.hop_ms,
                })
                .collect(),
            overhead: self.overhead,
            reference_cloud_only: self.reference_cloud_only,
        })
    }
}
