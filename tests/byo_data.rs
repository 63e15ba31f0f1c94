//! Bringing one's own model and data: the model's input shape, calibration data as a `.npy` or
//! an image folder, and every bad input refused with one clear line and exit code 2 (never a
//! panic). On the third real CNN (PP-OCR's text-line direction classifier, input
//! `[N, 3, ?, ?]`), with labelled text lines the project renders itself.

mod common;

use cnnpc::dataset::{self, export, files, Calibration, CalibrationSet, Preprocess, Source};
use std::path::{Path, PathBuf};
use std::process::Command;

const SHAPE: &str = "1,3,48,192";

fn cls_model() -> Option<PathBuf> {
    let p = common::root().join("models/ppocr_cls.onnx");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("CNNPC_REQUIRE_MODELS").as_deref() != Ok("1"),
        "CNNPC_REQUIRE_MODELS=1 but {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    eprintln!(
        "*** SKIPPED: {} missing (bash scripts/fetch-models.sh) ***",
        p.display()
    );
    None
}

/// PP-OCR's preprocessing: `(pixel / 255 - 0.5) / 0.5`.
fn ppocr() -> Preprocess {
    Preprocess {
        scale: 1.0 / 255.0,
        mean: vec![0.5],
        std: vec![0.5],
        ..Preprocess::default()
    }
}

fn cnnpc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnpc"))
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("cnnpc-byo-data-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An error the user reads: exit 2, one line `cnnpc: error: …` containing `want`, no panic.
fn refused(args: &[&str], want: &str) {
    let (code, _, err) = cnnpc(args);
    assert!(!err.contains("panicked"), "cnnpc {}: {err}", args.join(" "));
    assert_eq!(code, 2, "cnnpc {}: {err}", args.join(" "));
    // Ours say `cnnpc: error:`, clap's (a flag's value) `error:`.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cnnpc: error:") || l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(
        lines[0].contains(want),
        "cnnpc {}: want {want:?} in {err}",
        args.join(" ")
    );
}

#[test]
fn an_image_folder_and_a_npy_of_the_same_data_give_the_same_inputs() {
    let font = dataset::font().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("lines");
    export::images(CalibrationSet::TextLines, &font, 0, 24, &images).unwrap();
    export::npy(
        CalibrationSet::TextLines,
        &font,
        0,
        24,
        &dir.path().join("x.npy"),
        Some(&dir.path().join("y.npy")),
    )
    .unwrap();
    let input = [1, 3, 48, 192];
    let from_images = Calibration::open(
        &Source::Images {
            dir: images.clone(),
            preprocess: ppocr(),
        },
        &input,
    )
    .unwrap();
    let from_npy = Calibration::open(
        &Source::Npy {
            data: dir.path().join("x.npy"),
            labels: Some(dir.path().join("y.npy")),
        },
        &input,
    )
    .unwrap();
    let builtin = CalibrationSet::TextLines.batch(&font, 0, 24).unwrap();
    assert_eq!(from_images.len(), Some(24));
    assert!(from_images.labelled() && from_npy.labelled());
    // Every decoded, preprocessed image is one of the generated inputs, with its label.
    let a = from_images.batch(0, 24).unwrap();
    let b = from_npy.batch(0, 24).unwrap();
    let per = 3 * 48 * 192;
    for (i, item) in a.data.chunks(per).enumerate() {
        let j = builtin
            .data
            .chunks(per)
            .position(|g| g.iter().zip(item).all(|(x, y)| (x - y).abs() < 1e-5))
            .unwrap_or_else(|| panic!("image {i} matches no generated input"));
        assert_eq!(
            a.labels.as_ref().unwrap()[i],
            builtin.labels.as_ref().unwrap()[j]
        );
    }
    // The npy is the generated batch itself (the fixed shuffle picks the same items).
    let want = files::take(&builtin, 0, 24).unwrap();
    assert_eq!(b.data, want.data);
    assert_eq!(b.labels, want.labels);
    // Fit and eval ranges are disjoint and the data's identity is its content.
    let (fit_first, eval_first, test_first) = from_npy.firsts(dataset::Sizes { fit: 8, eval: 10 });
    assert_eq!((eval_first, fit_first, test_first), (0, 10, 18));
    assert_ne!(from_images.digest(), from_npy.digest());
    let again = Calibration::open(
        &Source::Npy {
            data: dir.path().join("x.npy"),
            labels: None,
        },
        &input,
    )
    .unwrap();
    assert_ne!(
        again.digest(),
        from_npy.digest(),
        "labels are part of the data"
    );
    // Other preprocessing is other data.
    let other = Calibration::open(
        &Source::Images {
            dir: images,
            preprocess: Preprocess::default(),
        },
        &input,
    )
    .unwrap();
    assert_ne!(other.digest(), from_images.digest());
}

/// Writes a float npy of `shape` filled with `v`, with any dtype npyz writes.
fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], v: T) {
    use npyz::WriterBuilder;
    let n: u64 = shape.iter().product();
    let f = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(f))
        .begin_nd()
        .unwrap();
    w.extend(std::iter::repeat_n(v, n as usize)).unwrap();
    w.finish().unwrap();
}

#[test]
fn every_bad_input_is_one_clear_line_and_exit_2() {
    let Some(model) = cls_model() else { return };
    let model = model.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // A profile of the shaped model to plan on.
    let (code, _, err) = cnnpc(&[
        "profile",
        "--model",
        &model,
        "--input-shape",
        SHAPE,
        "--out",
        &d("p.yaml"),
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let plan = |data: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "plan",
            "--profile",
            &d("p.yaml"),
            "--end-device",
            "end",
            "--model",
            &model,
            "--input-shape",
            SHAPE,
            "--min-accuracy",
            "0.9",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(data.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: Vec<String>, want: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&refs, want);
    };
    // The model's symbolic dimensions.
    refused(
        &["cuts", "--model", &model],
        "model input `x` has symbolic dimensions [?, 3, ?, ?]: give its shape with --input-shape",
    );
    refused(
        &["cuts", "--model", &model, "--input-shape", "1,3,48"],
        "has rank 3, but model input `x`",
    );
    refused(
        &["cuts", "--model", &model, "--input-shape", "1,4,48,192"],
        "dimension 1 is 3",
    );
    refused(
        &["cuts", "--model", &model, "--input-shape", "1,3,x,192"],
        "not a shape like 1,3,224,224",
    );
    // Wrong dtype, wrong shape, NaN, labels that do not fit.
    write(&dir.path().join("f64.npy"), &[10, 3, 48, 192], 0.5f64);
    run(
        plan(&["--calibration", &d("f64.npy")]),
        "holds <f8 values; cnnpc needs float32",
    );
    write(&dir.path().join("small.npy"), &[10, 3, 32, 32], 0.5f32);
    run(
        plan(&["--calibration", &d("small.npy")]),
        "has shape [10, 3, 32, 32]; the model's input needs [N, 3, 48, 192]",
    );
    write(&dir.path().join("nan.npy"), &[10, 3, 48, 192], f32::NAN);
    run(
        plan(&["--calibration", &d("nan.npy")]),
        "item 0 holds a non-finite value (NaN)",
    );
    write(&dir.path().join("ok.npy"), &[10, 3, 48, 192], 0.25f32);
    write(&dir.path().join("five.npy"), &[5], 1i64);
    run(
        plan(&["--calibration", &d("ok.npy"), "--labels", &d("five.npy")]),
        "holds 5 labels for 10 items",
    );
    write(&dir.path().join("float-labels.npy"), &[10], 1.0f32);
    run(
        plan(&[
            "--calibration",
            &d("ok.npy"),
            "--labels",
            &d("float-labels.npy"),
        ]),
        "labels must be integers",
    );
    // Too little data for the sizes asked: it says how many are needed.
    run(
        plan(&[
            "--calibration",
            &d("ok.npy"),
            "--fit-images",
            "8",
            "--eval-images",
            "8",
        ]),
        "the calibration data has 10 inputs; 8 fit and 8 eval inputs need 16",
    );
    // Accuracy without labels.
    run(
        plan(&[
            "--calibration",
            &d("ok.npy"),
            "--metric",
            "accuracy",
            "--fit-images",
            "4",
            "--eval-images",
            "4",
        ]),
        "--metric accuracy needs labelled calibration data",
    );
    // Image folders: empty, unreadable, mixed.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    run(
        plan(&["--calibration", &d("empty")]),
        "holds no PNG or JPEG images",
    );
    std::fs::create_dir_all(dir.path().join("bad/a")).unwrap();
    std::fs::write(dir.path().join("bad/a/x.png"), b"not a png at all").unwrap();
    run(
        plan(&["--calibration", &d("bad")]),
        "x.png is not a readable PNG or JPEG",
    );
    run(plan(&["--calibration", &d("missing.npy")]), "cannot read");
    run(
        plan(&["--calibration", &d("p.yaml")]),
        "give a .npy file or a folder of PNG/JPEG images",
    );
    run(
        plan(&["--calibration", &d("nothing-here")]),
        "no such file or folder, and not a built-in set",
    );
}

#[test]
fn a_shard_refuses_another_model_or_other_data_than_the_plan_was_measured_on() {
    let Some(model) = cls_model() else { return };
    let font = dataset::font().unwrap();
    let dir = tempfile::tempdir().unwrap();
    export::npy(
        CalibrationSet::TextLines,
        &font,
        0,
        20,
        &dir.path().join("x.npy"),
        Some(&dir.path().join("y.npy")),
    )
    .unwrap();
    let x = dir.path().join("x.npy");
    let cal = Calibration::open(
        &Source::Npy {
            data: x.clone(),
            labels: Some(dir.path().join("y.npy")),
        },
        &[1, 3, 48, 192],
    )
    .unwrap();
    let cuts = {
        let shaped =
            cnnpc::onnx::shape::apply(&std::fs::read(&model).unwrap(), Some(&[1, 3, 48, 192]))
                .unwrap();
        cnnpc::onnx::list_cuts(&shaped).unwrap()
    };
    let c = cuts
        .iter()
        .find(|c| c.tensors.len() == 1 && c.channels >= 16)
        .unwrap();
    let sha = cnnpc::digest::sha256_hex(&std::fs::read(&model).unwrap());
    let shard = |sha: &str, digest: &str| {
        cnnpc(&[
            "shard",
            "--model",
            model.to_str().unwrap(),
            "--input-shape",
            SHAPE,
            "--split-at",
            &c.tensor_names().join(","),
            "--part",
            "0",
            "--keep",
            "4",
            "--calibration",
            x.to_str().unwrap(),
            "--labels",
            dir.path().join("y.npy").to_str().unwrap(),
            "--calibration-digest",
            digest,
            "--fit-images",
            "8",
            "--fit-first",
            "10",
            "--model-sha256",
            sha,
            "--listen",
            "127.0.0.1:1",
        ])
    };
    let (code, _, err) = shard(&"00".repeat(32), &cal.digest());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("but the plan was measured on 0000"), "{err}");
    let (code, _, err) = shard(&sha, &"ff".repeat(32));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("but the plan was measured on ffff"), "{err}");
}
