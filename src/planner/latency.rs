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

    /// Whether the raw input crosses a link (the first tier computes nothing).
    pub fn relays_input(&self) -> bool {
        self.crossings.contains(&Some(Crossing::Input))
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
    /// Per tier: running its segments.
    pub compute_ms: Vec<f64>,
    /// Per tier: framing what it sends and reading what it receives (0 without wire costs).
    pub codec_ms: Vec<f64>,
    /// Per link: bytes over bandwidth plus the hop's fixed cost.
    pub transfer_ms: Vec<f64>,
    pub bytes: Vec<f64>,
    pub overhead_ms: f64,
    pub total_ms: f64,
}

/// Latency as a function of the kept channels: `fixed_ms + Σ slope_ms[i] · kept[i]`, one slope
/// per cut in `Layout::cuts` order. Every term is linear in the channels kept (transfer, codec,
/// a sliced producer), which is what lets the search bound whole regions of the ratio space at
/// once.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLatency {
    pub fixed_ms: f64,
    pub slope_ms: Vec<f64>,
}

impl LinearLatency {
    fn zero(cuts: usize) -> Self {
        LinearLatency {
            fixed_ms: 0.0,
            slope_ms: vec![0.0; cuts],
        }
    }

    pub fn at(&self, kept: &[u32]) -> f64 {
        self.fixed_ms
            + self
                .slope_ms
                .iter()
                .zip(kept)
                .map(|(s, &k)| s * f64::from(k))
                .sum::<f64>()
    }

    /// Adds `x` per unit of what crosses: a fixed amount for the input, per channel for cut `i`.
    fn add(&mut self, at: Amount, x: f64) {
        match at {
            Amount::Fixed => self.fixed_ms += x,
            Amount::PerChannel(i) => self.slope_ms[i] += x,
        }
    }

    fn plus(mut self, other: &LinearLatency) -> Self {
        self.fixed_ms += other.fixed_ms;
        for (a, b) in self.slope_ms.iter_mut().zip(&other.slope_ms) {
            *a += b;
        }
        self
    }
}

/// Whether a quantity on a link is fixed (the input) or scales with cut `i`'s channels kept.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Fixed,
    PerChannel(usize),
}

/// Every term of a layout's latency, each linear in the channels kept: what [`LatencyModel::
/// linear`] sums and [`LatencyModel::breakdown`] evaluates, so the two cannot disagree.
struct Terms {
    compute: Vec<LinearLatency>,
    codec: Vec<LinearLatency>,
    transfer: Vec<LinearLatency>,
    bytes: Vec<LinearLatency>,
    overhead_ms: f64,
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

    /// Bytes on the wire per channel kept at `cut`, in this model's encoding: the measured
    /// frame's share where the profile has it, else the raw bits (quantised encodings from a
    /// float profile also ship a scale and zero point per channel).
    pub fn bytes_per_channel(&self, cut: usize) -> f64 {
        let c = &self.profile.cuts[cut];
        if let Some(b) = c.frame_bytes.get(&self.encoding) {
            return b / f64::from(c.channels);
        }
        let params = if self.encoding.is_quantised() && !self.profile.wire_encoding.is_quantised() {
            8.0
        } else {
            0.0
        };
        c.bytes / f64::from(c.channels) * self.size_ratio() + params
    }

    /// The input crosses a link in the cut tensors' encoding (its accuracy is measured then:
    /// [`CompressionPoint::input`](crate::planner::accuracy::CompressionPoint::input));
    /// measured frame bytes where the profile has them.
    pub fn input_bytes(&self) -> f64 {
        let enc = self.encoding;
        if let Some(b) = self.profile.input.frame_bytes.get(&enc) {
            return *b;
        }
        self.profile.input.bytes * f64::from(enc.bits())
            / f64::from(self.profile.wire_encoding.bits())
    }

    pub fn linear(&self, layout: &Layout) -> LinearLatency {
        let t = self.terms(layout);
        let zero = LinearLatency::zero(layout.cuts.len());
        let mut sum = t
            .compute
            .iter()
            .chain(&t.codec)
            .chain(&t.transfer)
            .fold(zero, LinearLatency::plus);
        sum.fixed_ms += t.overhead_ms;
        sum
    }

    /// `kept[i]` = channels kept at `layout.cuts[i]`.
    pub fn breakdown(&self, layout: &Layout, kept: &[u32]) -> Breakdown {
        let t = self.terms(layout);
        // + 0.0: no "-0" for an idle tier
        let at = |v: &[LinearLatency]| -> Vec<f64> { v.iter().map(|l| l.at(kept) + 0.0).collect() };
        let (compute_ms, codec_ms, transfer_ms) = (at(&t.compute), at(&t.codec), at(&t.transfer));
        let total_ms = compute_ms.iter().sum::<f64>()
            + codec_ms.iter().sum::<f64>()
            + transfer_ms.iter().sum::<f64>()
            + t.overhead_ms;
        Breakdown {
            bytes: at(&t.bytes),
            compute_ms,
            codec_ms,
            transfer_ms,
            overhead_ms: t.overhead_ms,
            total_ms,
        }
    }

    /// (encode, decode) ns per element of what crosses at `crossing` in `enc`: the tensor's
    /// own measured cost, else the profile's over every crossing, else nothing.
    fn codec(&self, crossing: Crossing, enc: WireEncoding) -> (f64, f64) {
        let own = match crossing {
            Crossing::Input => &self.profile.input.codec,
            Crossing::Cut(c) => &self.profile.cuts[c].codec,
        };
        own.get(&enc)
            .or_else(|| self.profile.wire.as_ref().and_then(|w| w.codec.get(&enc)))
            .map_or((0.0, 0.0), |c| (c.encode_ns, c.decode_ns))
    }

    /// Whether tier `t` forwards what it receives as it came: a relay whose incoming frame is
    /// already in the encoding it sends (every relay after the first tier; the first only when
    /// the input goes on as the f32 the client sent).
    fn passes_through(&self, layout: &Layout, t: usize) -> bool {
        let (s, e) = layout.ranges[t];
        let relays = s == e && layout.crossings.get(t).is_some_and(Option::is_some);
        relays && (t > 0 || self.encoding == WireEncoding::F32)
    }

    fn terms(&self, layout: &Layout) -> Terms {
        let cuts = layout.cuts.len();
        let tiers = &self.topology.tiers;
        let zeros = |n: usize| vec![LinearLatency::zero(cuts); n];
        let (mut compute, mut codec) = (zeros(tiers.len()), zeros(tiers.len()));
        let (mut transfer, mut bytes) = (zeros(tiers.len() - 1), zeros(tiers.len() - 1));
        for (t, (&(s, e), tier)) in layout.ranges.iter().zip(tiers).enumerate() {
            compute[t].fixed_ms = tier.run_ms[s..e].iter().sum::<f64>();
        }
        // A pruned cut's producer is sliced: its share of the producing tier's last segment
        // runs for the kept channels only.
        for (i, &c) in layout.cuts.iter().enumerate() {
            if let Some((ms, per, t)) = self.sliced_at(layout, c) {
                compute[t].fixed_ms -= ms;
                compute[t].slope_ms[i] += per;
            }
        }
        let hop_extra = self.profile.wire.as_ref().map_or(0.0, |w| w.hop_ms);
        for (l, (link, crossing)) in self
            .topology
            .links
            .iter()
            .zip(&layout.crossings)
            .enumerate()
        {
            let Some(crossing) = *crossing else { continue };
            let (at, frame_bytes, elements, enc) = match crossing {
                Crossing::Input => (
                    Amount::Fixed,
                    self.input_bytes(),
                    self.profile.input.elements as f64,
                    self.encoding,
                ),
                Crossing::Cut(c) => {
                    let i = layout.cuts.binary_search(&c).expect("cut is listed");
                    let cut = &self.profile.cuts[c];
                    (
                        Amount::PerChannel(i),
                        self.bytes_per_channel(c),
                        cut.elements as f64 / f64::from(cut.channels.max(1)),
                        self.encoding,
                    )
                }
            };
            transfer[l].fixed_ms += link.hop_ms + hop_extra;
            transfer[l].add(at, link.transfer_ms(frame_bytes));
            bytes[l].add(at, frame_bytes);
            let (enc_ns, dec_ns) = self.codec(crossing, enc);
            if !self.passes_through(layout, l) {
                codec[l].add(at, enc_ns * elements * tiers[l].codec_scale / 1e6);
            }
            if !self.passes_through(layout, l + 1) {
                codec[l + 1].add(at, dec_ns * elements * tiers[l + 1].codec_scale / 1e6);
            }
        }
        // Every tier that computes, or reads or frames a tensor, starts after idling: once
        // per request, at its own speed.
        let wake = self
            .profile
            .wire
            .as_ref()
            .map(|w| w.wake)
            .unwrap_or_default();
        for (t, tier) in tiers.iter().enumerate() {
            let (s, e) = layout.ranges[t];
            if s < e {
                compute[t].fixed_ms += wake.compute_ms * tier.compute_scale;
            }
            let sends = layout.crossings.get(t).copied().flatten();
            if (s < e || sends.is_some()) && !self.passes_through(layout, t) {
                codec[t].fixed_ms += wake.codec_ms * tier.codec_scale;
                if sends.is_some() && self.encoding != WireEncoding::F32 {
                    codec[t].fixed_ms += wake.compressed_ms * tier.codec_scale;
                }
            }
        }
        let overhead_ms = match &self.profile.wire {
            // The client frames the f32 input (at host speed) and the first tier reads it,
            // unless it forwards it as it came.
            Some(w) => {
                let n = self.profile.input.elements as f64;
                let (enc_ns, dec_ns) = self.codec(Crossing::Input, WireEncoding::F32);
                if !self.passes_through(layout, 0) {
                    codec[0].fixed_ms += dec_ns * n * tiers[0].codec_scale / 1e6;
                }
                w.entry_ms + enc_ns * n / 1e6
            }
            None if layout.is_remote() => self.topology.overhead.remote_ms,
            None => self.topology.overhead.local_ms,
        };
        Terms {
            compute,
            codec,
            transfer,
            bytes,
            overhead_ms,
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
}
