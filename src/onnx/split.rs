//! Splitting a model into chained shards at an ordered list of cuts.
//!
//! Shard `k` runs from cut `k-1` (the graph inputs for `k = 0`) to cut `k` (the graph outputs for
//! the last shard). Its graph inputs are exactly the previous cut's tensors and its outputs
//! exactly the next cut's, named as in the original, so shard `k`'s outputs are shard `k+1`'s
//! inputs by name and in order. Every boundary is typed and shaped.

use std::collections::HashSet;

use prost::Message;
use tract_onnx::pb::{self, ModelProto, ValueInfoProto};

use super::error::OnnxError;
use super::graph::{node_inputs, type_from_info, Graph};

/// Split `model` at `cuts` (each a set of tensor names, in graph order): `cuts.len() + 1`
/// encoded shards.
pub fn split(model: &[u8], cuts: &[Vec<String>]) -> Result<Vec<Vec<u8>>, OnnxError> {
    let graph = Graph::from_bytes(model)?;
    Ok(split_graph(&graph, cuts)?
        .iter()
        .map(Message::encode_to_vec)
        .collect())
}

/// [`split`] on a decoded graph, returning the shard protos (for further editing).
pub fn split_graph(graph: &Graph, cuts: &[Vec<String>]) -> Result<Vec<ModelProto>, OnnxError> {
    validate(graph, cuts)?;
    let mut shards = Vec::with_capacity(cuts.len() + 1);
    for k in 0..=cuts.len() {
        let from: Vec<String> = match k {
            0 => graph.inputs().to_vec(),
            _ => cuts[k - 1].clone(),
        };
        let to: Vec<String> = match cuts.get(k) {
            Some(c) => c.clone(),
            None => graph.outputs().to_vec(),
        };
        // The error names the cut whose part misses a tensor: cut k-1 did not separate.
        let nodes = nodes_between(graph, &from, &to, k.saturating_sub(1))?;
        shards.push(build_shard(graph, k, &from, &to, &nodes, k == 0)?);
    }
    Ok(shards)
}

/// Names exist, are activations, no empty cut, and each cut lies after the previous one.
fn validate(graph: &Graph, cuts: &[Vec<String>]) -> Result<(), OnnxError> {
    for (i, cut) in cuts.iter().enumerate() {
        if cut.is_empty() {
            return Err(OnnxError::EmptyCut(i));
        }
        for t in cut {
            if !graph.has_tensor(t) {
                return Err(OnnxError::UnknownTensor(t.clone(), i));
            }
            if graph.is_weight(t) {
                return Err(OnnxError::NotActivation(t.clone(), i));
            }
        }
    }
    // Cut i is after cut i-1 when none of its tensors is upstream of (or equal to) a tensor of
    // cut i-1 — except a tensor carried through both (a skip crossing two cuts in one block).
    for i in 1..cuts.len() {
        let earlier: HashSet<&String> = cuts[i - 1].iter().collect();
        let upstream = ancestors(graph, &cuts[i - 1]);
        if cuts[i]
            .iter()
            .any(|t| !earlier.contains(t) && upstream.contains(t))
            || cuts[i].iter().all(|t| earlier.contains(t))
        {
            return Err(OnnxError::OutOfOrder {
                earlier: i - 1,
                later: i,
            });
        }
    }
    Ok(())
}

/// Every tensor the given tensors are computed from (not including themselves).
fn ancestors(graph: &Graph, tensors: &[String]) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack: Vec<String> = tensors.to_vec();
    while let Some(t) = stack.pop() {
        if let Some((n, _)) = graph.producer(&t) {
            for i in node_inputs(&graph.nodes()[n]) {
                if seen.insert(i.clone()) {
                    stack.push(i);
                }
            }
        }
    }
    seen
}

/// The nodes (in topological order) that compute `to` from `from`, walking back from `to` and
/// stopping at `from`. Reaching a graph input that is not in `from` means `from` does not
/// separate: cut `cut` is reported.
fn nodes_between(
    graph: &Graph,
    from: &[String],
    to: &[String],
    cut: usize,
) -> Result<Vec<usize>, OnnxError> {
    let boundary: HashSet<&String> = from.iter().collect();
    // Activations computed before `from`: needing one that is not in `from` means the cut
    // leaves it behind (reported by name, nearer to the cause than the graph input).
    let upstream = ancestors(graph, from);
    let mut seen: HashSet<String> = HashSet::new();
    let mut nodes: HashSet<usize> = HashSet::new();
    let mut stack: Vec<String> = to.to_vec();
    while let Some(t) = stack.pop() {
        if boundary.contains(&t) || !seen.insert(t.clone()) {
            continue;
        }
        if upstream.contains(&t) && !graph.is_weight(&t) {
            return Err(OnnxError::NotSeparating { cut, missing: t });
        }
        match graph.producer(&t) {
            Some((n, _)) => {
                if nodes.insert(n) {
                    stack.extend(node_inputs(&graph.nodes()[n]));
                }
            }
            None if graph.initializer(&t).is_some() => {}
            None => return Err(OnnxError::NotSeparating { cut, missing: t }),
        }
    }
    let mut ordered: Vec<usize> = nodes.into_iter().collect();
    ordered.sort_by_key(|&n| graph.position(n));
    Ok(ordered)
}

fn typed_value_info(graph: &Graph, name: &str) -> Result<ValueInfoProto, OnnxError> {
    let info = graph.require_info(name)?;
    Ok(ValueInfoProto {
        name: name.to_string(),
        r#type: Some(type_from_info(info)),
        ..Default::default()
    })
}

fn build_shard(
    graph: &Graph,
    k: usize,
    from: &[String],
    to: &[String],
    nodes: &[usize],
    first: bool,
) -> Result<ModelProto, OnnxError> {
    let src = graph.graph();
    let used: HashSet<String> = nodes
        .iter()
        .flat_map(|&n| node_inputs(&graph.nodes()[n]))
        .chain(to.iter().cloned())
        .collect();
    // The first shard keeps only the original inputs it reads; later shards take the whole cut,
    // so shard k-1's outputs always equal shard k's inputs.
    let inputs: Vec<&String> = if first {
        from.iter().filter(|t| used.contains(*t)).collect()
    } else {
        from.iter().collect()
    };
    let initializer: Vec<pb::TensorProto> = src
        .initializer
        .iter()
        .filter(|t| used.contains(&t.name))
        .cloned()
        .collect();

    let mut input = inputs
        .iter()
        .map(|t| typed_value_info(graph, t))
        .collect::<Result<Vec<_>, _>>()?;
    if graph.proto().ir_version < 4 {
        // Before IR 4 every initializer must also be declared as a graph input.
        for t in &initializer {
            input.push(typed_value_info(graph, &t.name)?);
        }
    }
    let output = to
        .iter()
        .map(|t| typed_value_info(graph, t))
        .collect::<Result<Vec<_>, _>>()?;

    let produced: HashSet<&String> = nodes
        .iter()
        .flat_map(|&n| graph.nodes()[n].output.iter())
        .collect();
    let boundary: HashSet<&String> = from.iter().chain(to).collect();
    let value_info = src
        .value_info
        .iter()
        .filter(|v| produced.contains(&v.name) && !boundary.contains(&v.name))
        .cloned()
        .collect();

    let g = pb::GraphProto {
        node: nodes.iter().map(|&n| graph.nodes()[n].clone()).collect(),
        name: format!(
            "{}_shard{k}",
            if src.name.is_empty() {
                "graph"
            } else {
                &src.name
            }
        ),
        initializer,
        input,
        output,
        value_info,
        ..Default::default()
    };
    let original = graph.proto();
    Ok(ModelProto {
        ir_version: original.ir_version,
        opset_import: original.opset_import.clone(),
        producer_name: "cnnpc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: original.domain.clone(),
        model_version: original.model_version,
        doc_string: format!("cnnpc shard {k} of model `{}`", original.producer_name),
        graph: Some(g),
        metadata_props: original.metadata_props.clone(),
        functions: original.functions.clone(),
        ..Default::default()
    })
}
