//! Replanning decisions, as pure functions of what was observed ([`observe`](super::observe)
//! reads it) and what the current plan assumed ([`Assumptions`]):
//! - per tier, compute scale = old scale × observed mean compute time / the time the plan
//!   predicted for that tier;
//! - per tier, likewise the codec (reading and writing frames) on its own: the codec factor is
//!   set so that the new compute factor times it gives the observed codec time, since the
//!   codec also slows with the compute factor;
//! - per hop, throughput = mean bytes × 8 / mean hop time; a hop that spans both physical
//!   links (edge idle) scales both by the same factor;
//! - a search is worth running when an assumption moved by more than 5%, and its plan is
//!   rolled out when it beats the current one, re-costed, by more than the hysteresis.

use super::crd::{Assumptions, PlanStatus};
use std::collections::BTreeMap;

/// Means over the observation window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Per tier: mean compute seconds per request.
    pub compute_s: BTreeMap<String, f64>,
    /// Per tier: mean codec seconds per request (interval key [`codec_key`]).
    pub codec_s: BTreeMap<String, f64>,
    /// Per hop `from->to`: (mean seconds, mean bytes) per request.
    pub hops: BTreeMap<String, (f64, f64)>,
    /// Mean end-to-end seconds at the entry tier.
    pub request_s: Option<f64>,
    /// The confidence interval of each mean seconds above, by tier, hop or
    /// [`evidence::REQUEST`](super::evidence::REQUEST); a mean without one is taken as exact.
    pub interval: BTreeMap<String, (f64, f64)>,
}

/// The key of a tier's codec interval in [`Observation::interval`] (a tier's compute interval
/// is keyed by the tier's name).
pub fn codec_key(tier: &str) -> String {
    format!("{tier} codec")
}

impl Observation {
    pub fn is_empty(&self) -> bool {
        self.compute_s.is_empty()
            && self.codec_s.is_empty()
            && self.hops.is_empty()
            && self.request_s.is_none()
    }
}

/// The observation the evidence supports at its confidence with the least change: each mean
/// moved to the end of its interval nearest what the current plan expects (or to the
/// expectation itself when the interval holds it). Assumptions adjusted from this are the
/// ones a replan must still win under.
pub fn cautious(current: &PlanStatus, assumed: &Assumptions, obs: &Observation) -> Observation {
    let toward = |m: f64, expected: f64, (lo, hi): (f64, f64)| {
        if expected < lo {
            lo
        } else if expected > hi {
            hi
        } else if expected.is_finite() {
            expected
        } else {
            m
        }
    };
    let mut out = obs.clone();
    for (tier, m) in out.compute_s.iter_mut() {
        let (Some(iv), Some(t)) = (
            obs.interval.get(tier),
            current.tiers.iter().find(|t| &t.tier == tier),
        ) else {
            continue;
        };
        *m = toward(*m, t.compute_ms / 1e3, *iv);
    }
    for (tier, m) in out.codec_s.iter_mut() {
        let (Some(iv), Some(predicted)) = (
            obs.interval.get(&codec_key(tier)),
            current
                .tiers
                .iter()
                .find(|t| &t.tier == tier)
                .and_then(|t| t.codec_ms),
        ) else {
            continue;
        };
        *m = toward(*m, predicted / 1e3, *iv);
    }
    for (hop, (secs, bytes)) in out.hops.iter_mut() {
        let Some(iv) = obs.interval.get(hop) else {
            continue;
        };
        let path = hop
            .split_once("->")
            .and_then(|(f, t)| Some((tier_index(f)?, tier_index(t)?)))
            .filter(|(a, b)| a < b)
            .map(|(a, b)| {
                1.0 / PHYSICAL[a..b]
                    .iter()
                    .map(|(f, t)| {
                        1.0 / assumed
                            .link_mbps
                            .get(&format!("{f}->{t}"))
                            .copied()
                            .unwrap_or(f64::NAN)
                    })
                    .sum::<f64>()
            });
        let expected = path.map_or(f64::NAN, |mbps| *bytes * 8.0 / (mbps * 1e6));
        *secs = toward(*secs, expected, *iv);
    }
    out
}

const PHYSICAL: [(&str, &str); 2] = [("end", "edge"), ("edge", "cloud")];

fn tier_index(t: &str) -> Option<usize> {
    super::crd::TIERS.iter().position(|x| *x == t)
}

/// The new assumptions after `obs`, starting from the ones the current plan was made with.
/// Numbers that are missing, zero or not finite leave the old assumption as it was.
pub fn adjust(current: &PlanStatus, assumed: &Assumptions, obs: &Observation) -> Assumptions {
    let mut out = assumed.clone();
    for t in &current.tiers {
        let (Some(observed), true) = (obs.compute_s.get(&t.tier), t.segments.is_some()) else {
            continue;
        };
        let predicted_s = t.compute_ms / 1e3;
        if !(observed.is_finite() && *observed > 0.0 && predicted_s > 1e-9) {
            continue;
        }
        let old = assumed.compute_scale.get(&t.tier).copied().unwrap_or(1.0);
        out.compute_scale
            .insert(t.tier.clone(), old * observed / predicted_s);
    }
    for t in &current.tiers {
        // A relay that passes frames through is predicted to spend nothing: no ratio to take.
        let (Some(observed), Some(predicted_ms)) = (obs.codec_s.get(&t.tier), t.codec_ms) else {
            continue;
        };
        let predicted_s = predicted_ms / 1e3;
        if !(observed.is_finite() && *observed > 0.0 && predicted_s > 1e-6) {
            continue;
        }
        let scale = |m: &BTreeMap<String, f64>| m.get(&t.tier).copied().unwrap_or(1.0);
        let (compute_old, compute_new) = (scale(&assumed.compute_scale), scale(&out.compute_scale));
        let old = scale(&assumed.codec_scale);
        out.codec_scale.insert(
            t.tier.clone(),
            old * observed / predicted_s * compute_old / compute_new,
        );
    }
    for (hop, &(secs, bytes)) in &obs.hops {
        let Some((from, to)) = hop.split_once("->") else {
            continue;
        };
        let (Some(a), Some(b)) = (tier_index(from), tier_index(to)) else {
            continue;
        };
        if !(secs.is_finite() && secs > 0.0 && bytes.is_finite() && bytes > 0.0 && a < b) {
            continue;
        }
        let observed_mbps = bytes * 8.0 / secs / 1e6;
        let names: Vec<String> = PHYSICAL[a..b]
            .iter()
            .map(|(f, t)| format!("{f}->{t}"))
            .collect();
        let old: Vec<f64> = names
            .iter()
            .map(|n| assumed.link_mbps.get(n).copied().unwrap_or(f64::NAN))
            .collect();
        if old.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
            continue;
        }
        // Path bandwidth the old assumptions give, and the factor that makes it the observed one.
        let path: f64 = 1.0 / old.iter().map(|m| 1.0 / m).sum::<f64>();
        let factor = observed_mbps / path;
        for (n, m) in names.iter().zip(old) {
            out.link_mbps.insert(n.clone(), m * factor);
        }
    }
    out
}

/// Whether any assumption moved by more than `tolerance` (relative): only then is a new
/// search worth running.
pub fn changed(old: &Assumptions, new: &Assumptions, tolerance: f64) -> bool {
    let moved = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        b.iter().any(|(k, v)| match a.get(k) {
            Some(o) if *o > 0.0 => ((v - o) / o).abs() > tolerance,
            _ => true,
        })
    };
    // An absent codec factor is 1 (the codec slows as compute does), not unknown.
    let codec_moved = new.codec_scale.iter().any(|(k, v)| {
        let o = old.codec_scale.get(k).copied().unwrap_or(1.0);
        ((v - o) / o).abs() > tolerance
    });
    moved(&old.link_mbps, &new.link_mbps)
        || moved(&old.compute_scale, &new.compute_scale)
        || codec_moved
}

/// Roll a new plan out only when it differs and is predicted faster than the current plan
/// (re-costed under the same new assumptions) by more than `hysteresis` of the current latency.
/// A current plan that can no longer run (`current_ms` None) is always replaced.
pub fn should_roll_out(
    current_id: &str,
    current_ms: Option<f64>,
    new_id: &str,
    new_ms: f64,
    hysteresis: f64,
) -> bool {
    if current_id == new_id {
        return false;
    }
    match current_ms {
        None => true,
        Some(cur) => cur > 0.0 && (cur - new_ms) / cur > hysteresis,
    }
}

/// The reason recorded for a replan from observations, e.g.
/// `observed end->edge 2.1 Mbit/s (assumed 20.0)`.
pub fn reason(old: &Assumptions, new: &Assumptions) -> String {
    let mut parts = Vec::new();
    for (k, v) in &new.link_mbps {
        let o = old.link_mbps.get(k).copied().unwrap_or(f64::NAN);
        if (v - o).abs() > 1e-9 * o.abs().max(1.0) {
            parts.push(format!("{k} {v:.2} Mbit/s (assumed {o:.2})"));
        }
    }
    for (what, old, new) in [
        ("compute", &old.compute_scale, &new.compute_scale),
        ("codec", &old.codec_scale, &new.codec_scale),
    ] {
        for (k, v) in new {
            let o = old.get(k).copied().unwrap_or(1.0);
            if (v - o).abs() > 1e-9 * o.abs().max(1.0) {
                parts.push(format!("{k} {what} x{v:.2} (assumed x{o:.2})"));
            }
        }
    }
    format!("observed {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::PlanTierStatus;
    use crate::planner::accuracy::WireEncoding;

    fn plan(tiers: &[(&str, Option<[u32; 2]>, f64)]) -> PlanStatus {
        PlanStatus {
            id: "p".into(),
            summary: String::new(),
            deployment: String::new(),
            encoding: WireEncoding::Int8,
            cuts: vec![],
            tiers: tiers
                .iter()
                .map(|(t, s, ms)| PlanTierStatus {
                    tier: t.to_string(),
                    segments: s.map(|s| s.to_vec()),
                    compute_ms: *ms,
                    codec_ms: None,
                })
                .collect(),
            latency_ms: 0.0,
            accuracy: None,
            accuracy_interval: None,
            measured_on: None,
        }
    }

    fn assumed() -> Assumptions {
        Assumptions {
            link_mbps: BTreeMap::from([("end->edge".into(), 20.0), ("edge->cloud".into(), 10.0)]),
            compute_scale: BTreeMap::from([("end".into(), 2.0)]),
            codec_scale: BTreeMap::new(),
        }
    }

    #[test]
    fn compute_scale_follows_observed_over_predicted() {
        let p = plan(&[
            ("end", Some([0, 1]), 10.0),
            ("edge", Some([2, 3]), 4.0),
            ("cloud", None, 0.0),
        ]);
        let obs = Observation {
            compute_s: BTreeMap::from([
                ("end".into(), 0.015),  // 15 ms against 10 predicted
                ("edge".into(), 0.004), // as predicted
                ("cloud".into(), 9.0),  // runs nothing in the plan: ignored
            ]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.compute_scale["end"] - 3.0).abs() < 1e-9, "{a:?}");
        assert!((a.compute_scale["edge"] - 1.0).abs() < 1e-9);
        assert!(!a.compute_scale.contains_key("cloud"));
        assert_eq!(a.link_mbps, assumed().link_mbps);
    }

    #[test]
    fn the_codec_is_corrected_apart_from_compute() {
        let mut p = plan(&[
            ("end", Some([0, 1]), 10.0),
            ("edge", None, 0.0),
            ("cloud", Some([2, 3]), 4.0),
        ]);
        p.tiers[0].codec_ms = Some(2.0); // end: 2 ms predicted codec
        p.tiers[1].codec_ms = None; // edge relays frames through: nothing predicted
        p.tiers[2].codec_ms = Some(0.5);
        let obs = Observation {
            compute_s: BTreeMap::from([
                ("end".into(), 0.015),   // compute 1.5x its prediction
                ("cloud".into(), 0.004), // as predicted
            ]),
            codec_s: BTreeMap::from([
                ("end".into(), 0.006),    // codec 3x its prediction
                ("edge".into(), 0.0001),  // a relay's header read: no ratio to take
                ("cloud".into(), 0.0005), // as predicted
            ]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        // Compute alone: 2 x 1.5. The codec slows with compute (x1.5), so its own factor is
        // what is left of its 3x: 2.
        assert!((a.compute_scale["end"] - 3.0).abs() < 1e-9, "{a:?}");
        assert!((a.codec_scale["end"] - 2.0).abs() < 1e-9, "{a:?}");
        // The planner's codec scale for the end is then compute x codec = 6 over the old 2:
        // the observed 3x.
        assert!((a.compute_scale["end"] * a.codec_scale["end"] / 2.0 - 3.0).abs() < 1e-9);
        assert!((a.codec_scale["cloud"] - 1.0).abs() < 1e-9, "{a:?}");
        assert!(!a.codec_scale.contains_key("edge"), "{a:?}");
        assert!(changed(&assumed(), &a, 0.05));
        assert!(reason(&assumed(), &a).contains("end codec x2.00 (assumed x1.00)"));
        // A codec factor at 1 where none was assumed is no change.
        let same = Assumptions {
            codec_scale: BTreeMap::from([("cloud".into(), 1.0)]),
            ..assumed()
        };
        assert!(!changed(&assumed(), &same, 0.05));
        // Caution: an interval that holds the prediction keeps the codec as predicted.
        let mut careful = obs.clone();
        careful.interval.insert(codec_key("end"), (0.001, 0.01));
        careful.codec_s.remove("edge");
        let c = cautious(&p, &assumed(), &careful);
        assert_eq!(c.codec_s["end"], 0.002);
    }

    #[test]
    fn hop_throughput_sets_the_link_and_a_two_link_hop_scales_both() {
        let p = plan(&[
            ("end", Some([0, 1]), 1.0),
            ("edge", None, 0.0),
            ("cloud", Some([2, 3]), 1.0),
        ]);
        // 250 000 bytes in 0.4 s = 5 Mbit/s over a path assumed 1/(1/20+1/10) = 6.67 Mbit/s.
        let obs = Observation {
            hops: BTreeMap::from([("end->cloud".into(), (0.4, 250_000.0))]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.link_mbps["end->edge"] - 15.0).abs() < 1e-9, "{a:?}");
        assert!((a.link_mbps["edge->cloud"] - 7.5).abs() < 1e-9);
        // One link only.
        let obs = Observation {
            hops: BTreeMap::from([("end->edge".into(), (0.1, 25_000.0))]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.link_mbps["end->edge"] - 2.0).abs() < 1e-9);
        assert_eq!(a.link_mbps["edge->cloud"], 10.0);
        assert!(changed(&assumed(), &a, 0.05));
        assert!(!changed(&assumed(), &assumed(), 0.05));
        assert!(reason(&assumed(), &a).contains("end->edge 2.00 Mbit/s (assumed 20.00)"));
    }

    #[test]
    fn bad_numbers_change_nothing() {
        let p = plan(&[("end", Some([0, 1]), 10.0)]);
        let obs = Observation {
            compute_s: BTreeMap::from([("end".into(), f64::NAN)]),
            hops: BTreeMap::from([
                ("end->edge".into(), (0.0, 10.0)),
                ("cloud->end".into(), (1.0, 10.0)),
                ("nonsense".into(), (1.0, 10.0)),
            ]),
            ..Observation::default()
        };
        assert_eq!(adjust(&p, &assumed(), &obs), assumed());
    }

    #[test]
    fn the_cautious_observation_is_the_interval_end_nearest_the_expectation() {
        let p = plan(&[("end", Some([0, 1]), 10.0), ("cloud", Some([2, 3]), 1.0)]);
        // 8 KiB over a path assumed 1/(1/20+1/10) = 6.67 Mbit/s: expected 9.83 ms.
        let obs = Observation {
            compute_s: BTreeMap::from([("end".into(), 0.015), ("cloud".into(), 0.0011)]),
            hops: BTreeMap::from([("end->cloud".into(), (0.030, 8192.0))]),
            interval: BTreeMap::from([
                ("end".into(), (0.013, 0.017)),     // excludes 10 ms: moves to 13
                ("cloud".into(), (0.0009, 0.0013)), // holds 1 ms: no change at all
                ("end->cloud".into(), (0.020, 0.040)),
            ]),
            ..Observation::default()
        };
        let c = cautious(&p, &assumed(), &obs);
        assert_eq!(c.compute_s["end"], 0.013);
        assert_eq!(c.compute_s["cloud"], 0.001);
        assert_eq!(c.hops["end->cloud"], (0.020, 8192.0));
        let a = adjust(&p, &assumed(), &c);
        assert!((a.compute_scale["end"] - 2.0 * 1.3).abs() < 1e-9);
        assert!((a.compute_scale["cloud"] - 1.0).abs() < 1e-9);
        // Without intervals the point estimate stands.
        let exact = Observation {
            interval: BTreeMap::new(),
            ..obs.clone()
        };
        assert_eq!(cautious(&p, &assumed(), &exact), exact);
    }

    #[test]
    fn hysteresis_gates_the_roll_out() {
        assert!(
            !should_roll_out("a", Some(100.0), "a", 10.0, 0.1),
            "same plan"
        );
        assert!(
            !should_roll_out("a", Some(100.0), "b", 95.0, 0.1),
            "5% < 10%"
        );
        assert!(
            should_roll_out("a", Some(100.0), "b", 85.0, 0.1),
            "15% > 10%"
        );
        assert!(
            should_roll_out("a", None, "b", 500.0, 0.1),
            "current cannot run"
        );
    }
}
