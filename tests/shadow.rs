//! Shadow agreement on real shards: PP-OCR's direction classifier split end→cloud at its first
//! activation, served by real `cnnpc shard` processes whose entry samples every request into a
//! shard of the unmodified model (`--shadow-url`, `--shadow-fraction 1`). With compression made
//! deliberately too strong (1 of the cut's channels kept), the live agreement the controller
//! reads from the entry's own `/metrics` (`observe::scrape`, `evidence::judge`) falls below a
//! 0.9 floor at 95% confidence; the same chain unpruned stays above it, so the test can fail.

use cnnpc::operator::crd::Evidence;
use cnnpc::operator::{evidence, observe};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::shard;

const CUT: &str = shard::PPOCR_CUT;
const IMAGES: usize = 60;
const FLOOR: f64 = 0.9;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cnnpc")
}

/// Text-line images as `cnnpc dataset export` writes them.
fn images(dir: &Path) -> Vec<String> {
    let out = Command::new(bin())
        .args([
            "dataset",
            "export",
            "--set",
            "text-lines",
            "--count",
            &IMAGES.to_string(),
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "png") {
                files.push(p.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

/// Serves the chain (pruned to `keep` channels at the cut, or not), sends every image once,
/// and returns the live agreement as the controller judges it from the entry's metrics.
fn live_agreement(model: &Path, keep: Option<&str>, files: &[String]) -> (u64, f64, f64, f64) {
    let mut prune: Vec<&str> = Vec::new();
    if let Some(k) = keep {
        prune = vec![
            "--keep",
            k,
            "--calibration",
            "text-lines",
            "--fit-images",
            "16",
        ];
    }
    let mut whole = shard::ppocr(model, &["--tier", "cloud"]);
    let cloud_args: Vec<&str> = ["--split-at", CUT, "--part", "1", "--tier", "cloud"]
        .into_iter()
        .chain(prune.iter().copied())
        .collect();
    let mut cloud = shard::ppocr(model, &cloud_args);
    let (next, shadow) = (cloud.url(), whole.url());
    let entry_args: Vec<&str> = [
        "--split-at",
        CUT,
        "--part",
        "0",
        "--tier",
        "end",
        "--next",
        &next,
        "--shadow-url",
        &shadow,
        "--shadow-fraction",
        "1",
    ]
    .into_iter()
    .chain(prune.iter().copied())
    .collect();
    let mut entry = shard::ppocr(model, &entry_args);
    for s in [&mut whole, &mut cloud, &mut entry] {
        s.wait_ready();
    }
    let url = entry.url();
    let metrics = vec![format!("{url}/metrics")];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = |rt: &tokio::runtime::Runtime| {
        let c = rt.block_on(observe::scrape(&metrics)).unwrap();
        (c.window.shadow.0 + c.window.shadow.1, c)
    };
    // One request at a time, each waiting for its shadow row: the entry skips a sample while
    // IN_FLIGHT shadow calls are busy (so shadowing never slows serving), and on a loaded
    // machine the whole model answers slower than the pruned chain, so a burst would be
    // thinned by timing, not by the sampler under test.
    let mut last = None;
    for (i, file) in files.iter().enumerate() {
        let out = Command::new(bin())
            .args(["infer", "--url", &url, "--output", "json", "--image", file])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cnnpc infer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (n, c) = rows(&rt);
            if n > i as f64 {
                last = Some(c);
                break;
            }
            // A failed shadow call counts as an error, not a row: say so now, not in 30 s.
            let log = entry.log();
            assert!(
                !log.contains("shadow comparison failed"),
                "request {i}'s shadow call failed: {log}"
            );
            assert!(
                Instant::now() < deadline,
                "request {i}'s shadow row never arrived ({n} rows counted)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let c = last.expect("at least one image");
    let w = observe::window_between(&observe::Counters::default(), &c, 60.0);
    let j = evidence::judge(&w, &Evidence::default(), "p1", "now");
    let a = j.status.live_agreement.expect("shadowed rows counted");
    (
        a.samples,
        a.agreement.value,
        a.agreement.low,
        a.agreement.high,
    )
}

#[test]
fn too_strong_compression_shows_as_live_agreement_below_the_floor() {
    let Some(model) = shard::ppocr_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = images(dir.path());
    assert_eq!(files.len(), IMAGES);
    let (n, value, low, high) = live_agreement(&model, None, &files);
    eprintln!("unpruned: {n} rows, agreement {value} [{low}, {high}]");
    assert_eq!(n, IMAGES as u64, "every request shadowed once");
    assert!(
        low >= FLOOR,
        "an unpruned split agrees with the whole model: {value} [{low}, {high}]"
    );
    let (n, value, low, high) = live_agreement(&model, Some("1"), &files);
    eprintln!("1 channel kept: {n} rows, agreement {value} [{low}, {high}]");
    assert_eq!(n, IMAGES as u64, "every request shadowed once");
    assert!(
        high < FLOOR,
        "too strong compression is caught live: {value} [{low}, {high}]"
    );
}
