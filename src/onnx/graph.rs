//! A decoded ONNX model with the indexes graph surgery needs: topological order, producer and
//! consumer maps, weights, and the type/shape of every tensor.
//!
//! Shapes come from tract's type inference (run with `with_ignore_value_info(true)`, because
//! exported models can carry stale `value_info`), completed by what the file declares (graph
//! inputs/outputs, `value_info`, initializers, `Constant` nodes) for tensors tract has no fact
//! for — e.g. when tract cannot type the whole model.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::OnceLock;

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb::{self, ModelProto, NodeProto};
use tract_onnx::prelude::*;

use super::error::{tract_err, OnnxError};

/// One dimension of a tensor shape: a number, or a symbol (a dynamic batch size, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Sym(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            Dim::Sym(_) => None,
        }
    }
}

/// Element type (ONNX `TensorProto.DataType` code) and shape of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub elem_type: i32,
    pub dims: Vec<Dim>,
}

/// ONNX `TensorProto.DataType.FLOAT`.
pub const ONNX_FLOAT: i32 = 1;

/// Ops that map each channel to itself, one activation in and one out: a cut right before one of
/// them carries the same channels as a cut right after it, and the Conv that produced those
/// channels is found by walking back through them.
pub const CHANNELWISE_UNARY: &[&str] = &[
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Identity",
    "InstanceNormalization",
];

/// A decoded model plus indexes. Node indices are positions in `proto.graph.node`.
pub struct Graph {
    proto: ModelProto,
    order: Vec<usize>,
    position: Vec<usize>,
    producer: HashMap<String, (usize, usize)>,
    consumers: HashMap<String, Vec<usize>>,
    initializers: HashMap<String, usize>,
    weights: HashSet<String>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    shapes: OnceLock<Shapes>,
}

struct Shapes {
    infos: HashMap<String, TensorInfo>,
    /// Why tract's inference failed, if it did (reported with missing shapes).
    inference_error: Option<String>,
}

/// Decode bytes as an ONNX `ModelProto`; a truncated or corrupt file is an error, not a panic.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Decode("empty input".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    if model.graph.is_none() {
        return Err(OnnxError::Decode(
            "no graph in the model (not an ONNX model, or truncated)".into(),
        ));
    }
    Ok(model)
}

/// Every tensor name a node reads: its inputs plus the outer-scope names its subgraphs (If, Loop,
/// Scan bodies) use, so those are never cut away from it.
pub fn node_inputs(node: &NodeProto) -> Vec<String> {
    let mut names: Vec<String> = node
        .input
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for attr in &node.attribute {
        for g in attr.g.iter().chain(attr.graphs.iter()) {
            outer_refs(g, &mut names);
        }
    }
    names
}

fn outer_refs(g: &pb::GraphProto, out: &mut Vec<String>) {
    let mut local: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    local.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        local.extend(n.output.iter().map(String::as_str));
    }
    for n in &g.node {
        for name in node_inputs(n) {
            if !local.contains(name.as_str()) && !out.contains(&name) {
                out.push(name);
            }
        }
    }
}

impl Graph {
    pub fn from_bytes(bytes: &[u8]) -> Result<Graph, OnnxError> {
        Graph::new(decode(bytes)?)
    }

    pub fn new(proto: ModelProto) -> Result<Graph, OnnxError> {
        let g = proto
            .graph
            .as_ref()
            .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
        let initializers: HashMap<String, usize> = g
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let inputs: Vec<String> = g
            .input
            .iter()
            .filter(|v| !initializers.contains_key(&v.name))
            .map(|v| v.name.clone())
            .collect();
        let outputs: Vec<String> = g.output.iter().map(|v| v.name.clone()).collect();

        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in g.node.iter().enumerate() {
            for (slot, out) in node
                .output
                .iter()
                .enumerate()
                .filter(|(_, o)| !o.is_empty())
            {
                if initializers.contains_key(out) || inputs.contains(out) {
                    return Err(OnnxError::Invalid(format!(
                        "node {} writes `{out}`, which is a graph input or initializer",
                        node_label(node, i)
                    )));
                }
                if producer.insert(out.clone(), (i, slot)).is_some() {
                    return Err(OnnxError::Invalid(format!(
                        "tensor `{out}` has two producers"
                    )));
                }
            }
            for inp in node_inputs(node) {
                let list = consumers.entry(inp).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        for (name, users) in &consumers {
            if !producer.contains_key(name)
                && !initializers.contains_key(name)
                && !inputs.contains(name)
            {
                let i = users[0];
                return Err(OnnxError::Invalid(format!(
                    "node {} reads `{name}`, which nothing produces",
                    node_label(&g.node[i], i)
                )));
            }
        }
        for out in &outputs {
            if !producer.contains_key(out)
                && !inputs.contains(out)
                && !initializers.contains_key(out)
            {
                return Err(OnnxError::Invalid(format!(
                    "graph output `{out}` is never produced"
                )));
            }
        }

        let order = topo_order(g, &producer)?;
        let mut position = vec![0; g.node.len()];
        for (p, &n) in order.iter().enumerate() {
            position[n] = p;
        }

        // Weights: initializers and everything computed from them alone (Constant nodes, and
        // e.g. a Reshape of a constant). Such tensors never cross a cut: a shard recomputes them.
        let mut weights: HashSet<String> = initializers.keys().cloned().collect();
        for &n in &order {
            let node = &g.node[n];
            if node_inputs(node).iter().all(|i| weights.contains(i)) {
                weights.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
            }
        }

        Ok(Graph {
            proto,
            order,
            position,
            producer,
            consumers,
            initializers,
            weights,
            inputs,
            outputs,
            shapes: OnceLock::new(),
        })
    }

    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    pub fn graph(&self) -> &pb::GraphProto {
        // `new` checked that the graph exists; an empty default keeps this total anyway.
        static EMPTY: OnceLock<pb::GraphProto> = OnceLock::new();
        self.proto
            .graph
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    pub fn nodes(&self) -> &[NodeProto] {
        &self.graph().node
    }

    /// Node indices in a topological order: the file's order when it is already topological
    /// (ONNX requires it), otherwise the closest one (Kahn's algorithm preferring file order).
    pub fn topo_order(&self) -> &[usize] {
        &self.order
    }

    /// Position of a node in [`Self::topo_order`].
    pub fn position(&self, node: usize) -> usize {
        self.position[node]
    }

    /// Graph inputs that are not initializers, in file order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// The node (and its output slot) that writes `tensor`; `None` for graph inputs and
    /// initializers.
    pub fn producer(&self, tensor: &str) -> Option<(usize, usize)> {
        self.producer.get(tensor).copied()
    }

    /// The nodes that read `tensor`, each once, in file order.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn initializer(&self, name: &str) -> Option<&pb::TensorProto> {
        self.initializers
            .get(name)
            .map(|&i| &self.graph().initializer[i])
    }

    /// True for initializers, Constant outputs and anything computed from those alone.
    pub fn is_weight(&self, tensor: &str) -> bool {
        self.weights.contains(tensor)
    }

    /// True when the name is known at all (graph input, initializer or some node's output).
    pub fn has_tensor(&self, tensor: &str) -> bool {
        self.producer.contains_key(tensor)
            || self.initializers.contains_key(tensor)
            || self.inputs.iter().any(|i| i == tensor)
    }

    /// Activation inputs of a node (weights left out), in input order.
    pub fn activation_inputs(&self, node: usize) -> Vec<String> {
        node_inputs(&self.nodes()[node])
            .into_iter()
            .filter(|i| !self.is_weight(i))
            .collect()
    }

    /// The Conv whose output channels `tensor` carries, walking back through channel-wise unary
    /// ops ([`CHANNELWISE_UNARY`]); returns the Conv node and the nodes passed on the way (nearest
    /// first). `None` when the tensor does not come from a Conv that way (an Add, a graph input).
    pub fn producer_conv(&self, tensor: &str) -> Option<(usize, Vec<usize>)> {
        let mut through = Vec::new();
        let mut current = tensor.to_string();
        loop {
            let (n, _) = self.producer(&current)?;
            let node = &self.nodes()[n];
            if node.op_type == "Conv" {
                return Some((n, through));
            }
            if !CHANNELWISE_UNARY.contains(&node.op_type.as_str()) {
                return None;
            }
            let mut acts = self.activation_inputs(n);
            if acts.len() != 1 {
                return None;
            }
            through.push(n);
            current = acts.swap_remove(0);
        }
    }

    /// The nodes that read the channels of `tensor`, walking forward through channel-wise unary
    /// ops: the Convs whose input channels pruning must slice, plus any other reader (an Add, a
    /// Concat, a pool) where pruning needs care. Each node once, in topological order; the
    /// channel-wise ops passed are not included (nor is a graph output: check that separately).
    pub fn channel_readers(&self, tensor: &str) -> Vec<usize> {
        let mut readers = Vec::new();
        let mut stack = vec![tensor.to_string()];
        let mut seen = HashSet::new();
        while let Some(t) = stack.pop() {
            for &n in self.consumers(&t) {
                if !seen.insert(n) {
                    continue;
                }
                let node = &self.nodes()[n];
                if CHANNELWISE_UNARY.contains(&node.op_type.as_str())
                    && self.activation_inputs(n).len() == 1
                {
                    stack.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
                } else {
                    readers.push(n);
                }
            }
        }
        readers.sort_by_key(|&n| self.position(n));
        readers
    }

    /// Type and shape of a tensor, if known (see the module doc for where it comes from).
    pub fn tensor_info(&self, tensor: &str) -> Option<&TensorInfo> {
        self.shapes().infos.get(tensor)
    }

    /// Like [`Self::tensor_info`], but an error naming the tensor (and why inference failed).
    pub fn require_info(&self, tensor: &str) -> Result<&TensorInfo, OnnxError> {
        let shapes = self.shapes();
        shapes
            .infos
            .get(tensor)
            .ok_or_else(|| match &shapes.inference_error {
                Some(e) => {
                    OnnxError::MissingShape(format!("{tensor}` (tract inference failed: {e})`"))
                }
                None => OnnxError::MissingShape(tensor.to_string()),
            })
    }

    /// Why tract's shape inference failed on this model, if it did.
    pub fn inference_error(&self) -> Option<&str> {
        self.shapes().inference_error.as_deref()
    }

    fn shapes(&self) -> &Shapes {
        self.shapes.get_or_init(|| {
            let mut infos = declared_infos(&self.proto);
            let inference_error = match inferred_infos(&self.proto) {
                Ok(inferred) => {
                    infos.extend(inferred);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            Shapes {
                infos,
                inference_error,
            }
        })
    }
}

fn node_label(node: &NodeProto, i: usize) -> String {
    if node.name.is_empty() {
        format!("#{i} ({})", node.op_type)
    } else {
        format!("`{}` ({})", node.name, node.op_type)
    }
}

/// Kahn's algorithm, always taking the ready node that comes first in the file.
fn topo_order(
    g: &pb::GraphProto,
    producer: &HashMap<String, (usize, usize)>,
) -> Result<Vec<usize>, OnnxError> {
    let n = g.node.len();
    let mut indegree = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.node.iter().enumerate() {
        let mut deps: Vec<usize> = node_inputs(node)
            .iter()
            .filter_map(|t| producer.get(t).map(|p| p.0))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        indegree[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    if order.len() != n {
        return Err(OnnxError::Invalid("the graph has a cycle".into()));
    }
    Ok(order)
}

/// Convert an ONNX type to a [`TensorInfo`]; `None` without an element type or a shape.
pub fn info_from_type(t: Option<&pb::TypeProto>) -> Option<TensorInfo> {
    let pb::type_proto::Value::TensorType(tt) = t?.value.as_ref()?;
    if tt.elem_type == 0 {
        return None;
    }
    let dims = tt
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                Dim::Fixed(*v)
            }
            Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                Dim::Sym(p.clone())
            }
            _ => Dim::Sym("?".into()),
        })
        .collect();
    Some(TensorInfo {
        elem_type: tt.elem_type,
        dims,
    })
}

/// Build an ONNX `TypeProto` (tensor type) from a [`TensorInfo`].
pub fn type_from_info(info: &TensorInfo) -> pb::TypeProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = info
        .dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v),
                Dim::Sym(s) => Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: info.elem_type,
            shape: Some(pb::TensorShapeProto { dim }),
        })),
        ..Default::default()
    }
}

fn declared_infos(model: &ModelProto) -> HashMap<String, TensorInfo> {
    let mut infos = HashMap::new();
    let Some(g) = model.graph.as_ref() else {
        return infos;
    };
    for v in g.value_info.iter().chain(&g.output).chain(&g.input) {
        if let Some(info) = info_from_type(v.r#type.as_ref()) {
            infos.insert(v.name.clone(), info);
        }
    }
    let tensor_info = |t: &pb::TensorProto| TensorInfo {
        elem_type: t.data_type,
        dims: t.dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    };
    for t in &g.initializer {
        infos.insert(t.name.clone(), tensor_info(t));
    }
    for n in g.node.iter().filter(|n| n.op_type == "Constant") {
        if let (Some(out), Some(t)) = (
            n.output.first(),
            n.attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref()),
        ) {
            infos.insert(out.clone(), tensor_info(t));
        }
    }
    infos
}

/// tract's view of every named tensor. Graph input dims that are not plain numbers become fresh
/// symbols first (tract cannot parse some exporters' dim_params, e.g. `DynamicDimension.0`, and
/// would leave them unknown), and are renamed back afterwards.
fn inferred_infos(model: &ModelProto) -> Result<HashMap<String, TensorInfo>, OnnxError> {
    use pb::tensor_shape_proto::dimension::Value;
    let mut model = model.clone();
    let mut renames: HashMap<String, String> = HashMap::new();
    if let Some(g) = model.graph.as_mut() {
        let inits: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        for v in g.input.iter_mut().filter(|v| !inits.contains(&v.name)) {
            let Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(tt)),
                ..
            }) = v.r#type.as_mut()
            else {
                continue;
            };
            for d in tt.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
                let original = match &d.value {
                    Some(Value::DimValue(v)) if *v >= 0 => continue,
                    Some(Value::DimParam(p)) if !p.is_empty() => p.clone(),
                    _ => "?".to_string(),
                };
                // Same original name, same symbol: inputs that share a batch dim keep sharing it.
                let sym = match renames.iter().find(|(_, o)| **o == original) {
                    Some((s, _)) => s.clone(),
                    None => {
                        let s = format!("cnnpc_sym{}", renames.len());
                        renames.insert(s.clone(), original);
                        s
                    }
                };
                d.value = Some(Value::DimParam(sym));
            }
        }
    }
    let typed = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(&model)
        .and_then(|m| m.into_typed())
        .map_err(tract_err)?;
    let mut infos = HashMap::new();
    for node in typed.nodes() {
        for slot in 0..node.outputs.len() {
            let outlet = OutletId::new(node.id, slot);
            let Some(label) = typed.outlet_label(outlet) else {
                continue;
            };
            let fact = &node.outputs[slot].fact;
            let Some(elem_type) = onnx_elem_type(fact.datum_type) else {
                continue;
            };
            let dims = fact
                .shape
                .iter()
                .map(|d| match d.to_i64() {
                    Ok(v) => Dim::Fixed(v),
                    Err(_) => {
                        let s = d.to_string();
                        // Unnamed dims keep the generated symbol: "?" would read as unknown.
                        match renames.get(&s) {
                            Some(original) if original != "?" => Dim::Sym(original.clone()),
                            _ => Dim::Sym(s),
                        }
                    }
                })
                .collect();
            infos.insert(label.to_string(), TensorInfo { elem_type, dims });
        }
    }
    Ok(infos)
}

/// ONNX data type code of a tract datum type (the common ones).
pub fn onnx_elem_type(dt: DatumType) -> Option<i32> {
    use pb::tensor_proto::DataType as D;
    let d = match dt {
        DatumType::F32 => D::Float,
        DatumType::F16 => D::Float16,
        DatumType::F64 => D::Double,
        DatumType::I8 => D::Int8,
        DatumType::I16 => D::Int16,
        DatumType::I32 => D::Int32,
        DatumType::I64 => D::Int64,
        DatumType::U8 => D::Uint8,
        DatumType::U16 => D::Uint16,
        DatumType::U32 => D::Uint32,
        DatumType::U64 => D::Uint64,
        DatumType::Bool => D::Bool,
        DatumType::TDim => D::Int64,
        _ => return None,
    };
    Some(d as i32)
}
