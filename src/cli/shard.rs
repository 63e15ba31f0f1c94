//! `cnnpc shard`: serve one shard, what a tier's pod runs. Given the whole model and the
//! plan's cuts, it splits (and prunes, from what the plan was measured on) its part itself.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::read_model;
use crate::output::LogFormat;
use crate::planner::accuracy::WireEncoding;
use crate::planner::plan::{Items, MeasuredOn};
use crate::runtime::server::OipModel;

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
    #[command(flatten)]
    pub shape: super::data::ShapeArgs,
    /// The calibration data the plan was measured on (its pruning is refitted on the fit
    /// inputs), as for `cnnpc plan`.
    #[command(flatten)]
    pub data: super::data::DataArgs,
    /// The content id of that data as the plan records it: other data is refused.
    #[arg(long)]
    pub calibration_digest: Option<String>,
    /// The first fit input of `--calibration` the plan's pruning was fitted on.
    #[arg(long, default_value_t = crate::dataset::FIT_SEED)]
    pub fit_first: u64,
    /// How many fit inputs the plan's pruning was fitted on.
    #[arg(long, default_value_t = 0)]
    pub fit_images: usize,
    /// SHA-256 of the model the plan was measured on: a pruning shard refuses another model.
    #[arg(long)]
    pub model_sha256: Option<String>,
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
    /// The name clients call the model by (`/v2/models/{name}`; default: the file's stem).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Class names, one per line by output index, for the top-k answers to image uploads.
    #[arg(long)]
    pub class_names: Option<PathBuf>,
    /// Seconds to stay a lame duck after SIGTERM (not ready, closing connections) before
    /// stopping, so Services and clients move off this pod first.
    #[arg(long, default_value_t = crate::runtime::server::DRAIN_SECONDS)]
    pub drain_seconds: u32,
    /// Entry tier: a shard serving the whole unmodified model; a fraction of requests also
    /// runs through it, off the request path, and their top-1 agreement is counted
    /// (`cnnpc_shadow_total`).
    #[arg(long)]
    pub shadow_url: Option<String>,
    /// The fraction of requests shadowed, in [0, 1].
    #[arg(long, default_value_t = 0.01, requires = "shadow_url")]
    pub shadow_fraction: f64,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn run(a: &ShardArgs) -> Result<()> {
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
    let (bytes, mut oip) = shard_parts(a)?;
    oip.class_names = match &a.class_names {
        None => Vec::new(),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read --class-names {}", p.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
    };
    let model_name = a
        .model_name
        .clone()
        .unwrap_or_else(|| super::stem(&a.model));
    oip.name = model_name.clone();
    oip.preprocess = Some(a.data.preprocess());
    let config = ShardConfig {
        tier: a.tier.clone(),
        model_name,
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
        oip,
        drain: std::time::Duration::from_secs(a.drain_seconds.into()),
        shadow: a
            .shadow_url
            .as_deref()
            .map(|u| {
                u.parse::<axum::http::Uri>()
                    .with_context(|| format!("--shadow-url {u:?} is not a URL"))
                    .map(|u| (u, a.shadow_fraction))
            })
            .transpose()?,
        ..ShardConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let model = TractShard::load(&config.model_name, &bytes)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("loading shard {}", a.model.display()))?;
    tracing::info!(tier = %config.tier, listen = %config.listen, input = ?model.input_shape(), "shard loaded");
    super::runtime()?.block_on(server::run(config, std::sync::Arc::new(model)))?;
    Ok(())
}

/// The model a shard serves: the file, or its part `--part` after `--keep` pruning (refitted
/// on the inputs the plan was measured on) and `--split-at` splitting.
pub fn shard_model(a: &ShardArgs) -> Result<Vec<u8>> {
    Ok(shard_parts(a)?.0)
}

/// The whole model as clients of the entry see it: its input and output names and shapes.
fn whole_model_view(shaped: &[u8]) -> Result<OipModel> {
    use crate::onnx::graph::Dim;
    let graph = crate::onnx::Graph::from_bytes(shaped)?;
    let (Some(input), Some(output)) = (graph.inputs().first(), graph.outputs().first()) else {
        bail!("the model has no input or no output");
    };
    let input_shape = crate::onnx::profile::fixed_shape(&graph.require_info(input)?.dims);
    let output_shape = graph.tensor_info(output).map_or_else(Vec::new, |i| {
        i.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => *v,
                Dim::Sym(_) => -1,
            })
            .collect()
    });
    Ok(OipModel {
        input_name: Some(input.clone()),
        input_shape: Some(input_shape),
        output_name: output.clone(),
        output_shape,
        ..OipModel::default()
    })
}

/// [`shard_model`] and the whole model's [`whole_model_view`].
pub fn shard_parts(a: &ShardArgs) -> Result<(Vec<u8>, OipModel)> {
    let file = read_model(&a.model)?;
    let mut model = a.shape.apply(&file)?;
    let view = whole_model_view(&model)?;
    if a.split_at.is_empty() {
        if a.part != 0 || !a.keep.is_empty() {
            bail!("--part and --keep need --split-at");
        }
        return Ok((model, view));
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
            if a.data.calibration.is_none() || a.fit_images == 0 {
                bail!(
                    "pruning needs --calibration and --fit-images (what the plan was measured on)"
                );
            }
            let source = a.data.source(&model)?;
            let record = MeasuredOn {
                model: a
                    .model_sha256
                    .clone()
                    .unwrap_or_else(|| crate::digest::sha256_hex(&file)),
                shape: a.shape.get().map(<[usize]>::to_vec).unwrap_or_default(),
                calibration: source.describe(),
                data: a.calibration_digest.clone().unwrap_or_default(),
                metric: a.data.metric(),
                fit: Items {
                    first: a.fit_first,
                    count: a.fit_images,
                },
                eval: Items { first: 0, count: 0 },
                pruning: crate::onnx::prune::Method::default().name().to_string(),
            };
            let (shaped, fit) = crate::session::fit_inputs(&file, &record, &source)?;
            model = crate::onnx::prune::prune_many(
                &shaped,
                &prune,
                &fit,
                crate::onnx::prune::Method::default(),
            )?;
        }
    }
    let mut shards = crate::onnx::split(&model, &sets)?;
    Ok((shards.swap_remove(a.part), view))
}
