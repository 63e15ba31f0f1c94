//! Confidence intervals: for proportions (the planner's sequential accuracy measurements and
//! the operator's live agreement) and for a median (the demo's measured latency).

/// The Wilson score interval of `k` successes in `n` at normal quantile `z`.
pub fn wilson(k: f64, n: f64, z: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The two-sided normal quantile for `confidence` (e.g. 0.95 → 1.96), by Acklam's rational
/// approximation (relative error below 1.2e-9).
pub fn z_for(confidence: f64) -> f64 {
    let p = 0.5 + confidence.clamp(0.0, 0.999_999) / 2.0;
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    if p > 0.975_25 {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The 1-based ranks `(k, n + 1 − k)` of the order statistics that bound the median of `n`
/// samples with at least `confidence`, whatever their distribution: each sample falls below
/// the median with probability ½, so the median lies below the `k`-th smallest unless at most
/// `k − 1` do, which Bin(n, ½) gives. `k` is the largest with P(Bin(n, ½) ≤ k − 1) ≤
/// (1 − confidence) / 2. `None` when `n` samples cannot reach `confidence` (fewer than 6 at
/// 95%) or `confidence` is not in (0, 1).
pub fn median_ranks(n: usize, confidence: f64) -> Option<(usize, usize)> {
    if !(confidence > 0.0 && confidence < 1.0) || n == 0 {
        return None;
    }
    let tail = (1.0 - confidence) / 2.0;
    // In logs: ½ⁿ underflows past n ≈ 1074.
    let mut ln_pmf = n as f64 * 0.5f64.ln();
    let (mut below, mut k) = (0.0, 0usize);
    for j in 0..=n / 2 {
        if j > 0 {
            ln_pmf += ((n - j + 1) as f64 / j as f64).ln();
        }
        below += ln_pmf.exp();
        if below > tail {
            break;
        }
        k = j + 1;
    }
    (k >= 1).then_some((k, n + 1 - k))
}

/// The interval [`median_ranks`] gives, read from ascending `sorted` samples.
pub fn median_interval(sorted: &[f64], confidence: f64) -> Option<(f64, f64)> {
    let (lo, hi) = median_ranks(sorted.len(), confidence)?;
    Some((sorted[lo - 1], sorted[hi - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(Bin(n, ½) ≤ k − 1), exactly enough for small n.
    fn below(n: usize, k: usize) -> f64 {
        let choose = |j: usize| (0..j).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64);
        (0..k).map(choose).sum::<f64>() / 2f64.powi(n as i32)
    }

    #[test]
    fn sixteen_samples_bound_their_median_by_the_4th_and_13th() {
        // P(Bin(16, ½) ≤ 3) = 697/65536 ≈ 0.0106: the pair covers 97.9%; the 5th and 12th
        // would cover only 92.3%.
        assert_eq!(median_ranks(16, 0.95), Some((4, 13)));
        // The demo's CNNPC plan: P(Bin(64, ½) ≤ 23) ≈ 0.0164, ≤ 24 ≈ 0.0300.
        assert_eq!(median_ranks(64, 0.95), Some((24, 41)));
        let sorted: Vec<f64> = (1..=16).map(f64::from).collect();
        assert_eq!(median_interval(&sorted, 0.95), Some((4.0, 13.0)));
    }

    #[test]
    fn every_interval_covers_at_least_its_confidence_and_no_narrower_one_does() {
        for n in 6..=200 {
            for confidence in [0.8, 0.9, 0.95, 0.99] {
                let Some((k, hi)) = median_ranks(n, confidence) else {
                    assert!(
                        1.0 - 2.0 * below(n, 1) < confidence,
                        "n {n} at {confidence} has an interval"
                    );
                    continue;
                };
                assert_eq!(hi, n + 1 - k);
                assert!(1.0 - 2.0 * below(n, k) >= confidence - 1e-12, "n {n} k {k}");
                if k < n / 2 {
                    assert!(1.0 - 2.0 * below(n, k + 1) < confidence, "n {n} k {k}");
                }
            }
        }
    }

    #[test]
    fn too_few_samples_or_a_meaningless_confidence_give_none() {
        // Five samples all on one side of the median: 2/32 = 6.25% > 5%.
        assert_eq!(median_ranks(5, 0.95), None);
        assert_eq!(median_ranks(6, 0.95), Some((1, 6)));
        assert_eq!(median_ranks(0, 0.95), None);
        assert_eq!(median_ranks(16, 1.0), None);
        assert_eq!(median_ranks(16, f64::NAN), None);
        assert_eq!(median_interval(&[1.0, 2.0], 0.95), None);
    }

    #[test]
    fn large_samples_do_not_underflow() {
        // ½^2000 is 0 in f64: in logs the ranks still come out near n/2 ∓ 1.96·√n/2.
        let (k, hi) = median_ranks(2000, 0.95).expect("an interval");
        assert!((955..=957).contains(&k), "k {k}");
        assert_eq!(hi, 2001 - k);
    }
}
