//! Slicing the producer of a pruned cut: after [`apply_pruning`](super::prune::apply_pruning)
//! the head still computes every channel of the cut tensor and a `Gather` keeps some. When the
//! cut tensor comes straight from a Conv (`group = 1`) through channel-wise ops, the Conv's
//! output channels, its bias and any BatchNormalization's parameters can be cut to the kept
//! channels instead, and the Gather goes: the head (on the slowest device) then computes only
//! what it sends. The outputs are the same values, so accuracy measured either way is the
//! same. Pure: a model in, a model out.

use std::collections::HashSet;

use tract_onnx::pb::{self, ModelProto};

use super::graph::{Graph, CHANNELWISE_UNARY};

/// The channel-wise ops ([`CHANNELWISE_UNARY`]) that carry per-channel parameters: of these
/// only BatchNormalization is sliced (its four vectors); the others keep the Gather.
const PER_CHANNEL: &[&str] = &["BatchNormalization", "PRelu", "InstanceNormalization"];

/// What slicing one cut tensor changes.
struct Slice {
    gather: usize,
    /// Initializers to cut to the kept rows (the Conv's weight and bias, BN parameters).
    rows: Vec<String>,
    /// Tensors whose declared shapes go stale (the chain's outputs).
    stale: Vec<String>,
    /// The chain's last node, whose output becomes the cut tensor.
    last: (usize, usize),
}

/// The first `f32` values of an initializer, raw or typed.
fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if t.raw_data.len() % 4 != 0 {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

/// The Conv whose output channels `tensor` is, when that Conv (`group = 1`) and every
/// channel-wise op between them can be cut to some of the channels and nothing else reads the
/// tensors on the way: (the Conv, the initializers to cut row-wise, the chain's outputs from
/// the Conv's on).
pub fn sliceable(
    graph: &Graph,
    tensor: &str,
    channels: usize,
) -> Option<(usize, Vec<String>, Vec<String>)> {
    let (conv, through) = graph.producer_conv(tensor)?;
    let node = &graph.nodes()[conv];
    let group = node
        .attribute
        .iter()
        .find(|a| a.name == "group")
        .map_or(1, |a| a.i);
    if group != 1 {
        return None;
    }
    let mut rows = Vec::new();
    let sole = |name: &str| graph.consumers(name).len() == 1;
    let weight = node.input.get(1)?;
    let w = graph.initializer(weight)?;
    if w.dims.first().copied() != Some(channels as i64) || !sole(weight) {
        return None;
    }
    rows.push(weight.clone());
    if let Some(b) = node.input.get(2).filter(|b| !b.is_empty()) {
        if graph.initializer(b)?.dims != [channels as i64] || !sole(b) {
            return None;
        }
        rows.push(b.clone());
    }
    let mut stale = vec![node.output.first()?.clone()];
    for &n in through.iter().rev() {
        let op = &graph.nodes()[n];
        match op.op_type.as_str() {
            "BatchNormalization" => {
                for p in op.input.iter().skip(1) {
                    if graph.initializer(p)?.dims != [channels as i64] || !sole(p) {
                        return None;
                    }
                    rows.push(p.clone());
                }
            }
            t if CHANNELWISE_UNARY.contains(&t) && !PER_CHANNEL.contains(&t) => {}
            _ => return None,
        }
        stale.push(op.output.first()?.clone());
    }
    // Every tensor on the way feeds only the next op: nothing else sees all channels.
    for t in &stale[..stale.len() - 1] {
        if !sole(t) || graph.outputs().contains(t) {
            return None;
        }
    }
    Some((conv, rows, stale))
}

/// How slicing `tensor` (gathered from `full` by a Gather) would go, if it can: `None` leaves
/// the Gather in place.
fn plan(graph: &Graph, tensor: &str, full: &str, channels: usize) -> Option<Slice> {
    let (gather, _) = graph.producer(tensor)?;
    if graph.nodes()[gather].op_type != "Gather" || graph.consumers(full) != [gather] {
        return None; // the head reads the full tensor elsewhere
    }
    let (_, rows, stale) = sliceable(graph, full, channels)?;
    let last = graph.producer(full)?;
    Some(Slice {
        gather,
        rows,
        stale,
        last,
    })
}

/// Slices the producers of `cuts` (cut tensor, its full tensor, channels, kept channels
/// ascending) where [`plan`] allows; returns the model and how many were sliced.
pub fn slice_producers(
    mut model: ModelProto,
    cuts: &[(String, String, usize, Vec<usize>)],
) -> Result<(ModelProto, usize), super::OnnxError> {
    let graph = Graph::new(model.clone())?;
    let plans: Vec<(Slice, &Vec<usize>, &String)> = cuts
        .iter()
        .filter_map(|(t, full, c, kept)| plan(&graph, t, full, *c).map(|s| (s, kept, t)))
        .collect();
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| super::OnnxError::Invalid("model has no graph".into()))?;
    let mut drop_nodes = HashSet::new();
    let mut drop_inits = HashSet::new();
    for (s, kept, tensor) in &plans {
        for name in &s.rows {
            let init = g
                .initializer
                .iter_mut()
                .find(|i| &i.name == name)
                .ok_or_else(|| super::OnnxError::Invalid(format!("no initializer {name}")))?;
            let values = floats(init).ok_or_else(|| {
                super::OnnxError::BadInput(format!("`{name}` is not a float initializer"))
            })?;
            let rows = init.dims[0] as usize;
            let per = values.len() / rows.max(1);
            let sliced: Vec<f32> = kept
                .iter()
                .flat_map(|&k| values[k * per..(k + 1) * per].iter().copied())
                .collect();
            init.dims[0] = kept.len() as i64;
            init.raw_data.clear();
            init.float_data = sliced;
        }
        let (node, slot) = s.last;
        g.node[node].output[slot] = (*tensor).clone();
        drop_nodes.insert(s.gather);
        if let Some(idx) = g.node[s.gather].input.get(1) {
            drop_inits.insert(idx.clone());
        }
        let stale: HashSet<&String> = s.stale.iter().collect();
        g.value_info
            .retain(|v| !stale.contains(&v.name) && &v.name != *tensor);
    }
    let nodes = std::mem::take(&mut g.node);
    g.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop_nodes.contains(i))
        .map(|(_, n)| n)
        .collect();
    g.initializer.retain(|i| !drop_inits.contains(&i.name));
    g.input.retain(|i| !drop_inits.contains(&i.name));
    Ok((model, plans.len()))
}
