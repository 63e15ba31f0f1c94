//! The controller's decisions as pure functions of what it read: whether to plan again and
//! why, which tiers are lost, and what the status should say. No client, no clock (`now` is
//! passed in), so every decision is tested directly.

use super::crd::{
    Addressable, Assumptions, CollaborativeInferenceStatus, HistoryEntry, ObservationStatus,
    PlanStatus, RejectedPlan, RetiringStatus, RolloutStatus,
};
use super::status::{self, Want};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

/// Why a new plan is searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// No plan yet.
    Initial,
    /// The spec changed (metadata.generation moved past status.observedGeneration).
    SpecChanged,
    /// The plan ConfigMap is gone (deleted by hand): plan again rather than guess.
    PlanLost,
    /// These tiers had no ready replica past the grace period.
    TierLost(Vec<String>),
    /// These tiers, lost before, have ready replicas again.
    TierRecovered(Vec<String>),
    /// Observations moved the assumptions (see `feedback`).
    Observed(String),
    /// The serving plan served worse than the one it replaced: back to that one.
    RolledBack(String),
    /// The shadow-sampled agreement fell below the floor at confidence.
    LiveAgreement(String),
}

impl Trigger {
    /// The `reason` label of `cnnpc_controller_replans_total` (bounded set).
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::SpecChanged => "spec_changed",
            Trigger::PlanLost => "plan_lost",
            Trigger::TierLost(_) => "tier_lost",
            Trigger::TierRecovered(_) => "tier_recovered",
            Trigger::Observed(_) => "observed",
            Trigger::RolledBack(_) => "rolled_back",
            Trigger::LiveAgreement(_) => "live_agreement",
        }
    }

    /// The human reason kept in `status.lastReplanReason`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Initial => "initial plan".into(),
            Trigger::SpecChanged => "spec changed".into(),
            Trigger::PlanLost => "plan ConfigMap missing".into(),
            Trigger::TierLost(t) => format!("tier lost: {}", t.join(", ")),
            Trigger::TierRecovered(t) => format!("tier recovered: {}", t.join(", ")),
            Trigger::Observed(r) | Trigger::RolledBack(r) | Trigger::LiveAgreement(r) => r.clone(),
        }
    }
}

/// Whether to search again before anything is observed: a missing plan, a new generation, a
/// missing plan ConfigMap, or a change in the set of lost tiers.
pub fn trigger(
    generation: Option<i64>,
    status: &CollaborativeInferenceStatus,
    has_plan_configmap: bool,
    lost: &[String],
) -> Option<Trigger> {
    if status.plan.is_none() {
        return Some(Trigger::Initial);
    }
    if status.observed_generation != generation {
        return Some(Trigger::SpecChanged);
    }
    if !has_plan_configmap {
        return Some(Trigger::PlanLost);
    }
    let newly: Vec<String> = lost
        .iter()
        .filter(|t| !status.lost_tiers.contains(t))
        .cloned()
        .collect();
    if !newly.is_empty() {
        return Some(Trigger::TierLost(newly));
    }
    let back: Vec<String> = status
        .lost_tiers
        .iter()
        .filter(|t| !lost.contains(t))
        .cloned()
        .collect();
    if !back.is_empty() {
        return Some(Trigger::TierRecovered(back));
    }
    None
}

/// One tier's Deployment as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierHealth {
    pub tier: String,
    pub ready: i32,
    pub wanted: i32,
    /// Since when the tier has had no ready replica (None while it has one).
    pub unready_since: Option<Timestamp>,
}

/// Reads a shard Deployment: its tier (the `component` label), ready replicas, and since when
/// it has been unavailable (the `Available=False` condition's transition time, else the
/// Deployment's creation time).
pub fn tier_health(d: &Deployment) -> Option<TierHealth> {
    let tier = d
        .metadata
        .labels
        .as_ref()?
        .get(super::labels::COMPONENT)?
        .clone();
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let unready_since = if ready > 0 {
        None
    } else {
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "Available" && c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .or_else(|| d.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    Some(TierHealth {
        tier,
        ready,
        wanted,
        unready_since,
    })
}

/// Tiers without a ready replica for at least `grace_s` seconds, in request order.
pub fn lost_tiers(health: &[TierHealth], now: Timestamp, grace_s: u32) -> Vec<String> {
    let mut lost: Vec<String> = health
        .iter()
        .filter(|h| {
            h.ready == 0
                && h.unready_since
                    .is_some_and(|t| now.as_second() - t.as_second() >= i64::from(grace_s))
        })
        .map(|h| h.tier.clone())
        .collect();
    lost.sort_by_key(|t| super::crd::TIERS.iter().position(|x| x == t));
    lost.dedup();
    lost
}

/// What one reconcile decided, for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub generation: Option<i64>,
    pub plan: &'a PlanStatus,
    pub assumed: Assumptions,
    pub lost: Vec<String>,
    /// Set when this reconcile rolled out a plan different from the previous one.
    pub replanned: Option<&'a Trigger>,
    /// A plan searched for but not rolled out, and why (e.g. gain below hysteresis).
    pub note: Option<String>,
    pub observed_latency_ms: Option<f64>,
    /// Per active tier of the serving plan, Deployment health (missing = just created).
    pub health: &'a [TierHealth],
    /// A plan coming up beside `plan`, and the tiers of it not ready yet.
    pub rollout: Option<(&'a RolloutStatus, Vec<String>)>,
    /// The plan `plan` replaced, draining.
    pub retiring: Option<&'a RetiringStatus>,
    /// The entry's URL and fully qualified address.
    pub entry: Option<(String, String)>,
    /// This round's observations, judged (none when the round did not observe).
    pub observation: Option<&'a ObservationStatus>,
    pub history: Vec<HistoryEntry>,
    pub rejected: Vec<RejectedPlan>,
    /// Set while the serving plan's live agreement is below the floor at confidence.
    pub low_agreement: Option<String>,
}

/// The status after a successful reconcile.
pub fn desired_status(
    old: &CollaborativeInferenceStatus,
    o: &Outcome,
    now: &str,
) -> CollaborativeInferenceStatus {
    let active: Vec<String> = o
        .plan
        .tiers
        .iter()
        .filter(|t| t.segments.is_some())
        .map(|t| t.tier.clone())
        .collect();
    // Counted when a new plan is decided (its rollout starts), not when the entry moves.
    let newest = o.rollout.as_ref().map_or(o.plan, |(r, _)| &r.plan);
    let old_newest = old.rollout.as_ref().map(|r| &r.plan).or(old.plan.as_ref());
    let changed = old_newest.map(|p| &p.id) != Some(&newest.id);
    let mut replan_count = old.replan_count;
    let mut last = old.last_replan_reason.clone();
    if let Some(t) = o.replanned {
        if changed && old.plan.is_some() {
            replan_count += 1;
        }
        if changed || old.plan.is_none() {
            last = Some(t.describe());
        }
    }
    let not_ready: Vec<String> = active
        .iter()
        // Names only: a Deployment just created and one seen with 0 ready say the same, so
        // the reconcile after the one that created them writes nothing new.
        .filter(|t| !o.health.iter().any(|h| &h.tier == *t && h.ready >= 1))
        .cloned()
        .collect();
    let mut planned_msg = format!(
        "{} ({}), predicted {:.3} ms",
        newest.summary, newest.id, newest.latency_ms
    );
    if let Some(a) = newest.accuracy {
        planned_msg.push_str(&format!(", accuracy {a:.4}"));
    }
    match &o.note {
        Some(n) => planned_msg.push_str(&format!("; {n}")),
        // Nothing new to say about an unchanged plan: keep what was said when it was made.
        None if !changed => {
            if let Some(c) = status::get(&old.conditions, status::PLANNED)
                .filter(|c| c.status == "True" && c.message.starts_with(&planned_msg))
            {
                planned_msg = c.message.clone();
            }
        }
        None => {}
    }
    let wants = [
        Want::new(status::PLANNED, true, "Planned", planned_msg),
        Want::new(
            status::DEPLOYED,
            true,
            "Applied",
            format!("shards on {}", active.join(", ")),
        ),
        if not_ready.is_empty() {
            Want::new(status::READY, true, "AllShardsReady", "")
        } else {
            Want::new(
                status::READY,
                false,
                "ShardsNotReady",
                format!("not ready: {}", not_ready.join(", ")),
            )
        },
        if let (true, Some(why)) = (o.lost.is_empty(), &o.low_agreement) {
            Want::new(status::DEGRADED, true, "LiveAgreementBelowFloor", why.clone())
        } else if o.lost.is_empty() {
            Want::new(status::DEGRADED, false, "AllTiersAvailable", "")
        } else {
            Want::new(
                status::DEGRADED,
                true,
                "TierLost",
                format!(
                    "tier {} lost (no ready replica past the grace period); running {} without it",
                    o.lost.join(", "),
                    o.plan.deployment
                ),
            )
        },
        match (&o.rollout, o.retiring) {
            (Some((r, waiting)), _) => Want::new(
                status::PROGRESSING,
                true,
                "RollingOut",
                format!(
                    "{} ({}) coming up beside {}; the entry moves when it is ready (waiting for: {})",
                    r.plan.summary,
                    r.plan.id,
                    o.plan.id,
                    if waiting.is_empty() {
                        "nothing".to_string()
                    } else {
                        waiting.join(", ")
                    }
                ),
            ),
            (None, Some(r)) => Want::new(
                status::PROGRESSING,
                true,
                "Draining",
                format!(
                    "the entry serves {}; {} ({}) drains since {}",
                    o.plan.id, r.plan.summary, r.plan.id, r.since
                ),
            ),
            (None, None) => Want::new(status::PROGRESSING, false, "Stable", ""),
        },
    ];
    let mut wants = wants.to_vec();
    if let Some(obs) = o.observation {
        wants.push(observed_condition(obs));
    }
    CollaborativeInferenceStatus {
        observed_generation: o.generation,
        conditions: status::merge(&old.conditions, &wants, now, o.generation),
        plan: Some(o.plan.clone()),
        predicted_latency_ms: Some(o.plan.latency_ms),
        observed_latency_ms: o.observed_latency_ms.or(old.observed_latency_ms),
        replan_count,
        last_replan_reason: last,
        active_tiers: active,
        lost_tiers: o.lost.clone(),
        assumed: Some(o.assumed.clone()),
        url: o.entry.as_ref().map(|e| e.0.clone()).or(old.url.clone()),
        address: o
            .entry
            .as_ref()
            .map(|e| Addressable { url: e.1.clone() })
            .or(old.address.clone()),
        rollout: o.rollout.as_ref().map(|(r, _)| (*r).clone()),
        retiring: o.retiring.cloned(),
        observation: o.observation.cloned().or(old.observation.clone()),
        last_good_observation: o
            .observation
            .filter(|x| x.sufficient)
            .cloned()
            .or(old.last_good_observation.clone()),
        history: o.history.clone(),
        rejected_plans: o.rejected.clone(),
    }
}

/// `Observed`: True with what was seen when the evidence sufficed; False `InsufficientEvidence`
/// with what was too thin (nothing is acted on then).
fn observed_condition(obs: &ObservationStatus) -> Want {
    if obs.sufficient {
        let links: Vec<String> = obs
            .links
            .iter()
            .map(|(k, l)| {
                format!(
                    "{k} {:.2} Mbit/s [{:.2}, {:.2}]",
                    l.mbps.value, l.mbps.low, l.mbps.high
                )
            })
            .collect();
        let mut msg = format!("{} requests in {} s", obs.requests, obs.window_seconds);
        if let Some(l) = &obs.latency_ms {
            msg.push_str(&format!(
                ", {:.3} ms [{:.3}, {:.3}]",
                l.value, l.low, l.high
            ));
        }
        if !links.is_empty() {
            msg.push_str(&format!("; {}", links.join(", ")));
        }
        Want::new(status::OBSERVED, true, "Sufficient", msg)
    } else {
        Want::new(
            status::OBSERVED,
            false,
            "InsufficientEvidence",
            format!(
                "too little to act on in the last {} s: {}",
                obs.window_seconds,
                obs.insufficient.join("; ")
            ),
        )
    }
}

/// The status after a failed reconcile: `Planned` False with the reason; everything else (the
/// running plan, its children's conditions, observedGeneration) unchanged, so a bad edit never
/// hides the plan that is still serving.
pub fn failed_status(
    old: &CollaborativeInferenceStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &str,
) -> CollaborativeInferenceStatus {
    let mut message = message.to_string();
    if let Some(p) = &old.plan {
        message.push_str(&format!("; still serving plan {} ({})", p.id, p.summary));
    }
    CollaborativeInferenceStatus {
        conditions: status::merge(
            &old.conditions,
            &[Want::new(status::PLANNED, false, reason, message)],
            now,
            generation,
        ),
        ..old.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::PlanTierStatus;
    use crate::planner::accuracy::WireEncoding;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn plan(id: &str, tiers: &[&str]) -> PlanStatus {
        PlanStatus {
            id: id.into(),
            summary: format!("plan {id}"),
            deployment: tiers.join("-"),
            encoding: WireEncoding::Int8,
            cuts: vec![],
            tiers: ["end", "edge", "cloud"]
                .iter()
                .map(|t| PlanTierStatus {
                    tier: t.to_string(),
                    segments: tiers.contains(t).then(|| vec![0, 0]),
                    compute_ms: 1.0,
                    codec_ms: None,
                })
                .collect(),
            latency_ms: 12.5,
            accuracy: None,
            accuracy_interval: None,
            measured_on: None,
        }
    }

    #[test]
    fn triggers_in_order_of_precedence() {
        let mut s = CollaborativeInferenceStatus::default();
        assert_eq!(trigger(Some(1), &s, false, &[]), Some(Trigger::Initial));
        s.plan = Some(plan("a", &["end"]));
        s.observed_generation = Some(1);
        assert_eq!(trigger(Some(2), &s, true, &[]), Some(Trigger::SpecChanged));
        assert_eq!(trigger(Some(1), &s, false, &[]), Some(Trigger::PlanLost));
        assert_eq!(trigger(Some(1), &s, true, &[]), None);
        let edge = vec!["edge".to_string()];
        assert_eq!(
            trigger(Some(1), &s, true, &edge),
            Some(Trigger::TierLost(edge.clone()))
        );
        s.lost_tiers = edge.clone();
        assert_eq!(trigger(Some(1), &s, true, &edge), None);
        assert_eq!(
            trigger(Some(1), &s, true, &[]),
            Some(Trigger::TierRecovered(edge))
        );
    }

    fn deployment(tier: &str, ready: Option<i32>, unavailable_since: Option<i64>) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                labels: Some(crate::operator::labels::child("x", tier)),
                creation_timestamp: Some(Time(ts(0))),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                ready_replicas: ready,
                conditions: unavailable_since.map(|t| {
                    vec![DeploymentCondition {
                        type_: "Available".into(),
                        status: "False".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..DeploymentCondition::default()
                    }]
                }),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn a_tier_is_lost_only_past_the_grace_period() {
        let h: Vec<TierHealth> = [
            deployment("cloud", Some(0), Some(100)),
            deployment("end", Some(1), None),
            deployment("edge", None, Some(150)),
        ]
        .iter()
        .filter_map(tier_health)
        .collect();
        assert_eq!(h[1].unready_since, None);
        assert_eq!(lost_tiers(&h, ts(160), 60), vec!["cloud"]);
        assert_eq!(
            lost_tiers(&h, ts(210), 60),
            vec!["edge", "cloud"],
            "request order"
        );
        assert!(lost_tiers(&h, ts(150), 60).is_empty());
        // Without an Available condition, the creation time counts.
        let h = tier_health(&deployment("edge", Some(0), None)).unwrap();
        assert_eq!(h.unready_since, Some(ts(0)));
    }

    #[test]
    fn status_counts_replans_and_says_what_is_not_ready() {
        let p1 = plan("a", &["end", "edge"]);
        let health = vec![TierHealth {
            tier: "end".into(),
            ready: 1,
            wanted: 1,
            unready_since: None,
        }];
        let o = Outcome {
            generation: Some(1),
            plan: &p1,
            assumed: Assumptions::default(),
            lost: vec![],
            replanned: Some(&Trigger::Initial),
            note: None,
            observed_latency_ms: None,
            health: &health,
            rollout: None,
            retiring: None,
            entry: None,
            observation: None,
            history: vec![],
            rejected: vec![],
            low_agreement: None,
        };
        let s1 = desired_status(&CollaborativeInferenceStatus::default(), &o, "t1");
        assert_eq!(s1.replan_count, 0);
        assert_eq!(s1.last_replan_reason.as_deref(), Some("initial plan"));
        assert_eq!(s1.active_tiers, ["end", "edge"]);
        let ready = status::get(&s1.conditions, status::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "not ready: edge")
        );
        // Same decision again: the same status (nothing to write).
        let again = desired_status(
            &s1,
            &Outcome {
                replanned: None,
                ..o.clone()
            },
            "t2",
        );
        assert_eq!(again, s1);
        // A different plan because a tier was lost.
        let p2 = plan("b", &["end"]);
        let trig = Trigger::TierLost(vec!["edge".into()]);
        let s2 = desired_status(
            &s1,
            &Outcome {
                plan: &p2,
                lost: vec!["edge".into()],
                replanned: Some(&trig),
                ..o.clone()
            },
            "t3",
        );
        assert_eq!(s2.replan_count, 1);
        assert_eq!(s2.last_replan_reason.as_deref(), Some("tier lost: edge"));
        assert!(status::is_true(&s2.conditions, status::DEGRADED));
        assert!(status::is_true(&s2.conditions, status::READY));
        // A failure keeps the plan and says so.
        let f = failed_status(&s2, Some(2), "ChecksumMismatch", "bad", "t4");
        assert_eq!(f.plan, s2.plan);
        assert_eq!(f.observed_generation, s2.observed_generation);
        let c = status::get(&f.conditions, status::PLANNED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ChecksumMismatch")
        );
        assert!(c.message.contains("still serving plan b"), "{}", c.message);
    }
}
