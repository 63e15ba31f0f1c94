//! A synthetic accuracy surface: the oracle the benchmarks and property tests search against when
//! no measured table exists. Shaped after what DESIGN.md measured on a real MobileNet: pruning an
//! early cut costs much more than pruning a deep one (half the channels: ~80% agreement early,
//! ~96% mid, ~99% deep; a quarter: ~50–75%), losses at two cuts compound, quantisation is nearly
//! free. Optional deterministic noise makes it non-monotone, as real measurements on a finite
//! calibration set are.

use crate::planner::accuracy::{AccuracyOracle, CompressionPoint, OracleError, WireEncoding};

#[derive(Debug, Clone)]
pub struct SyntheticSurface {
    /// Accuracy of the unmodified model.
    pub base: f64,
    /// Accuracy never falls below this (chance level).
    pub floor: f64,
    /// Depth in [0, 1] of each cut point (0 = first cut, 1 = last).
    pub depth: Vec<f64>,
    /// Half-width of the uniform, deterministic noise added to every compressed point.
    pub noise: f64,
    pub seed: u64,
}

impl SyntheticSurface {
    pub fn new(cuts: usize, base: f64, noise: f64, seed: u64) -> Self {
        let last = cuts.saturating_sub(1).max(1) as f64;
        SyntheticSurface {
            base,
            floor: 0.1,
            depth: (0..cuts).map(|i| i as f64 / last).collect(),
            noise,
            seed,
        }
    }

    /// Fraction of accuracy kept when a cut at `depth` keeps a fraction `kept` of its channels:
    /// `1 - D (1 - kept)^γ`, flat near full width and falling off sharply below a knee that moves
    /// to fewer channels the deeper the cut.
    pub fn retention(depth: f64, kept: f64) -> f64 {
        let gamma = 2.3 + 6.7 * depth;
        let drop = 0.96 + 2.44 * depth;
        (1.0 - drop * (1.0 - kept).powf(gamma)).max(0.0)
    }

    fn encoding_factor(e: WireEncoding) -> f64 {
        match e {
            WireEncoding::F32 | WireEncoding::F16 => 1.0,
            WireEncoding::Int8 => 0.9995,
            WireEncoding::Int4 => 0.995,
        }
    }

    fn jitter(&self, p: &CompressionPoint) -> f64 {
        if self.noise == 0.0 || p.cuts.is_empty() {
            return 0.0;
        }
        // FNV-1a over the point: the same point always gets the same noise.
        let mut h: u64 = 0xcbf29ce484222325 ^ self.seed;
        for c in &p.cuts {
            for v in [c.cut as u64, u64::from(c.kept), u64::from(c.channels)] {
                h = (h ^ v).wrapping_mul(0x100000001b3);
            }
        }
        h = (h ^ u64::from(p.encoding.bits())).wrapping_mul(0x100000001b3);
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        (unit * 2.0 - 1.0) * self.noise
    }

    pub fn accuracy(&self, p: &CompressionPoint) -> f64 {
        let kept: f64 = p
            .cuts
            .iter()
            .map(|c| {
                let depth = self.depth.get(c.cut).copied().unwrap_or(1.0);
                Self::retention(depth, f64::from(c.kept) / f64::from(c.channels))
            })
            .product();
        let clean = self.base * kept * Self::encoding_factor(p.encoding);
        (clean + self.jitter(p))
            .clamp(self.floor, 1.0)
            .max(self.floor)
    }
}

impl AccuracyOracle for SyntheticSurface {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        Ok(self.accuracy(point))
    }
}

/// A surface seen through a finite evaluation set of `samples` inputs, as the live oracle sees
/// a real model: sample `i` agrees when a fixed uniform draw `u_i` falls below the point's
/// accuracy. The draws depend on the sample only, not the point, so a more accurate point
/// agrees on a superset of samples (hard inputs are hard for every compression), and the same
/// point always scores the same.
#[derive(Debug, Clone)]
pub struct SampledSurface {
    pub surface: SyntheticSurface,
    pub samples: usize,
    pub seed: u64,
}

impl SampledSurface {
    fn draw(&self, i: usize) -> f64 {
        // SplitMix64 of (seed, i).
        let mut z = self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Agreeing samples of `p` among `from..to`.
    pub fn hits(&self, p: &CompressionPoint, from: usize, to: usize) -> usize {
        let a = self.surface.accuracy(p);
        (from..to).filter(|&i| self.draw(i) < a).count()
    }
}

impl AccuracyOracle for SampledSurface {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        if point.is_unmodified() {
            return Ok(self.surface.accuracy(point));
        }
        Ok(self.hits(point, 0, self.samples) as f64 / self.samples.max(1) as f64)
    }

    fn samples(&self) -> Option<usize> {
        Some(self.samples)
    }

    fn exact(&self, point: &CompressionPoint) -> bool {
        point.is_unmodified()
    }

    fn measure_samples(
        &mut self,
        point: &CompressionPoint,
        from: usize,
        to: usize,
    ) -> Result<f64, OracleError> {
        Ok(self.hits(point, from, to) as f64)
    }
}
