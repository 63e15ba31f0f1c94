//! What a plan sends in an encoding coarser than the profile's loses accuracy, pruned or not:
//! the input its end device only relays (`CompressionPoint::input`) and a whole cut that
//! crosses a link (listed with `kept == channels`, `CompressionPoint::crossing`). Both are
//! measured points, never taken as the unmodified model's exact 1.0.

mod common;

use cnnpc::planner::accuracy::{
    AccuracyOracle, CompressionPoint, Measurements, MeasuringOracle, OracleError, WireEncoding,
};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::{Candidate, Objective, Planner, SearchConfig, Strategy};
use cnnpc::planner::surface::SyntheticSurface;
use cnnpc::planner::table::{parse_csv, to_csv};
use cnnpc::planner::topology::{Topology, TopologySpec};
use common::planner::profile;

/// The synthetic surface, except that a point sending the input encoded scores `input`.
struct InputCosts {
    surface: SyntheticSurface,
    input: f64,
    asked: Vec<CompressionPoint>,
}

impl InputCosts {
    fn new(p: &Profile, input: f64) -> Self {
        InputCosts {
            surface: SyntheticSurface::new(p.cuts.len(), 1.0, 0.0, 1),
            input,
            asked: Vec::new(),
        }
    }
}

impl AccuracyOracle for InputCosts {
    fn measure(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
        self.asked.push(p.clone());
        Ok(if p.input {
            self.input.min(self.surface.accuracy(p))
        } else {
            self.surface.accuracy(p)
        })
    }
}

/// An end device so slow that the fastest uncompressed split sends it nothing to compute: the
/// end only relays the input.
fn slow_end(p: &Profile) -> Topology {
    let mut spec = TopologySpec::end_edge_cloud("MI8", 20.0, 10.0);
    spec.tiers[0].2 = 1000.0;
    spec.build(p).unwrap()
}

fn search(
    planner: &Planner,
    oracle: &mut dyn AccuracyOracle,
    encodings: Vec<WireEncoding>,
    objective: Objective,
) -> Candidate {
    let mut known = Measurements::default();
    let mut m = MeasuringOracle::new(oracle, &mut known);
    let config = SearchConfig::new(encodings, true);
    planner
        .search(Strategy::Cnnpc, Some(objective), &config, Some(&mut m))
        .unwrap()
}

#[test]
fn the_premise_the_fastest_uncompressed_split_relays_the_input() {
    let p = profile("mobilenet");
    let t = slow_end(&p);
    let planner = Planner::new(&p, &t).unwrap();
    let ns = planner.neurosurgeon(WireEncoding::Int4);
    assert!(planner.layouts[ns.layout].relays_input(), "{ns:?}");
    // Uncompressed, yet int4 loses at every crossing: the input and any unpruned cut.
    let point = planner.point(ns.layout, &ns.kept, WireEncoding::Int4);
    let crossing = &planner.layouts[ns.layout].cuts;
    assert!(point.input, "{point}");
    assert_eq!(point.cuts.len(), crossing.len(), "{point}");
    assert!(point.cuts.iter().all(|c| c.kept == c.channels), "{point}");
    // In the profile's own encoding (8 bits: the reference counts the input so) or finer, the
    // input crosses as its data come: nothing to measure.
    assert_eq!(p.wire_encoding, WireEncoding::Int8);
    for enc in [WireEncoding::Int8, WireEncoding::F16, WireEncoding::F32] {
        assert!(planner.point(ns.layout, &ns.kept, enc).is_unmodified());
    }
}

#[test]
fn an_input_encoding_below_the_floor_is_never_planned() {
    let p = profile("mobilenet");
    let t = slow_end(&p);
    let planner = Planner::new(&p, &t).unwrap();
    let mut oracle = InputCosts::new(&p, 0.5);
    let a0 = 0.95;
    let c = search(
        &planner,
        &mut oracle,
        vec![WireEncoding::Int4],
        Objective::MinLatency { min_accuracy: a0 },
    );
    let point = planner.point(c.layout, &c.kept, c.encoding);
    assert!(!point.input, "planned {point} at {:?}", c.accuracy);
    assert!(c.accuracy.unwrap() >= a0);
    assert!(
        oracle.asked.iter().any(|q| q.input),
        "the input's encoding was measured"
    );
    // The same search in the profile's encoding sends the input as it came, unmeasured.
    let asked = oracle.asked.len();
    let native = search(
        &planner,
        &mut oracle,
        vec![WireEncoding::Int8],
        Objective::MinLatency { min_accuracy: a0 },
    );
    assert!(oracle.asked[asked..].iter().all(|q| !q.input));
    let ns = planner.neurosurgeon(WireEncoding::Int8);
    assert!(native.latency_ms <= ns.latency_ms + 1e-9);
}

#[test]
fn an_input_encoding_that_measures_up_is_planned_with_its_measured_accuracy() {
    let p = profile("mobilenet");
    let t = slow_end(&p);
    let planner = Planner::new(&p, &t).unwrap();
    let mut oracle = InputCosts::new(&p, 0.993);
    let c = search(
        &planner,
        &mut oracle,
        vec![WireEncoding::Int4],
        Objective::MinLatency { min_accuracy: 0.99 },
    );
    let point = planner.point(c.layout, &c.kept, c.encoding);
    assert!(point.input, "planned {point}");
    let truth = oracle.measure(&point).unwrap();
    assert_eq!(c.accuracy, Some(truth), "the input's measured accuracy");
    assert!(truth <= 0.993, "{point}: {truth}");
    let ns = planner.neurosurgeon(WireEncoding::Int4);
    assert!(c.latency_ms <= ns.latency_ms + 1e-9);

    // Under a latency budget only relaying splits meet, the answer is one, measured.
    let budget = planner.neurosurgeon(WireEncoding::Int4).latency_ms * 1.01;
    let mut oracle = InputCosts::new(&p, 0.993);
    let c = search(
        &planner,
        &mut oracle,
        vec![WireEncoding::Int4],
        Objective::MaxAccuracy {
            max_latency_ms: budget,
        },
    );
    assert!(c.latency_ms <= budget);
    let point = planner.point(c.layout, &c.kept, c.encoding);
    let truth = oracle.measure(&point).unwrap();
    assert_eq!(c.accuracy, Some(truth), "{point}");
    assert!(truth < 1.0, "not the unmodified model's accuracy: {point}");
}

#[test]
fn an_input_point_dominates_only_points_that_encode_the_input_too() {
    let plain = CompressionPoint::new(&[3], &[8], &[16], WireEncoding::Int8);
    let input = plain.clone().with_input(true);
    assert!(input.input);
    assert!(plain.dominates(&input));
    assert!(!input.dominates(&plain));
    assert!(input.dominates(&input.clone()));
    // A finer input encoding dominates a coarser one.
    let coarse = CompressionPoint::new(&[3], &[8], &[16], WireEncoding::Int4).with_input(true);
    assert!(input.dominates(&coarse));
    assert!(!coarse.dominates(&input));
    // f32 is the client's own encoding: no input point.
    let f32 = CompressionPoint::uncompressed(WireEncoding::F32).with_input(true);
    assert!(!f32.input && f32.is_unmodified());
    assert!(!CompressionPoint::uncompressed(WireEncoding::Int4)
        .with_input(true)
        .is_unmodified());
    assert_eq!(
        CompressionPoint::uncompressed(WireEncoding::Int4)
            .with_input(true)
            .to_string(),
        "the input (int4)"
    );
    assert_eq!(input.to_string(), "the input, cut 3 keeping 8/16 (int8)");
}

#[test]
fn input_points_survive_the_measurement_table() {
    let p = profile("mobilenet");
    let channels = p.cuts[3].channels;
    let mut known = Measurements::default();
    let only = CompressionPoint::uncompressed(WireEncoding::Int4).with_input(true);
    let with_cut = CompressionPoint::new(&[3], &[channels / 2], &[channels], WireEncoding::Int8)
        .with_input(true);
    known.insert(only.clone(), 0.97);
    known.insert(with_cut.clone(), 0.91);
    known.insert(CompressionPoint::uncompressed(WireEncoding::Int4), 1.0);
    let csv = to_csv(&known);
    assert!(csv.lines().any(|l| l.starts_with("input,0,,")), "{csv}");
    let back = parse_csv(&csv, &p).unwrap();
    assert_eq!(back, known, "{csv}");
    assert_eq!(back.get(&only), Some(0.97));
    assert_eq!(
        back.get(&CompressionPoint::uncompressed(WireEncoding::Int4)),
        Some(1.0),
        "the input point is not read back as the unmodified model"
    );
    let err = parse_csv("input,0.5,,,0.9,int8\n", &p).unwrap_err();
    assert!(err.message.contains("ratio 0"), "{err}");
}

#[test]
fn the_live_oracle_encodes_the_input_of_an_input_point() {
    use cnnpc::onnx::oracle::{argmax, run_chain, LiveOracle};
    use cnnpc::onnx::{list_cuts, quantise};
    use cnnpc::testkit::models as testmodels;
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let eval = common::onnx::batch(200, 24);
    let mut oracle = LiveOracle::new(
        model.clone(),
        cuts,
        common::onnx::batch(100, 8),
        eval.clone(),
    )
    .unwrap();
    let point = CompressionPoint::uncompressed(WireEncoding::Int4).with_input(true);
    assert!(!oracle.exact(&point), "an encoded input is measured");
    assert!(oracle.exact(&CompressionPoint::uncompressed(WireEncoding::Int4)));
    let e = oracle.evaluate(&point).unwrap();
    assert!(e.mean_output_diff > 0.0, "the input was encoded: {e:?}");
    assert_eq!(e.images, 24);

    // The same, computed here: each input through int4 on its own, channels on axis 1.
    let per = eval.data.len() / eval.len();
    let mut one = eval.shape.clone();
    one[0] = 1;
    let mut sent = eval.clone();
    sent.data = eval
        .data
        .chunks(per)
        .flat_map(|x| quantise::roundtrip(x, &one, 1, WireEncoding::Int4).unwrap())
        .collect();
    let want = run_chain(
        std::slice::from_ref(&model),
        &eval,
        WireEncoding::F32,
        &[],
        None,
    )
    .unwrap();
    let got = run_chain(&[model], &sent, WireEncoding::F32, &[], None).unwrap();
    let agreeing = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| argmax(g) == argmax(w))
        .count();
    assert_eq!(e.agreement, agreeing as f64 / 24.0);
    // Sampled in batches, the same samples agree.
    let first = oracle.score_samples(&point, 0, 10).unwrap();
    let rest = oracle.score_samples(&point, 10, 24).unwrap();
    assert_eq!(first + rest, agreeing as f64);
}

#[test]
fn a_coarser_input_encoding_that_meets_the_floor_spares_measuring_a_finer_one() {
    // A profile in f32 (as the live one is), so that int8 sends the input lossily too.
    let mut p = profile("mobilenet");
    p.wire_encoding = WireEncoding::F32;
    let t = slow_end(&p);
    let planner = Planner::new(&p, &t).unwrap();
    let mut oracle = InputCosts::new(&p, 0.993);
    let c = search(
        &planner,
        &mut oracle,
        vec![WireEncoding::Int8, WireEncoding::Int4],
        Objective::MinLatency { min_accuracy: 0.99 },
    );
    // int4 is searched first; its input meets the floor, so int8's (finer) is at least as good.
    let inputs: Vec<WireEncoding> = oracle
        .asked
        .iter()
        .filter(|q| q.input && q.cuts.is_empty())
        .map(|q| q.encoding)
        .collect();
    assert_eq!(inputs, vec![WireEncoding::Int4], "{c:?}");
}

// An unpruned cut that crosses a link in a lossy encoding loses like the input: the point
// lists it (kept = channels), so it is measured too.

#[test]
fn an_unpruned_encoded_cut_is_dominated_by_the_cut_left_alone() {
    let whole = CompressionPoint::crossing(&[3], &[16], &[16], WireEncoding::Int8, true);
    assert_eq!(whole.cuts.len(), 1, "listed though unpruned");
    assert!(!whole.is_unmodified());
    // Not listed in the profile's own encoding: nothing is lost there.
    assert!(
        CompressionPoint::crossing(&[3], &[16], &[16], WireEncoding::Int8, false).is_unmodified()
    );
    let untouched = CompressionPoint::uncompressed(WireEncoding::Int8);
    assert!(untouched.dominates(&whole));
    assert!(!whole.dominates(&untouched));
    let pruned = CompressionPoint::new(&[3], &[8], &[16], WireEncoding::Int8);
    assert!(whole.dominates(&pruned));
    assert!(!pruned.dominates(&whole));
    // A cut the other point encodes and this one leaves alone does not stop dominance.
    let both = CompressionPoint::crossing(&[3, 5], &[8, 32], &[16, 32], WireEncoding::Int8, true);
    assert!(pruned.dominates(&both));
    assert!(!both.dominates(&pruned));
}

/// The synthetic surface, except that a point pruning any cut scores at most `pruned`, and one
/// encoding an unpruned cut at most `whole`.
struct WholeCutCosts {
    surface: SyntheticSurface,
    pruned: f64,
    whole: f64,
}

impl AccuracyOracle for WholeCutCosts {
    fn measure(&mut self, p: &CompressionPoint) -> Result<f64, OracleError> {
        let mut a = self.surface.accuracy(p);
        if p.cuts.iter().any(|c| c.kept < c.channels) {
            a = a.min(self.pruned);
        }
        if p.cuts.iter().any(|c| c.kept == c.channels) {
            a = a.min(self.whole);
        }
        Ok(a)
    }
}

#[test]
fn an_unpruned_cut_in_a_lossy_encoding_is_planned_only_as_measured() {
    // A profile in f32, as the live one is: int8 loses at every crossing.
    let mut p = profile("mobilenet");
    p.wire_encoding = WireEncoding::F32;
    let t = TopologySpec::end_edge_cloud("MI8", 20.0, 10.0)
        .build(&p)
        .unwrap();
    let planner = Planner::new(&p, &t).unwrap();
    let ns = planner.neurosurgeon(WireEncoding::Int8);
    assert!(
        !planner.layouts[ns.layout].cuts.is_empty(),
        "the premise: the fastest uncompressed split cuts the model"
    );
    // (pruned, whole, a0): pruning loses too much, so the fastest uncompressed split is the
    // plan unless its whole cut's encoding misses the floor; or pruning is as the surface says.
    for (pruned, whole, a0) in [(0.5, 0.5, 0.9), (0.5, 0.97, 0.95), (1.0, 0.5, 0.9)] {
        let mut oracle = WholeCutCosts {
            surface: SyntheticSurface::new(p.cuts.len(), 1.0, 0.0, 3),
            pruned,
            whole,
        };
        let c = search(
            &planner,
            &mut oracle,
            vec![WireEncoding::Int8],
            Objective::MinLatency { min_accuracy: a0 },
        );
        // What the plan serves, built here: int8 at every cut that crosses, pruned or not.
        let l = &planner.layouts[c.layout];
        let channels: Vec<u32> = l.cuts.iter().map(|&i| p.cuts[i].channels).collect();
        let point = CompressionPoint::crossing(&l.cuts, &c.kept, &channels, c.encoding, true)
            .with_input(l.relays_input());
        let truth = oracle.measure(&point).unwrap();
        assert_eq!(c.accuracy, Some(truth), "{point}");
        assert!(truth >= a0, "{point}: {truth} < {a0}");
        let unpruned = point.cuts.iter().any(|q| q.kept == q.channels);
        // Below the floor, no plan leaves a crossing cut whole; above it, one may.
        assert!(whole >= a0 || !unpruned, "{point}");
    }
}

#[test]
fn the_live_oracle_encodes_an_unpruned_cut_the_point_lists() {
    use cnnpc::onnx::list_cuts;
    use cnnpc::onnx::oracle::LiveOracle;
    use cnnpc::testkit::models as testmodels;
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let channels = cuts[1].channels as u32;
    let mut oracle = LiveOracle::new(
        model,
        cuts,
        common::onnx::batch(100, 8),
        common::onnx::batch(200, 24),
    )
    .unwrap();
    let whole =
        CompressionPoint::crossing(&[1], &[channels], &[channels], WireEncoding::Int4, true);
    assert!(!oracle.exact(&whole));
    let e = oracle.evaluate(&whole).unwrap();
    assert!(
        e.mean_output_diff > 0.0,
        "int4 at the cut changed the outputs: {e:?}"
    );
    // The same as encoding the unmodified model at that cut.
    let at = oracle
        .evaluate_at(
            &CompressionPoint::uncompressed(WireEncoding::Int4),
            &[1],
            None,
        )
        .unwrap();
    assert_eq!(
        (e.agreement, e.mean_output_diff),
        (at.agreement, at.mean_output_diff)
    );
}

#[test]
fn unpruned_encoded_cuts_survive_the_measurement_table() {
    let mut p = profile("mobilenet");
    let channels = p.cuts[3].channels;
    // In the reference's own 8 bits, a ratio-0 row is the unmodified model (as it always was).
    let legacy = parse_csv("3,0,,,0.99,int8\n", &p).unwrap();
    assert_eq!(
        legacy.get(&CompressionPoint::uncompressed(WireEncoding::Int8)),
        Some(0.99)
    );
    p.wire_encoding = WireEncoding::F32;
    let whole =
        CompressionPoint::crossing(&[3], &[channels], &[channels], WireEncoding::Int8, true);
    let mut known = Measurements::default();
    known.insert(whole.clone(), 0.98);
    let csv = to_csv(&known);
    let back = parse_csv(&csv, &p).unwrap();
    assert_eq!(back.get(&whole), Some(0.98), "{csv}");
}
