//! The latency model: compute on each tier + transfer on each link + fixed overhead.
//!
//! Generalises the reference `latency_support.py` (any number of tiers, bytes over bandwidth,
//! wire encodings) and reproduces its numbers when fed the reference tables.

use crate::planner::accuracy::WireEncoding;
use crate::planner::profile::Profile;
use crate::planner::topology::Topology;

/// Where each tier's share of the model ends. Tier `t` runs segments
/// `boundaries[t-1] .. boundaries[t]` (with `boundaries[-1] = 0` and the last tier running to
/// the end), so `boundaries` has one entry per link and never decreases. A tier whose range is
/// empty runs nothing and only relays.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Deployment {
    pub boundaries: Vec<usize>,
}

/// What crosses a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    Input,
    Cut(usize),
}

/// The shape of one deployment over a given profile and topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub deployment: Deployment,
    /// Segment range `[start, end)` of each tier.
    pub ranges: Vec<(usize, usize)>,
    /// What crosses each link, if anything.
    pub crossings: Vec<Option<Crossing>>,
    /// The distinct cut points that cross a link, ascending: the cuts compression acts on.
    pub cuts: Vec<usize>,
}

impl Layout {
    pub fn new(deployment: Deployment, segments: usize, reference_cloud_only: bool) -> Self {
        let tiers = deployment.boundaries.len() + 1;
        let mut ranges = Vec::with_capacity(tiers);
        let mut start = 0;
        for t in 0..tiers {
            let end = deployment.boundaries.get(t).copied().unwrap_or(segments);
            ranges.push((start, end));
            start = end;
        }
        // Link l carries whatever is left to compute after the tiers before it: the input when
        // nothing has run yet, the output of the last segment run otherwise, nothing when done.
        let mut crossings: Vec<Option<Crossing>> = deployment
            .boundaries
            .iter()
            .map(|&b| match b {
                0 => Some(Crossing::Input),
                b if b < segments => Some(Crossing::Cut(b - 1)),
                _ => None,
            })
            .collect();
        let only_last_runs = ranges[..tiers - 1].iter().all(|(s, e)| s == e);
        if reference_cloud_only && tiers > 1 && only_last_runs {
            for c in crossings.iter_mut().take(tiers - 2) {
                *c = None;
            }
        }
        let mut cuts: Vec<usize> = crossings
            .iter()
            .filter_map(|c| match c {
                Some(Crossing::Cut(i)) => Some(*i),
                _ => None,
            })
            .collect();
        cuts.dedup();
        Layout {
            deployment,
            ranges,
            crossings,
            cuts,
        }
    }

    /// `end-edge-cloud`, `edge-cloud`, `end-only`, …: the tiers that compute.
    pub fn name(&self, topology: &Topology) -> String {
        let active: Vec<&str> = self
            .ranges
            .iter()
            .zip(&topology.tiers)
            .filter(|((s, e), _)| s < e)
            .map(|(_, t)| t.name.as_str())
            .collect();
        match active.as_slice() {
            [one] => format!("{one}-only"),
            many => many.join("-"),
        }
    }

    pub fn is_remote(&self) -> bool {
        self.crossings.iter().any(Option::is_some)
    }
}

/// Every deployment over `tiers` tiers and `segments` segments: all non-decreasing boundary
/// vectors. Three tiers and eight segments give 45.
pub fn all_deployments(tiers: usize, segments: usize) -> Vec<Deployment> {
    fn rec(prefix: &mut Vec<usize>, left: usize, segments: usize, out: &mut Vec<Deployment>) {
        if left == 0 {
            out.push(Deployment {
                boundaries: prefix.clone(),
            });
            return;
        }
        let from = prefix.last().copied().unwrap_or(0);
        for b in from..=segments {
            prefix.push(b);
            rec(prefix, left - 1, segments, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    rec(&mut Vec::new(), tiers.saturating_sub(1), segments, &mut out);
    out
}

/// The full prediction for one deployment and compression.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    pub compute_ms: Vec<f64>,
    pub transfer_ms: Vec<f64>,
    pub bytes: Vec<f64>,
    pub overhead_ms: f64,
    pub total_ms: f64,
}

/// Latency as a function of the kept channels: `fixed_ms + Σ slope_ms[i] · kept[i]`, one slope
/// per cut in `Layout::cuts` order. Transfer is linear in the channels kept, which is what lets
/// the search bound whole regions of the ratio space at once.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLatency {
    pub fixed_ms: f64,
    pub slope_ms: Vec<f64>,
}

impl LinearLatency {
    pub fn at(&self, kept: &[u32]) -> f64 {
        self.fixed_ms
            + self
                .slope_ms
                .iter()
                .zip(kept)
                .map(|(s, &k)| s * f64::from(k))
                .sum::<f64>()
    }
}

/// Binds a profile, a topology and a wire encoding.
#[derive(Debug, Clone, Copy)]
pub struct LatencyModel<'a> {
    pub profile: &'a Profile,
    pub topology: &'a Topology,
    pub encoding: WireEncoding,
}

impl<'a> LatencyModel<'a> {
    pub fn layout(&self, deployment: Deployment) -> Layout {
        Layout::new(
            deployment,
            self.profile.segments(),
            self.topology.reference_cloud_only,
        )
    }

    /// Size of this model's encoding relative to the profile's.
    fn size_ratio(&self) -> f64 {
        f64::from(self.encoding.bits()) / f64::from(self.profile.wire_encoding.bits())
    }

    /// Bytes on the wire per channel kept at `cut`, in this model's encoding. Quantised encodings
    /// from a float profile also ship a scale and zero point per channel.
    pub fn bytes_per_channel(&self, cut: usize) -> f64 {
        let c = &self.profile.cuts[cut];
        let params = if self.encoding.is_quantised() && !self.profile.wire_encoding.is_quantised() {
            8.0
        } else {
            0.0
        };
        c.bytes / f64::from(c.channels) * self.size_ratio() + params
    }

    /// The input crosses a link in the cut tensors' encoding, but never below 8 bits
    /// ([`WireEncoding::for_input`]); its few channels' parameters are negligible.
    pub fn input_bytes(&self) -> f64 {
        self.profile.input.bytes * f64::from(self.encoding.for_input().bits())
            / f64::from(self.profile.wire_encoding.bits())
    }

    pub fn linear(&self, layout: &Layout) -> LinearLatency {
        let topo = self.topology;
        let mut fixed = self.compute_ms(layout).iter().sum::<f64>();
        let mut slope = vec![0.0; layout.cuts.len()];
        for (link, crossing) in topo.links.iter().zip(&layout.crossings) {
            match crossing {
                None => {}
                Some(Crossing::Input) => {
                    fixed += link.transfer_ms(self.input_bytes()) + link.hop_ms
                }
                Some(Crossing::Cut(c)) => {
                    fixed += link.hop_ms;
                    let i = layout.cuts.binary_search(c).expect("cut is listed");
                    slope[i] += link.transfer_ms(self.bytes_per_channel(*c));
                }
            }
        }
        // A pruned cut's producer is sliced: its share of the producing tier's last segment
        // runs for the kept channels only.
        for (i, &c) in layout.cuts.iter().enumerate() {
            let (saved, per_channel) = self.sliced(layout, c);
            fixed -= saved;
            slope[i] += per_channel;
        }
        fixed += self.overhead_ms(layout);
        LinearLatency {
            fixed_ms: fixed,
            slope_ms: slope,
        }
    }

    /// For cut `c` of `layout`: (the sliceable ms of its producing segment, those ms per
    /// channel), and the producing tier's index.
    fn sliced_at(&self, layout: &Layout, c: usize) -> Option<(f64, f64, usize)> {
        let cut = &self.profile.cuts[c];
        if cut.sliced_share <= 0.0 || cut.channels == 0 {
            return None;
        }
        let t = layout.ranges.iter().position(|&(s, e)| s <= c && c < e)?;
        let ms = self.topology.tiers[t].run_ms[c] * cut.sliced_share.min(1.0);
        Some((ms, ms / f64::from(cut.channels), t))
    }

    fn sliced(&self, layout: &Layout, c: usize) -> (f64, f64) {
        self.sliced_at(layout, c)
            .map_or((0.0, 0.0), |(ms, per, _)| (ms, per))
    }

    fn compute_ms(&self, layout: &Layout) -> Vec<f64> {
        layout
            .ranges
            .iter()
            .zip(&self.topology.tiers)
            .map(|(&(s, e), tier)| tier.run_ms[s..e].iter().sum::<f64>() + 0.0) // + 0.0: no "-0" for an idle tier
            .collect()
    }

    fn overhead_ms(&self, layout: &Layout) -> f64 {
        if layout.is_remote() {
            self.topology.overhead.remote_ms
        } else {
            self.topology.overhead.local_ms
        }
    }

    /// `kept[i]` = channels kept at `layout.cuts[i]`.
    pub fn breakdown(&self, layout: &Layout, kept: &[u32]) -> Breakdown {
        let mut compute_ms = self.compute_ms(layout);
        for (i, &c) in layout.cuts.iter().enumerate() {
            if let Some((ms, per, t)) = self.sliced_at(layout, c) {
                compute_ms[t] += per * f64::from(kept[i]) - ms;
            }
        }
        let mut transfer_ms = Vec::with_capacity(layout.crossings.len());
        let mut bytes = Vec::with_capacity(layout.crossings.len());
        for (link, crossing) in self.topology.links.iter().zip(&layout.crossings) {
            let b = match crossing {
                None => None,
                Some(Crossing::Input) => Some(self.input_bytes()),
                Some(Crossing::Cut(c)) => {
                    let i = layout.cuts.binary_search(c).expect("cut is listed");
                    Some(self.bytes_per_channel(*c) * f64::from(kept[i]))
                }
            };
            bytes.push(b.unwrap_or(0.0));
            transfer_ms.push(b.map_or(0.0, |b| link.transfer_ms(b) + link.hop_ms));
        }
        let overhead_ms = self.overhead_ms(layout);
        let total_ms =
            compute_ms.iter().sum::<f64>() + transfer_ms.iter().sum::<f64>() + overhead_ms;
        Breakdown {
            compute_ms,
            transfer_ms,
            bytes,
            overhead_ms,
            total_ms,
        }
    }
}
