//! `cnnpc profile`: a model measured per segment on this machine, as a planner profile.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{read_model, stem};
use crate::onnx::profile::{profile_model, ProfileOptions};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub shape: super::data::ShapeArgs,
    /// The data the profile runs (its first input): cut tensors compress on the wire as the
    /// data does, so frame sizes are measured on it. Default: the built-in set that fits the
    /// model, else a pseudo-random input.
    #[command(flatten)]
    pub data: super::data::DataArgs,
    /// Do not time HTTP hops on loopback (the profile's wire costs then price none).
    #[arg(long)]
    pub no_http: bool,
    /// Do not time what a tier pays for starting after an idle pause (the profile then prices
    /// none).
    #[arg(long)]
    pub no_wake: bool,
    /// Where to write the profile (YAML).
    #[arg(long)]
    pub out: PathBuf,
    /// Model name in the profile (default: the file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Cut indices (from `cnnpc cuts`) to profile; default: every single-tensor cut and
    /// --multi-tensor-cuts of the others.
    #[arg(long, value_delimiter = ',')]
    pub cuts: Vec<usize>,
    /// Multi-tensor cuts (inside residual and branchy stages) to add, spread evenly: a number,
    /// or auto (12 where the model has fewer than 12 single-tensor cuts, else none).
    #[arg(long, default_value = "auto")]
    pub multi_tensor_cuts: crate::onnx::profile::MultiTensorCuts,
    /// Runs per segment (the median is kept).
    #[arg(long, default_value_t = 15)]
    pub repeats: usize,
    /// Keep timing rounds (beyond --repeats) until they span this many seconds, so the median
    /// meets this machine in more than one of its states.
    #[arg(long, default_value_t = 3.0)]
    pub window_seconds: f64,
    /// Idle this many ms before every timed round, as a tier idles between requests (a run
    /// after a pause is slower; 0 times the rounds back to back and prices that as a wake).
    #[arg(long, default_value_t = crate::onnx::profile::ROUND_IDLE.as_millis() as u64)]
    pub round_idle_ms: u64,
    /// Slowdown of the end device relative to this machine.
    #[arg(long, default_value_t = 18.0)]
    pub end_slowdown: f64,
    /// Slowdown of the edge server relative to this machine.
    #[arg(long, default_value_t = 6.0)]
    pub edge_slowdown: f64,
    /// Slowdown of the cloud relative to this machine.
    #[arg(long, default_value_t = 1.0)]
    pub cloud_slowdown: f64,
}

/// Requests through one relay and through two, each, to time a hop.
pub const HTTP_ROUNDS: usize = 41;

pub fn run(a: &ProfileArgs) -> Result<()> {
    let bytes = a.shape.apply(&read_model(&a.model)?)?;
    let slowdowns = [a.end_slowdown, a.edge_slowdown, a.cloud_slowdown];
    if let Some(bad) = slowdowns.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("slowdown factors must be numbers > 0, got {bad}");
    }
    let name = a.name.clone().unwrap_or_else(|| stem(&a.model));
    let samples = match a.data.source(&bytes) {
        Ok(source) => crate::session::first_inputs(
            &bytes,
            &source,
            crate::dataset::Sizes { fit: 1, eval: 0 },
            crate::session::PROFILE_SAMPLES,
        )?,
        // No built-in set fits this model, and the user named none.
        Err(_) if a.data.calibration.is_none() => Vec::new(),
        Err(e) => return Err(e),
    };
    let http = if a.no_http {
        None
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Some(rt.block_on(crate::demo::http_costs(
            HTTP_ROUNDS,
            crate::demo::input_elements(&bytes)?,
        ))?)
    };
    let opts = ProfileOptions {
        samples,
        http,
        wake: !a.no_wake,
        cuts: (!a.cuts.is_empty()).then(|| a.cuts.clone()),
        multi_tensor_cuts: a.multi_tensor_cuts,
        repeats: a.repeats,
        window_seconds: a.window_seconds,
        round_idle: std::time::Duration::from_millis(a.round_idle_ms),
        devices: ["end", "edge", "cloud"]
            .iter()
            .zip(slowdowns)
            .map(|(t, s)| (t.to_string(), t.to_string(), s))
            .collect(),
    };
    let mut bars = super::progress::Bars::new(&name);
    let profile = profile_model(&bytes, &name, &opts, &mut |done, total| {
        bars.show(crate::session::Progress::Profiling { done, total })
    })
    .with_context(|| format!("profiling {}", a.model.display()))?;
    bars.finish();
    // The command as given (shape, cut choice, slowdowns included), so the profile can be
    // remade exactly.
    let command: Vec<String> = std::iter::once("cnnpc".to_string())
        .chain(std::env::args().skip(1).map(|s| {
            if s.contains(char::is_whitespace) {
                format!("{s:?}")
            } else {
                s
            }
        }))
        .collect();
    let text = format!(
        "# Generated by `{}`.\n{}",
        command.join(" "),
        serde_yaml::to_string(&profile)?
    );
    std::fs::write(&a.out, text).with_context(|| format!("cannot write {}", a.out.display()))?;
    let host: f64 = profile.devices["host"].run_ms.iter().sum();
    eprintln!(
        "wrote {}: {} cut points, {:.2} ms per image on this machine",
        a.out.display(),
        profile.cuts.len(),
        host
    );
    Ok(())
}
