//! The model's input shape: most exported vision models declare `[N, 3, ?, ?]`, and nothing
//! downstream (cuts, profiling, splitting, the shards) can work without concrete spatial
//! dimensions. [`apply`] fixes them (bytes in, bytes out); without a shape, a model whose
//! non-batch dimensions are symbolic is refused with an error that says what to give.

use tract_onnx::pb::{self, tensor_shape_proto::dimension::Value};

use super::error::OnnxError;
use super::graph::{decode, Dim};
use prost::Message;

/// The model's one graph input: its name and declared dimensions.
pub fn input(model: &[u8]) -> Result<(String, Vec<Dim>), OnnxError> {
    let proto = decode(model)?;
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|v| !inits.contains(&v.name.as_str()))
        .collect();
    let [one] = inputs.as_slice() else {
        return Err(OnnxError::BadInput(format!(
            "cnnpc serves models with one input; this one has {}",
            inputs.len()
        )));
    };
    let dims = super::graph::info_from_type(one.r#type.as_ref())
        .map(|i| i.dims)
        .unwrap_or_default();
    Ok((one.name.clone(), dims))
}

fn show(dims: &[Dim]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Sym(s) if s.is_empty() || s == "?" => "?".into(),
            Dim::Sym(s) => s.clone(),
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// The model with its input's dimensions fixed to `shape` (batch included), or as it is when
/// `shape` is `None` and only the batch dimension is symbolic (taken as 1 where it must be).
/// A symbolic non-batch dimension without a shape, a shape of another rank, or one that
/// contradicts a fixed dimension is an error naming the input, its dimensions and the flag.
pub fn apply(model: &[u8], shape: Option<&[usize]>) -> Result<Vec<u8>, OnnxError> {
    let (name, dims) = input(model)?;
    let Some(shape) = shape else {
        if dims.iter().skip(1).any(|d| d.fixed().is_none()) {
            return Err(OnnxError::InputShape(format!(
                "model input `{name}` has symbolic dimensions {}: give its shape with \
                 --input-shape (spec.inputShape in a CollaborativeInference), e.g. {}",
                show(&dims),
                example(&dims)
            )));
        }
        return Ok(model.to_vec());
    };
    if shape.len() != dims.len() {
        return Err(OnnxError::InputShape(format!(
            "--input-shape {} has rank {}, but model input `{name}` is {} (rank {})",
            join(shape),
            shape.len(),
            show(&dims),
            dims.len()
        )));
    }
    for (i, (d, &s)) in dims.iter().zip(shape).enumerate() {
        if s == 0 {
            return Err(OnnxError::InputShape(format!(
                "--input-shape {}: dimension {i} is 0",
                join(shape)
            )));
        }
        if let Some(v) = d.fixed().filter(|v| *v > 0) {
            if v as usize != s {
                return Err(OnnxError::InputShape(format!(
                    "--input-shape {} contradicts model input `{name}` {}: dimension {i} is {v}",
                    join(shape),
                    show(&dims)
                )));
            }
        }
    }
    if dims.iter().all(|d| d.fixed().is_some_and(|v| v > 0)) {
        return Ok(model.to_vec());
    }
    let mut proto = decode(model)?;
    let g = proto
        .graph
        .as_mut()
        .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
    let v = g
        .input
        .iter_mut()
        .find(|v| v.name == name)
        .ok_or_else(|| OnnxError::Invalid(format!("input `{name}` vanished")))?;
    if let Some(pb::type_proto::Value::TensorType(tt)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(s) = tt.shape.as_mut() {
            for (d, &n) in s.dim.iter_mut().zip(shape) {
                d.value = Some(Value::DimValue(n as i64));
            }
        }
    }
    // Declared inner shapes may still name the old symbols: shapes come from inference
    // (`Graph` ignores value_info where tract can type the model), so drop them.
    g.value_info.clear();
    Ok(proto.encode_to_vec())
}

fn join(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `1,3,224,224` for `[N, 3, ?, ?]`: the fixed dims as they are, H and W as placeholders.
fn example(dims: &[Dim]) -> String {
    let d: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d.fixed() {
            Some(v) if v > 0 => v.to_string(),
            _ if i == 0 => "1".into(),
            _ => ["H", "W", "D"]
                .get(i.saturating_sub(2))
                .unwrap_or(&"?")
                .to_string(),
        })
        .collect();
    d.join(",")
}

/// Parses `1,3,224,224`.
pub fn parse(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{s:?} is not a shape like 1,3,224,224 (positive integers)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::models::chain_model_bytes;

    /// The chain model with its input's spatial dimensions made symbolic.
    fn symbolic() -> Vec<u8> {
        let mut m = decode(&chain_model_bytes()).unwrap();
        let g = m.graph.as_mut().unwrap();
        if let Some(pb::type_proto::Value::TensorType(tt)) =
            g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let dims = &mut tt.shape.as_mut().unwrap().dim;
            dims[2].value = Some(Value::DimParam("height".into()));
            dims[3].value = None;
        }
        m.encode_to_vec()
    }

    #[test]
    fn symbolic_spatial_dims_need_a_shape_and_get_it() {
        let m = symbolic();
        let e = apply(&m, None).unwrap_err().to_string();
        assert!(e.contains("model input `input`"), "{e}");
        assert!(e.contains("[N, 3, height, ?]"), "{e}");
        assert!(e.contains("--input-shape") && e.contains("1,3,H,W"), "{e}");
        let fixed = apply(&m, Some(&[1, 3, 16, 16])).unwrap();
        let (_, dims) = input(&fixed).unwrap();
        assert_eq!(dims, [1, 3, 16, 16].map(Dim::Fixed));
        // Now the cuts are there.
        assert!(!crate::onnx::list_cuts(&fixed).unwrap().is_empty());
        // A batch-only symbolic model is fine as it is, and untouched.
        let chain = chain_model_bytes();
        assert_eq!(apply(&chain, None).unwrap(), chain);
    }

    #[test]
    fn a_shape_that_contradicts_the_model_is_refused() {
        let m = symbolic();
        let e = apply(&m, Some(&[1, 3, 16])).unwrap_err().to_string();
        assert!(e.contains("rank 3") && e.contains("rank 4"), "{e}");
        let e = apply(&m, Some(&[1, 4, 16, 16])).unwrap_err().to_string();
        assert!(e.contains("dimension 1 is 3"), "{e}");
        let e = apply(&m, Some(&[1, 3, 0, 16])).unwrap_err().to_string();
        assert!(e.contains("dimension 2 is 0"), "{e}");
        assert_eq!(parse("1, 3,48,192"), Ok(vec![1, 3, 48, 192]));
        assert!(parse("1,3,x").is_err() && parse("1,0").is_err());
    }
}
