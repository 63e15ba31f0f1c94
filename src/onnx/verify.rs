//! Numerical check of a split: the chained shards against the original model, with tract.

use std::collections::HashMap;

use tract_onnx::prelude::*;

use super::error::{tract_err, OnnxError};
use super::graph::{decode, Graph};

/// A model ready to run on inputs of fixed shapes, with its input/output tensor names. Clones
/// share the plan; runs from several threads at once are independent.
#[derive(Clone)]
pub struct Runner {
    plan: Arc<TypedRunnableModel>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl Runner {
    /// Load `model` with every input fixed to the shape and type of `examples` (in graph input
    /// order): concrete shapes let tract optimise fully and sidestep symbolic batch dims.
    pub fn new(model: &[u8], examples: &[&Tensor]) -> Result<Runner, OnnxError> {
        let graph = Graph::from_bytes(model)?;
        let inputs = graph.inputs().to_vec();
        let outputs = graph.outputs().to_vec();
        if examples.len() != inputs.len() {
            return Err(OnnxError::BadInput(format!(
                "the model has {} input(s) ({}), {} given",
                inputs.len(),
                inputs.join(", "),
                examples.len()
            )));
        }
        let proto = decode(model)?;
        let mut m = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_proto_model(&proto)
            .map_err(tract_err)?;
        for (i, t) in examples.iter().enumerate() {
            m.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
                .map_err(tract_err)?;
        }
        let plan = m
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(tract_err)?;
        Ok(Runner {
            plan,
            inputs,
            outputs,
        })
    }

    /// Runs the model, then clears the AVX upper halves tract's kernels leave in use: the
    /// caller's own code (quantising and framing the outputs, reading the next input) would
    /// otherwise run several times slower ([`super::avx_state`]).
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, OnnxError> {
        let out = self.plan.run(inputs).map_err(tract_err);
        super::avx_state::clear_upper_halves();
        out
    }
}

/// Run `original` on `inputs` (one array per graph input, in order) and the `shards` chained
/// (each shard's inputs looked up by name among the original inputs and earlier shards'
/// outputs); return the largest absolute difference over all final outputs. NaN on one side
/// only counts as infinitely different.
pub fn verify_chain(
    original: &[u8],
    shards: &[Vec<u8>],
    inputs: &[tract_ndarray::ArrayD<f32>],
) -> Result<f32, OnnxError> {
    if shards.is_empty() {
        return Err(OnnxError::BadInput("no shards to verify".into()));
    }
    let tensors: Vec<Tensor> = inputs.iter().map(|a| Tensor::from(a.clone())).collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let reference = Runner::new(original, &refs)?;
    let expected = reference.run(tensors.iter().cloned().map(TValue::from).collect())?;

    let mut values: HashMap<String, TValue> = reference
        .inputs
        .iter()
        .cloned()
        .zip(tensors.into_iter().map(TValue::from))
        .collect();
    for (k, shard) in shards.iter().enumerate() {
        let names = Graph::from_bytes(shard)?.inputs().to_vec();
        let feed = names
            .iter()
            .map(|n| {
                values.get(n).cloned().ok_or_else(|| {
                    OnnxError::BadInput(format!(
                        "shard {k} needs `{n}`, which nothing before it makes"
                    ))
                })
            })
            .collect::<Result<TVec<TValue>, _>>()?;
        let refs: Vec<&Tensor> = feed.iter().map(|v| &**v).collect();
        let runner = Runner::new(shard, &refs)?;
        let out = runner.run(feed)?;
        values.extend(runner.outputs.iter().cloned().zip(out));
    }

    let mut max = 0f32;
    for (name, want) in reference.outputs.iter().zip(expected.iter()) {
        let got = values.get(name).ok_or_else(|| {
            OnnxError::BadInput(format!("no shard produces the model output `{name}`"))
        })?;
        max = max.max(max_abs_diff(want, got)?);
    }
    Ok(max)
}

/// Largest absolute elementwise difference of two tensors of the same shape (compared as f32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32, OnnxError> {
    if a.shape() != b.shape() {
        return Err(OnnxError::BadInput(format!(
            "shape mismatch: {:?} vs {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let a = a.cast_to::<f32>().map_err(tract_err)?;
    let b = b.cast_to::<f32>().map_err(tract_err)?;
    let a = a.to_plain_array_view::<f32>().map_err(tract_err)?;
    let b = b.to_plain_array_view::<f32>().map_err(tract_err)?;
    Ok(a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| {
        if x.is_nan() && y.is_nan() {
            m
        } else if x.is_nan() || y.is_nan() {
            f32::INFINITY
        } else {
            m.max((x - y).abs())
        }
    }))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::onnx::avx_state::upper_halves_in_use;
    use crate::testkit::models::{chain_model_bytes, input};

    fn chain_runner() -> (Runner, Tensor) {
        let x = Tensor::from(input(3, 1));
        let runner = Runner::new(&chain_model_bytes(), &[&x]).expect("the chain model loads");
        (runner, x)
    }

    /// The premise of clearing: tract's kernels return with the upper halves in use. If a tract
    /// upgrade cleans up after itself, this fails, and the clear can go.
    #[test]
    fn a_bare_tract_run_leaves_the_avx_upper_halves_in_use() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            panic!("this CPU has no AVX2: tract's x86 kernels, and this check, need it");
        }
        let (runner, x) = chain_runner();
        runner
            .plan
            .run(tvec![x.into()])
            .expect("the chain model runs");
        assert_eq!(upper_halves_in_use(), Some(true));
    }

    #[test]
    fn a_runner_leaves_the_avx_upper_halves_clear_for_the_code_after_it() {
        let (runner, x) = chain_runner();
        let out = runner.run(tvec![x.into()]).expect("the chain model runs");
        assert_eq!(upper_halves_in_use(), Some(false));
        assert_eq!(
            out[0].shape(),
            &[1, crate::testkit::models::CLASSES as usize]
        );
    }
}
