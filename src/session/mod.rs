//! The planning pipeline, written once: a model, its profile, calibration data, a topology and
//! an objective go through profile → accuracy oracle → search → plan. `cnnpc plan`, `cnnpc
//! demo`, the operator and the benchmarks all call [`run`]; each turns its [`Progress`] into
//! what it shows (progress bars, log lines, events).
//!
//! Blocking and CPU-bound (profiling and the live oracle run tract). It reads no files itself
//! but the calibration font; measurements come in as [`Request::known`] and go out as
//! [`Outcome::known`], so the caller keeps them where it likes ([`cache`] on disk, the operator
//! in a ConfigMap).

pub mod cache;
pub mod report;

use std::time::Instant;

use crate::dataset::{Calibration, Sizes, Source};
use crate::digest::sha256_hex;
use crate::onnx::calibration::Batch;
use crate::onnx::oracle::LiveOracle;
use crate::onnx::profile::{profile_model, ProfileOptions};
use crate::onnx::prune::Method;
use crate::onnx::{list_cuts, Cut};
use crate::planner::accuracy::{
    AccuracyOracle, CompressionPoint, Measurements, MeasuringOracle, Metric, OracleError,
};
use crate::planner::plan::{Items, MeasuredOn, Plan};
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, SearchError, Strategy};
use crate::planner::surface::SyntheticSurface;
use crate::planner::table::TableOracle;
use crate::planner::topology::{Overhead, TopologySpec};

/// Where the profile comes from.
#[derive(Debug, Clone)]
pub enum ProfileSource {
    /// A profile made before (a `model_profile/` file, a ConfigMap, an earlier plan's).
    Given(Profile),
    /// Measure the model per segment on this machine; the tiers are slowdowns of it.
    Measure(ProfileOptions),
}

/// Where accuracies come from.
#[derive(Debug, Clone)]
pub enum Accuracy {
    /// Nothing is measured: no pruning, the best uncompressed plan.
    None,
    /// A table of measured points (the reference's CSV layout).
    Table(Measurements),
    /// The synthetic surface (`planner::surface`), for trying the planner.
    Surface(SyntheticSurface),
    /// Prune, split, encode and run the model on calibration data, graded by `metric`.
    Live {
        source: Source,
        sizes: Sizes,
        metric: Metric,
    },
}

/// One tier of the topology: its name, the profile device it is (`None`: the profile's only
/// device of that tier) and a factor on that device's run times (replanning feeds observed /
/// predicted ratios here).
#[derive(Debug, Clone, PartialEq)]
pub struct TierChoice {
    pub tier: String,
    pub device: Option<String>,
    pub compute_scale: f64,
    /// A factor on the tier's codec costs on top of `compute_scale`.
    pub codec_scale: f64,
}

impl TierChoice {
    pub fn new(tier: &str) -> TierChoice {
        TierChoice {
            tier: tier.into(),
            device: None,
            compute_scale: 1.0,
            codec_scale: 1.0,
        }
    }
}

/// The tiers in request order and the links between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub tiers: Vec<TierChoice>,
    /// Mbit/s of each link, `tiers.len() - 1` entries.
    pub link_mbps: Vec<f64>,
    pub hop_ms: f64,
    pub reference_cloud_only: bool,
}

impl Topology {
    /// End, edge and cloud joined by two links (the reference setting).
    pub fn end_edge_cloud(end_edge_mbps: f64, edge_cloud_mbps: f64) -> Topology {
        Topology {
            tiers: ["end", "edge", "cloud"].map(TierChoice::new).to_vec(),
            link_mbps: vec![end_edge_mbps, edge_cloud_mbps],
            hop_ms: 0.0,
            reference_cloud_only: false,
        }
    }
}

/// Everything one planning run needs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Model name in the profile and the plan.
    pub name: String,
    /// The ONNX model file's bytes (needed to measure a profile or accuracy).
    pub model: Option<&'a [u8]>,
    /// The model input's shape (batch included), for models that leave it symbolic.
    pub input_shape: Option<Vec<usize>>,
    pub profile: ProfileSource,
    pub accuracy: Accuracy,
    /// Points measured before (reused, never measured again).
    pub known: Measurements,
    pub topology: Topology,
    pub objective: Option<Objective>,
    pub strategy: Strategy,
    /// Encodings (empty: the profile's own) and whether channels may be pruned.
    pub config: SearchConfig,
    /// Also plan the baselines (end-only, edge-only, cloud-only, neurosurgeon) with this
    /// configuration; they never measure accuracy.
    pub baselines: Option<SearchConfig>,
}

/// What a run reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Profiling {
        done: usize,
        total: usize,
    },
    Profiled {
        cuts: usize,
        host_ms: f64,
    },
    /// The live oracle is built: what it measures on.
    Oracle {
        measured_on: &'a MeasuredOn,
    },
    /// Points measured before that this run reuses.
    Reused {
        points: usize,
    },
    Measuring {
        n: usize,
        point: &'a CompressionPoint,
        /// The batch, for a sequential measurement.
        samples: Option<Samples>,
    },
    /// A point, or one batch of its samples (`accuracy` is then the batch's).
    Measured {
        n: usize,
        point: &'a CompressionPoint,
        accuracy: f64,
        seconds: f64,
        samples: Option<Samples>,
    },
}

/// Evaluation samples `from..to` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Samples {
    pub from: usize,
    pub to: usize,
    pub of: usize,
}

/// What a run found.
pub struct Outcome {
    pub plan: Plan,
    /// In the order end-only, edge-only, cloud-only, neurosurgeon (those the topology has).
    pub baselines: Vec<Plan>,
    pub profile: Profile,
    /// Every point known after the run: the reused ones and the fresh ones.
    pub known: Measurements,
    /// Fresh measurements.
    pub calls: usize,
    /// Points known before the run.
    pub reused: usize,
    /// The live oracle (when accuracy was live): it builds the pruned model the plan measured.
    pub oracle: Option<LiveOracle>,
    /// What the live oracle measured on (also in `plan.measured_on`).
    pub measured_on: Option<MeasuredOn>,
    /// The model as planned: the file with `input_shape` applied.
    pub model: Option<Vec<u8>>,
}

/// Why a run failed; the operator maps each to a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Profile(String),
    #[error("{0}")]
    UnknownCut(String),
    #[error("{0}")]
    Calibration(String),
    #[error("the profile has no device of tier {0}")]
    NoDevice(String),
    #[error("the profile has several {tier} devices ({devices}); choose one")]
    AmbiguousDevice { tier: String, devices: String },
    #[error("reading the measurements made before: {0}")]
    Measurements(String),
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// The key naming everything a live measurement depends on (the measurement cache's first
/// line): the model, the calibration data and sizes, the pruning method, the profile's cuts.
pub fn measurement_key(m: &MeasuredOn, cuts: usize) -> String {
    let mut key = format!(
        "model sha256 {}, calibration {}, fit {}@{}, eval {}@{}, pruning {}, cuts {cuts}",
        m.model, m.calibration, m.fit.count, m.fit.first, m.eval.count, m.eval.first, m.pruning
    );
    // Keys of a built-in set's agreement on a model as declared read as they always have, so
    // measurements made before these fields existed are reused.
    let builtin = m.data.starts_with("builtin:");
    if !builtin || m.metric != Metric::Agreement || !m.shape.is_empty() {
        key.push_str(&format!(
            ", data {}, metric {}, shape {:?}",
            m.data,
            m.metric.name(),
            m.shape
        ));
    }
    key
}

/// The model's cuts in the profile's order, matched by the tensors that cross them: the oracle
/// and the planner must mean the same thing by "cut 7".
pub fn profile_cuts(model: &[u8], profile: &Profile) -> Result<Vec<Cut>, Error> {
    let cuts = list_cuts(model).map_err(|e| Error::Model(e.to_string()))?;
    profile
        .cuts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let want: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
            if want.is_empty() {
                return Err(Error::UnknownCut(format!(
                    "profile cut {i} ({}) names no tensors, so it cannot be found in the model; \
                     make the profile with `cnnpc profile`",
                    p.name
                )));
            }
            cuts.iter()
                .find(|c| {
                    c.tensors
                        .iter()
                        .map(|t| t.name.as_str())
                        .eq(want.iter().copied())
                })
                .cloned()
                .ok_or_else(|| {
                    Error::UnknownCut(format!(
                        "profile cut {i} ({}) crosses {want:?}, which is not a cut of this model \
                         (was the profile made from another model?)",
                        p.name
                    ))
                })
        })
        .collect()
}

/// The record of what a live oracle on `cal` measures: the model file (`original`, before the
/// shape), the shape, the data's identity, the fit and eval items, the metric and the pruning.
pub fn measured_on(
    original: &[u8],
    shape: Option<&[usize]>,
    source: &Source,
    cal: &Calibration,
    sizes: Sizes,
    metric: Metric,
) -> MeasuredOn {
    let (fit_first, eval_first, _) = cal.firsts(sizes);
    MeasuredOn {
        model: sha256_hex(original),
        shape: shape.map(<[usize]>::to_vec).unwrap_or_default(),
        calibration: source.describe(),
        data: cal.digest(),
        metric,
        fit: Items {
            first: fit_first,
            count: sizes.fit,
        },
        eval: Items {
            first: eval_first,
            count: sizes.eval,
        },
        pruning: Method::default().name().to_string(),
    }
}

/// The first `n` fitting inputs of `source` for `model` (fewer when the data has fewer, never
/// none): what a profile runs to size the wire.
pub fn first_inputs(
    model: &[u8],
    source: &Source,
    sizes: Sizes,
    n: usize,
) -> Result<Vec<Vec<f32>>, Error> {
    let cal = open_calibration(model, source)?;
    let (fit_first, _, _) = cal.firsts(sizes);
    // As many as there are (a user's files may be few), at least one.
    let have = cal
        .len()
        .map_or(n, |len| len.saturating_sub(fit_first as usize).min(n))
        .max(1);
    let batch = cal
        .batch(fit_first, have)
        .map_err(|e| Error::Calibration(format!("the profiling inputs: {e:#}")))?;
    let per: usize = batch.shape[1..].iter().product();
    Ok(batch.data.chunks(per.max(1)).map(<[f32]>::to_vec).collect())
}

/// Calibration inputs a profile sizes its frames on (the first is also the one it times).
pub const PROFILE_SAMPLES: usize = 8;

/// The model file with its input shape applied, as every part plans and splits it.
pub fn shaped(model: &[u8], shape: Option<&[usize]>) -> Result<Vec<u8>, Error> {
    crate::onnx::shape::apply(model, shape).map_err(|e| Error::Model(e.to_string()))
}

/// The inputs the pruning of a plan measured on `m` was fitted on, after checking that
/// `original` is the model file it was measured on and `source` its data: what a shard or
/// `cnnpc split --plan` needs to rebuild exactly the measured model. Returns the shaped model
/// with them.
pub fn fit_inputs(
    original: &[u8],
    m: &MeasuredOn,
    source: &Source,
) -> Result<(Vec<u8>, Batch), Error> {
    let have = sha256_hex(original);
    if have != m.model {
        return Err(Error::Model(format!(
            "the model has sha256 {have}, but the plan was measured on {}",
            m.model
        )));
    }
    if m.pruning != Method::default().name() {
        return Err(Error::Calibration(format!(
            "the plan was pruned with {}, this cnnpc prunes with {}",
            m.pruning,
            Method::default().name()
        )));
    }
    let model = shaped(original, (!m.shape.is_empty()).then_some(&m.shape[..]))?;
    let cal = open_calibration(&model, source)?;
    // An empty record of the data (a shard started by hand) checks nothing.
    if !m.data.is_empty() && cal.digest() != m.data {
        return Err(Error::Calibration(format!(
            "the calibration data {} has content {}, but the plan was measured on {} ({})",
            source.describe(),
            cal.digest(),
            m.data,
            m.calibration
        )));
    }
    let fit = cal
        .batch(m.fit.first, m.fit.count)
        .map_err(|e| Error::Calibration(format!("{e:#}")))?;
    Ok((model, fit))
}

/// Opens `source` for the (shaped) model's input.
pub fn open_calibration(model: &[u8], source: &Source) -> Result<Calibration, Error> {
    let cal = |e: anyhow::Error| Error::Calibration(format!("{e:#}"));
    let input = crate::dataset::input_shape(model).map_err(cal)?;
    Calibration::open(source, &input).map_err(cal)
}

/// The live oracle for the (shaped) `model` on `cal`, over the profile's cuts.
pub fn live_oracle(
    model: &[u8],
    cuts: Option<Vec<Cut>>,
    profile: &Profile,
    cal: &Calibration,
    sizes: Sizes,
    metric: Metric,
) -> Result<LiveOracle, Error> {
    let err = |e: anyhow::Error| Error::Calibration(format!("{e:#}"));
    cal.check_sizes(sizes).map_err(err)?;
    if metric == Metric::Accuracy && !cal.labelled() {
        return Err(Error::Calibration(
            "--metric accuracy needs labelled calibration data (labels for a .npy, class \
             folders for images); use agreement or cosine"
                .into(),
        ));
    }
    if metric != Metric::Cosine {
        if let Some((name, shape)) = map_output(model) {
            return Err(Error::Calibration(format!(
                "the model's output `{name}` is {shape:?}, a map rather than class scores: top-1 \
                 {} means nothing for it; use --metric cosine (calibration.metric: cosine)",
                metric.name()
            )));
        }
    }
    let cuts = match cuts {
        Some(c) => c,
        None => profile_cuts(model, profile)?,
    };
    let (fit_first, eval_first, _) = cal.firsts(sizes);
    let fit = cal.batch(fit_first, sizes.fit).map_err(err)?;
    let eval = cal.batch(eval_first, sizes.eval).map_err(err)?;
    let mut oracle = LiveOracle::new(model.to_vec(), cuts, fit, eval)
        .map_err(|e| Error::Calibration(e.to_string()))?;
    oracle.metric = metric;
    Ok(oracle)
}

/// The first output's name and shape when it is a map (more than one dimension beyond the
/// batch larger than 1, as a detector's or a segmenter's), not class scores (`[N, K]`,
/// `[N, K, 1, 1]`). Unknown shapes are given the benefit of the doubt.
fn map_output(model: &[u8]) -> Option<(String, Vec<i64>)> {
    let graph = crate::onnx::graph::Graph::from_bytes(model).ok()?;
    let name = graph.outputs().first()?.clone();
    let dims: Vec<i64> = graph
        .tensor_info(&name)?
        .dims
        .iter()
        .map(|d| d.fixed())
        .collect::<Option<_>>()?;
    let spread = dims.iter().skip(1).filter(|&&d| d > 1).count();
    (spread > 1).then_some((name, dims))
}

/// The topology over the profile's devices.
pub fn topology_spec(t: &Topology, profile: &Profile) -> Result<TopologySpec, Error> {
    let mut tiers = Vec::new();
    for c in &t.tiers {
        let device = match &c.device {
            Some(d) => d.clone(),
            None => match profile.devices_for(&c.tier).as_slice() {
                [one] => one.to_string(),
                [] => return Err(Error::NoDevice(c.tier.clone())),
                many => {
                    return Err(Error::AmbiguousDevice {
                        tier: c.tier.clone(),
                        devices: many.join(", "),
                    })
                }
            },
        };
        tiers.push((c.tier.clone(), device, c.compute_scale));
    }
    Ok(TopologySpec {
        tiers,
        codec_scale: t
            .tiers
            .iter()
            .map(|c| (c.tier.clone(), c.codec_scale))
            .collect(),
        link_mbps: t.link_mbps.clone(),
        hop_ms: t.hop_ms,
        overhead: Overhead::REFERENCE,
        reference_cloud_only: t.reference_cloud_only,
    })
}

/// Reports every fresh measurement of the wrapped oracle.
struct Reporting<'o, 'p> {
    inner: &'o mut dyn AccuracyOracle,
    progress: &'p mut dyn FnMut(Progress),
    n: usize,
}

impl AccuracyOracle for Reporting<'_, '_> {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        self.n += 1;
        let started = Instant::now();
        (self.progress)(Progress::Measuring {
            n: self.n,
            point,
            samples: None,
        });
        let accuracy = self.inner.measure(point)?;
        let seconds = started.elapsed().as_secs_f64();
        (self.progress)(Progress::Measured {
            n: self.n,
            point,
            accuracy,
            seconds,
            samples: None,
        });
        Ok(accuracy)
    }

    fn samples(&self) -> Option<usize> {
        self.inner.samples()
    }

    fn binary(&self) -> bool {
        self.inner.binary()
    }

    fn exact(&self, point: &CompressionPoint) -> bool {
        self.inner.exact(point)
    }

    fn measure_samples(
        &mut self,
        point: &CompressionPoint,
        from: usize,
        to: usize,
    ) -> Result<f64, OracleError> {
        if from == 0 {
            self.n += 1;
        }
        let of = self.inner.samples().unwrap_or(to);
        let samples = Some(Samples { from, to, of });
        let started = Instant::now();
        (self.progress)(Progress::Measuring {
            n: self.n,
            point,
            samples,
        });
        let score = self.inner.measure_samples(point, from, to)?;
        (self.progress)(Progress::Measured {
            n: self.n,
            point,
            accuracy: score / (to - from).max(1) as f64,
            seconds: started.elapsed().as_secs_f64(),
            samples,
        });
        Ok(score)
    }
}

/// Runs the pipeline (see the module doc).
pub fn run(req: Request, progress: &mut dyn FnMut(Progress)) -> Result<Outcome, Error> {
    let known = req.known.clone();
    run_with_known(req, &mut |_, _| Ok(known.clone()), progress)
}

/// Asked for the points known before a run, once the profile and (for live accuracy) the
/// record of what is measured are known.
pub type KnownFor<'a> =
    dyn FnMut(&Profile, Option<&MeasuredOn>) -> anyhow::Result<Measurements> + 'a;

/// [`run`], with the points known before asked for once the profile is known (a measurement
/// file names cuts by the profile's points, and a measured profile exists only mid-run).
pub fn run_with_known(
    req: Request,
    known_for: &mut KnownFor,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, Error> {
    let shaped_model = match req.model {
        Some(m) => Some(shaped(m, req.input_shape.as_deref())?),
        None => None,
    };
    let needs_model = || {
        shaped_model
            .as_deref()
            .ok_or_else(|| Error::Model("profiling and live accuracy need the model".into()))
    };
    let profile = match &req.profile {
        ProfileSource::Given(p) => p.clone(),
        ProfileSource::Measure(opts) => {
            let model = needs_model()?;
            let mut opts = opts.clone();
            // Frame sizes on the wire depend on the data (zstd): profile on a real input.
            if let (true, Accuracy::Live { source, sizes, .. }) =
                (opts.samples.is_empty(), &req.accuracy)
            {
                opts.samples = first_inputs(model, source, *sizes, PROFILE_SAMPLES)?;
            }
            let p = profile_model(model, &req.name, &opts, &mut |done, total| {
                progress(Progress::Profiling { done, total })
            })
            .map_err(|e| Error::Model(format!("profiling the model: {e}")))?;
            let host_ms = p.devices.get("host").map_or(0.0, |d| d.run_ms.iter().sum());
            progress(Progress::Profiled {
                cuts: p.cuts.len(),
                host_ms,
            });
            p
        }
    };
    let spec = topology_spec(&req.topology, &profile)?;
    let topology = spec
        .build(&profile)
        .map_err(|e| Error::Profile(e.to_string()))?;
    let planner = Planner::new(&profile, &topology).map_err(|e| Error::Profile(e.to_string()))?;
    let mut config = req.config.clone();
    if config.encodings.is_empty() {
        config.encodings = vec![profile.wire_encoding];
    }

    // A profile from elsewhere must name this model's cuts (the shards split it there).
    let cuts = match shaped_model.as_deref() {
        Some(m) => Some(profile_cuts(m, &profile)?),
        None => None,
    };
    let mut live = None;
    let mut record = None;
    let mut other: Option<Box<dyn AccuracyOracle>> = None;
    match &req.accuracy {
        Accuracy::None => {}
        Accuracy::Table(t) => other = Some(Box::new(TableOracle { table: t.clone() })),
        Accuracy::Surface(s) => other = Some(Box::new(s.clone())),
        Accuracy::Live {
            source,
            sizes,
            metric,
        } => {
            let model = needs_model()?;
            let cal = open_calibration(model, source)?;
            let m = measured_on(
                req.model.unwrap_or_default(),
                req.input_shape.as_deref(),
                source,
                &cal,
                *sizes,
                *metric,
            );
            let o = live_oracle(model, cuts.clone(), &profile, &cal, *sizes, *metric)?;
            progress(Progress::Oracle { measured_on: &m });
            live = Some(o);
            record = Some(m);
        }
    }
    let measured_on = record;
    let mut known = known_for(&profile, measured_on.as_ref())
        .map_err(|e| Error::Measurements(format!("{e:#}")))?;
    let reused = known.len();
    if reused > 0 {
        progress(Progress::Reused { points: reused });
    }
    let oracle: Option<&mut dyn AccuracyOracle> = match (&mut live, &mut other) {
        (Some(l), _) => Some(l),
        (None, Some(o)) => Some(o.as_mut()),
        _ => None,
    };
    let (mut plan, calls) = {
        let mut reporting = oracle.map(|inner| Reporting {
            inner,
            progress: &mut *progress,
            n: 0,
        });
        let mut m = reporting
            .as_mut()
            .map(|r| MeasuringOracle::new(r as &mut dyn AccuracyOracle, &mut known));
        let c = planner.search(req.strategy, req.objective, &config, m.as_mut())?;
        let plan = match &m {
            Some(m) => planner.plan_measured(req.strategy.name(), &c, m),
            None => planner.plan(req.strategy.name(), &c, 0),
        };
        (plan, m.map_or(0, |m| m.calls))
    };
    plan.measured_on = measured_on.clone();
    let mut baselines = Vec::new();
    if let Some(base) = &req.baselines {
        let mut config = base.clone();
        if config.encodings.is_empty() {
            config.encodings = vec![profile.wire_encoding];
        }
        for s in [
            Strategy::EndOnly,
            Strategy::EdgeOnly,
            Strategy::CloudOnly,
            Strategy::Neurosurgeon,
        ] {
            if let Ok(c) = planner.search(s, None, &config, None) {
                baselines.push(planner.plan(s.name(), &c, 0));
            }
        }
    }
    Ok(Outcome {
        plan,
        baselines,
        profile,
        known,
        calls,
        reused,
        oracle: live,
        measured_on,
        model: shaped_model,
    })
}
