//! `cnnpc profile` on a generated model: a profile the planner accepts, with exact cut sizes and
//! the documented tier slowdowns; then planned.

use cnnpc::onnx::list_cuts;
use cnnpc::onnx::profile::{profile_model, ProfileOptions};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::{Planner, SearchConfig, Strategy};
use cnnpc::planner::topology::TopologySpec;
use cnnpc::testkit::models as testmodels;

#[test]
fn profiles_every_single_tensor_cut_and_plans() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let mut seen = Vec::new();
    let p = profile_model(
        &model,
        "chain",
        &ProfileOptions::default(),
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert_eq!(p.cuts.len(), cuts.len());
    // One warm-up run per segment, then `repeats` timed rounds over all of them.
    let steps = (cuts.len() + 1) * (ProfileOptions::default().repeats + 1);
    assert_eq!(
        seen.last(),
        Some(&(steps, steps)),
        "progress reaches the end"
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "one step at a time"
    );
    for (c, cut) in p.cuts.iter().zip(&cuts) {
        assert_eq!(u64::from(c.channels), cut.channels);
        assert_eq!(c.bytes, c.elements as f64 * 4.0);
        assert_eq!(c.tensors[0].name, cut.tensors[0].name);
    }
    let host = &p.devices["host"].run_ms;
    assert_eq!(host.len(), p.segments());
    assert!(host.iter().all(|ms| *ms > 0.0));
    for (dev, f) in [("end", 18.0), ("edge", 6.0), ("cloud", 1.0)] {
        let d = &p.devices[dev];
        assert_eq!(d.tier, dev);
        for (a, b) in d.run_ms.iter().zip(host) {
            assert!((a - b * f).abs() < 1e-12);
        }
    }
    // The written YAML parses back to the same profile, and the planner accepts it.
    let back = Profile::parse(&serde_yaml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let topo = TopologySpec::end_edge_cloud("end", 20.0, 10.0)
        .build(&p)
        .unwrap();
    let planner = Planner::new(&p, &topo).unwrap();
    let plan = planner
        .search(
            Strategy::Neurosurgeon,
            None,
            &SearchConfig::new(vec![p.wire_encoding], false),
            None,
        )
        .unwrap();
    assert!(plan.latency_ms > 0.0);
}

#[test]
fn chosen_cuts_must_exist_and_be_ordered() {
    let model = testmodels::chain_model_bytes();
    let opts = |cuts| ProfileOptions {
        cuts: Some(cuts),
        repeats: 1,
        ..ProfileOptions::default()
    };
    let err = profile_model(&model, "m", &opts(vec![99]), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no cut 99"), "{err}");
    let err = profile_model(&model, "m", &opts(vec![1, 0]), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("increasing order"), "{err}");
    let p = profile_model(&model, "m", &opts(vec![1]), &mut |_, _| {}).unwrap();
    assert_eq!(p.cuts.len(), 1);
    assert!(profile_model(b"garbage", "m", &ProfileOptions::default(), &mut |_, _| {}).is_err());
}
