//! `cnnpc bench pace`: how steady this machine's speed stays over the time a one-shot prediction
//! must hold. It runs the whole model once after every idle pause (as the profile's rounds and the
//! demo's pace check do) for minutes, then asks of that trace: had a profile been taken over any
//! `profile_seconds` window, and the plan served `gap_seconds` later over `serve_seconds`, how
//! often would the two medians of the compute term agree within the band? That is a ceiling on
//! "measured/predicted within 10% in every run" that no latency model lifts: the machine itself
//! moved between the two.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// One timed run: seconds since the trace began, and its ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t: f64,
    pub ms: f64,
}

/// When a demo profiles and when it serves, relative to each other.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Placement {
    /// The profile's median is over every run in this window.
    pub profile_seconds: f64,
    /// Planning between the profile's end and the first served request.
    pub gap_seconds: f64,
    /// Serving spans this long...
    pub serve_seconds: f64,
    /// ...with this many requests, evenly spaced; the median is theirs.
    pub requests: usize,
}

/// How often a placement's two medians agreed, over every start second the trace holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub placement: Placement,
    pub placements: usize,
    /// Placements whose serving median over profile median lay within `1 ± band`.
    pub within: usize,
    pub share_within: f64,
    /// The lowest and highest serving/profile ratios seen.
    pub lowest: f64,
    pub highest: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PaceBench {
    pub model: String,
    pub idle_ms: u64,
    pub seconds: f64,
    pub runs: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// The median of each consecutive 10 s.
    pub medians_10s: Vec<f64>,
    pub band: f64,
    pub agreements: Vec<Agreement>,
    pub trace: Vec<Sample>,
}

/// The placements reported: the demo's (a 4 s profile, about 25 s of planning, 16 requests over
/// about 24 s), a longer profile, and no planning at all.
pub const PLACEMENTS: [Placement; 4] = [
    Placement {
        profile_seconds: 4.0,
        gap_seconds: 25.0,
        serve_seconds: 24.0,
        requests: 16,
    },
    Placement {
        profile_seconds: 12.0,
        gap_seconds: 25.0,
        serve_seconds: 24.0,
        requests: 16,
    },
    Placement {
        profile_seconds: 4.0,
        gap_seconds: 25.0,
        serve_seconds: 24.0,
        requests: 64,
    },
    Placement {
        profile_seconds: 4.0,
        gap_seconds: 0.0,
        serve_seconds: 24.0,
        requests: 16,
    },
];

/// The band the demo's target uses: within 10%.
pub const BAND: f64 = 0.10;

/// The profile's own median (the mean of the middle two of an even count); `None` when empty.
fn median_of(mut v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| crate::onnx::profile::median(&mut v))
}

/// The first sample at or after `t`.
fn sample_at(trace: &[Sample], t: f64) -> Option<f64> {
    let i = trace.partition_point(|s| s.t < t);
    trace.get(i).map(|s| s.ms)
}

/// Every start second `t` for which the whole placement fits in `trace` (ordered by time): the
/// profile's median over `[t, t + profile)`, serving's over its evenly spaced requests from
/// `t + profile + gap`. `None` when no placement fits.
pub fn agreement(trace: &[Sample], p: Placement, band: f64) -> Option<Agreement> {
    let end = trace.last()?.t;
    let span = p.profile_seconds + p.gap_seconds + p.serve_seconds;
    let (mut placements, mut within) = (0, 0);
    let (mut lowest, mut highest) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut t = trace.first()?.t;
    while t + span <= end {
        let profile: Vec<f64> = trace
            .iter()
            .filter(|s| s.t >= t && s.t < t + p.profile_seconds)
            .map(|s| s.ms)
            .collect();
        let start = t + p.profile_seconds + p.gap_seconds;
        let served: Vec<f64> = (0..p.requests)
            .filter_map(|k| {
                sample_at(
                    trace,
                    start + k as f64 * p.serve_seconds / p.requests as f64,
                )
            })
            .collect();
        if let (Some(predicted), Some(measured)) = (median_of(profile), median_of(served)) {
            let ratio = measured / predicted;
            placements += 1;
            within += usize::from((ratio - 1.0).abs() <= band + 1e-12);
            lowest = lowest.min(ratio);
            highest = highest.max(ratio);
        }
        t += 1.0;
    }
    (placements > 0).then(|| Agreement {
        placement: p,
        placements,
        within,
        share_within: within as f64 / placements as f64,
        lowest,
        highest,
    })
}

/// The median of each consecutive `seconds` of `trace`.
pub fn window_medians(trace: &[Sample], seconds: f64) -> Vec<f64> {
    let Some(first) = trace.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut from = first.t;
    loop {
        let w: Vec<f64> = trace
            .iter()
            .filter(|s| s.t >= from && s.t < from + seconds)
            .map(|s| s.ms)
            .collect();
        match median_of(w) {
            Some(m) => out.push(m),
            None => return out,
        }
        from += seconds;
    }
}

/// Times `run` once after every `idle` pause for `seconds`, reporting the seconds done.
pub fn record(
    seconds: f64,
    idle: Duration,
    run: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(f64),
) -> Result<Vec<Sample>> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number, got {seconds}");
    }
    // A first run warms tract's scratch space: not a state of the machine.
    run()?;
    let started = Instant::now();
    let mut trace = Vec::new();
    let mut shown = 0.0;
    while started.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(idle);
        let t = started.elapsed().as_secs_f64();
        let s = Instant::now();
        run()?;
        trace.push(Sample {
            t,
            ms: s.elapsed().as_secs_f64() * 1e3,
        });
        if t - shown >= 10.0 {
            shown = t;
            progress(t);
        }
    }
    Ok(trace)
}

/// What a saved report holds to be read again ([`report`] on it anew).
#[derive(Debug, Deserialize)]
pub struct Saved {
    pub model: String,
    pub idle_ms: u64,
    pub trace: Vec<Sample>,
}

/// The report on a recorded trace.
pub fn report(model: &str, idle: Duration, trace: Vec<Sample>) -> Result<PaceBench> {
    let mut ms: Vec<f64> = trace.iter().map(|s| s.ms).collect();
    if ms.is_empty() {
        bail!("the trace holds no runs");
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| crate::demo::percentile(&ms, p);
    Ok(PaceBench {
        model: model.to_string(),
        idle_ms: idle.as_millis() as u64,
        seconds: trace.last().map_or(0.0, |s| s.t),
        runs: trace.len(),
        median_ms: crate::onnx::profile::median(&mut ms.clone()),
        p10_ms: q(0.1),
        p90_ms: q(0.9),
        medians_10s: window_medians(&trace, 10.0),
        band: BAND,
        agreements: PLACEMENTS
            .iter()
            .filter_map(|&p| agreement(&trace, p, BAND))
            .collect(),
        trace,
    })
}

pub fn markdown(r: &PaceBench) -> String {
    let tens: Vec<String> = r.medians_10s.iter().map(|m| format!("{m:.1}")).collect();
    let mut s = format!(
        "This machine's pace: {} run {} times over {:.0} s, each after a {} ms pause: median \
         {:.2} ms, p10 {:.2}, p90 {:.2}.\n\nMedian of each 10 s: {}\n\n\
         Had a profile been taken at any second of the trace, and the plan served after it, the \
         share of placements whose serving median lay within {:.0}% of the profile's:\n\n\
         | profile s | planning gap s | serving s | requests | placements | within | lowest | highest |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.model,
        r.runs,
        r.seconds,
        r.idle_ms,
        r.median_ms,
        r.p10_ms,
        r.p90_ms,
        tens.join(" "),
        r.band * 100.0
    );
    for a in &r.agreements {
        let p = a.placement;
        s += &format!(
            "| {:.0} | {:.0} | {:.0} | {} | {} | {:.0}% | {:.2} | {:.2} |\n",
            p.profile_seconds,
            p.gap_seconds,
            p.serve_seconds,
            p.requests,
            a.placements,
            a.share_within * 100.0,
            a.lowest,
            a.highest
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One run every 0.1 s for `seconds`, its ms from `ms(t)`.
    fn trace(seconds: f64, ms: impl Fn(f64) -> f64) -> Vec<Sample> {
        (0..(seconds * 10.0) as usize)
            .map(|i| {
                let t = i as f64 / 10.0;
                Sample { t, ms: ms(t) }
            })
            .collect()
    }

    const DEMO: Placement = PLACEMENTS[0];

    #[test]
    fn a_steady_machine_agrees_in_every_placement() {
        let a = agreement(&trace(120.0, |_| 10.0), DEMO, BAND).unwrap();
        // Start seconds 0..=66 fit a 53 s placement in a trace ending at 119.9 s.
        assert_eq!(a.placements, 67);
        assert_eq!(a.within, a.placements);
        assert_eq!((a.lowest, a.highest), (1.0, 1.0));
    }

    #[test]
    fn a_lasting_change_of_speed_fails_exactly_the_placements_that_straddle_it() {
        // 10 ms until 100 s, 15 ms after.
        let a = agreement(
            &trace(200.0, |t| if t < 100.0 { 10.0 } else { 15.0 }),
            DEMO,
            BAND,
        )
        .unwrap();
        // The profile's 40 runs in [t, t+4): 20 slow at t = 98 (median 12.5), more after.
        // Serving's 16 requests at t + 29 + 1.5k: 8 slow at t = 59 (k = 8..15; median 12.5),
        // 9 or more from t = 61. So t = 59..=97 pair a fast profile with a slower serving
        // (ratio 1.25 or 1.5), and t = 98 a 12.5 profile with a 15 serving (1.2); from t = 99
        // both are slow.
        let failed = (59..=98).count();
        assert_eq!(a.placements, 147);
        assert_eq!(a.placements - a.within, failed);
        assert_eq!(a.highest, 1.5);
        assert_eq!(a.lowest, 1.0);
    }

    #[test]
    fn the_band_is_inclusive_and_each_side_counts() {
        // 10 ms, then 11 ms (exactly +10%) from 60 s: every placement is within.
        let a = agreement(
            &trace(150.0, |t| if t < 60.0 { 10.0 } else { 11.0 }),
            DEMO,
            BAND,
        )
        .unwrap();
        assert_eq!(a.within, a.placements);
        // A drop to 8.9 ms (-11%) is not.
        let b = agreement(
            &trace(150.0, |t| if t < 60.0 { 10.0 } else { 8.9 }),
            DEMO,
            BAND,
        )
        .unwrap();
        assert!(b.within < b.placements);
        assert!((b.lowest - 0.89).abs() < 1e-9);
    }

    #[test]
    fn a_trace_too_short_for_one_placement_has_no_agreement() {
        assert_eq!(agreement(&trace(40.0, |_| 10.0), DEMO, BAND), None);
        assert_eq!(agreement(&[], DEMO, BAND), None);
    }

    #[test]
    fn ten_second_medians_follow_the_trace() {
        let m = window_medians(&trace(35.0, |t| if t < 20.0 { 10.0 } else { 14.0 }), 10.0);
        assert_eq!(m, vec![10.0, 10.0, 14.0, 14.0]);
    }

    #[test]
    fn the_report_counts_the_runs_and_reads_every_placement() {
        let r = report("m", Duration::from_millis(100), trace(100.0, |_| 10.0)).unwrap();
        assert_eq!(r.runs, 1000);
        assert_eq!(r.median_ms, 10.0);
        // The 53 s placements fit; so does the one without planning (28 s).
        assert_eq!(r.agreements.len(), PLACEMENTS.len());
        assert!(markdown(&r).contains("| 4 | 25 | 24 | 16 | 47 | 100% |"));
        assert!(report("m", Duration::ZERO, Vec::new()).is_err());
    }

    #[test]
    fn a_saved_report_reads_back_to_the_same_report() {
        let r = report(
            "m",
            Duration::from_millis(100),
            trace(90.0, |t| 10.0 + t % 7.0),
        )
        .unwrap();
        let saved: Saved = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let again = report(
            &saved.model,
            Duration::from_millis(saved.idle_ms),
            saved.trace,
        )
        .unwrap();
        assert_eq!(again.agreements, r.agreements);
        assert_eq!(again.medians_10s, r.medians_10s);
        assert_eq!((again.idle_ms, again.runs), (100, 900));
    }

    #[test]
    fn recording_needs_a_positive_duration_and_times_each_run() {
        let mut runs = 0;
        let mut run = || {
            runs += 1;
            Ok(())
        };
        assert!(record(0.0, Duration::ZERO, &mut run, &mut |_| {}).is_err());
        let t = record(0.05, Duration::from_millis(5), &mut run, &mut |_| {}).unwrap();
        // The warm-up run is not in the trace.
        assert_eq!(runs, t.len() + 1);
        assert!(!t.is_empty());
        assert!(t.windows(2).all(|w| w[0].t < w[1].t));
    }
}
