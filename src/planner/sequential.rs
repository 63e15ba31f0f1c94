//! Sequential accuracy measurement: a candidate's agreement is measured in growing batches of
//! the evaluation set, and measuring stops as soon as the data decide it against the floor.
//!
//! **The rule.** A point *meets* a floor A0 when the lower end of the Wilson interval of its
//! agreement, at the stated confidence (0.95), over the **whole** evaluation set is at least
//! θ = A0 − tolerance (default 0.01). That is the only rule a returned plan is held to, and a
//! returned plan is always measured on the whole set.
//!
//! **Stopping early.** Batches end at `first`, `2·first`, `4·first`, … samples and at the whole
//! set (the *looks*). After each look a point is decided early when
//! - it is certain: even if every remaining sample agreed, the whole-set lower bound would stay
//!   below θ (it fails), or even if every one disagreed, it would reach θ (it meets); or
//! - the Wilson interval over the samples so far, at the stricter level 1 − (1 − c)/L for L
//!   looks (Bonferroni over the looks), lies wholly above θ (it meets) or below θ (it fails).
//!
//! Points near θ run to the whole set. An early "meets" only lets the search consider a point;
//! it is not a claim: the plan the search returns is measured in full and judged by the rule
//! above, and the search runs again if it fails.
//!
//! **The search value** of a tally is the Wilson lower bound at the stated confidence over the
//! samples it has. It does not depend on the floor, and on every decided tally it is ≥ θ
//! exactly when the decision is "meets", so the search can compare it with θ as it compares
//! exact accuracies with A0.

use crate::planner::interval::{wilson, z_for};
use serde::{Deserialize, Serialize};

/// What a sampled measurement has seen: `hits` agreeing samples among the first `samples` of
/// the evaluation set (a sum of per-sample scores in [0, 1] for non-binary metrics).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Tally {
    pub hits: f64,
    pub samples: usize,
}

impl Tally {
    pub fn estimate(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.hits / self.samples as f64
        }
    }
}

/// The stopping rule's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Two-sided confidence of every reported interval and of the final decision.
    pub confidence: f64,
    /// How far below A0 the lower bound may sit and still meet it.
    pub tolerance: f64,
    /// Samples in the first batch; every later batch doubles the total.
    pub first: usize,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            confidence: 0.95,
            tolerance: 0.01,
            first: 32,
        }
    }
}

/// What the samples so far say of a point against a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Meets,
    Fails,
    /// Not decided yet: measure the next batch.
    Open,
}

impl Rule {
    pub fn z(&self) -> f64 {
        z_for(self.confidence)
    }

    /// The threshold a lower bound is compared with for the floor `a0`.
    pub fn threshold(&self, a0: f64) -> f64 {
        a0 - self.tolerance
    }

    /// The cumulative sample counts at which a measurement of `total` samples is judged.
    pub fn looks(&self, total: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = self.first.max(1);
        while n < total {
            out.push(n);
            n = n.saturating_mul(2);
        }
        out.push(total);
        out
    }

    /// The first look after `samples` (the whole set at most).
    pub fn next_look(&self, samples: usize, total: usize) -> usize {
        self.looks(total)
            .into_iter()
            .find(|&n| n > samples)
            .unwrap_or(total)
    }

    /// The quantile of the early looks' intervals (Bonferroni over the looks).
    fn z_look(&self, total: usize) -> f64 {
        let looks = self.looks(total).len() as f64;
        z_for(1.0 - (1.0 - self.confidence) / looks)
    }

    /// The whole-set lower bound of `hits` in `n`.
    pub fn lower(&self, hits: f64, n: usize) -> f64 {
        wilson(hits, n as f64, self.z()).0
    }

    /// The interval reported for a tally, at the stated confidence.
    pub fn interval(&self, t: Tally) -> (f64, f64) {
        wilson(t.hits, t.samples as f64, self.z())
    }

    /// The search value of a tally (see the module doc).
    pub fn value(&self, t: Tally) -> f64 {
        self.lower(t.hits, t.samples)
    }

    /// The fewest samples that can meet `a0` at all (every one agreeing): the least evaluation
    /// set a floor needs.
    pub fn samples_needed(&self, a0: f64) -> usize {
        let theta = self.threshold(a0);
        if theta <= 0.0 {
            return 1;
        }
        if theta >= 1.0 {
            return usize::MAX;
        }
        // n / (n + z²) ≥ θ  ⇔  n ≥ z² θ / (1 − θ); step up past rounding.
        let z2 = self.z().powi(2);
        let mut n = (z2 * theta / (1.0 - theta)).floor().max(1.0) as usize;
        while self.lower(n as f64, n) < theta {
            n += 1;
        }
        n
    }

    /// The evaluation set a floor gets when none is given: twice the least that can meet it
    /// (so a few disagreements still can), in whole batches, and at least two batches.
    pub fn default_samples(&self, a0: f64) -> usize {
        let first = self.first.max(1);
        let n = self.samples_needed(a0).saturating_mul(2);
        n.div_ceil(first).saturating_mul(first).max(2 * first)
    }

    /// Decides `t` (of a set of `total` samples) against the threshold `theta`.
    pub fn decide(&self, t: Tally, total: usize, theta: f64) -> Decision {
        let full = |hits: f64| self.lower(hits, total) >= theta;
        if t.samples >= total {
            return if full(t.hits) {
                Decision::Meets
            } else {
                Decision::Fails
            };
        }
        let rest = (total - t.samples) as f64;
        if !full(t.hits + rest) {
            return Decision::Fails;
        }
        if full(t.hits) {
            return Decision::Meets;
        }
        if t.samples == 0 {
            return Decision::Open;
        }
        let (lo, hi) = wilson(t.hits, t.samples as f64, self.z_look(total));
        if lo >= theta {
            Decision::Meets
        } else if hi < theta {
            Decision::Fails
        } else {
            Decision::Open
        }
    }
}

/// The default evaluation set for an optional floor (see [`Rule::default_samples`]); 100
/// without one.
pub fn default_eval(floor: Option<f64>) -> usize {
    floor.map_or(100, |a0| Rule::default().default_samples(a0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 400;

    /// Measures a point whose samples agree with probability `p` (deterministically spread:
    /// sample i agrees unless it falls on the disagreeing share), returning the samples used
    /// and the decision against `theta`.
    fn run(rule: &Rule, p: f64, theta: f64) -> (usize, Decision) {
        let agrees = |i: usize| ((i as f64 + 0.5) * (1.0 - p)).fract() >= (1.0 - p);
        let mut t = Tally::default();
        loop {
            let d = rule.decide(t, N, theta);
            if d != Decision::Open {
                return (t.samples, d);
            }
            let next = rule.next_look(t.samples, N);
            t.hits += (t.samples..next).filter(|&i| agrees(i)).count() as f64;
            t.samples = next;
        }
    }

    #[test]
    fn looks_double_up_to_the_whole_set() {
        let r = Rule::default();
        assert_eq!(r.looks(400), vec![32, 64, 128, 256, 400]);
        assert_eq!(r.looks(20), vec![20]);
        assert_eq!(r.next_look(64, 400), 128);
        assert_eq!(r.next_look(256, 400), 400);
    }

    #[test]
    fn a_point_far_above_the_floor_stops_early_and_meets() {
        let r = Rule::default();
        let (n, d) = run(&r, 1.0, 0.89);
        assert_eq!(d, Decision::Meets);
        assert!(n < N / 4, "stopped at {n} of {N}");
    }

    #[test]
    fn a_point_far_below_the_floor_stops_at_the_first_look() {
        let r = Rule::default();
        let (n, d) = run(&r, 0.6, 0.98);
        assert_eq!(d, Decision::Fails);
        assert_eq!(n, 32);
    }

    #[test]
    fn a_point_near_the_floor_uses_the_whole_set() {
        let r = Rule::default();
        // True agreement 0.95 against θ = 0.94: undecidable before the end.
        let (n, _) = run(&r, 0.95, 0.94);
        assert_eq!(n, N);
    }

    #[test]
    fn a_few_misses_fail_a_high_floor_for_certain() {
        let r = Rule::default();
        // θ = 0.98 over 400 samples tolerates only a handful of misses; six in the first 32
        // make it impossible whatever the rest say.
        let t = Tally {
            hits: 26.0,
            samples: 32,
        };
        assert!(r.lower(26.0 + 368.0, N) < 0.98);
        assert_eq!(r.decide(t, N, 0.98), Decision::Fails);
    }

    #[test]
    fn the_decision_on_the_whole_set_is_the_lower_bound_against_theta() {
        let r = Rule::default();
        let all = Tally {
            hits: 400.0,
            samples: N,
        };
        assert!(r.value(all) >= 0.98);
        assert_eq!(r.decide(all, N, 0.98), Decision::Meets);
        let some = Tally {
            hits: 392.0,
            samples: N,
        };
        // 0.98 agreement measured does not meet θ = 0.98: its lower bound is below.
        assert!(r.value(some) < 0.98);
        assert_eq!(r.decide(some, N, 0.98), Decision::Fails);
    }

    #[test]
    fn every_decided_tally_compares_with_theta_as_its_decision_says() {
        let r = Rule::default();
        for theta in [0.5, 0.8, 0.9, 0.95, 0.98] {
            for samples in [32, 64, 128, 256, N] {
                for misses in 0..=samples.min(40) {
                    let t = Tally {
                        hits: (samples - misses) as f64,
                        samples,
                    };
                    match r.decide(t, N, theta) {
                        Decision::Meets => assert!(r.value(t) >= theta, "{t:?} {theta}"),
                        Decision::Fails => assert!(r.value(t) < theta, "{t:?} {theta}"),
                        Decision::Open => assert!(samples < N),
                    }
                }
            }
        }
    }

    #[test]
    fn samples_needed_is_the_least_set_that_can_meet_the_floor() {
        let r = Rule::default();
        let n = r.samples_needed(0.99);
        // n / (n + 1.96²) ≥ 0.98 first at 189.
        assert_eq!(n, 189);
        assert!(r.lower(n as f64, n) >= 0.98);
        assert!(r.lower((n - 1) as f64, n - 1) < 0.98);
        // θ = 0.89: 32 / (32 + 1.96²) = 0.8928.
        assert_eq!(r.samples_needed(0.9), 32);
        assert_eq!(r.default_samples(0.99), 384);
        assert_eq!(r.default_samples(0.9), 64);
        // Two disagreements in the default set for 0.99 still meet it.
        assert!(r.lower(382.0, 384) >= 0.98);
    }
}
