//! From a spec, a model and what the controller has observed to a plan: profile (or take the
//! given profile), build the topology of the available tiers, search. Blocking and CPU-bound
//! (profiling and the live oracle run tract): the controller calls it in `spawn_blocking`.
//! No kube client here.

use super::crd::{default_slowdown, CollaborativeInferenceSpec, PlanCutStatus, PlanStatus};
use super::crd::{Encoding, PlanTierStatus, TIERS};
use super::resources::fnv_hex;
use crate::live::{CalibrationSet, OracleSizes};
use crate::onnx::graph::Graph;
use crate::onnx::oracle::LiveOracle;
use crate::onnx::profile::{profile_model, ProfileOptions};
use crate::planner::accuracy::{AccuracyOracle, Measurements, MeasuringOracle, WireEncoding};
use crate::planner::plan::Plan;
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, SearchError, Strategy};
use crate::planner::topology::TopologySpec;
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

/// Feedback folded into the topology: per physical link (`end->edge`, `edge->cloud`) the
/// bandwidth, per tier a factor on its profiled compute times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adjustments {
    pub link_mbps: BTreeMap<String, f64>,
    pub compute_scale: BTreeMap<String, f64>,
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
    pub adjust: Adjustments,
    /// Accuracy measurements made before (reused, never repeated).
    pub known: Measurements,
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
    pub assumed: Adjustments,
}

/// The physical links, in order, with their spec (or adjusted) bandwidth.
pub fn physical_links(spec: &CollaborativeInferenceSpec, adjust: &Adjustments) -> [f64; 2] {
    let get = |name: &str, dflt: f64| adjust.link_mbps.get(name).copied().unwrap_or(dflt);
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
pub fn topology_spec(
    spec: &CollaborativeInferenceSpec,
    profile: &Profile,
    tiers: &[&str],
    adjust: &Adjustments,
) -> Result<TopologySpec, PlanError> {
    let links = physical_links(spec, adjust);
    let idx = |t: &str| TIERS.iter().position(|x| *x == t).unwrap_or(0);
    let mut out = Vec::new();
    for t in tiers {
        let ts = spec.tiers.get(t).cloned().unwrap_or_default();
        let device = match &ts.device {
            Some(d) => d.clone(),
            None => match profile.devices_for(t).as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(PlanError::InvalidProfile(format!(
                        "the profile has no device of tier {t}"
                    )))
                }
                many => {
                    return Err(PlanError::InvalidSpec(format!(
                    "the profile has several {t} devices ({}); choose one with tiers.{t}.device",
                    many.join(", ")
                )))
                }
            },
        };
        let scale = adjust.compute_scale.get(*t).copied().unwrap_or(1.0);
        out.push((t.to_string(), device, scale));
    }
    let link_mbps = tiers
        .windows(2)
        .map(|w| {
            let s: f64 = (idx(w[0])..idx(w[1])).map(|i| 1.0 / links[i]).sum();
            1.0 / s
        })
        .collect();
    Ok(TopologySpec {
        tiers: out,
        link_mbps,
        hop_ms: 0.0,
        overhead: crate::planner::topology::Overhead::REFERENCE,
        reference_cloud_only: false,
    })
}

/// The status form of a plan. The id hashes what the shards run (deployment, cuts, kept
/// channels, encoding), so the same plan found again has the same id.
pub fn plan_status(plan: &Plan, profile: &Profile) -> Result<PlanStatus, PlanError> {
    let encoding: Encoding = serde_json::from_value(serde_json::json!(plan.wire_encoding.name()))
        .map_err(|e| PlanError::InvalidSpec(format!("encoding: {e}")))?;
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
        encoding,
        cuts,
        tiers: plan
            .tiers
            .iter()
            .map(|t| PlanTierStatus {
                tier: t.tier.clone(),
                segments: t.segments.map(|[a, b]| vec![a as u32, b as u32]),
                compute_ms: t.compute_ms,
            })
            .collect(),
        latency_ms: plan.latency_ms,
        accuracy: plan.accuracy,
    })
}

/// Checks that every tensor of every profile cut exists in the model.
fn check_cuts(profile: &Profile, model: &[u8]) -> Result<(), PlanError> {
    let graph = Graph::from_bytes(model).map_err(|e| PlanError::InvalidModel(e.to_string()))?;
    for (i, c) in profile.cuts.iter().enumerate() {
        if let Some(t) = c.tensors.iter().find(|t| !graph.has_tensor(&t.name)) {
            return Err(PlanError::UnknownCut(format!(
                "profile cut {i} names tensor {:?}, which the model does not have",
                t.name
            )));
        }
    }
    Ok(())
}

/// The profile the controller measures itself: every single-tensor cut, the tiers as the
/// spec's slowdowns of this machine.
pub fn measure_profile(
    spec: &CollaborativeInferenceSpec,
    model: &[u8],
    repeats: usize,
) -> Result<Profile, PlanError> {
    let opts = ProfileOptions {
        cuts: None,
        repeats,
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
    };
    profile_model(model, "model", &opts, &mut |_, _| {})
        .map_err(|e| PlanError::InvalidModel(format!("profiling the model: {e}")))
}

/// The live oracle on the model's built-in calibration set, with the seeds and method of
/// `cnnpc plan` and `cnnpc demo` (`live::live_oracle`): half the pages fit the pruning, half
/// grade it. A shard pod rebuilds its pruned shard from the same fit pages (`cnnpc shard
/// --calibration-pages`), so it computes what was measured.
fn live_oracle(model: &[u8], profile: &Profile, pages: u32) -> Result<LiveOracle, PlanError> {
    // Checked first so that a profile of another model is reported as such.
    crate::live::profile_cuts(model, profile)
        .map_err(|e| PlanError::UnknownCut(format!("{e:#}")))?;
    let set =
        CalibrationSet::for_model(model).map_err(|e| PlanError::Calibration(format!("{e:#}")))?;
    let half = (pages as usize / 2).max(1);
    let sizes = OracleSizes {
        fit: half,
        eval: half,
    };
    let (oracle, _key) = crate::live::live_oracle(model, profile, set, sizes)
        .map_err(|e| PlanError::Calibration(format!("{e:#}")))?;
    Ok(oracle)
}

/// Profiles (unless a profile is given), builds the topology of the available tiers and searches.
pub fn make_plan(req: PlanRequest) -> Result<PlanOutcome, PlanError> {
    let spec = &req.spec;
    let profile = match req.profile {
        Some(p) => p,
        None => measure_profile(spec, &req.model, req.repeats)?,
    };
    check_cuts(&profile, &req.model)?;
    let tiers = available_tiers(spec, &req.lost);
    if tiers.is_empty() {
        return Err(PlanError::NoTier(if req.lost.is_empty() {
            "every tier is disabled".into()
        } else {
            format!("lost: {}", req.lost.join(", "))
        }));
    }
    let tspec = topology_spec(spec, &profile, &tiers, &req.adjust)?;
    let topology = tspec
        .build(&profile)
        .map_err(|e| PlanError::InvalidProfile(e.to_string()))?;
    let planner =
        Planner::new(&profile, &topology).map_err(|e| PlanError::InvalidProfile(e.to_string()))?;
    let encodings: Vec<WireEncoding> = spec
        .compression
        .encodings
        .iter()
        .map(|e| e.wire())
        .collect();
    let mut notes = Vec::new();
    let mut known = req.known;
    let objective =
        spec.objective
            .as_ref()
            .and_then(|o| match (o.min_accuracy, o.max_latency_ms) {
                (Some(a), _) => Some(Objective::MinLatency { min_accuracy: a }),
                (_, Some(t)) => Some(Objective::MaxAccuracy { max_latency_ms: t }),
                _ => None,
            });
    let candidate = match &spec.calibration {
        Some(cal) if objective.is_some() => {
            let mut live = live_oracle(&req.model, &profile, cal.pages)?;
            let config = SearchConfig::new(encodings, spec.compression.prune);
            let mut m = MeasuringOracle::new(&mut live as &mut dyn AccuracyOracle, &mut known);
            let c = planner.search(Strategy::Cnnpc, objective, &config, Some(&mut m));
            let calls = m.calls;
            let c = c.map_err(search_error)?;
            notes.push(format!("{calls} accuracy measurements"));
            (c, calls)
        }
        _ => {
            // No accuracy data: the best uncompressed split (no pruning, the profile's own
            // encoding on the wire), which loses no accuracy.
            let config = SearchConfig::new(vec![profile.wire_encoding], false);
            let c = planner
                .search(Strategy::Cnnpc, None, &config, None)
                .map_err(search_error)?;
            if let Some(Objective::MaxAccuracy { max_latency_ms }) = objective {
                if c.latency_ms > max_latency_ms {
                    return Err(PlanError::ImpossibleObjective(format!(
                        "no plan meets {max_latency_ms} ms without pruning: the fastest takes {:.3} ms (set calibration to allow pruning)",
                        c.latency_ms
                    )));
                }
            }
            if spec.calibration.is_none() {
                notes.push("accuracy not measured (no calibration): uncompressed split".into());
            }
            (c, 0)
        }
    };
    let plan = planner.plan("cnnpc", &candidate.0, candidate.1);
    let status = plan_status(&plan, &profile)?;
    let links = physical_links(spec, &req.adjust);
    let assumed = Adjustments {
        link_mbps: BTreeMap::from([
            ("end->edge".to_string(), links[0]),
            ("edge->cloud".to_string(), links[1]),
        ]),
        compute_scale: tiers
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    req.adjust.compute_scale.get(*t).copied().unwrap_or(1.0),
                )
            })
            .collect(),
    };
    Ok(PlanOutcome {
        plan,
        status,
        profile,
        known,
        notes,
        assumed,
    })
}

fn search_error(e: SearchError) -> PlanError {
    match e {
        SearchError::AccuracyUnreachable { .. } | SearchError::LatencyUnreachable { .. } => {
            PlanError::ImpossibleObjective(e.to_string())
        }
        SearchError::Oracle(o) => PlanError::Calibration(o.to_string()),
        other => PlanError::InvalidSpec(other.to_string()),
    }
}

/// The predicted latency of the deployed plan `current` under a new topology (feedback): the
/// same deployment, cuts, kept channels and encoding, re-costed. `None` when the topology no
/// longer has the plan's tiers.
pub fn recost(
    current: &PlanStatus,
    spec: &CollaborativeInferenceSpec,
    profile: &Profile,
    lost: &[String],
    adjust: &Adjustments,
) -> Option<f64> {
    let tiers = available_tiers(spec, lost);
    let tspec = topology_spec(spec, profile, &tiers, adjust).ok()?;
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
        encoding: current.encoding.wire(),
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
    Kept { note: String, assumed: Adjustments },
    /// Roll this plan out.
    RollOut {
        outcome: Box<PlanOutcome>,
        reason: String,
    },
}

/// The replanning logic: fold `obs` into the assumptions the current plan was made with
/// (`req.adjust`), search again when they moved by more than 5%, and roll the new plan out when
/// it beats the current one, re-costed under the same new assumptions, by more than
/// `hysteresis`. Blocking (it may search).
pub fn replan_on(
    current: &PlanStatus,
    mut req: PlanRequest,
    obs: &super::feedback::Observation,
    hysteresis: f64,
) -> Result<Replan, PlanError> {
    use super::feedback;
    let old = req.adjust.clone();
    let new = feedback::adjust(current, &old, obs);
    if !feedback::changed(&old, &new, 0.05) {
        return Ok(Replan::Unchanged);
    }
    let reason = feedback::reason(&old, &new);
    req.adjust = new.clone();
    let (spec, lost) = (req.spec.clone(), req.lost.clone());
    let outcome = make_plan(req)?;
    let current_ms = recost(current, &spec, &outcome.profile, &lost, &new);
    if feedback::should_roll_out(
        &current.id,
        current_ms,
        &outcome.status.id,
        outcome.status.latency_ms,
        hysteresis,
    ) {
        Ok(Replan::RollOut {
            outcome: Box::new(outcome),
            reason,
        })
    } else {
        Ok(Replan::Kept {
            note: format!(
                "{reason}: best plan {} at {:.3} ms vs the current {} ms: kept (hysteresis {hysteresis})",
                outcome.status.id,
                outcome.status.latency_ms,
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
            model: std::sync::Arc::new(crate::onnx::testmodels::chain_model_bytes()),
            profile: None,
            lost: vec![],
            adjust: Adjustments::default(),
            known: Measurements::default(),
            repeats: 1,
        }
    }

    #[test]
    fn skipping_a_tier_joins_its_links_in_series() {
        let s = spec(json!({"links": {"endEdgeMbps": 20, "edgeCloudMbps": 5}}));
        let profile =
            measure_profile(&s, &crate::onnx::testmodels::chain_model_bytes(), 1).unwrap();
        let t = topology_spec(&s, &profile, &["end", "cloud"], &Adjustments::default()).unwrap();
        assert_eq!(t.link_mbps, vec![4.0]);
        let mut adj = Adjustments::default();
        adj.link_mbps.insert("edge->cloud".into(), 20.0);
        adj.compute_scale.insert("end".into(), 2.0);
        let t = topology_spec(&s, &profile, &["end", "edge", "cloud"], &adj).unwrap();
        assert_eq!(t.link_mbps, vec![20.0, 20.0]);
        assert_eq!(t.tiers[0], ("end".to_string(), "end".to_string(), 2.0));
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
        let again = recost(
            s,
            &spec(json!({})),
            &out.profile,
            &[],
            &Adjustments::default(),
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
