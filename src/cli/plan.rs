//! `cnnpc plan`: the search on a profile, with accuracy from a table, the synthetic surface or
//! live measurements of the model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::data::{DataArgs, ShapeArgs};
use super::progress::Bars;
use super::{read_model, Output};
use crate::dataset::Sizes;
use crate::output;
use crate::planner::accuracy::{Measurements, WireEncoding};
use crate::planner::plan::MeasuredOn;
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, SearchConfig, Strategy};
use crate::planner::surface::SyntheticSurface;
use crate::planner::table;
use crate::session::cache::{default_cache_dir, MeasurementCache};
use crate::session::report::PlanReport;
use crate::session::{self, Accuracy, ProfileSource, TierChoice, Topology};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Surface {
    /// The documented synthetic surface (planner::surface), noise-free.
    Synthetic,
    /// The same with ±0.3% deterministic measurement noise.
    SyntheticNoisy,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Model profile (YAML or JSON), e.g. model_profile/mobilenet.yaml.
    #[arg(long)]
    pub profile: PathBuf,
    /// End device (a profile device of tier `end`); optional when the profile has one.
    #[arg(long)]
    pub end_device: Option<String>,
    #[arg(long, default_value_t = 20.0)]
    pub end_edge_mbps: f64,
    #[arg(long, default_value_t = 10.0)]
    pub edge_cloud_mbps: f64,
    /// Fixed cost of each hop, ms.
    #[arg(long, default_value_t = 0.0)]
    pub hop_ms: f64,
    /// Minimum accuracy A0 in (0, 1]: find the fastest plan that reaches it.
    #[arg(long, conflicts_with = "max_latency_ms")]
    pub min_accuracy: Option<f64>,
    /// Latency budget T0 in ms: find the most accurate plan within it.
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
    /// Measured accuracies, CSV `cut_a,ratio_a,cut_b,ratio_b,accuracy[,encoding]`.
    #[arg(long, conflicts_with_all = ["accuracy_surface", "model"])]
    pub accuracy_table: Option<PathBuf>,
    /// Measure accuracy live on this ONNX model (the one the profile was made from): prune,
    /// encode and run it on built-in calibration data (top-1 agreement with the unmodified model).
    #[arg(long, conflicts_with = "accuracy_surface")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Images pruning is fitted on (--model).
    #[arg(long, default_value_t = 32, requires = "model")]
    pub fit_images: usize,
    /// Images accuracy is measured on (a plan is measured on all of them; other points stop
    /// once their bounds decide them). Default: twice the fewest that can meet the floor at
    /// 95% (384 for 0.99), or 100 without a floor.
    #[arg(long, requires = "model")]
    pub eval_images: Option<usize>,
    /// Keep live measurements in this CSV and reuse them next time (--model; default: a file
    /// per model and calibration under ~/.cache/cnnpc).
    #[arg(long, requires = "model")]
    pub measurements: Option<PathBuf>,
    /// Use a synthetic accuracy surface instead of measurements (for trying the planner).
    #[arg(long, value_enum)]
    pub accuracy_surface: Option<Surface>,
    #[arg(long, default_value = "cnnpc")]
    pub strategy: Strategy,
    /// Wire encodings the plan may choose from (default: the profile's).
    #[arg(long, value_delimiter = ',')]
    pub encodings: Vec<WireEncoding>,
    /// Reproduce the reference code's cloud-only latency (input pays only edge→cloud).
    #[arg(long)]
    pub reference_cloud_only: bool,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

pub fn load_profile(path: &Path) -> Result<Profile> {
    let text = read(path, "profile")?;
    Profile::parse(&text).with_context(|| format!("in {}", path.display()))
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let profile = load_profile(&args.profile)?;
    let end_device = match &args.end_device {
        Some(d) => d.clone(),
        None => match profile.devices_for("end").as_slice() {
            [one] => one.to_string(),
            many => bail!(
                "the profile has several end devices ({}); choose one with --end-device",
                many.join(", ")
            ),
        },
    };
    let objective = match (args.min_accuracy, args.max_latency_ms) {
        (Some(a), _) => Some(Objective::MinLatency { min_accuracy: a }),
        (_, Some(t)) => Some(Objective::MaxAccuracy { max_latency_ms: t }),
        _ => None,
    };
    let mut model = None;
    let mut stem = String::new();
    let accuracy = match (&args.model, &args.accuracy_table, args.accuracy_surface) {
        (Some(path), _, _) => {
            let bytes = read_model(path)?;
            let source = args.data.source(&args.shape.apply(&bytes)?)?;
            stem = super::stem(path);
            model = Some(bytes);
            Accuracy::Live {
                source,
                sizes: Sizes {
                    fit: args.fit_images,
                    eval: args.eval_images.unwrap_or_else(|| {
                        crate::planner::sequential::default_eval(args.min_accuracy)
                    }),
                },
                metric: args.data.metric(),
            }
        }
        (None, Some(path), _) => {
            let text = read(path, "accuracy table")?;
            let table = table::parse_csv(&text, &profile)
                .with_context(|| format!("in {}", path.display()))?;
            Accuracy::Table(table)
        }
        (None, None, Some(s)) => {
            let noise = if s == Surface::SyntheticNoisy {
                0.003
            } else {
                0.0
            };
            Accuracy::Surface(SyntheticSurface::new(profile.cuts.len(), 1.0, noise, 7))
        }
        (None, None, None) => Accuracy::None,
    };
    if objective.is_some() && matches!(accuracy, Accuracy::None) {
        bail!("--min-accuracy and --max-latency-ms need accuracy data: give --accuracy-table FILE (or --accuracy-surface synthetic to try the planner)");
    }
    // Live measurements are kept in a file per model and data, found once the session knows
    // what it measures on.
    let cache_for = |profile: &Profile, m: &MeasuredOn| {
        let path = args
            .measurements
            .clone()
            .unwrap_or_else(|| default_cache_dir().join(session::cache::file_name(&stem, m)));
        MeasurementCache::new(path, session::measurement_key(m, profile.cuts.len()))
    };
    let mut topology = Topology::end_edge_cloud(args.end_edge_mbps, args.edge_cloud_mbps);
    topology.tiers[0] = TierChoice {
        device: Some(end_device),
        ..TierChoice::new("end")
    };
    topology.hop_ms = args.hop_ms;
    topology.reference_cloud_only = args.reference_cloud_only;
    let config = SearchConfig::new(args.encodings.clone(), objective.is_some());
    let request = session::Request {
        name: profile.model.clone(),
        model: model.as_deref(),
        input_shape: args.shape.get().map(<[usize]>::to_vec),
        profile: ProfileSource::Given(profile.clone()),
        accuracy,
        known: Measurements::default(),
        topology,
        objective,
        strategy: args.strategy,
        config: config.clone(),
        baselines: Some(config),
    };
    let mut bars = Bars::new(&profile.model);
    let out = session::run_with_known(
        request,
        &mut |profile, m| match m {
            Some(m) => load_cache(&cache_for(profile, m), profile),
            None => Ok(Measurements::default()),
        },
        &mut |p| bars.show(p),
    )?;
    bars.finish();
    if let Some(m) = &out.measured_on {
        let c = cache_for(&out.profile, m);
        c.store(&out.known)?;
        eprintln!(
            "{} measured points kept in {}",
            out.known.len(),
            c.path.display()
        );
    }
    let report = PlanReport::new(out.plan, objective, &out.baselines);
    match args.output {
        Output::Json => output::println(&serde_json::to_string_pretty(&report)?),
        Output::Table => output::print(&report.render_table()),
    }
}

fn load_cache(cache: &MeasurementCache, profile: &Profile) -> Result<Measurements> {
    Ok(match cache.load(profile)? {
        Some(points) => points,
        None => {
            eprintln!(
                "{} was measured with another model or calibration: measuring afresh (it will be replaced)",
                cache.path.display()
            );
            Measurements::default()
        }
    })
}
