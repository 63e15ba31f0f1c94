//! The live accuracy oracle: builds the compressed model for a [`CompressionPoint`] and measures
//! it on calibration inputs against the unmodified model.
//!
//! A measurement: prune every cut the point prunes ([`prune`](super::prune), statistics from the
//! *fit* set, cached per cut), split the pruned model at every cut the point lists (pruned, or
//! unpruned but encoded), run the shards chained on
//! the *eval* set (disjoint from the fit set, so a fitted reconstruction is not graded on the
//! data it was fitted to) and pass every cut tensor through the point's wire encoding per image
//! ([`quantise::roundtrip`]: exactly what the next tier decodes). The answer is top-1
//! agreement with the unmodified model (or accuracy against labels, [`Metric`]).
//!
//! A point whose input crosses a link ([`CompressionPoint::input`]) has every eval input encoded
//! and decoded in its encoding first ([`as_sent`]), as a relay frames it. The point with no
//! cut and no encoded input is the model itself: 1.0 agreement, or the unmodified model's
//! accuracy. [`LiveOracle::evaluate_at`] encodes at further cuts too (the compression report
//! uses it).
//!
//! Statistics of a later cut are taken on the unmodified model even when an earlier cut is pruned
//! too (one stats pass per cut, not per point); the tail is then fitted to slightly different
//! activations than it sees, which can only make the measured agreement conservative.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use prost::Message;
use serde::Serialize;
use tract_onnx::prelude::*;

use super::calibration::Batch;
use super::cuts::Cut;
use super::error::{tract_err, OnnxError};
use super::graph::Graph;
use super::prune::{apply_pruning, cut_stats, plan_pruning, CutStats, Method};
use super::quantise;
use super::split::split_graph;
use super::verify::Runner;
pub use crate::planner::accuracy::Metric;
use crate::planner::accuracy::{
    AccuracyOracle, CompressionPoint, Measurements, OracleError, WireEncoding,
};

/// The outcome of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub agreement: f64,
    /// Against labels, when the eval set has them.
    pub accuracy: Option<f64>,
    /// Mean over images of the largest |Δ| between the model's output vectors (softmax
    /// probabilities for both real models): finer than agreement for confident models.
    pub mean_output_diff: f64,
    /// Mean over images of the cosine similarity of the output with the unmodified model's
    /// (1 = the same direction): the metric for outputs that are not class scores.
    pub cosine: f64,
    pub images: usize,
    pub seconds: f64,
}

/// Called for every image's cut tensor as it would be sent: (cut index, tensor position in the
/// cut, values `[1, C, H, W]` row-major before encoding, shape).
pub type WireObserver<'a> = dyn FnMut(usize, usize, &[f32], &[usize]) + 'a;

/// Builds and measures compressed models (see the module doc).
pub struct LiveOracle {
    model: Vec<u8>,
    graph: Graph,
    cuts: Vec<Cut>,
    fit: Batch,
    eval: Batch,
    pub method: Method,
    pub metric: Metric,
    reference: Vec<Vec<f32>>,
    stats: HashMap<usize, CutStats>,
    agreement: Measurements,
    accuracy: Measurements,
    cosine: Measurements,
    /// Every fresh measurement, in order.
    pub log: Vec<(CompressionPoint, Evaluation)>,
    /// The last point's shards (point, cuts encoded at, shard bytes).
    built: Option<(CompressionPoint, Vec<usize>, Vec<Vec<u8>>)>,
}

impl LiveOracle {
    /// `cuts` are the profile's cut points, by index (as from [`list_cuts`](super::list_cuts)).
    /// Runs the unmodified model on `eval` once for the reference outputs.
    pub fn new(model: Vec<u8>, cuts: Vec<Cut>, fit: Batch, eval: Batch) -> Result<Self, OnnxError> {
        let graph = Graph::from_bytes(&model)?;
        if graph.inputs().len() != 1 {
            return Err(OnnxError::BadInput(format!(
                "the oracle feeds one input; the model has {}",
                graph.inputs().len()
            )));
        }
        if let Some(l) = &eval.labels {
            if l.len() != eval.len() {
                return Err(OnnxError::BadInput(
                    "labels do not match the eval set".into(),
                ));
            }
        }
        let reference = run_chain(
            std::slice::from_ref(&model),
            &eval,
            WireEncoding::F32,
            &[],
            None,
        )?;
        Ok(LiveOracle {
            model,
            graph,
            cuts,
            fit,
            eval,
            method: Method::default(),
            metric: Metric::Agreement,
            reference,
            stats: HashMap::new(),
            agreement: Measurements::default(),
            accuracy: Measurements::default(),
            cosine: Measurements::default(),
            log: Vec::new(),
            built: None,
        })
    }

    pub fn cuts(&self) -> &[Cut] {
        &self.cuts
    }

    /// Agreement of every point measured so far (persist with `planner::table::to_csv`).
    pub fn measurements(&self) -> &Measurements {
        &self.agreement
    }

    /// Accuracy against labels of every point measured so far (empty without labels).
    pub fn accuracy_measurements(&self) -> &Measurements {
        &self.accuracy
    }

    /// Accuracy of the unmodified model on the eval set, if it has labels.
    pub fn reference_accuracy(&self) -> Option<f64> {
        let labels = self.eval.labels.as_ref()?;
        let hits = self
            .reference
            .iter()
            .zip(labels)
            .filter(|(r, &l)| argmax(r) == l)
            .count();
        Some(hits as f64 / labels.len().max(1) as f64)
    }

    /// Channel statistics of cut `cut` on the fit set (computed once).
    pub fn stats(&mut self, cut: usize) -> Result<&CutStats, OnnxError> {
        let c = self
            .cuts
            .get(cut)
            .ok_or_else(|| OnnxError::BadInput(format!("no cut {cut}")))?;
        if !self.stats.contains_key(&cut) {
            let s = cut_stats(&self.graph, &c.tensor_names(), &self.fit)?;
            self.stats.insert(cut, s);
        }
        self.stats
            .get(&cut)
            .ok_or_else(|| OnnxError::Invalid("stats cache".into()))
    }

    /// The pruned model of `point` (all its pruned cuts applied), encoded.
    pub fn pruned_model(&mut self, point: &CompressionPoint) -> Result<Vec<u8>, OnnxError> {
        let mut model = self.model.clone();
        for c in &point.cuts {
            let cut = self
                .cuts
                .get(c.cut)
                .ok_or_else(|| OnnxError::BadInput(format!("no cut {}", c.cut)))?;
            if u64::from(c.channels) != cut.channels {
                return Err(OnnxError::BadInput(format!(
                    "cut {} has {} channels, the point says {}",
                    c.cut, cut.channels, c.channels
                )));
            }
            if c.kept >= c.channels {
                continue; // unpruned, only encoded
            }
            let method = self.method;
            let plan = plan_pruning(self.stats(c.cut)?, c.kept as usize, method)?;
            model = apply_pruning(&Graph::from_bytes(&model)?, &plan)?.encode_to_vec();
        }
        Ok(model)
    }

    /// Measure `point` with its encoding applied at its pruned cuts and at `extra` cuts.
    pub fn evaluate_at(
        &mut self,
        point: &CompressionPoint,
        extra: &[usize],
        observer: Option<&mut WireObserver>,
    ) -> Result<Evaluation, OnnxError> {
        let started = Instant::now();
        let mut at: Vec<usize> = point
            .cuts
            .iter()
            .map(|c| c.cut)
            .chain(extra.iter().copied())
            .collect();
        at.sort_unstable();
        at.dedup();
        for &c in &at {
            if c >= self.cuts.len() {
                return Err(OnnxError::BadInput(format!(
                    "cut {c} out of range (the model has {} cuts)",
                    self.cuts.len()
                )));
            }
        }
        let shards = self.shards(point, &at)?;
        let eval = as_sent(&self.eval, point)?;
        let outputs = run_chain(&shards, &eval, point.encoding, &at, observer)?;
        let labels = self.eval.labels.as_ref();
        let (mut agree, mut correct, mut diff, mut cos) = (0usize, 0usize, 0f64, 0f64);
        for (i, (got, want)) in outputs.iter().zip(&self.reference).enumerate() {
            cos += cosine(got, want);
            let g = argmax(got);
            agree += usize::from(g == argmax(want));
            if let Some(l) = labels {
                correct += usize::from(g == l[i]);
            }
            diff += got
                .iter()
                .zip(want)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0.0, f64::max);
        }
        let n = outputs.len().max(1) as f64;
        Ok(Evaluation {
            agreement: agree as f64 / n,
            accuracy: labels.map(|_| correct as f64 / n),
            mean_output_diff: diff / n,
            cosine: cos / n,
            images: outputs.len(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The point's pruned model split at `at`, encoded; the last point's are kept, so the
    /// batches of a sequential measurement build it once.
    fn shards(
        &mut self,
        point: &CompressionPoint,
        at: &[usize],
    ) -> Result<Vec<Vec<u8>>, OnnxError> {
        if let Some((p, a, shards)) = &self.built {
            if p == point && a == at {
                return Ok(shards.clone());
            }
        }
        let model = self.pruned_model(point)?;
        let names: Vec<Vec<String>> = at.iter().map(|&c| self.cuts[c].tensor_names()).collect();
        let shards: Vec<Vec<u8>> = split_graph(&Graph::from_bytes(&model)?, &names)?
            .iter()
            .map(Message::encode_to_vec)
            .collect();
        self.built = Some((point.clone(), at.to_vec(), shards.clone()));
        Ok(shards)
    }

    /// Per-sample scores of `point` on eval samples `from..to` under the oracle's metric,
    /// summed (1 per agreeing or correct sample; the cosine for the cosine metric).
    pub fn score_samples(
        &mut self,
        point: &CompressionPoint,
        from: usize,
        to: usize,
    ) -> Result<f64, OnnxError> {
        if from >= to || to > self.eval.len() {
            return Err(OnnxError::BadInput(format!(
                "samples {from}..{to} of an eval set of {}",
                self.eval.len()
            )));
        }
        let labels = self.eval.labels.clone();
        let want = &self.reference[from..to];
        let outputs: Vec<Vec<f32>> = if point.is_unmodified() {
            want.to_vec()
        } else {
            let at: Vec<usize> = point.cuts.iter().map(|c| c.cut).collect();
            let shards = self.shards(point, &at)?;
            let slice = self.eval.slice(from, to)?;
            let eval = as_sent(&slice, point)?;
            run_chain(&shards, &eval, point.encoding, &at, None)?
        };
        let want = &self.reference[from..to];
        let mut score = 0.0;
        for (i, (got, want)) in outputs.iter().zip(want).enumerate() {
            score += match self.metric {
                Metric::Agreement => f64::from(u8::from(argmax(got) == argmax(want))),
                Metric::Cosine => cosine(got, want).clamp(0.0, 1.0),
                Metric::Accuracy => {
                    let l = labels.as_ref().ok_or_else(|| {
                        OnnxError::BadInput("accuracy needs a labelled calibration set".into())
                    })?;
                    f64::from(u8::from(argmax(got) == l[from + i]))
                }
            };
        }
        Ok(score)
    }

    /// [`Self::evaluate_at`] at the point's own cuts, recorded in the measurement stores.
    pub fn evaluate(&mut self, point: &CompressionPoint) -> Result<Evaluation, OnnxError> {
        let e = if point.is_unmodified() {
            Evaluation {
                agreement: 1.0,
                accuracy: self.reference_accuracy(),
                mean_output_diff: 0.0,
                cosine: 1.0,
                images: self.eval.len(),
                seconds: 0.0,
            }
        } else {
            self.evaluate_at(point, &[], None)?
        };
        self.agreement.insert(point.clone(), e.agreement);
        self.cosine.insert(point.clone(), e.cosine);
        if let Some(a) = e.accuracy {
            self.accuracy.insert(point.clone(), a);
        }
        self.log.push((point.clone(), e.clone()));
        Ok(e)
    }
}

impl AccuracyOracle for LiveOracle {
    fn samples(&self) -> Option<usize> {
        Some(self.eval.len())
    }

    fn binary(&self) -> bool {
        self.metric != Metric::Cosine
    }

    /// The unmodified model agrees with itself; its accuracy against labels is an estimate.
    fn exact(&self, point: &CompressionPoint) -> bool {
        point.is_unmodified() && self.metric != Metric::Accuracy
    }

    fn measure_samples(
        &mut self,
        point: &CompressionPoint,
        from: usize,
        to: usize,
    ) -> Result<f64, OracleError> {
        self.score_samples(point, from, to)
            .map_err(|e| OracleError::Failed(format!("{point}: {e}")))
    }

    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        let known = match self.metric {
            Metric::Agreement => self.agreement.get(point),
            Metric::Accuracy => self.accuracy.get(point),
            Metric::Cosine => self.cosine.get(point),
        };
        if let Some(a) = known {
            return Ok(a);
        }
        let e = self
            .evaluate(point)
            .map_err(|e| OracleError::Failed(format!("{point}: {e}")))?;
        match self.metric {
            Metric::Agreement => Ok(e.agreement),
            Metric::Cosine => Ok(e.cosine.clamp(0.0, 1.0)),
            Metric::Accuracy => e.accuracy.ok_or_else(|| {
                OracleError::Failed("accuracy needs a labelled calibration set".into())
            }),
        }
    }
}

/// `batch` as the first computing tier receives it under `point`: each input encoded and decoded
/// on its own in the point's encoding when the input crosses a link in it (a relay frames the
/// client's input per request, channels on axis 1), as it is otherwise.
pub fn as_sent<'b>(
    batch: &'b Batch,
    point: &CompressionPoint,
) -> Result<Cow<'b, Batch>, OnnxError> {
    if !point.input {
        return Ok(Cow::Borrowed(batch));
    }
    let data = roundtrip_each_image(&batch.data, &batch.shape, point.encoding)
        .map_err(|e| OnnxError::BadInput(format!("encoding the input: {e}")))?;
    Ok(Cow::Owned(Batch {
        data,
        shape: batch.shape.clone(),
        labels: batch.labels.clone(),
    }))
}

/// Cosine similarity of two vectors; two all-zero vectors are the same (1), one is not (0).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa > 0.0, bb > 0.0) {
        (true, true) => ab / (aa.sqrt() * bb.sqrt()),
        (false, false) => 1.0,
        _ => 0.0,
    }
}

/// Index of the largest value (first on ties; NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// A `[B, ...]` output as B flat rows.
fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, OnnxError> {
    let t = t.cast_to::<f32>().map_err(tract_err)?;
    let b = t.shape().first().copied().unwrap_or(1);
    let flat = t
        .try_as_plain_ram()
        .and_then(|p| p.as_slice::<f32>())
        .map_err(tract_err)?;
    let per = flat.len() / b.max(1);
    Ok(flat.chunks(per.max(1)).map(<[f32]>::to_vec).collect())
}

/// Run `shards` chained on `batch`, each boundary tensor encoded per image with `enc`; returns
/// the final first output per image. `cut_ids[k]` names boundary `k` for the observer.
///
/// Images run singly (batch 1, see [`super::par`]): on every core, or in order on one thread
/// when an observer wants to see the cut tensors.
pub fn run_chain(
    shards: &[Vec<u8>],
    batch: &Batch,
    enc: WireEncoding,
    cut_ids: &[usize],
    mut observer: Option<&mut WireObserver>,
) -> Result<Vec<Vec<f32>>, OnnxError> {
    let n = batch.len();
    let per: usize = batch.shape.iter().skip(1).product();
    if n == 0 || batch.data.len() != n * per || shards.is_empty() {
        return Err(OnnxError::BadInput("empty or inconsistent batch".into()));
    }
    // The first image builds the runners (each shard planned for the shapes it really gets).
    let mut runners: Vec<Runner> = Vec::new();
    let first = chain_one(
        shards,
        &mut runners,
        batch.image(0)?,
        enc,
        cut_ids,
        observer.as_deref_mut(),
    )?;
    let rest = match observer {
        Some(o) => (1..n)
            .map(|i| chain_one(shards, &mut runners, batch.image(i)?, enc, cut_ids, Some(o)))
            .collect::<Result<Vec<_>, _>>()?,
        None => super::par::map_indexed(
            n - 1,
            super::par::workers(),
            || runners.clone(),
            |own, i| chain_one(shards, own, batch.image(i + 1)?, enc, cut_ids, None),
        )?,
    };
    let mut out = Vec::with_capacity(n);
    out.push(first);
    out.extend(rest);
    Ok(out)
}

/// One image through the chain; builds the runners still missing from `runners`.
fn chain_one(
    shards: &[Vec<u8>],
    runners: &mut Vec<Runner>,
    input: Tensor,
    enc: WireEncoding,
    cut_ids: &[usize],
    mut observer: Option<&mut WireObserver>,
) -> Result<Vec<f32>, OnnxError> {
    let mut values: TVec<TValue> = tvec![input.into()];
    for (k, shard) in shards.iter().enumerate() {
        if runners.len() == k {
            let refs: Vec<&Tensor> = values.iter().map(|v| &**v).collect();
            runners.push(Runner::new(shard, &refs)?);
        }
        values = runners[k].run(values)?;
        if k + 1 < shards.len() {
            let cut = cut_ids.get(k).copied().unwrap_or(k);
            values = values
                .into_iter()
                .enumerate()
                .map(|(pos, v)| encode_per_image(&v, enc, cut, pos, observer.as_deref_mut()))
                .collect::<Result<_, _>>()?;
        }
    }
    rows(&values[0])?
        .into_iter()
        .next()
        .ok_or_else(|| OnnxError::Invalid("the model gave an empty output".into()))
}

/// What the next tier sees: each image's slice encoded and decoded on its own (one frame per
/// request, so per-channel ranges are per image).
fn encode_per_image(
    v: &TValue,
    enc: WireEncoding,
    cut: usize,
    pos: usize,
    observer: Option<&mut WireObserver>,
) -> Result<TValue, OnnxError> {
    if enc == WireEncoding::F32 && observer.is_none() {
        return Ok(v.clone());
    }
    let t = v.cast_to::<f32>().map_err(tract_err)?;
    let shape = t.shape().to_vec();
    // Contiguous: the slice itself (an ndarray iterator over the dynamic-rank view is slow).
    let flat = t
        .try_as_plain_ram()
        .and_then(|p| p.as_slice::<f32>())
        .map_err(tract_err)?;
    if let Some(o) = observer {
        let (per, one) = per_image(flat.len(), &shape);
        for img in flat.chunks(per) {
            o(cut, pos, img, &one);
        }
    }
    if enc == WireEncoding::F32 {
        return Ok(v.clone());
    }
    let decoded = roundtrip_each_image(flat, &shape, enc)
        .map_err(|e| OnnxError::BadInput(format!("encoding the cut tensor: {e}")))?;
    Ok(Tensor::from_shape::<f32>(&shape, &decoded)
        .map_err(tract_err)?
        .into())
}

/// Values per image of a `[B, ...]` tensor of `len` values, and one image's shape (`[1, ...]`).
fn per_image(len: usize, shape: &[usize]) -> (usize, Vec<usize>) {
    let b = shape.first().copied().unwrap_or(1).max(1);
    let mut one = shape.to_vec();
    if let Some(first) = one.first_mut() {
        *first = 1;
    }
    ((len / b).max(1), one)
}

/// `values`, a `[B, ...]` tensor, with each image encoded in `enc` and decoded on its own, as
/// a tier frames one request (channels on axis 1).
fn roundtrip_each_image(
    values: &[f32],
    shape: &[usize],
    enc: WireEncoding,
) -> Result<Vec<f32>, quantise::QuantError> {
    let (per, one) = per_image(values.len(), shape);
    let axis = usize::from(one.len() > 1);
    let mut out = Vec::with_capacity(values.len());
    for img in values.chunks(per) {
        out.extend(quantise::roundtrip(img, &one, axis, enc)?);
    }
    Ok(out)
}
