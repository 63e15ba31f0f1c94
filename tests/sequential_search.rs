//! The search with sequential accuracy measurements (a sampled synthetic surface, as the live
//! oracle looks to the search): points far from the floor stop early, the returned plan is
//! measured on the whole evaluation set and meets the floor by its lower bound, and too small
//! an evaluation set for the floor is an error that says how many samples it needs.

mod common;
use cnnpc::planner::accuracy::{
    AccuracyOracle, CompressionPoint, Measured, Measurements, MeasuringOracle, OracleError,
    WireEncoding,
};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::{Objective, Planner, SearchConfig, SearchError, Strategy};
use cnnpc::planner::sequential::Rule;
use cnnpc::planner::surface::{SampledSurface, SyntheticSurface};
use common::planner::{profile, topo};

fn sampled(p: &Profile, samples: usize) -> SampledSurface {
    SampledSurface {
        surface: SyntheticSurface::new(p.cuts.len(), 1.0, 0.0, 7),
        samples,
        seed: 11,
    }
}

#[test]
fn the_returned_plan_is_measured_in_full_and_meets_the_floor_by_its_lower_bound() {
    let rule = Rule::default();
    for (model, device, ec, a0) in [
        ("mobilenet", "MI8", 1.0, 0.9),
        ("mobilenet", "MI8SE", 10.0, 0.95),
        ("mobilenet", "MI8", 5.0, 0.97),
        ("mobilenet", "MI8SE", 1.0, 0.99),
    ] {
        let p = profile(model);
        let t = topo(&p, device, ec);
        let planner = Planner::new(&p, &t).unwrap();
        let total = 400;
        let mut oracle = sampled(&p, total);
        let truth = oracle.clone();
        let mut known = Measurements::default();
        let mut m = MeasuringOracle::new(&mut oracle, &mut known);
        let config = SearchConfig::new(vec![WireEncoding::Int8], true);
        let objective = Objective::MinLatency { min_accuracy: a0 };
        let c = planner
            .search(Strategy::Cnnpc, Some(objective), &config, Some(&mut m))
            .unwrap();
        let plan = planner.plan_measured("cnnpc", &c, &m);
        let point = planner.point(c.layout, &c.kept, c.encoding);
        let case = format!("{model} {device} {ec} Mbit/s A0 {a0}");
        assert!(!point.cuts.is_empty(), "{case}: every case here compresses");
        let Some(Measured::Sampled(tally)) = m.known.entry(&point) else {
            panic!("{case}: the plan's point was not sampled");
        };
        assert_eq!(tally.samples, total, "{case}: measured in full");
        let hits = truth.hits(&point, 0, total) as f64;
        assert_eq!(tally.hits, hits, "{case}: the whole set's count");
        let e = plan
            .accuracy_interval
            .expect("a sampled plan reports its interval");
        assert_eq!(e.samples, total);
        assert!(e.lower >= a0 - rule.tolerance, "{case}: {e}");
        assert!(e.lower <= e.estimate && e.estimate <= e.upper);
        assert_eq!(plan.accuracy, Some(hits / total as f64));
        eprintln!(
            "{case}: {} samples over {} points, plan {e}",
            m.samples, m.calls
        );
        // Sequential stopping paid off: fewer samples than measuring every point in full.
        let full = m.calls * total;
        assert!(
            m.samples < full * 3 / 4,
            "{case}: {} samples over {} points ({} if measured whole)",
            m.samples,
            m.calls,
            full
        );
        // Points far from the threshold stopped before the whole set.
        let early = m
            .known
            .entries()
            .filter(|(_, e)| matches!(e, Measured::Sampled(t) if t.samples < total))
            .count();
        assert!(early > 0, "{case}: no point stopped early");
    }
}

#[test]
fn an_evaluation_set_too_small_for_the_floor_is_an_error_naming_the_samples_needed() {
    let p = profile("mobilenet");
    let t = topo(&p, "MI8", 1.0);
    let planner = Planner::new(&p, &t).unwrap();
    let mut oracle = sampled(&p, 100);
    let mut known = Measurements::default();
    let mut m = MeasuringOracle::new(&mut oracle, &mut known);
    let config = SearchConfig::new(vec![WireEncoding::Int8], true);
    let objective = Objective::MinLatency { min_accuracy: 0.99 };
    let e = planner
        .search(Strategy::Cnnpc, Some(objective), &config, Some(&mut m))
        .unwrap_err();
    assert!(
        matches!(
            e,
            SearchError::TooFewSamples {
                needs: 189,
                have: 100,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("at least 189") && text.contains("there are 100"),
        "{text}"
    );
    assert_eq!(m.samples, 0, "nothing measured before saying so");
    // The same floor on 189 samples is searched.
    let mut oracle = sampled(&p, 189);
    let mut known = Measurements::default();
    let mut m = MeasuringOracle::new(&mut oracle, &mut known);
    planner
        .search(Strategy::Cnnpc, Some(objective), &config, Some(&mut m))
        .unwrap();
}

/// An evaluation set whose first `easy` samples agree for every compression: the early looks
/// see a luckier sample than the whole set.
struct FrontLoaded {
    inner: SampledSurface,
    easy: usize,
}

impl AccuracyOracle for FrontLoaded {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        let n = self.inner.samples;
        Ok(self.measure_samples(point, 0, n)? / n as f64)
    }
    fn samples(&self) -> Option<usize> {
        Some(self.inner.samples)
    }
    fn exact(&self, point: &CompressionPoint) -> bool {
        point.cuts.is_empty()
    }
    fn measure_samples(
        &mut self,
        point: &CompressionPoint,
        from: usize,
        to: usize,
    ) -> Result<f64, OracleError> {
        let easy = to.min(self.easy).saturating_sub(from);
        let rest = self
            .inner
            .hits(point, from.max(self.easy), to.max(self.easy));
        Ok((easy + rest) as f64)
    }
}

#[test]
fn an_early_meets_that_fails_in_full_is_searched_again() {
    let p = profile("mobilenet");
    let t = topo(&p, "MI8", 1.0);
    let planner = Planner::new(&p, &t).unwrap();
    let total = 1024;
    let mut oracle = FrontLoaded {
        inner: sampled(&p, total),
        easy: 128,
    };
    let mut known = Measurements::default();
    let rule = Rule::default();
    let mut m = MeasuringOracle::new(&mut oracle, &mut known);
    let config = SearchConfig::new(vec![WireEncoding::Int8], true);
    let a0 = 0.9;
    let c = planner
        .search(
            Strategy::Cnnpc,
            Some(Objective::MinLatency { min_accuracy: a0 }),
            &config,
            Some(&mut m),
        )
        .unwrap();
    assert!(
        m.failed_in_full > 0,
        "no early decision was overturned in full: this test exercises nothing"
    );
    let point = planner.point(c.layout, &c.kept, c.encoding);
    let Some(Measured::Sampled(tally)) = m.known.entry(&point) else {
        panic!("the plan's point was not sampled");
    };
    assert_eq!(tally.samples, total);
    assert!(rule.value(tally) >= a0 - rule.tolerance, "{tally:?}");
}
