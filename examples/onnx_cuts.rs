//! Debug helper: list a model's cuts as JSON, or split it and verify the shards.
//!
//!   cargo run --example onnx_cuts -- MODEL.onnx                      # cuts as JSON
//!   cargo run --example onnx_cuts -- MODEL.onnx OUT_DIR 3 17         # split at cuts 3 and 17
//!
//! Splitting writes `OUT_DIR/shard{k}.onnx` and prints the max abs difference of the chained
//! shards against the original on one pseudo-random input.

use anyhow::{bail, Context, Result};
use cnnpc::onnx::graph::Graph;
use cnnpc::onnx::tract_ndarray::ArrayD;
use cnnpc::onnx::{list_cuts, split, testmodels::Lcg, verify_chain};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: onnx_cuts MODEL.onnx [OUT_DIR CUT...]")
    };
    let model = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let cuts = list_cuts(&model)?;
    let Some(out_dir) = args.get(1) else {
        println!("{}", serde_json::to_string_pretty(&cuts)?);
        return Ok(());
    };
    let mut chosen = Vec::new();
    for a in &args[2..] {
        let i: usize = a.parse().with_context(|| format!("cut index `{a}`"))?;
        chosen.push(
            cuts.get(i)
                .with_context(|| format!("no cut {i}"))?
                .tensor_names(),
        );
    }
    let shards = split(&model, &chosen)?;
    std::fs::create_dir_all(out_dir)?;
    for (k, s) in shards.iter().enumerate() {
        std::fs::write(format!("{out_dir}/shard{k}.onnx"), s)?;
    }
    // One input per graph input, batch 1 where the batch is symbolic.
    let graph = Graph::from_bytes(&model)?;
    let mut rng = Lcg(5);
    let mut inputs = Vec::new();
    for name in graph.inputs() {
        let info = graph.require_info(name)?;
        let shape: Vec<usize> = info
            .dims
            .iter()
            .map(|d| d.fixed().map_or(1, |v| v as usize))
            .collect();
        let n = shape.iter().product();
        inputs.push(ArrayD::from_shape_vec(shape, rng.vec(n, 1.0))?);
    }
    let t = std::time::Instant::now();
    let diff = verify_chain(&model, &shards, &inputs)?;
    println!(
        "{} shards in {out_dir}; max abs diff {diff:e} ({:?})",
        shards.len(),
        t.elapsed()
    );
    Ok(())
}
