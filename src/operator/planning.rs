//! From a spec, a model and what the controller assumes about the tiers and links to a plan,
//! through the one planning pipeline ([`session`](crate::session)): the spec says which tiers
//! may run, how fast the links are, what the objective is and what to measure accuracy on.
//! Blocking and CPU-bound (profiling and the live oracle run tract): the controller calls it in
//! `spawn_blocking`. No kube client here.

use super::crd::{
    default_slowdown, Assumptions, CollaborativeInferenceSpec, PlanCutStatus, PlanStatus,
    PlanTierStatus, TIERS,
};
use super::decide::{self, Observation};
use super::resources::fnv_hex;
use crate::dataset::{CalibrationSet, Sizes, Source};
use crate::onnx::profile::ProfileOptions;
use crate::planner::accuracy::Measurements;
use crate::planner::plan::Plan;
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, SearchError, Strategy};
use crate::planner::sequential;
use crate::session::{self, Accuracy, ProfileSource, Progress, TierChoice, Topology};
use std::collections::BTreeMap;

/// Why no plan could be made; `reason()` is the condition reason.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    InvalidModel(String),
    #[error("{0}")]
    InvalidProfile(String),
    #[error("{0}")]
    UnknownCut(String),
    #[error("{0}")]
    ImpossibleObjective(String),
    #[error("{0}")]
    Calibration(String),
    #[error("no tier is available: {0}")]
    NoTier(String),
}

impl PlanError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::InvalidSpec(_) => "InvalidSpec",
            PlanError::InvalidModel(_) => "InvalidModel",
            PlanError::InvalidProfile(_) => "InvalidProfile",
            PlanError::UnknownCut(_) => "UnknownCut",
            PlanError::ImpossibleObjective(_) => "ImpossibleObjective",
            PlanError::Calibration(_) => "CalibrationFailed",
            PlanError::NoTier(_) => "NoTierAvailable",
        }
    }
}

impl From<session::Error> for PlanError {
    fn from(e: session::Error) -> Self {
        use session::Error as E;
        match e {
            E::Model(m) => PlanError::InvalidModel(m),
            E::Profile(m) | E::NoDevice(m) => PlanError::InvalidProfile(m),
            E::UnknownCut(m) => PlanError::UnknownCut(m),
            E::Calibration(m) | E::Measurements(m) => PlanError::Calibration(m),
            E::AmbiguousDevice { tier, devices } => PlanError::InvalidSpec(format!(
                "the profile has several {tier} devices ({devices}); choose one with tiers.{tier}.device"
            )),
            E::Search(s) => match s {
                SearchError::AccuracyUnreachable { .. } | SearchError::LatencyUnreachable { .. } => {
                    PlanError::ImpossibleObjective(s.to_string())
                }
                SearchError::Oracle(o) => PlanError::Calibration(o.to_string()),
                SearchError::TooFewSamples { .. } => PlanError::Calibration(s.to_string()),
                other => PlanError::InvalidSpec(other.to_string()),
            },
        }
    }
}

/// Everything one search needs.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub spec: CollaborativeInferenceSpec,
    /// The model (ONNX bytes).
    pub model: std::sync::Arc<Vec<u8>>,
    /// A profile to use as is (from the spec's ConfigMap, or the one a previous plan measured).
    pub profile: Option<Profile>,
    /// Tiers to plan around.
    pub lost: Vec<String>,
    /// Link bandwidths and compute factors to plan with (empty: the spec's).
    pub assumed: Assumptions,
    /// Accuracy measurements made before (reused, never repeated), and the measurement key
    /// they were made under: reused only under the same key.
    pub known: Measurements,
    pub known_key: Option<String>,
    /// The user's calibration data as the controller reads it (`None`: built in).
    pub calibration: Option<Source>,
    /// Profiling repeats per segment.
    pub repeats: usize,
}

#[derive(Debug, Clone)]
pub struct PlanOutcome {
    pub plan: Plan,
    pub status: PlanStatus,
    pub profile: Profile,
    pub known: Measurements,
    /// Human-readable notes (e.g. "accuracy not measured: no calibration").
    pub notes: Vec<String>,
    /// The link bandwidths and compute factors the search assumed.
    pub assumed: Assumptions,
    /// The key the measurements in `known` were made under (live accuracy only).
    pub measurement_key: Option<String>,
}

/// The physical links, in order, with their assumed (else spec) bandwidth.
pub fn physical_links(spec: &CollaborativeInferenceSpec, assumed: &Assumptions) -> [f64; 2] {
    let get = |name: &str, dflt: f64| assumed.link_mbps.get(name).copied().unwrap_or(dflt);
    [
        get("end->edge", spec.links.end_edge_mbps),
        get("edge->cloud", spec.links.edge_cloud_mbps),
    ]
}

/// Tiers enabled in the spec and not lost, in request order.
pub fn available_tiers(spec: &CollaborativeInferenceSpec, lost: &[String]) -> Vec<&'static str> {
    TIERS
        .iter()
        .copied()
        .filter(|t| spec.tiers.get(t).is_some_and(|s| s.enabled()))
        .filter(|t| !lost.iter().any(|l| l == t))
        .collect()
}

/// The topology over `tiers` (a subsequence of end, edge, cloud): consecutive available tiers
/// are joined by the serial path over the physical links between them.
pub fn topology(
    spec: &CollaborativeInferenceSpec,
    tiers: &[&str],
    assumed: &Assumptions,
) -> Topology {
    let links = physical_links(spec, assumed);
    let idx = |t: &str| TIERS.iter().position(|x| *x == t).unwrap_or(0);
    Topology {
        tiers: tiers
            .iter()
            .map(|t| TierChoice {
                tier: t.to_string(),
                device: spec.tiers.get(t).and_then(|s| s.device.clone()),
                compute_scale: assumed.compute_scale.get(*t).copied().unwrap_or(1.0),
                codec_scale: assumed.codec_scale.get(*t).copied().unwrap_or(1.0),
            })
            .collect(),
        link_mbps: tiers
            .windows(2)
            .map(|w| 1.0 / (idx(w[0])..idx(w[1])).map(|i| 1.0 / links[i]).sum::<f64>())
            .collect(),
        hop_ms: 0.0,
        reference_cloud_only: false,
    }
}

/// The status form of a plan. The id hashes what the shards run (deployment, cuts, kept
/// channels, encoding), so the same plan found again has the same id.
pub fn plan_status(plan: &Plan, profile: &Profile) -> Result<PlanStatus, PlanError> {
    let mut cuts = Vec::new();
    for c in &plan.cuts {
        let point = profile.cuts.get(c.point).ok_or_else(|| {
            PlanError::UnknownCut(format!(
                "the plan cuts at point {} beyond the profile",
                c.point
            ))
        })?;
        if point.tensors.is_empty() {
            return Err(PlanError::UnknownCut(format!(
                "profile cut {} ({}) names no tensors, so the model cannot be split there",
                c.point, point.name
            )));
        }
        cuts.push(PlanCutStatus {
            point: c.point as u32,
            tensors: point.tensors.iter().map(|t| t.name.clone()).collect(),
            from: c.from.clone(),
            to: c.to.clone(),
            channels: c.channels,
            kept: c.kept_channels,
        });
    }
    let shape = format!(
        "{}|{}|{}",
        plan.deployment,
        cuts.iter()
            .map(|c| format!("{}:{}:{}", c.tensors.join("+"), c.kept, c.channels))
            .collect::<Vec<_>>()
            .join(","),
        plan.wire_encoding.name()
    );
    let id = fnv_hex(shape.as_bytes())[..10].to_string();
    let mut summary = plan.deployment.clone();
    for c in &cuts {
        summary.push_str(&format!(" cut {}", c.point));
        if c.kept < c.channels {
            summary.push_str(&format!(" {}/{}", c.kept, c.channels));
        }
    }
    if !cuts.is_empty() {
        summary.push_str(&format!(" {}", plan.wire_encoding.name()));
    }
    Ok(PlanStatus {
        id,
        summary,
        deployment: plan.deployment.clone(),
        encoding: plan.wire_encoding,
        cuts,
        tiers: plan
            .tiers
            .iter()
            .map(|t| PlanTierStatus {
                tier: t.tier.clone(),
                segments: t.segments.map(|[a, b]| vec![a as u32, b as u32]),
                compute_ms: t.compute_ms,
                codec_ms: (t.codec_ms > 0.0).then_some(t.codec_ms),
            })
            .collect(),
        latency_ms: plan.latency_ms,
        accuracy: plan.accuracy,
        accuracy_interval: plan.accuracy_interval,
        measured_on: plan.measured_on.clone(),
    })
}

/// How the controller profiles a model itself: every single-tensor cut, the tiers as the
/// spec's slowdowns of this machine.
pub fn profile_options(spec: &CollaborativeInferenceSpec, repeats: usize) -> ProfileOptions {
    ProfileOptions {
        cuts: None,
        multi_tensor_cuts: crate::onnx::profile::MultiTensorCuts::Auto,
        repeats,
        // The controller's profile is corrected by what the shards observe; no window.
        window_seconds: 0.0,
        devices: TIERS
            .iter()
            .map(|t| {
                let s = spec
                    .tiers
                    .get(t)
                    .and_then(|s| s.slowdown)
                    .unwrap_or_else(|| default_slowdown(t));
                (t.to_string(), t.to_string(), s)
            })
            .collect(),
        // The session profiles on the first calibration inputs; the hops in a cluster are
        // observed, not loopback's.
        samples: Vec::new(),
        http: None,
        // Shards start each request after idling, in a cluster as here.
        wake: true,
        round_idle: crate::onnx::profile::ROUND_IDLE,
    }
}

/// Default inputs of a calibration source: fitted on 64, measured on at least 200 (more when the
/// floor needs them, [`sequential::default_eval`]).
pub const SOURCE_FIT: u32 = 64;
pub const SOURCE_EVAL: u32 = 200;

/// The live oracle's data: the user's source (resolved by the controller) or `pages` built-in
/// inputs (half fit the pruning, half measure it), chosen by the (shaped) model's input. The
/// shard pods rebuild the pruned model from the plan's `measuredOn`.
fn live_accuracy(
    shaped: &[u8],
    cal: &super::crd::Calibration,
    resolved: Option<&Source>,
    floor: Option<f64>,
) -> Result<Accuracy, PlanError> {
    let needed = u32::try_from(sequential::default_eval(floor)).unwrap_or(u32::MAX);
    let (source, fit, eval) = match resolved {
        Some(s) => (
            s.clone(),
            cal.fit.unwrap_or(SOURCE_FIT),
            cal.eval.unwrap_or(SOURCE_EVAL.max(needed)),
        ),
        None => {
            let set = CalibrationSet::for_model(shaped)
                .map_err(|e| PlanError::Calibration(format!("{e:#}")))?;
            // Given pages split in half; without them, 32 fit and the floor sets the rest.
            let (fit, eval) = match cal.pages {
                Some(p) => ((p / 2).max(1), (p / 2).max(1)),
                None => (32, needed),
            };
            (
                Source::Builtin(set),
                cal.fit.unwrap_or(fit),
                cal.eval.unwrap_or(eval),
            )
        }
    };
    Ok(Accuracy::Live {
        source,
        sizes: Sizes {
            fit: fit as usize,
            eval: eval as usize,
        },
        metric: cal.metric.unwrap_or_default(),
    })
}

/// The spec's input shape, if it gives one.
pub fn input_shape(spec: &CollaborativeInferenceSpec) -> Result<Option<Vec<usize>>, PlanError> {
    if spec.input_shape.is_empty() {
        return Ok(None);
    }
    spec.input_shape
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|d| *d > 0))
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(|| {
            PlanError::InvalidSpec(format!(
                "inputShape {:?} must be positive",
                spec.input_shape
            ))
        })
}

/// Profiles (unless a profile is given), builds the topology of the available tiers and searches.
pub fn make_plan(req: PlanRequest) -> Result<PlanOutcome, PlanError> {
    let spec = &req.spec;
    let tiers = available_tiers(spec, &req.lost);
    if tiers.is_empty() {
        return Err(PlanError::NoTier(if req.lost.is_empty() {
            "every tier is disabled".into()
        } else {
            format!("lost: {}", req.lost.join(", "))
        }));
    }
    let objective =
        spec.objective
            .as_ref()
            .and_then(|o| match (o.min_accuracy, o.max_latency_ms) {
                (Some(a), _) => Some(Objective::MinLatency { min_accuracy: a }),
                (_, Some(t)) => Some(Objective::MaxAccuracy { max_latency_ms: t }),
                _ => None,
            });
    let shape = input_shape(spec)?;
    let shaped = session::shaped(&req.model, shape.as_deref())?;
    let measured = spec.calibration.is_some() && objective.is_some();
    let accuracy = match &spec.calibration {
        Some(cal) if objective.is_some() => {
            let floor = match objective {
                Some(Objective::MinLatency { min_accuracy }) => Some(min_accuracy),
                _ => None,
            };
            live_accuracy(&shaped, cal, req.calibration.as_ref(), floor)?
        }
        _ => Accuracy::None,
    };
    // No accuracy data: the best uncompressed split (no pruning, the profile's own encoding on
    // the wire), which loses no accuracy.
    let config = if measured {
        SearchConfig::new(spec.compression.encodings.clone(), spec.compression.prune)
    } else {
        SearchConfig::new(Vec::new(), false)
    };
    let profile = match req.profile {
        Some(p) => ProfileSource::Given(p),
        None => ProfileSource::Measure(profile_options(spec, req.repeats)),
    };
    let request = session::Request {
        name: "model".into(),
        model: Some(&req.model),
        input_shape: shape,
        profile,
        accuracy,
        known: Measurements::default(),
        topology: topology(spec, &tiers, &req.assumed),
        objective: if measured { objective } else { None },
        strategy: Strategy::Cnnpc,
        config,
        baselines: None,
    };
    let mut log = |p: Progress| match p {
        Progress::Measured {
            n,
            point,
            accuracy,
            seconds,
            samples,
        } => tracing::info!(
            n,
            %point,
            accuracy,
            seconds,
            samples = samples.map(|b| format!("{}..{} of {}", b.from, b.to, b.of)),
            "accuracy measured"
        ),
        Progress::Profiled { cuts, host_ms } => tracing::info!(cuts, host_ms, "model profiled"),
        _ => {}
    };
    let (known, known_key) = (req.known, req.known_key);
    let out = session::run_with_known(
        request,
        &mut |profile, m| {
            // Points measured on other data (or sizes, metric, model) are not reused.
            let key = m.map(|m| session::measurement_key(m, profile.cuts.len()));
            Ok(if key.is_some() && key == known_key {
                known.clone()
            } else {
                Measurements::default()
            })
        },
        &mut log,
    )?;
    let measurement_key = out
        .measured_on
        .as_ref()
        .map(|m| session::measurement_key(m, out.profile.cuts.len()));
    let mut notes = Vec::new();
    if measured {
        notes.push(format!("{} accuracy measurements", out.calls));
    } else {
        if let Some(Objective::MaxAccuracy { max_latency_ms }) = objective {
            if out.plan.latency_ms > max_latency_ms {
                return Err(PlanError::ImpossibleObjective(format!(
                    "no plan meets {max_latency_ms} ms without pruning: the fastest takes {:.3} ms (set calibration to allow pruning)",
                    out.plan.latency_ms
                )));
            }
        }
        if spec.calibration.is_none() {
            notes.push("accuracy not measured (no calibration): uncompressed split".into());
        }
    }
    let status = plan_status(&out.plan, &out.profile)?;
    let links = physical_links(spec, &req.assumed);
    let assumed = Assumptions {
        link_mbps: BTreeMap::from([
            ("end->edge".to_string(), links[0]),
            ("edge->cloud".to_string(), links[1]),
        ]),
        compute_scale: tiers
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    req.assumed.compute_scale.get(*t).copied().unwrap_or(1.0),
                )
            })
            .collect(),
        codec_scale: tiers
            .iter()
            .filter_map(|t| Some((t.to_string(), *req.assumed.codec_scale.get(*t)?)))
            .collect(),
    };
    Ok(PlanOutcome {
        plan: out.plan,
        status,
        profile: out.profile,
        known: out.known,
        notes,
        assumed,
        measurement_key,
    })
}

/// The predicted latency of the deployed plan `current` under new assumptions: the same
/// deployment, cuts, kept channels and encoding, re-costed. `None` when the topology no longer
/// has the plan's tiers.
pub fn recost(
    current: &PlanStatus,
    spec: &CollaborativeInferenceSpec,
    profile: &Profile,
    lost: &[String],
    assumed: &Assumptions,
) -> Option<f64> {
    let tiers = available_tiers(spec, lost);
    let tspec = session::topology_spec(&topology(spec, &tiers, assumed), profile).ok()?;
    let topology = tspec.build(profile).ok()?;
    let planner = Planner::new(profile, &topology).ok()?;
    // Boundaries of the current plan over these tiers.
    let mut boundaries = Vec::new();
    let mut next = 0usize;
    for t in &tiers[..tiers.len().saturating_sub(1)] {
        let pt = current.tiers.iter().find(|p| p.tier == *t)?;
        if let Some(seg) = &pt.segments {
            next = *seg.get(1)? as usize + 1;
        }
        boundaries.push(next);
    }
    // Every computing tier of the plan must still be there.
    if current
        .tiers
        .iter()
        .any(|p| p.segments.is_some() && !tiers.contains(&p.tier.as_str()))
    {
        return None;
    }
    let layout = planner
        .layouts
        .iter()
        .position(|l| l.deployment.boundaries == boundaries)?;
    let kept: Vec<u32> = planner.layouts[layout]
        .cuts
        .iter()
        .map(|p| {
            current
                .cuts
                .iter()
                .find(|c| c.point as usize == *p)
                .map_or(profile.cuts[*p].channels, |c| c.kept)
        })
        .collect();
    let c = crate::planner::search::Candidate {
        layout,
        kept,
        encoding: current.encoding,
        latency_ms: 0.0,
        accuracy: current.accuracy,
    };
    Some(planner.plan("current", &c, 0).latency_ms)
}

/// What observations led to.
#[derive(Debug, Clone)]
pub enum Replan {
    /// The assumptions did not move enough to search again.
    Unchanged,
    /// A search ran; the best plan is not enough better than the current one (`note` says).
    Kept { note: String, assumed: Assumptions },
    /// Roll this plan out.
    RollOut {
        outcome: Box<PlanOutcome>,
        reason: String,
    },
}

/// Folds `obs` into the assumptions the current plan was made with (`req.assumed`) and
/// searches again when they moved by more than 5% even at the evidence's confidence
/// ([`decide::cautious`]). The new plan rolls out when it beats the current one by more than
/// `hysteresis`, both re-costed under the cautious assumptions, so the gain holds at that
/// confidence; a plan in `rejected` (rolled back before) is never chosen again. Blocking (it
/// may search); the decisions are [`decide`]'s.
pub fn replan_on(
    current: &PlanStatus,
    mut req: PlanRequest,
    obs: &Observation,
    hysteresis: f64,
    rejected: &[String],
) -> Result<Replan, PlanError> {
    let old = req.assumed.clone();
    let new = decide::adjust(current, &old, obs);
    let careful = decide::adjust(current, &old, &decide::cautious(current, &old, obs));
    if !decide::changed(&old, &careful, 0.05) {
        return Ok(Replan::Unchanged);
    }
    let reason = decide::reason(&old, &new);
    req.assumed = new.clone();
    let (spec, lost) = (req.spec.clone(), req.lost.clone());
    let outcome = make_plan(req)?;
    if rejected.contains(&outcome.status.id) {
        return Ok(Replan::Kept {
            note: format!(
                "{reason}: the best plan {} was rolled back before (status.rejectedPlans): kept {}",
                outcome.status.id, current.id
            ),
            assumed: new,
        });
    }
    let current_ms = recost(current, &spec, &outcome.profile, &lost, &careful);
    let new_ms = recost(&outcome.status, &spec, &outcome.profile, &lost, &careful)
        .unwrap_or(outcome.status.latency_ms);
    if decide::should_roll_out(
        &current.id,
        current_ms,
        &outcome.status.id,
        new_ms,
        hysteresis,
    ) {
        Ok(Replan::RollOut {
            outcome: Box::new(outcome),
            reason,
        })
    } else {
        Ok(Replan::Kept {
            note: format!(
                "{reason}: best plan {} at {new_ms:.3} ms vs the current {} ms at the evidence's \
                 confidence: kept (hysteresis {hysteresis})",
                outcome.status.id,
                current_ms.map_or("?".into(), |m| format!("{m:.3}"))
            ),
            assumed: new,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> CollaborativeInferenceSpec {
        let mut base =
            json!({"model": {"path": "m.onnx", "volume": {"name": "v", "emptyDir": {}}}});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            b.extend(o.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn request(s: CollaborativeInferenceSpec) -> PlanRequest {
        PlanRequest {
            spec: s,
            model: std::sync::Arc::new(crate::testkit::models::chain_model_bytes()),
            profile: None,
            lost: vec![],
            assumed: Assumptions::default(),
            known: Measurements::default(),
            known_key: None,
            calibration: None,
            repeats: 1,
        }
    }

    #[test]
    fn skipping_a_tier_joins_its_links_in_series() {
        let s = spec(json!({"links": {"endEdgeMbps": 20, "edgeCloudMbps": 5}}));
        let t = topology(&s, &["end", "cloud"], &Assumptions::default());
        assert_eq!(t.link_mbps, vec![4.0]);
        let mut adj = Assumptions::default();
        adj.link_mbps.insert("edge->cloud".into(), 20.0);
        adj.compute_scale.insert("end".into(), 2.0);
        let t = topology(&s, &["end", "edge", "cloud"], &adj);
        assert_eq!(t.link_mbps, vec![20.0, 20.0]);
        assert_eq!(t.tiers[0].tier, "end");
        assert_eq!(t.tiers[0].compute_scale, 2.0);
        let off = spec(json!({"tiers": {"edge": {"enabled": false}}}));
        assert_eq!(available_tiers(&off, &["cloud".to_string()]), vec!["end"]);
    }

    #[test]
    fn a_measured_plan_of_the_chain_model_names_real_cuts_and_recosts_to_itself() {
        let out = make_plan(request(spec(json!({})))).unwrap();
        assert!(out
            .notes
            .iter()
            .any(|n| n.contains("accuracy not measured")));
        // Slowdowns were applied to the measured host times.
        let host: f64 = out.profile.devices["host"].run_ms.iter().sum();
        let end: f64 = out.profile.devices["end"].run_ms.iter().sum();
        assert!((end / host - 18.0).abs() < 1e-6);
        let s = &out.status;
        for c in &s.cuts {
            assert!(
                ["relu1", "relu2", "gap"].contains(&c.tensors[0].as_str()),
                "{c:?}"
            );
            assert_eq!(c.kept, c.channels, "no pruning without calibration");
        }
        assert!(s.measured_on.is_none(), "nothing was measured");
        let again = recost(
            s,
            &spec(json!({})),
            &out.profile,
            &[],
            &Assumptions::default(),
        )
        .unwrap();
        assert!(
            (again - s.latency_ms).abs() < 1e-9,
            "{again} vs {}",
            s.latency_ms
        );
        // Same plan, same id.
        assert_eq!(plan_status(&out.plan, &out.profile).unwrap().id, s.id);
    }

    #[test]
    fn impossible_objectives_and_no_tiers_are_errors_with_reasons() {
        let e = make_plan(request(spec(
            json!({"objective": {"maxLatencyMs": 0.0001}}),
        )))
        .unwrap_err();
        assert_eq!(e.reason(), "ImpossibleObjective", "{e}");
        let off = json!({"tiers": {"end": {"enabled": false}, "edge": {"enabled": false}, "cloud": {"enabled": false}}});
        assert_eq!(
            make_plan(request(spec(off))).unwrap_err().reason(),
            "NoTierAvailable"
        );
        let e = make_plan(request(spec(
            json!({"objective": {"minAccuracy": 0.9}, "calibration": {"pages": 8}}),
        )))
        .unwrap_err();
        assert_eq!(
            e.reason(),
            "CalibrationFailed",
            "the chain model does not take pages: {e}"
        );
        let mut r = request(spec(json!({})));
        r.model = std::sync::Arc::new(b"not onnx".to_vec());
        assert_eq!(make_plan(r).unwrap_err().reason(), "InvalidModel");
    }
}
