//! Builders of ONNX protobuf pieces (tensors, nodes, attributes, value infos), where the
//! surgery needs new ones (pruning writes 1x1 convolutions and sliced weights), as tract keeps
//! its `pb_helpers`.

use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

use super::graph::{type_from_info, Dim, TensorInfo, ONNX_FLOAT};

/// A float tensor proto named `name`.
pub fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: pb::TensorProto) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

/// A float value info with a symbolic batch `N` and the given other dims.
pub fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    let mut all = vec![Dim::Sym("N".into())];
    all.extend(dims.iter().map(|&d| Dim::Fixed(d)));
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(type_from_info(&TensorInfo {
            elem_type: ONNX_FLOAT,
            dims: all,
        })),
        ..Default::default()
    }
}
