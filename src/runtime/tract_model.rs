//! The real [`ShardModel`]: one ONNX shard run by tract, loaded once.

use crate::onnx::graph::Graph;
use crate::onnx::verify::Runner;
use crate::runtime::server::{ShardModel, Tensor};
use tract_onnx::prelude::{tract_ndarray, TValue, TVec, Tensor as TractTensor};

/// A shard with a single input, planned by tract for one fixed input shape (batch 1 where the
/// model's batch is symbolic): concrete shapes let tract optimise fully.
pub struct TractShard {
    name: String,
    runner: Runner,
    input_shape: Vec<usize>,
}

impl TractShard {
    pub fn load(name: &str, model: &[u8]) -> Result<TractShard, String> {
        let graph = Graph::from_bytes(model).map_err(|e| e.to_string())?;
        let [input] = graph.inputs() else {
            return Err(format!(
                "a shard must have exactly one input, this one has {}",
                graph.inputs().len()
            ));
        };
        let info = graph.require_info(input).map_err(|e| e.to_string())?;
        let input_shape = crate::onnx::profile::fixed_shape(&info.dims);
        let example = TractTensor::zero::<f32>(&input_shape).map_err(|e| e.to_string())?;
        let runner = Runner::new(model, &[&example]).map_err(|e| e.to_string())?;
        if runner.outputs.len() != 1 {
            return Err(format!(
                "a shard must have exactly one output, this one has {}",
                runner.outputs.len()
            ));
        }
        Ok(TractShard {
            name: name.to_string(),
            runner,
            input_shape,
        })
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
}

impl ShardModel for TractShard {
    fn run(&self, input: Tensor) -> Result<Tensor, String> {
        if input.shape != self.input_shape {
            return Err(format!(
                "input shape {:?} does not match the shard's {:?}",
                input.shape, self.input_shape
            ));
        }
        let array = tract_ndarray::ArrayD::from_shape_vec(input.shape, input.data)
            .map_err(|e| e.to_string())?;
        let feed: TVec<TValue> = tvec_of(TractTensor::from(array).into());
        let out = self.runner.run(feed).map_err(|e| e.to_string())?;
        let t = out[0].cast_to::<f32>().map_err(|e| e.to_string())?;
        // A tract tensor is contiguous: one copy of its slice. (An ndarray iterator over the
        // dynamic-rank view cost 3 ns per value: 0.6 ms of the demo's 1.5 ms stem.)
        let data = t
            .try_as_plain_ram()
            .and_then(|p| p.as_slice::<f32>())
            .map_err(|e| e.to_string())?
            .to_vec();
        Ok(Tensor {
            shape: t.shape().to_vec(),
            data,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Option<&[usize]> {
        Some(&self.input_shape)
    }
}

fn tvec_of(v: TValue) -> TVec<TValue> {
    let mut t = TVec::new();
    t.push(v);
    t
}
