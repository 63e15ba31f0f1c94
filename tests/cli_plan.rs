//! `cnnpc plan` as a user runs it: JSON contract, and one-line errors with exit code 2.

use serde_json::Value;
use std::process::Command;

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

const BASE: [&str; 7] = [
    "plan",
    "--profile",
    "model_profile/mobilenet.yaml",
    "--end-device",
    "MI8",
    "--edge-cloud-mbps",
    "10",
];

fn json(extra: &[&str]) -> Value {
    let mut args = BASE.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", "json"]);
    let (code, out, err) = cnnpc(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn without_accuracy_data_pruning_is_off_and_the_plan_is_the_best_split() {
    let v = json(&[]);
    assert!((v["latency_ms"].as_f64().unwrap() - 50.6316).abs() < 1e-3);
    assert!(v["accuracy"].is_null());
    assert_eq!(v["oracle_calls"], 0);
    assert_eq!(v["deployment"], "end-edge");
    let cut = &v["cuts"][0];
    assert_eq!(cut["point"], 4);
    assert_eq!(cut["prune_ratio"], 0.0);
    assert_eq!(
        (cut["from"].as_str(), cut["to"].as_str()),
        (Some("end"), Some("edge"))
    );
    for tier in ["end", "edge", "cloud"] {
        assert!(v["compute_ms"][tier].is_number(), "compute_ms.{tier}");
    }
    assert!(v["transfer_ms"]["end->edge"].as_f64().unwrap() > 0.0);
    assert_eq!(v["transfer_ms"]["edge->cloud"], 0.0);
    assert!((v["baselines"]["end-only"]["latency_ms"].as_f64().unwrap() - 80.0856).abs() < 1e-3);
}

#[test]
fn an_accuracy_table_drives_pruning_and_calls_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("acc.csv");
    // The uncompressed model, and end-edge at cut 4 keeping 16 of 64 channels.
    std::fs::write(
        &table,
        "cut_a,ratio_a,cut_b,ratio_b,accuracy\n,0,,,0.95\n4,0.75,,,0.94\n",
    )
    .unwrap();
    // A partial table cannot answer every point a search wants; exhaustive says which.
    let mut args = BASE.to_vec();
    let t = table.to_str().unwrap();
    args.extend_from_slice(&[
        "--min-accuracy",
        "0.9",
        "--accuracy-table",
        t,
        "--strategy",
        "exhaustive",
    ]);
    let (code, _, err) = cnnpc(&args);
    assert_eq!(code, 2);
    assert!(err.contains("no accuracy known for cut"), "{err}");
    // With the table's own grid, a baseline works and reports the table's accuracy.
    let v = json(&[
        "--min-accuracy",
        "0.9",
        "--accuracy-table",
        t,
        "--strategy",
        "neurosurgeon",
    ]);
    assert_eq!(v["accuracy"], 0.95);
    assert_eq!(v["oracle_calls"], 1);
}

#[test]
fn the_synthetic_surface_lets_a_newcomer_see_compression() {
    let v = json(&["--min-accuracy", "0.95", "--accuracy-surface", "synthetic"]);
    assert!(v["accuracy"].as_f64().unwrap() >= 0.95);
    assert!(v["latency_ms"].as_f64().unwrap() < 50.6316);
    assert!(v["oracle_calls"].as_u64().unwrap() > 0);
    assert!(v["cuts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["prune_ratio"].as_f64().unwrap() > 0.0));
}

#[test]
fn table_output_shows_the_plan_next_to_the_baselines() {
    let (code, out, err) = cnnpc(&BASE);
    assert_eq!(code, 0, "{err}");
    for word in [
        "deployment end-edge",
        "end-only",
        "neurosurgeon",
        "cloud-only",
        "1.58x",
    ] {
        assert!(out.contains(word), "missing {word:?} in\n{out}");
    }
}

fn fails_with(args: &[&str], needle: &str) {
    let (code, out, err) = cnnpc(args);
    assert_eq!(code, 2, "stdout {out}\nstderr {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_input_gives_one_line_and_exit_code_2() {
    fails_with(
        &["plan", "--profile", "nope.yaml"],
        "cannot read profile nope.yaml",
    );
    let mut a = BASE.to_vec();
    a[4] = "PIXEL";
    fails_with(&a, "unknown device \"PIXEL\"");
    fails_with(
        &[
            "plan",
            "--profile",
            "model_profile/mobilenet.yaml",
            "--end-device",
            "MI8",
            "--edge-cloud-mbps=-5",
        ],
        "must be a finite number > 0",
    );
    let mut a = BASE.to_vec();
    a.extend_from_slice(&["--min-accuracy", "1.2", "--accuracy-surface", "synthetic"]);
    fails_with(&a, "minimum accuracy must be in (0, 1]");
    let mut a = BASE.to_vec();
    a.extend_from_slice(&["--min-accuracy", "0.9"]);
    fails_with(&a, "need accuracy data");
    fails_with(
        &["plan", "--profile", "model_profile/mobilenet.yaml"],
        "several end devices (MI8, MI8SE)",
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "cut_a,ratio_a,cut_b,ratio_b,accuracy\n,0,,,0.95\n4,0.3,,,0.9\n",
    )
    .unwrap();
    let mut a = BASE.to_vec();
    a.extend_from_slice(&[
        "--min-accuracy",
        "0.9",
        "--accuracy-table",
        bad.to_str().unwrap(),
    ]);
    fails_with(
        &a,
        "accuracy table line 3: ratio_a = 0.3 does not keep a whole number",
    );
    std::fs::write(&bad, ",0,,,0.95\n9,0.5,,,0.9\n").unwrap();
    fails_with(&a, "line 2: cut_a = 9, but the profile has cuts 0..7");
    std::fs::write(&bad, ",0,,,0.95\n1,0.5,,,high\n").unwrap();
    fails_with(&a, "line 2: accuracy must be a number in [0, 1]");

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "model: x\ncuts: [").unwrap();
    fails_with(
        &["plan", "--profile", broken.to_str().unwrap()],
        "profile is not valid YAML/JSON",
    );
}
