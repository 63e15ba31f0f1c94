//! `cnnpc profile`: measure a real model on this machine and describe it as a planner profile.
//!
//! The model is split at every selected cut; each shard (one segment) is run with tract on the
//! previous shard's real output, and the median of its `repeats` timed runs (taken in rounds
//! over all segments, so a burst of load spreads over many segments' slow halves instead of
//! skewing one) is the segment's time on this machine (`host`). The tiers are expressed as
//! documented slowdown factors of the host, since we cannot run on an MI8 phone here; cut sizes
//! are exact (f32, batch 1).
//!
//! Besides compute it measures what the latency model prices per hop ([`WireCosts`]): every
//! crossing's tensor is framed in every wire encoding with the shards' own codec
//! ([`Frame`]), which gives its bytes on the wire (zstd included) and the codec's ns per
//! element; and each cut whose producer pruning slices is timed sliced to one channel, which
//! gives the share of its segment that scales with the channels kept.

use super::cuts::{list_cuts, Cut};
use super::error::OnnxError;
use super::frame::{Frame, FrameLimits, ZSTD_LEVEL};
use super::graph::{Dim, Graph};
use super::prune::{apply_pruning, CutPruning};
use super::random::Lcg;
use super::slice;
use super::split::split_graph;
use super::verify::Runner;
use crate::planner::accuracy::WireEncoding;
use crate::planner::profile::{
    CodecCost, CutPoint, Device, Profile, TensorInfo, TensorSize, WakeCost, WireCosts,
};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Instant;
use tract_onnx::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Indices from `list_cuts` to keep as cut points; `None` = every single-tensor cut and
    /// [`Self::multi_tensor_cuts`] of the multi-tensor ones.
    pub cuts: Option<Vec<usize>>,
    /// How many multi-tensor cuts (inside residual and branchy stages) to add to the
    /// single-tensor ones when `cuts` is `None`.
    pub multi_tensor_cuts: MultiTensorCuts,
    /// Timed runs per segment, in rounds over all segments; the median is kept.
    pub repeats: usize,
    /// Keep taking rounds (more than `repeats`, at most [`MAX_ROUNDS`]) until the timed rounds
    /// have spanned this many seconds: this machine's speed wanders by ±20% over seconds, and
    /// a profile taken in one burst meets only one of its states. 0: exactly `repeats`.
    pub window_seconds: f64,
    /// `(device name, tier, slowdown vs this machine)`.
    pub devices: Vec<(String, String, f64)>,
    /// Real inputs (the model's input, flattened): cut tensors compress as real data does.
    /// The first is timed; frame bytes are the mean over all of them, since zstd's ratio
    /// follows the data (sized on one rendered page, the demo's links were priced 24–34% over
    /// what its requests carried). Empty: a fixed pseudo-random input, which compresses worse
    /// than any real one.
    pub samples: Vec<Vec<f32>>,
    /// The runtime's HTTP costs on this machine (the caller measures them with real shard
    /// servers: the onnx part runs no network); `None` prices hops at no fixed cost.
    pub http: Option<HttpCosts>,
    /// Time what a tier pays for starting after an idle pause ([`WakeCost`]; ~0.3 s on a
    /// small model). `false` prices no wake.
    pub wake: bool,
    /// Sleep this long before every timed round (and again before its sliced segments, whose
    /// first is a pruned head the end starts after idling). Served, a tier runs its segments after
    /// waiting on its peers and the links, and after a pause the same run is slower for its
    /// whole length (the demo's model: 17.1–18.3 ms back to back, 20.6–21.9 ms after
    /// 100–1000 ms idle, on the 2-core machine this was measured on): rounds timed back to
    /// back priced its compute 20–40% under what serving paid. With a pause the rounds carry
    /// that cost and the wake prices no compute; zero times them back to back and the wake
    /// prices the first segment's gap instead.
    pub round_idle: std::time::Duration,
}

/// What a hop and the client's first request cost beyond their bytes, ms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HttpCosts {
    pub hop_ms: f64,
    pub entry_ms: f64,
}

/// The most timed rounds a profile takes, however long its window.
pub const MAX_ROUNDS: usize = 201;

/// Codec timings are taken this many times over every crossing; the median is kept.
const CODEC_ROUNDS: usize = 3;

/// Wake timings: this many rounds of a back-to-back run beside one after a pause.
const WAKE_ROUNDS: usize = 12;

/// The pause before a wake timing when the profile's rounds run back to back (otherwise the
/// wake follows the whole chain and [`ProfileOptions::round_idle`], as a served tier does).
const WAKE_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The default [`ProfileOptions::round_idle`]: as long as a tier waits between requests on
/// slow links (tens of ms), and past where the slowdown after idling levelled off.
pub const ROUND_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

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
            window_seconds: 0.0,
            devices: vec![
                ("end".into(), "end".into(), 18.0),
                ("edge".into(), "edge".into(), 6.0),
                ("cloud".into(), "cloud".into(), 1.0),
            ],
            samples: Vec::new(),
            http: None,
            wake: true,
            round_idle: ROUND_IDLE,
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

/// The median of `times` (the mean of the middle two for an even count): what a served
/// request's run costs at the 50th percentile, which is what the demo and the operator compare
/// a prediction with. A burst of load in fewer than half the runs does not move it.
pub fn median(times: &mut [f64]) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// The share of a segment that scales with the channels kept, from its time whole (`full`, C
/// channels) and sliced to one channel (`one`): the line through both, as
/// `run_ms · (1 − share · (1 − k / C))` writes it.
pub fn sliced_share(full: f64, one: f64, channels: usize) -> f64 {
    if full.is_nan() || full <= 0.0 || channels < 2 {
        return 0.0;
    }
    let c = channels as f64;
    ((full - one) / full * c / (c - 1.0)).clamp(0.0, 1.0)
}

/// The frame channel axis the shards use for a tensor of this rank (NCHW's C).
fn channel_axis(shape: &[usize]) -> usize {
    1.min(shape.len().saturating_sub(1))
}

/// Frames `values` in `enc` as a shard sends it (zstd for every encoding but f32).
fn frame(values: &[f32], shape: &[usize], enc: WireEncoding) -> Result<Vec<u8>, OnnxError> {
    let zstd = (enc != WireEncoding::F32).then_some(ZSTD_LEVEL);
    Frame::from_tensor(values, shape, channel_axis(shape), enc, zstd)
        .map(|f| f.encode())
        .map_err(|e| OnnxError::Invalid(format!("framing a {shape:?} tensor in {enc}: {e}")))
}

/// What one crossing's tensors take in every encoding: (frame bytes per encoding).
fn frame_bytes(tensors: &[(&[f32], Vec<usize>)]) -> Result<BTreeMap<WireEncoding, f64>, OnnxError> {
    let mut out = BTreeMap::new();
    for enc in WireEncoding::ALL {
        let mut bytes = 0.0;
        for (values, shape) in tensors {
            bytes += frame(values, shape, enc)?.len() as f64;
        }
        out.insert(enc, bytes);
    }
    Ok(out)
}

/// Frame limits that accept whatever the profile itself framed (a model's own tensors).
fn unbounded() -> FrameLimits {
    FrameLimits {
        max_elements: u64::MAX,
        max_payload_bytes: u64::MAX,
        ..FrameLimits::default()
    }
}

/// A codec cost per encoding.
type CodecCosts = BTreeMap<WireEncoding, CodecCost>;

/// ns per element to frame and to read back every tensor of `crossings`, per encoding: the
/// median over [`CODEC_ROUNDS`] rounds of the total time over the total elements; and the same
/// for each crossing on its own (its time over its elements), in the same rounds.
fn codec_costs(
    crossings: &[Vec<(&[f32], Vec<usize>)>],
) -> Result<(CodecCosts, Vec<CodecCosts>), OnnxError> {
    let limits = unbounded();
    let elements: usize = crossings.iter().flatten().map(|(v, _)| v.len()).sum();
    let per_elements: Vec<usize> = crossings
        .iter()
        .map(|c| c.iter().map(|(v, _)| v.len()).sum())
        .collect();
    let cost = |encode: &mut Vec<f64>, decode: &mut Vec<f64>| CodecCost {
        encode_ns: median(encode),
        decode_ns: median(decode),
    };
    let mut out = BTreeMap::new();
    let mut each: Vec<CodecCosts> = vec![BTreeMap::new(); crossings.len()];
    for enc in WireEncoding::ALL {
        let (mut encode, mut decode) = (Vec::new(), Vec::new());
        let mut one = vec![(Vec::new(), Vec::new()); crossings.len()];
        for _ in 0..CODEC_ROUNDS {
            let (mut e_ns, mut d_ns) = (0.0, 0.0);
            for (k, crossing) in crossings.iter().enumerate() {
                let (mut ce, mut cd) = (0.0, 0.0);
                for (values, shape) in crossing {
                    let t = Instant::now();
                    let bytes = frame(values, shape, enc)?;
                    ce += t.elapsed().as_nanos() as f64;
                    let t = Instant::now();
                    let back = Frame::decode(&bytes, &limits)
                        .and_then(|f| f.to_f32())
                        .map_err(|e| {
                            OnnxError::Invalid(format!("reading back a {enc} frame: {e}"))
                        })?;
                    cd += t.elapsed().as_nanos() as f64;
                    debug_assert_eq!(back.len(), values.len());
                }
                let n = per_elements[k].max(1) as f64;
                one[k].0.push(ce / n);
                one[k].1.push(cd / n);
                e_ns += ce;
                d_ns += cd;
            }
            encode.push(e_ns / elements.max(1) as f64);
            decode.push(d_ns / elements.max(1) as f64);
        }
        out.insert(enc, cost(&mut encode, &mut decode));
        for (k, (e, d)) in one.iter_mut().enumerate() {
            each[k].insert(enc, cost(e, d));
        }
    }
    Ok((out, each))
}

/// (codec ms, compute ms) of one timed start.
type Start = (f64, f64);

/// What a tier pays for starting after an idle pause: the first segment with its input read
/// from an f32 frame and its output framed, run after `before_cold` and a pause of `idle`
/// against the same run back to back; the medians' differences over [`WAKE_ROUNDS`], per
/// phase, at least 0. Every round times the output framed in f32 and, apart, in int8 (with
/// zstd), so a tier that sends only f32 is not charged what compressed framing pays (served,
/// it paid none of it). The first segment because it is what the slowest tier (the end) runs
/// in most plans.
fn wake_cost(
    first: &Runner,
    feed: &TVec<TValue>,
    input: &[(&[f32], Vec<usize>)],
    output: &[(&[f32], Vec<usize>)],
    before_cold: &dyn Fn() -> Result<(), OnnxError>,
    idle: std::time::Duration,
) -> Result<WakeCost, OnnxError> {
    let limits = unbounded();
    let frames: Vec<Vec<u8>> = input
        .iter()
        .map(|(v, shape)| frame(v, shape, WireEncoding::F32))
        .collect::<Result<_, _>>()?;
    // One start: read the input, run, frame the output in `enc`.
    let start = |enc: WireEncoding| -> Result<Start, OnnxError> {
        // A served tier reads a frame its socket has just written, fresh in the cache, not one
        // that idled in memory: copied first, untimed (receiving is the link's term).
        let fresh: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
        let t = Instant::now();
        for f in &fresh {
            let read = Frame::decode(f, &limits).and_then(|f| f.to_f32());
            std::hint::black_box(read.map_err(|e| OnnxError::Invalid(e.to_string()))?);
        }
        let read = t.elapsed();
        let t = Instant::now();
        first.run(feed.clone())?;
        let compute = t.elapsed();
        let t = Instant::now();
        for (v, shape) in output {
            std::hint::black_box(frame(v, shape, enc)?);
        }
        let codec = read + t.elapsed();
        Ok((codec.as_secs_f64() * 1e3, compute.as_secs_f64() * 1e3))
    };
    // Per output encoding: (warm, cold) starts.
    let mut timed: [(Vec<Start>, Vec<Start>); 2] = Default::default();
    let encodings = [WireEncoding::F32, WireEncoding::Int8];
    for round in 0..WAKE_ROUNDS {
        // Alternate, so neither encoding always meets the machine first.
        for k in [round % 2, 1 - round % 2] {
            let enc = encodings[k];
            start(enc)?;
            timed[k].0.push(start(enc)?);
            before_cold()?;
            std::thread::sleep(idle);
            timed[k].1.push(start(enc)?);
        }
    }
    let gap = |k: usize, pick: fn(&Start) -> f64| -> f64 {
        let mut w: Vec<f64> = timed[k].0.iter().map(pick).collect();
        let mut c: Vec<f64> = timed[k].1.iter().map(pick).collect();
        (median(&mut c) - median(&mut w)).max(0.0)
    };
    let codec_ms = gap(0, |p| p.0);
    let mut compute = [gap(0, |p| p.1), gap(1, |p| p.1)];
    Ok(WakeCost {
        codec_ms,
        compressed_ms: (gap(1, |p| p.0) - codec_ms).max(0.0),
        // The same run in both: the median of the two.
        compute_ms: median(&mut compute),
    })
}

/// The segment ending at cut `k` (from cut `k − 1`) with that cut's producer sliced to its
/// first channel, as pruning to one channel leaves it: what the profile times beside the whole
/// segment. `None` when pruning would not slice it (a multi-tensor cut, a producer that is not
/// a plain Conv chain, a single channel).
pub fn sliced_segment(
    graph: &Graph,
    chosen: &[Cut],
    k: usize,
) -> Result<Option<Vec<u8>>, OnnxError> {
    let [t] = chosen[k].tensors.as_slice() else {
        return Ok(None);
    };
    let c = chosen[k].channels as usize;
    if c < 2 || slice::sliceable(graph, &t.name, c).is_none() {
        return Ok(None);
    }
    let one = CutPruning {
        tensors: vec![t.name.clone()],
        channels: vec![c],
        kept: vec![vec![0]],
        weights: vec![0.0; c],
        bias: vec![0.0; c],
    };
    let sliced = Graph::new(apply_pruning(graph, &one)?)?;
    let mut sets: Vec<Vec<String>> = Vec::new();
    if k > 0 {
        sets.push(chosen[k - 1].tensor_names());
    }
    sets.push(chosen[k].tensor_names());
    let shard = split_graph(&sliced, &sets)?
        .into_iter()
        .nth(usize::from(k > 0))
        .ok_or_else(|| OnnxError::Invalid("split gave too few shards".into()))?;
    Ok(Some(shard.encode_to_vec()))
}

/// The values a shard reads, from those computed so far.
fn feed_for(
    shard: &[u8],
    values: &BTreeMap<String, TValue>,
    k: usize,
) -> Result<TVec<TValue>, OnnxError> {
    feed_named(Graph::from_bytes(shard)?.inputs(), values, k)
}

/// The values named `inputs` (shard `k`'s), from those computed so far.
fn feed_named(
    inputs: &[String],
    values: &BTreeMap<String, TValue>,
    k: usize,
) -> Result<TVec<TValue>, OnnxError> {
    inputs
        .iter()
        .map(|n| {
            values.get(n).cloned().ok_or_else(|| {
                OnnxError::BadInput(format!(
                    "shard {k} needs `{n}`, which nothing before it makes"
                ))
            })
        })
        .collect()
}

/// A tensor's values and shape, as the shards frame it.
type Values = (Vec<f32>, Vec<usize>);

/// The tensors of every crossing, the input first, then each cut's, from a run's `values`.
fn crossing_values(
    values: &BTreeMap<String, TValue>,
    inputs: &[String],
    sets: &[Vec<String>],
) -> Result<Vec<Vec<Values>>, OnnxError> {
    let tensors = |names: &[String]| -> Result<Vec<Values>, OnnxError> {
        names
            .iter()
            .map(|n| {
                values
                    .get(n)
                    .ok_or_else(|| OnnxError::Invalid(format!("no value for `{n}`")))
                    .and_then(as_f32)
            })
            .collect()
    };
    std::iter::once(tensors(inputs))
        .chain(sets.iter().map(|names| tensors(names)))
        .collect()
}

fn borrowed(tensors: &[Values]) -> Vec<(&[f32], Vec<usize>)> {
    tensors.iter().map(|(v, s)| (&v[..], s.clone())).collect()
}

/// A tensor's values and shape, as framed.
fn as_f32(v: &TValue) -> Result<Values, OnnxError> {
    let t = v
        .cast_to::<f32>()
        .map_err(|e| OnnxError::Invalid(format!("a cut tensor is not numeric: {e}")))?;
    let values = t
        .try_as_plain_ram()
        .and_then(|p| p.as_slice::<f32>())
        .map_err(|e| OnnxError::Invalid(e.to_string()))?;
    Ok((values.to_vec(), t.shape().to_vec()))
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
    if !(opts.window_seconds.is_finite() && opts.window_seconds >= 0.0) {
        return Err(OnnxError::BadInput(format!(
            "the profiling window must be a number of seconds >= 0, got {}",
            opts.window_seconds
        )));
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
    let graph = Graph::from_bytes(model)?;
    let shards: Vec<Vec<u8>> = split_graph(&graph, &sets)?
        .iter()
        .map(Message::encode_to_vec)
        .collect();

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
        let data = match opts.samples.first() {
            Some(x) if graph.inputs().len() == 1 => {
                if let Some(bad) = opts.samples.iter().find(|x| x.len() != n) {
                    return Err(OnnxError::BadInput(format!(
                        "the profiling sample has {} values; input `{name}` {shape:?} takes {n}",
                        bad.len()
                    )));
                }
                x.clone()
            }
            _ => rng.vec(n, 1.0),
        };
        let t = tract_ndarray::ArrayD::from_shape_vec(shape, data)
            .map_err(|e| OnnxError::BadInput(e.to_string()))?;
        values.insert(name.clone(), Tensor::from(t).into());
    }

    // Every segment, then the sliced ones, run once (warm-up; the values the next reads; the
    // sliced ones read the whole segments' values), then `repeats` timed rounds over all of
    // them, then the wire.
    let mut sliced_shards = Vec::new();
    for k in 0..chosen.len() {
        if let Some(shard) = sliced_segment(&graph, &chosen, k)? {
            sliced_shards.push((k, shard));
        }
    }
    let steps = (shards.len() + sliced_shards.len()) * (opts.repeats + 1) + 1;
    let mut done = 0;
    let mut runners = Vec::with_capacity(shards.len());
    for (k, shard) in shards.iter().enumerate() {
        let feed = feed_for(shard, &values, k)?;
        let refs: Vec<&Tensor> = feed.iter().map(|v| &**v).collect();
        let runner = Runner::new(shard, &refs)?;
        let out = runner.run(feed.clone())?;
        values.extend(runner.outputs.iter().cloned().zip(out));
        runners.push((runner, feed));
        done += 1;
        progress(done, steps);
    }
    let mut sliced = Vec::with_capacity(sliced_shards.len());
    for (k, shard) in sliced_shards {
        let feed = feed_for(&shard, &values, k)?;
        let refs: Vec<&Tensor> = feed.iter().map(|v| &**v).collect();
        let runner = Runner::new(&shard, &refs)?;
        runner.run(feed.clone())?;
        sliced.push((k, runner, feed));
        done += 1;
        progress(done, steps);
    }
    // Timed rounds over every segment in turn (the sliced ones beside the whole ones), not
    // every run of one segment then the next: a burst of load then slows one run of many
    // segments, not many runs of one, and the median drops it.
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.repeats); runners.len()];
    let mut sliced_times: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.repeats); sliced.len()];
    let timed = |runner: &Runner, feed: &TVec<TValue>| -> Result<f64, OnnxError> {
        let start = Instant::now();
        runner.run(feed.clone())?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let (mut rounds, mut steps) = (opts.repeats, steps);
    let started = Instant::now();
    // Rounds timed after an idle pause (the default), or back to back.
    let paused = !opts.round_idle.is_zero();
    let idle = || {
        if paused {
            std::thread::sleep(opts.round_idle);
        }
    };
    let mut round = 0;
    while round < rounds {
        idle();
        for (k, (runner, feed)) in runners.iter().enumerate() {
            times[k].push(timed(runner, feed)?);
            done += 1;
            progress(done, steps);
        }
        // Again before the sliced ones: the first of them is a pruned head, which the end
        // starts after idling as it starts the whole one; timed warm, after the whole chain,
        // the demo's 4-of-16 head was priced 20% under what it was served at.
        if !sliced.is_empty() {
            idle();
        }
        for (j, (_, runner, feed)) in sliced.iter().enumerate() {
            sliced_times[j].push(timed(runner, feed)?);
            done += 1;
            progress(done, steps);
        }
        round += 1;
        if round == 1 && opts.window_seconds > 0.0 {
            // As many rounds as the window holds at the first round's pace: the progress
            // total is then known for the rest.
            let per = started.elapsed().as_secs_f64().max(1e-6);
            let fit = (opts.window_seconds / per).ceil() as usize;
            let more = fit.clamp(rounds, MAX_ROUNDS.max(rounds));
            steps += (more - rounds) * (runners.len() + sliced.len());
            rounds = more;
        }
    }
    let host_ms: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let mut shares = vec![0.0; chosen.len()];
    for ((k, _, _), t) in sliced.iter().zip(&mut sliced_times) {
        shares[*k] = sliced_share(host_ms[*k], median(t), chosen[*k].channels as usize);
    }

    // What each crossing weighs on the wire, and what framing costs per element.
    let owned = crossing_values(&values, graph.inputs(), &sets)?;
    let crossings: Vec<Vec<(&[f32], Vec<usize>)>> = owned.iter().map(|ts| borrowed(ts)).collect();
    let mut sizes: Vec<BTreeMap<WireEncoding, f64>> = crossings
        .iter()
        .map(|c| frame_bytes(c))
        .collect::<Result<_, _>>()?;
    // The further inputs, run through the same segments: their frames' mean.
    if graph.inputs().len() == 1 && opts.samples.len() > 1 {
        let input = &graph.inputs()[0];
        let shape = fixed_shape(&graph.require_info(input)?.dims);
        for x in &opts.samples[1..] {
            let t = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), x.clone())
                .map_err(|e| OnnxError::BadInput(e.to_string()))?;
            let mut vals: BTreeMap<String, TValue> =
                BTreeMap::from([(input.clone(), Tensor::from(t).into())]);
            for (k, (runner, _)) in runners.iter().enumerate() {
                let out = runner.run(feed_named(&runner.inputs, &vals, k)?)?;
                vals.extend(runner.outputs.iter().cloned().zip(out));
            }
            let owned = crossing_values(&vals, graph.inputs(), &sets)?;
            for (size, ts) in sizes.iter_mut().zip(&owned) {
                for (enc, b) in frame_bytes(&borrowed(ts))? {
                    *size.entry(enc).or_default() += b;
                }
            }
        }
        let n = opts.samples.len() as f64;
        for size in &mut sizes {
            size.values_mut().for_each(|b| *b /= n);
        }
    }
    let (codec, crossing_codecs) = codec_costs(&crossings)?;
    let wake = match (runners.first(), crossings.get(1)) {
        (Some((first, feed)), Some(output)) if opts.wake => {
            // As served: a tier starts after the other tiers ran the rest of the model (which
            // leaves it little of the caches) and it waited on them and the links. After a
            // 20 ms pure sleep the end's framing of the demo's input cost 0.29-0.34 ms; after
            // the whole chain and a 30 or 100 ms pause, 0.37-0.39 (hot: 0.16; zstd level 3).
            let chain = || {
                if paused {
                    for (runner, feed) in &runners {
                        runner.run(feed.clone())?;
                    }
                }
                Ok(())
            };
            let idle = if paused { opts.round_idle } else { WAKE_IDLE };
            let wake = wake_cost(first, feed, &crossings[0], output, &chain, idle)?;
            WakeCost {
                // Already in every segment's time when the rounds were timed after a pause.
                compute_ms: if paused { 0.0 } else { wake.compute_ms },
                ..wake
            }
        }
        _ => WakeCost::default(),
    };
    progress(steps, steps);

    let cuts = chosen
        .iter()
        .zip(shares)
        .zip(&sizes[1..])
        .zip(&crossing_codecs[1..])
        .map(|(((c, sliced_share), frame_bytes), codec)| {
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
                frame_bytes: frame_bytes.clone(),
                codec: codec.clone(),
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
            "Measured by `cnnpc profile` with tract: median of {} runs per segment (in rounds over all segments, {}) on this machine \
             (device `host`), batch 1, f32 on the wire; frame bytes and codec costs on {}. Tiers are emulated as slowdowns of the host: {}.",
            rounds,
            if paused {
                format!("each after a {} ms idle pause", opts.round_idle.as_millis())
            } else {
                "back to back".to_string()
            },
            match opts.samples.len() {
                0 => "a pseudo-random input".to_string(),
                1 => "a calibration input".to_string(),
                n => format!("{n} calibration inputs (frame bytes their mean; codec costs on the first)"),
            },
            factors.join(", ")
        ),
        wire_encoding: WireEncoding::F32,
        input: TensorSize {
            elements: input_elements,
            bytes: input_elements as f64 * 4.0,
            tensors: input_tensors,
            frame_bytes: sizes[0].clone(),
            codec: crossing_codecs[0].clone(),
        },
        cuts,
        devices,
        wire: Some(WireCosts {
            codec,
            hop_ms: opts.http.map_or(0.0, |h| h.hop_ms),
            entry_ms: opts.http.map_or(0.0, |h| h.entry_ms),
            wake,
        }),
    };
    profile
        .validate()
        .map_err(|e| OnnxError::BadInput(e.to_string()))?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::{median, sliced_share};

    #[test]
    fn a_burst_of_load_in_under_half_the_runs_does_not_move_the_median() {
        let mut quiet = vec![10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 10.1, 10.0];
        let mut loaded = quiet.clone();
        loaded[2] = 40.0;
        loaded[5] = 35.0;
        loaded[7] = 25.0;
        let (q, l) = (median(&mut quiet), median(&mut loaded));
        assert!((q - l).abs() <= 0.1, "{q} vs {l}");
        assert!((9.8..=10.3).contains(&l), "{l}");
        assert!(median(&mut []).is_nan());
        assert_eq!(median(&mut [3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 2.0]), 3.0);
    }

    #[test]
    fn the_sliced_share_is_the_line_through_one_channel_and_all() {
        // 10 ms whole, 4 ms sliced to 1 of 16 channels: the model must give 4 ms at k = 1.
        let share = sliced_share(10.0, 4.0, 16);
        let at = |k: f64| 10.0 * (1.0 - share * (1.0 - k / 16.0));
        assert!((at(1.0) - 4.0).abs() < 1e-9, "{}", at(1.0));
        assert!((at(16.0) - 10.0).abs() < 1e-9);
        // Slower sliced than whole (noise): nothing scales. Faster than free: capped.
        assert_eq!(sliced_share(10.0, 11.0, 16), 0.0);
        assert_eq!(sliced_share(10.0, -5.0, 16), 1.0);
        assert_eq!(sliced_share(0.0, 0.0, 16), 0.0);
        assert_eq!(sliced_share(10.0, 4.0, 1), 0.0);
    }
}
