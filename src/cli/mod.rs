//! The command line: one file per subcommand, each with its own Args and `run`. Parsing,
//! reading files and printing live here; every decision is in the parts below.

mod bench;
mod controller;
mod crd;
mod cuts;
pub mod data;
mod dataset;
mod demo;
mod fetch;
mod infer;
mod plan;
mod profile;
pub mod progress;
mod shard;
mod split;

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

pub use bench::BenchCommand;
pub use controller::ControllerArgs;
pub use crd::CrdArgs;
pub use cuts::CutsArgs;
pub use dataset::DatasetCommand;
pub use demo::DemoArgs;
pub use fetch::FetchArgs;
pub use infer::InferArgs;
pub use plan::PlanArgs;
pub use profile::ProfileArgs;
pub use shard::{shard_model, ShardArgs};
pub use split::SplitArgs;

#[derive(Parser, Debug)]
#[command(
    name = "cnnpc",
    version,
    about = "Collaborative CNN inference across end, edge and cloud (CNNPC)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Search cuts and compression for a profile; print the plan next to the baselines.
    Plan(PlanArgs),
    /// List a model's candidate cuts (sets of tensors that separate input from output).
    Cuts(CutsArgs),
    /// Write the shards of a model split at the given cuts (or as a plan says: pruned, split,
    /// one shard per computing tier), and verify them against the model.
    Split(SplitArgs),
    /// Measure an ONNX model per segment on this machine and write a planner profile.
    Profile(ProfileArgs),
    /// Serve one shard over HTTP: what a pod of one tier runs.
    Shard(Box<ShardArgs>),
    /// Call an entry with the Open Inference Protocol: top-k per image or tensor, or a load
    /// check with latency percentiles.
    Infer(InferArgs),
    /// The embedded default, no cluster: profile, plan with live accuracy measurements, split,
    /// serve every plan on loopback with emulated links and devices, and compare.
    Demo(DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the CollaborativeInference CRD (YAML); `crds/` holds its output.
    Crd(CrdArgs),
    /// Calibration data: write a built-in set as files `--calibration` takes.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Download a model, check its SHA-256, write it (a shard's init container).
    Fetch(FetchArgs),
    /// Run the operator: reconcile CollaborativeInference resources.
    Controller(ControllerArgs),
}

impl Command {
    /// The log level and format the command logs with (RUST_LOG overrides the level).
    pub fn logging(&self) -> (&'static str, crate::output::LogFormat) {
        use crate::output::LogFormat;
        match self {
            // The demo runs its shard servers in-process: their per-request lines would bury
            // its progress and table. The benchmarks too, and their load test provokes 503s.
            Command::Demo(_) => ("warn", LogFormat::Text),
            Command::Bench(_) => ("error", LogFormat::Text),
            Command::Controller(a) => ("info", a.log_format),
            Command::Shard(a) => ("info", a.log_format),
            _ => ("info", LogFormat::Text),
        }
    }

    pub fn run(&self) -> Result<()> {
        match self {
            Command::Plan(a) => plan::run(a),
            Command::Cuts(a) => cuts::run(a),
            Command::Split(a) => split::run(a),
            Command::Profile(a) => profile::run(a),
            Command::Shard(a) => shard::run(a),
            Command::Infer(a) => infer::run(a),
            Command::Demo(a) => demo::run(a),
            Command::Bench(b) => bench::run(b),
            Command::Crd(a) => crd::run(a),
            Command::Dataset(c) => dataset::run(c),
            Command::Fetch(a) => fetch::run(a),
            Command::Controller(a) => controller::run(a),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

fn read_model(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))
}

fn write_json(out: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("cannot write {}", out.display()))
}

/// A tokio runtime for the commands that serve or fetch.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The model name a file gives (its stem).
fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
}
