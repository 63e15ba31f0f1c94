//! Cut discovery: where a model can be split, and what crosses the cut.
//!
//! Walk the nodes in topological order. After position `p`, the *crossing set* is every
//! activation (not a weight/constant) produced at or before `p` (or a graph input) and read
//! after `p` (or a graph output). Shipping exactly that set lets the rest of the graph run:
//! on a chain it is one tensor, inside a residual block the skip tensor travels too.
//!
//! Not every position is a useful candidate. A position is listed when
//! 1. the set has 1..=[`MAX_CUT_TENSORS`] tensors, none a graph input or output (the raw input
//!    has its own row in the planner; nothing runs after an output);
//! 2. every tensor is 4-D (N, C, H, W as the convolutions see it), with a known channel count,
//!    not the output of a layout op ([`LAYOUT_OPS`]: Transpose, Reshape, ...), and all share the same H, W: this keeps the convolutional
//!    trunk and drops the head (flatten, gemm), layout changes, and squeeze-excitation side paths
//!    ([N, C, 1, 1] next to [N, C, H, W]);
//! 3. it is not followed by a channel-wise op (BatchNorm, Relu, HardSwish, ... see
//!    [`CHANNELWISE_UNARY`], or Mul/Add/Sub/Div with weights) that consumes a set tensor as its
//!    only reader: cutting after that op costs the same bytes, carries the same channels, and
//!    does not split a conv from its BN/activation;
//! 4. of consecutive positions with the same set, only the last is kept.
//!
//! `channels` is the sum of dim 1 over the set (for one tensor, its channel count). Models fed
//! NHWC (open-nsfw) transpose to NCHW before the first Conv, so dim 1 is still the conv's channel
//! axis; a cut tensor whose layout is not NCHW would be reported with dim 1 as is.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::OnnxError;
use super::graph::{Dim, Graph, CHANNELWISE_UNARY};

/// Ops that only move data around; their outputs are not listed as cuts (rule 2).
pub const LAYOUT_OPS: &[&str] = &[
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "DepthToSpace",
    "SpaceToDepth",
];

/// At most this many tensors cross a listed cut.
pub const MAX_CUT_TENSORS: usize = 2;

/// One tensor crossing a cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutTensor {
    pub name: String,
    pub shape: Vec<Dim>,
}

/// A candidate cut point: the set of tensors that carry everything the rest of the model needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// 0-based, in graph order (the planner's cut-point index).
    pub index: usize,
    /// The tensors, ordered by where they are produced (the skip tensor of a block first).
    pub tensors: Vec<CutTensor>,
    /// Channels crossing the cut: the sum of dim 1 over `tensors`.
    pub channels: u64,
    /// Name (or output) of the node producing the cut's last tensor, for humans.
    pub after_node: String,
}

impl Cut {
    pub fn tensor_names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }
}

/// Candidate cuts of a model, filtered as the module doc says.
pub fn list_cuts(model: &[u8]) -> Result<Vec<Cut>, OnnxError> {
    cuts_of(&Graph::from_bytes(model)?)
}

/// [`list_cuts`] on an already decoded graph.
pub fn cuts_of(graph: &Graph) -> Result<Vec<Cut>, OnnxError> {
    let sets = crossing_sets(graph);
    let order = graph.topo_order();
    let nodes = graph.nodes();
    let mut cuts: Vec<Cut> = Vec::new();
    let mut last_set: Option<&Vec<String>> = None;
    for (p, set) in sets.iter().enumerate() {
        // Rule 4: a node that neither reads nor writes a crossing tensor leaves the set as is.
        if sets.get(p + 1) == Some(set) {
            continue;
        }
        if last_set == Some(set) {
            continue;
        }
        if let Some(&next_id) = order.get(p + 1) {
            if is_channelwise(graph, next_id)
                && graph.activation_inputs(next_id).iter().any(|t| {
                    set.contains(t) && graph.consumers(t) == [next_id] && !is_output(graph, t)
                })
            {
                continue;
            }
        }
        let Some(tensors) = usable(graph, set) else {
            continue;
        };
        last_set = Some(set);
        let channels = tensors
            .iter()
            .filter_map(|t| t.shape.get(1).and_then(Dim::fixed))
            .sum::<i64>();
        // Named after the node producing the cut's last tensor: the node just before the cut
        // in topological order is often an unrelated Constant.
        let producer = tensors
            .last()
            .and_then(|t| graph.producer(&t.name))
            .map_or(order[p], |(n, _)| n);
        let node = &nodes[producer];
        let after_node = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        cuts.push(Cut {
            index: cuts.len(),
            tensors,
            channels: u64::try_from(channels).unwrap_or(0),
            after_node,
        });
    }
    Ok(cuts)
}

/// One activation in, same channels out: [`CHANNELWISE_UNARY`], or an elementwise arithmetic op
/// whose other operands are weights (a scale, a bias; Paddle exports dropout as `Mul` by a
/// constant).
fn is_channelwise(graph: &Graph, node: usize) -> bool {
    let op = graph.nodes()[node].op_type.as_str();
    CHANNELWISE_UNARY.contains(&op)
        || (["Mul", "Add", "Sub", "Div"].contains(&op) && graph.activation_inputs(node).len() == 1)
}

fn is_output(graph: &Graph, t: &str) -> bool {
    graph.outputs().iter().any(|o| o == t)
}

/// Rules 1 and 2: the set's tensors with shapes, or `None` when the set is not a candidate.
fn usable(graph: &Graph, set: &[String]) -> Option<Vec<CutTensor>> {
    if set.is_empty() || set.len() > MAX_CUT_TENSORS {
        return None;
    }
    let mut tensors = Vec::with_capacity(set.len());
    for name in set {
        if graph.inputs().contains(name) || is_output(graph, name) {
            return None;
        }
        // A layout op's output is not in the convs' NCHW (open-nsfw turns its NHWC input to NCHW
        // with a Transpose and its pooled features back with a Reshape); the cut before it
        // carries the same data.
        if graph
            .producer(name)
            .is_some_and(|(n, _)| LAYOUT_OPS.contains(&graph.nodes()[n].op_type.as_str()))
        {
            return None;
        }
        let info = graph.tensor_info(name)?;
        if info.dims.len() != 4 || info.dims[1].fixed().is_none() {
            return None;
        }
        tensors.push(CutTensor {
            name: name.clone(),
            shape: info.dims.clone(),
        });
    }
    let spatial = |t: &CutTensor| t.shape[2..].to_vec();
    if tensors.iter().any(|t| spatial(t) != spatial(&tensors[0])) {
        return None;
    }
    Some(tensors)
}

/// The crossing set after every position of the topological order (unfiltered), each ordered by
/// producer position then name. `result[p]` is the set after node `topo_order()[p]`.
pub fn crossing_sets(graph: &Graph) -> Vec<Vec<String>> {
    let order = graph.topo_order();
    let n = order.len();
    // Lifetime of every activation: [birth, death) in positions; graph inputs are born at "-1"
    // (stored as 0 with `p + 1` shifting below), graph outputs live to the end.
    let mut life: HashMap<String, (usize, usize)> = HashMap::new();
    for name in graph.inputs() {
        life.insert(name.clone(), (0, 0));
    }
    for (p, &node) in order.iter().enumerate() {
        for out in graph.nodes()[node].output.iter().filter(|o| !o.is_empty()) {
            if !graph.is_weight(out) {
                life.insert(out.clone(), (p + 1, p + 1));
            }
        }
    }
    for (p, &node) in order.iter().enumerate() {
        for t in graph.activation_inputs(node) {
            if let Some(l) = life.get_mut(&t) {
                l.1 = l.1.max(p + 1);
            }
        }
    }
    for o in graph.outputs() {
        if let Some(l) = life.get_mut(o) {
            l.1 = n + 1;
        }
    }
    let mut by_birth: Vec<(&String, &(usize, usize))> = life.iter().collect();
    by_birth.sort_by(|a, b| (a.1 .0, a.0).cmp(&(b.1 .0, b.0)));
    // Shifted positions: after node at position p is "time" p + 1; a tensor crosses it when
    // born at or before p + 1 and read (or output) strictly after.
    (0..n)
        .map(|p| {
            let t = p + 1;
            by_birth
                .iter()
                .filter(|(_, &(birth, death))| birth <= t && death > t)
                .map(|(name, _)| (*name).clone())
                .collect()
        })
        .collect()
}
