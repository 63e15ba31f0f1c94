//! The producer of a pruned cut computes only the kept channels (ONNX surgery), the same
//! values as keeping them with a Gather; the profile says how much of the segment that is; the
//! planner prices it.

mod common;
use cnnpc::onnx::graph::Graph;
use cnnpc::onnx::profile::{profile_model, sliced_segment, ProfileOptions};
use cnnpc::onnx::prune::{apply_pruning, apply_pruning_gathered, cut_stats, plan_pruning, Method};
use cnnpc::onnx::verify_chain;
use cnnpc::planner::latency::LatencyModel;
use cnnpc::planner::profile::Profile;
use cnnpc::planner::topology::TopologySpec;
use cnnpc::testkit::models as testmodels;
use common::onnx::{batch, names};
use prost::Message;

#[test]
fn the_producer_computes_only_the_kept_channels_and_the_same_values() {
    let calib = batch(100, 12);
    // relu1 comes from conv1 → bn1 → relu1; relu2 from conv2 → relu2; `a0` of the residual
    // model feeds both the block and its Add, after the cut, so it is sliceable too.
    for (model, cut, weight, kept) in [
        (testmodels::chain_model_bytes(), "relu1", "conv1.w", 3usize),
        (testmodels::chain_model_bytes(), "relu2", "conv2.w", 5),
        (testmodels::skip_model_bytes(), "a0", "conv0.w", 2),
    ] {
        let graph = Graph::from_bytes(&model).unwrap();
        let stats = cut_stats(&graph, &names(&[cut]), &calib).unwrap();
        let plan = plan_pruning(&stats, kept, Method::LSQ).unwrap();
        let gathered = apply_pruning_gathered(&graph, &plan)
            .unwrap()
            .encode_to_vec();
        let sliced = apply_pruning(&graph, &plan).unwrap().encode_to_vec();
        let g = Graph::from_bytes(&sliced).unwrap();
        assert!(
            !g.nodes().iter().any(|n| n.op_type == "Gather"),
            "{cut}: the Gather is gone"
        );
        assert_eq!(g.initializer(weight).unwrap().dims[0], kept as i64, "{cut}");
        let before = Graph::from_bytes(&gathered).unwrap();
        assert!(before.nodes().iter().any(|n| n.op_type == "Gather"));
        for seed in [1, 2] {
            let input = vec![testmodels::input(seed, 2)];
            let diff = verify_chain(&gathered, std::slice::from_ref(&sliced), &input).unwrap();
            assert!(diff < 1e-5, "{cut}: sliced vs gathered {diff}");
        }
    }
}

#[test]
fn the_profile_times_each_sliceable_segment_sliced_to_one_channel() {
    let model = testmodels::chain_model_bytes();
    let graph = Graph::from_bytes(&model).unwrap();
    let cuts = cnnpc::onnx::list_cuts(&model).unwrap();
    // relu1 and relu2 each end a segment that is only their producer (conv1 → bn1 → relu1,
    // conv2 → relu2): the timed segment computes one channel. gap has no Conv.
    for (k, weight) in [(0, Some("conv1.w")), (1, Some("conv2.w")), (2, None)] {
        let shard = sliced_segment(&graph, &cuts, k).unwrap();
        match (weight, shard) {
            (Some(w), Some(shard)) => {
                let g = Graph::from_bytes(&shard).unwrap();
                assert_eq!(g.initializer(w).unwrap().dims[0], 1, "cut {k}");
                assert!(!g.nodes().iter().any(|n| n.op_type == "Gather"), "cut {k}");
            }
            (None, None) => {}
            (w, s) => panic!("cut {k}: expected {w:?}, sliced {}", s.is_some()),
        }
    }
    // The profile's shares are those timings through `sliced_share` (unit-tested there): a
    // share where a segment is sliced, none where it is not.
    let p = profile_model(&model, "chain", &ProfileOptions::default(), &mut |_, _| {}).unwrap();
    let share: Vec<f64> = p.cuts.iter().map(|c| c.sliced_share).collect();
    assert!(
        share[..2].iter().all(|s| (0.0..=1.0).contains(s)),
        "{share:?}"
    );
    assert_eq!(share[2], 0.0, "{share:?}");
}

#[test]
fn the_planner_prices_the_sliced_producer_on_the_tier_that_runs_it() {
    let text = "model: m\nwire_encoding: f32\ninput: {elements: 100, bytes: 400}\n\
        cuts:\n  - {name: a, channels: 16, elements: 1600, bytes: 6400, sliced_share: 0.5}\n\
        devices:\n  end: {tier: end, run_ms: [40, 10]}\n  edge: {tier: edge, run_ms: [4, 1]}\n  \
        cloud: {tier: cloud, run_ms: [2, 0.5]}\n";
    let profile = Profile::parse(text).unwrap();
    let topology = TopologySpec::end_edge_cloud("end", 20.0, 10.0)
        .build(&profile)
        .unwrap();
    let model = LatencyModel {
        profile: &profile,
        topology: &topology,
        encoding: profile.wire_encoding,
    };
    let planner = cnnpc::planner::search::Planner::new(&profile, &topology).unwrap();
    // end computes segment 0, then the cut crosses to the cloud (end-cloud).
    let layout = planner
        .layouts
        .iter()
        .find(|l| l.name(&topology) == "end-cloud")
        .unwrap();
    for kept in [16u32, 8, 4, 1] {
        let b = model.breakdown(layout, &[kept]);
        // Half of the end's 40 ms is the producer: it runs kept/16 of it.
        let end = 20.0 + 20.0 * f64::from(kept) / 16.0;
        assert!(
            (b.compute_ms[0] - end).abs() < 1e-9,
            "{kept}: {:?}",
            b.compute_ms
        );
        let linear = model.linear(layout).at(&[kept]);
        assert!(
            (linear - b.total_ms).abs() < 1e-9,
            "{kept}: {linear} vs {}",
            b.total_ms
        );
    }
}
