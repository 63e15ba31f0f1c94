//! Reuse across encodings: monotonicity in bits decides points nobody measured, the coarsest
//! encoding is searched first and bounds the rest, and the returned plan is still a measurement.

mod common;

use cnnpc::bench::plan::reuse_bench;
use cnnpc::planner::accuracy::{
    AccuracyOracle, CompressionPoint, Measurements, MeasuringOracle, OracleError, WireEncoding,
};
use cnnpc::planner::search::{Objective, Planner, SearchConfig, Strategy};
use cnnpc::planner::surface::SyntheticSurface;
use common::planner::{profile, topo};

fn point(kept: u32, enc: WireEncoding) -> CompressionPoint {
    CompressionPoint::new(&[0], &[kept], &[16], enc)
}

#[test]
fn a_finer_encoding_is_bounded_below_and_a_coarser_one_above() {
    let mut known = Measurements::default();
    known.insert(point(4, WireEncoding::Int4), 0.99);
    known.insert(point(6, WireEncoding::Int8), 0.97);
    struct Never;
    impl AccuracyOracle for Never {
        fn measure(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
            Err(OracleError::Unknown(p.to_string()))
        }
    }
    let mut oracle = Never;
    let m = MeasuringOracle::new(&mut oracle, &mut known);
    // int8 keeping 4 or more channels is at least as accurate as int4 keeping 4.
    assert_eq!(m.lower_bound(&point(4, WireEncoding::Int8)), Some(0.99));
    assert_eq!(m.lower_bound(&point(5, WireEncoding::F32)), Some(0.99));
    assert_eq!(m.lower_bound(&point(3, WireEncoding::Int8)), None);
    // int4 keeping 6 or fewer is no more accurate than int8 keeping 6.
    assert_eq!(m.upper_bound(&point(6, WireEncoding::Int4)), Some(0.97));
    assert_eq!(m.upper_bound(&point(5, WireEncoding::Int8)), Some(0.97));
    assert_eq!(m.upper_bound(&point(7, WireEncoding::Int4)), None);
    // Bits order the encodings: f16 is finer than int8, coarser than f32.
    assert!(point(4, WireEncoding::F16).dominates(&point(4, WireEncoding::Int8)));
    assert!(!point(4, WireEncoding::F16).dominates(&point(4, WireEncoding::F32)));
}

#[test]
fn reuse_measures_fewer_points_for_plans_as_fast_that_meet_the_floor() {
    let r = reuse_bench(
        &[profile("mobilenet")],
        &[0.99, 0.9],
        &[WireEncoding::Int8, WireEncoding::Int4],
    )
    .unwrap();
    assert_eq!(r.searches, 12);
    assert_eq!(r.after_meets, r.searches, "{r:#?}");
    assert_eq!(r.sampled_after_meets, r.searches, "{r:#?}");
    assert!(
        r.after_max_gap_percent <= 1.0,
        "{}",
        r.after_max_gap_percent
    );
    assert!(
        r.after_calls * 10 < r.before_calls * 9,
        "reuse saves at least 10% of the points: {} against {}",
        r.after_calls,
        r.before_calls
    );
    assert!(
        r.sampled_after_samples < r.sampled_before_samples,
        "{} against {}",
        r.sampled_after_samples,
        r.sampled_before_samples
    );
}

#[test]
fn the_plan_returned_is_measured_even_when_monotonicity_chose_it() {
    let p = profile("mobilenet");
    let t = topo(&p, "MI8", 10.0);
    let planner = Planner::new(&p, &t).unwrap();
    for a0 in [0.99, 0.95, 0.9] {
        let mut surface = SyntheticSurface::new(p.cuts.len(), 1.0, 0.0, 7);
        let mut known = Measurements::default();
        let mut m = MeasuringOracle::new(&mut surface, &mut known);
        let config = SearchConfig::new(
            vec![WireEncoding::F32, WireEncoding::Int8, WireEncoding::Int4],
            true,
        );
        let c = planner
            .search(
                Strategy::Cnnpc,
                Some(Objective::MinLatency { min_accuracy: a0 }),
                &config,
                Some(&mut m),
            )
            .unwrap();
        let chosen = planner.point(c.layout, &c.kept, c.encoding);
        let measured = m
            .known
            .get(&chosen)
            .expect("the returned plan was measured");
        assert!(measured >= a0, "{a0}: {measured}");
        assert_eq!(c.accuracy, Some(measured));
    }
}
