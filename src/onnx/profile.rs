//! `cnnpc profile`: measure a real model on this machine and describe it as a planner profile.
//!
//! The model is split at every selected cut; each shard (one segment) is run with tract on the
//! previous shard's real output, and the mean of the faster half of its `repeats` timed runs
//! (taken in rounds over all segments, so load during profiling spreads instead of skewing one
//! segment) is the segment's time on this machine (`host`). The tiers are expressed as documented slowdown factors of the
//! host, since we cannot run on an MI8 phone here; cut sizes are exact (f32, batch 1).

use super::cuts::{list_cuts, Cut};
use super::error::OnnxError;
use super::graph::{Dim, Graph};
use super::random::Lcg;
use super::slice;
use super::split::split_graph;
use super::verify::Runner;
use crate::planner::accuracy::WireEncoding;
use crate::planner::profile::{CutPoint, Device, Profile, TensorInfo, TensorSize};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Indices from `list_cuts` to keep as cut points; `None` = every single-tensor cut and
    /// [`Self::multi_tensor_cuts`] of the multi-tensor ones.
    pub cuts: Option<Vec<usize>>,
    /// How many multi-tensor cuts (inside residual and branchy stages) to add to the
    /// single-tensor ones when `cuts` is `None`.
    pub multi_tensor_cuts: MultiTensorCuts,
    /// Timed runs per segment, in rounds over all segments; the mean of the faster half is
    /// kept.
    pub repeats: usize,
    /// `(device name, tier, slowdown vs this machine)`.
    pub devices: Vec<(String, String, f64)>,
}

/// How many multi-tensor cuts a profile gets besides the single-tensor ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiTensorCuts {
    /// [`AUTO_MULTI_TENSOR_CUTS`] of them where the model has fewer than
    /// [`FEW_SINGLE_TENSOR_CUTS`] single-tensor cuts (branchy models, where most useful cut
    /// points carry several tensors), none otherwise (every extra cut point is searched and,
    /// with pruning, measured).
    Auto,
    /// At most this many, spread evenly over the model.
    AtMost(usize),
}

pub const FEW_SINGLE_TENSOR_CUTS: usize = 12;
pub const AUTO_MULTI_TENSOR_CUTS: usize = 12;

impl std::str::FromStr for MultiTensorCuts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MultiTensorCuts::Auto),
            n => n
                .parse()
                .map(MultiTensorCuts::AtMost)
                .map_err(|_| format!("{s:?}: a number of cuts, or auto")),
        }
    }
}

/// The cuts a profile gets: every single-tensor cut, and evenly spread multi-tensor cuts as
/// `multi` says, in graph order.
pub fn choose_cuts(all: &[Cut], multi: MultiTensorCuts) -> Vec<Cut> {
    let (single, several): (Vec<&Cut>, Vec<&Cut>) = all.iter().partition(|c| c.tensors.len() == 1);
    let wanted = match multi {
        MultiTensorCuts::AtMost(n) => n,
        MultiTensorCuts::Auto if single.len() < FEW_SINGLE_TENSOR_CUTS => AUTO_MULTI_TENSOR_CUTS,
        MultiTensorCuts::Auto => 0,
    }
    .min(several.len());
    let mut chosen: Vec<Cut> = single.into_iter().cloned().collect();
    // Evenly spread: the k-th of `wanted` picks sit at the middle of their share.
    for k in 0..wanted {
        let i = (2 * k + 1) * several.len() / (2 * wanted);
        chosen.push(several[i].clone());
    }
    chosen.sort_by_key(|c| c.index);
    chosen.dedup_by_key(|c| c.index);
    chosen
}

impl Default for ProfileOptions {
    /// The reference topology's ratios (mobilenet, end device MI8): end ≈ 18x and edge ≈ 6x
    /// slower than this machine, the cloud as fast.
    fn default() -> Self {
        ProfileOptions {
            cuts: None,
            multi_tensor_cuts: MultiTensorCuts::Auto,
            repeats: 15,
            devices: vec![
                ("end".into(), "end".into(), 18.0),
                ("edge".into(), "edge".into(), 6.0),
                ("cloud".into(), "cloud".into(), 1.0),
            ],
        }
    }
}

/// A concrete shape for `dims`: a symbolic (batch) dimension becomes 1.
pub fn fixed_shape(dims: &[Dim]) -> Vec<usize> {
    dims.iter()
        .map(|d| d.fixed().map_or(1, |v| v.max(1) as usize))
        .collect()
}

fn elements(dims: &[Dim]) -> u64 {
    fixed_shape(dims).iter().map(|&d| d as u64).product()
}

/// Multiply-adds of a Conv, Gemm or MatMul node with a weight initializer (0 for anything else
/// or unknown shapes).
fn macs(graph: &Graph, node: usize) -> f64 {
    let n = &graph.nodes()[node];
    let (Some(out), Some(w)) = (
        n.output.first().and_then(|o| graph.tensor_info(o)),
        n.input.get(1).and_then(|w| graph.initializer(w)),
    ) else {
        return 0.0;
    };
    let out: f64 = out
        .dims
        .iter()
        .map(|d| d.fixed().unwrap_or(1).max(1) as f64)
        .product();
    let per = match n.op_type.as_str() {
        // [C_out, C_in / group, kh, kw]: every output element reads the rest.
        "Conv" => w.dims.iter().skip(1).product::<i64>() as f64,
        "Gemm" | "MatMul" => w.dims.first().copied().unwrap_or(0) as f64,
        _ => 0.0,
    };
    out * per
}

/// Per cut: the share of the segment ending there (by multiply-adds) that its sliced producer
/// computes ([`slice::sliceable`]), 0 when it cannot be sliced or the cut has several tensors.
fn sliced_shares(graph: &Graph, shards: &[ModelProto], chosen: &[Cut]) -> Vec<f64> {
    let by_name: HashMap<&str, usize> = graph
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    chosen
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let [t] = c.tensors.as_slice() else {
                return 0.0;
            };
            let Some((conv, _, _)) = slice::sliceable(graph, &t.name, c.channels as usize) else {
                return 0.0;
            };
            let segment: f64 = shards
                .get(k)
                .and_then(|m| m.graph.as_ref())
                .map_or(0.0, |g| {
                    g.node
                        .iter()
                        .filter_map(|n| by_name.get(n.name.as_str()))
                        .map(|&i| macs(graph, i))
                        .sum()
                });
            if segment > 0.0 {
                (macs(graph, conv) / segment).min(1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// The mean of the faster half of `times` (the median of one): load only ever adds time, so
/// the slow half is where it shows; averaging the fast half is steadier than their minimum.
pub fn faster_half_mean(times: &mut [f64]) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort_by(f64::total_cmp);
    let half = times.len().div_ceil(2);
    times[..half].iter().sum::<f64>() / half as f64
}

/// Measures `model` (named `name`). `progress(done, total)` is told after each step (one
/// warm-up run per segment, then `repeats` timed rounds over every segment).
pub fn profile_model(
    model: &[u8],
    name: &str,
    opts: &ProfileOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Profile, OnnxError> {
    if opts.repeats == 0 {
        return Err(OnnxError::BadInput("repeats must be at least 1".into()));
    }
    let all = list_cuts(model)?;
    let chosen: Vec<Cut> = match &opts.cuts {
        None => choose_cuts(&all, opts.multi_tensor_cuts),
        Some(idx) => idx
            .iter()
            .map(|&i| {
                all.get(i).cloned().ok_or_else(|| {
                    OnnxError::BadInput(format!("no cut {i}: the model has cuts 0..{}", all.len()))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if chosen.windows(2).any(|w| w[0].index >= w[1].index) {
        return Err(OnnxError::BadInput(
            "cuts must be listed in increasing order".into(),
        ));
    }
    let sets: Vec<Vec<String>> = chosen.iter().map(Cut::tensor_names).collect();
    // Split once: the encoded shards run, the decoded ones are counted (`sliced_shares`).
    let graph = Graph::from_bytes(model)?;
    let protos = split_graph(&graph, &sets)?;
    let shards: Vec<Vec<u8>> = protos.iter().map(Message::encode_to_vec).collect();

    let mut rng = Lcg(11);
    let mut values: BTreeMap<String, TValue> = BTreeMap::new();
    let mut input_elements = 0u64;
    let mut input_tensors = Vec::new();
    for name in graph.inputs() {
        let info = graph.require_info(name)?;
        let shape = fixed_shape(&info.dims);
        let n: usize = shape.iter().product();
        input_elements += n as u64;
        input_tensors.push(TensorInfo {
            name: name.clone(),
            shape: shape.iter().map(|&d| d as i64).collect(),
        });
        let t = tract_ndarray::ArrayD::from_shape_vec(shape, rng.vec(n, 1.0))
            .map_err(|e| OnnxError::BadInput(e.to_string()))?;
        values.insert(name.clone(), Tensor::from(t).into());
    }

    let steps = shards.len() * (opts.repeats + 1);
    let mut done = 0;
    let mut runners = Vec::with_capacity(shards.len());
    for (k, shard) in shards.iter().enumerate() {
        let names = Graph::from_bytes(shard)?.inputs().to_vec();
        let feed: TVec<TValue> = names
            .iter()
            .map(|n| {
                values.get(n).cloned().ok_or_else(|| {
                    OnnxError::BadInput(format!(
                        "shard {k} needs `{n}`, which nothing before it makes"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Tensor> = feed.iter().map(|v| &**v).collect();
        let runner = Runner::new(shard, &refs)?;
        let out = runner.run(feed.clone())?; // warm-up, and the values the next shard reads
        values.extend(runner.outputs.iter().cloned().zip(out));
        runners.push((runner, feed));
        done += 1;
        progress(done, steps);
    }
    // Timed rounds over every segment in turn, not every run of one segment then the next: a
    // burst of load then slows one run of many segments, not many runs of one, and the
    // statistic (the mean of the faster half) drops it.
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.repeats); runners.len()];
    for _ in 0..opts.repeats {
        for (k, (runner, feed)) in runners.iter().enumerate() {
            let start = Instant::now();
            runner.run(feed.clone())?;
            times[k].push(start.elapsed().as_secs_f64() * 1e3);
            done += 1;
            progress(done, steps);
        }
    }
    let host_ms: Vec<f64> = times.iter_mut().map(|t| faster_half_mean(t)).collect();

    let shares = sliced_shares(&graph, &protos, &chosen);
    let cuts = chosen
        .iter()
        .zip(shares)
        .map(|(c, sliced_share)| {
            let n: u64 = c.tensors.iter().map(|t| elements(&t.shape)).sum();
            CutPoint {
                sliced_share,
                name: c.after_node.clone(),
                channels: u32::try_from(c.channels).unwrap_or(u32::MAX),
                elements: n,
                bytes: n as f64 * 4.0,
                tensors: c
                    .tensors
                    .iter()
                    .map(|t| TensorInfo {
                        name: t.name.clone(),
                        shape: fixed_shape(&t.shape).iter().map(|&d| d as i64).collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut devices = BTreeMap::from([(
        "host".to_string(),
        Device {
            tier: "host".into(),
            run_ms: host_ms.clone(),
        },
    )]);
    let mut factors = Vec::new();
    for (device, tier, slowdown) in &opts.devices {
        devices.insert(
            device.clone(),
            Device {
                tier: tier.clone(),
                run_ms: host_ms.iter().map(|ms| ms * slowdown).collect(),
            },
        );
        factors.push(format!("{device} ({tier}) = {slowdown}x host"));
    }
    let profile = Profile {
        model: name.to_string(),
        notes: format!(
            "Measured by `cnnpc profile` with tract: mean of the faster half of {} runs per segment (in rounds over all segments) on this machine \
             (device `host`), batch 1, f32 on the wire. Tiers are emulated as slowdowns of the host: {}.",
            opts.repeats,
            factors.join(", ")
        ),
        wire_encoding: WireEncoding::F32,
        input: TensorSize {
            elements: input_elements,
            bytes: input_elements as f64 * 4.0,
            tensors: input_tensors,
        },
        cuts,
        devices,
    };
    profile
        .validate()
        .map_err(|e| OnnxError::BadInput(e.to_string()))?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::faster_half_mean;

    #[test]
    fn a_burst_of_load_in_the_slow_half_does_not_move_the_statistic() {
        let mut quiet = vec![10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 10.1, 10.0];
        let mut loaded = quiet.clone();
        loaded[2] = 40.0;
        loaded[5] = 35.0;
        loaded[7] = 25.0;
        let (q, l) = (faster_half_mean(&mut quiet), faster_half_mean(&mut loaded));
        assert!((q - l).abs() < 0.1, "{q} vs {l}");
        // Never below the fastest run, and defined for one run and none.
        assert!((9.8..=10.1).contains(&l), "{l}");
        assert!(faster_half_mean(&mut []).is_nan());
        assert_eq!(faster_half_mean(&mut [3.0]), 3.0);
    }
}
