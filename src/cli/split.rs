//! `cnnpc split`: the shards of a model split at given cuts, or as a plan says (pruned as it
//! was measured, one shard per computing tier), verified against the model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::read_model;
use crate::output;
use crate::planner::accuracy::WireEncoding;
use crate::planner::plan::Plan;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("at").required(true).args(["cuts", "plan"]))]
pub struct SplitArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Cut indices from `cnnpc cuts`, in pipeline order, e.g. 3,17.
    #[arg(long, value_delimiter = ',')]
    pub cuts: Vec<usize>,
    /// A plan (`cnnpc plan --model M ... --output json`): its cuts, pruned as it says, with
    /// the calibration inputs it records it was measured on.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Output directory: shard-0.onnx, shard-1.onnx, ... in pipeline order.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shape: super::data::ShapeArgs,
    /// For a pruning plan measured on your own data: that data again (a built-in set is
    /// taken from the plan's record).
    #[command(flatten)]
    pub data: super::data::DataArgs,
}

pub fn run(a: &SplitArgs) -> Result<()> {
    match &a.plan {
        Some(plan) => split_plan(a, plan),
        None => split(&a.shape.apply(&read_model(&a.model)?)?, &a.cuts, &a.out),
    }
}

fn split(bytes: &[u8], chosen: &[usize], out: &Path) -> Result<()> {
    let cuts = crate::onnx::list_cuts(bytes)?;
    let sets = chosen
        .iter()
        .map(|&i| {
            cuts.get(i)
                .map(|c| c.tensor_names())
                .with_context(|| format!("no cut {i}: the model has cuts 0..{}", cuts.len()))
        })
        .collect::<Result<Vec<_>>>()?;
    let shards = crate::onnx::split(bytes, &sets)?;
    write_shards(&shards, out)?;
    let diff = verify_shards(bytes, &shards)?;
    output::println(&format!(
        "wrote {} shards to {}; chained vs original: max abs diff {diff:e}",
        shards.len(),
        out.display()
    ))
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
    use crate::onnx::{graph::Graph, random::Lcg, tract_ndarray::ArrayD};
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
fn split_plan(a: &SplitArgs, plan_path: &Path) -> Result<()> {
    use crate::onnx::plan_shards::{plan_shards, prunes};
    let (model, out) = (&a.model, &a.out);
    let file = read_model(model)?;
    let text = std::fs::read(plan_path)
        .with_context(|| format!("cannot read plan {}", plan_path.display()))?;
    let plan: Plan = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a plan (`cnnpc plan ... --output json` writes one)",
            plan_path.display()
        )
    })?;
    // The shape the plan was made with (recorded), else the one given here.
    let shape = plan
        .measured_on
        .as_ref()
        .filter(|m| !m.shape.is_empty())
        .map(|m| m.shape.clone())
        .or_else(|| a.shape.get().map(<[usize]>::to_vec));
    let mut bytes = crate::session::shaped(&file, shape.as_deref())?;
    let fit = if prunes(&plan) {
        let Some(m) = &plan.measured_on else {
            bail!(
                "plan {} prunes but records no calibration it was measured on; plan it again with \
                 `cnnpc plan --model ...`",
                plan_path.display()
            );
        };
        let source = match (&a.data.calibration, m.data.starts_with("builtin:")) {
            (Some(_), _) => a.data.source(&bytes)?,
            (None, true) => {
                crate::dataset::Source::Builtin(m.calibration.parse().map_err(anyhow::Error::msg)?)
            }
            (None, false) => bail!(
                "plan {} was measured on {}: give that data again with --calibration",
                plan_path.display(),
                m.calibration
            ),
        };
        let (shaped, fit) = crate::session::fit_inputs(&file, m, &source)?;
        bytes = shaped;
        Some(fit)
    } else {
        None
    };
    let cuts = crate::onnx::list_cuts(&bytes).with_context(|| format!("in {}", model.display()))?;
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
    output::print(&shard_commands(&plan, &tiers, out))
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
                cmd.push_str(&format!(" --zstd {}", crate::onnx::frame::ZSTD_LEVEL));
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
