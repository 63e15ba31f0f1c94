//! Whole-plan rollout as a pure state machine over what status records: the serving plan (the
//! one the entry Service selects), a plan coming up beside it, and the plan it replaced,
//! draining. A new plan never changes a running one's shards: its tiers are new Deployments
//! and Services (names carry the plan id), the entry moves to it only when every one of its
//! tiers is ready (each shard's readiness includes the next tier's, so that is end to end),
//! and the old plan is deleted after the drain. At most one extra set of shards runs: a newer
//! plan arriving mid-drain ends the drain at once.

use super::crd::{CollaborativeInferenceStatus, PlanStatus, RetiringStatus, RolloutStatus};
use k8s_openapi::jiff::Timestamp;

/// The plans alive at once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versions {
    pub serving: Option<PlanStatus>,
    pub rollout: Option<RolloutStatus>,
    pub retiring: Option<RetiringStatus>,
}

impl Versions {
    pub fn of(status: &CollaborativeInferenceStatus) -> Versions {
        Versions {
            serving: status.plan.clone(),
            rollout: status.rollout.clone(),
            retiring: status.retiring.clone(),
        }
    }

    /// Every plan whose shards should exist, serving first.
    pub fn alive(&self) -> Vec<&PlanStatus> {
        self.serving
            .iter()
            .chain(self.rollout.as_ref().map(|r| &r.plan))
            .chain(self.retiring.as_ref().map(|r| &r.plan))
            .collect()
    }

    /// The newest plan decided: the one coming up, else the serving one.
    pub fn newest(&self) -> Option<&PlanStatus> {
        self.rollout
            .as_ref()
            .map(|r| &r.plan)
            .or(self.serving.as_ref())
    }
}

/// What a step did, for events and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The first plan: served at once (there is nothing to protect).
    Served { plan: String },
    /// A new plan's shards are being created beside the serving plan's.
    Started { plan: String, serving: String },
    /// A plan that was coming up was dropped (the decision went back, or a newer one won).
    Abandoned { plan: String },
    /// The entry moved to the new plan; the old one drains.
    Switched { from: String, to: String },
    /// The old plan's drain ended (or was cut short): its shards go.
    Retired { plan: String },
}

/// One reconcile's step. `decided` is a plan searched for this reconcile (with why), if any;
/// `ready(plan)` says whether every tier of that plan has its replicas ready.
pub fn step(
    old: &Versions,
    decided: Option<(&PlanStatus, &str)>,
    ready: &dyn Fn(&PlanStatus) -> bool,
    now: Timestamp,
    drain_seconds: u32,
) -> (Versions, Vec<Change>) {
    let mut v = old.clone();
    let mut changes = Vec::new();
    if let Some((plan, reason)) = decided {
        match &v.serving {
            None => {
                v.serving = Some(plan.clone());
                changes.push(Change::Served {
                    plan: plan.id.clone(),
                });
            }
            Some(serving) if serving.id == plan.id => {
                // Back to what serves (or the same plan, refreshed): nothing to roll out.
                v.serving = Some(plan.clone());
                if let Some(r) = v.rollout.take() {
                    changes.push(Change::Abandoned { plan: r.plan.id });
                }
            }
            Some(serving) => {
                let same = v.rollout.as_ref().is_some_and(|r| r.plan.id == plan.id);
                if !same {
                    if let Some(r) = v.rollout.take() {
                        changes.push(Change::Abandoned { plan: r.plan.id });
                    }
                    if let Some(r) = v.retiring.take() {
                        changes.push(Change::Retired { plan: r.plan.id });
                    }
                    changes.push(Change::Started {
                        plan: plan.id.clone(),
                        serving: serving.id.clone(),
                    });
                    v.rollout = Some(RolloutStatus {
                        plan: plan.clone(),
                        reason: reason.to_string(),
                        started: now.to_string(),
                    });
                }
            }
        }
    }
    if let Some(r) = v.rollout.clone() {
        if ready(&r.plan) {
            if let Some(old_serving) = v.serving.replace(r.plan.clone()) {
                if let Some(prev) = v.retiring.take() {
                    changes.push(Change::Retired { plan: prev.plan.id });
                }
                changes.push(Change::Switched {
                    from: old_serving.id.clone(),
                    to: r.plan.id.clone(),
                });
                v.retiring = Some(RetiringStatus {
                    plan: old_serving,
                    since: now.to_string(),
                });
            }
            v.rollout = None;
        }
    }
    if let Some(r) = &v.retiring {
        let since = r.since.parse::<Timestamp>().map_or(0, |t| t.as_second());
        if now.as_second() - since >= i64::from(drain_seconds) {
            changes.push(Change::Retired {
                plan: r.plan.id.clone(),
            });
            v.retiring = None;
        }
    }
    (v, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::PlanTierStatus;
    use crate::planner::accuracy::WireEncoding;

    fn plan(id: &str) -> PlanStatus {
        PlanStatus {
            id: id.into(),
            summary: id.into(),
            deployment: "end-only".into(),
            encoding: WireEncoding::F32,
            cuts: vec![],
            tiers: vec![PlanTierStatus {
                tier: "end".into(),
                segments: Some(vec![0, 0]),
                compute_ms: 1.0,
                codec_ms: None,
            }],
            latency_ms: 1.0,
            accuracy: None,
            accuracy_interval: None,
            measured_on: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_plan_rolls_out_beside_switches_when_ready_and_the_old_one_drains() {
        let none = |_: &PlanStatus| false;
        let all = |_: &PlanStatus| true;
        // The first plan serves at once.
        let (v, c) = step(
            &Versions::default(),
            Some((&plan("a"), "initial")),
            &none,
            at(0),
            30,
        );
        assert_eq!(v.serving.as_ref().unwrap().id, "a");
        assert_eq!(c, [Change::Served { plan: "a".into() }]);
        // A new plan comes up beside it; not ready: a keeps serving.
        let (v, c) = step(&v, Some((&plan("b"), "link slower")), &none, at(10), 30);
        assert_eq!(v.serving.as_ref().unwrap().id, "a");
        assert_eq!(v.rollout.as_ref().unwrap().plan.id, "b");
        assert_eq!(v.rollout.as_ref().unwrap().reason, "link slower");
        assert_eq!(
            c,
            [Change::Started {
                plan: "b".into(),
                serving: "a".into()
            }]
        );
        let ids = |v: &Versions| v.alive().iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&v), ["a", "b"]);
        // Still not ready, no decision: nothing moves.
        let (v2, c) = step(&v, None, &none, at(20), 30);
        assert_eq!((v2.clone(), c), (v.clone(), vec![]));
        // Only b's readiness counts.
        let b_ready = |p: &PlanStatus| p.id == "b";
        let (v, c) = step(&v2, None, &b_ready, at(25), 30);
        assert_eq!(v.serving.as_ref().unwrap().id, "b");
        assert!(v.rollout.is_none());
        assert_eq!(v.retiring.as_ref().unwrap().plan.id, "a");
        assert_eq!(
            c,
            [Change::Switched {
                from: "a".into(),
                to: "b".into()
            }]
        );
        assert_eq!(ids(&v), ["b", "a"]);
        // Draining until 30 s after the switch.
        let (v, c) = step(&v, None, &all, at(54), 30);
        assert!(v.retiring.is_some() && c.is_empty());
        let (v, c) = step(&v, None, &all, at(55), 30);
        assert!(v.retiring.is_none());
        assert_eq!(c, [Change::Retired { plan: "a".into() }]);
        assert_eq!(ids(&v), ["b"]);
    }

    #[test]
    fn a_newer_decision_replaces_the_rollout_and_at_most_one_extra_plan_runs() {
        let none = |_: &PlanStatus| false;
        let (v, _) = step(
            &Versions::default(),
            Some((&plan("a"), "initial")),
            &none,
            at(0),
            30,
        );
        let (v, _) = step(&v, Some((&plan("b"), "r1")), &none, at(1), 30);
        // The same plan decided again: nothing restarts (its start time stays).
        let (again, c) = step(&v, Some((&plan("b"), "r1 again")), &none, at(2), 30);
        assert_eq!(again.rollout, v.rollout);
        assert!(c.is_empty());
        // Another plan: b is abandoned, c comes up.
        let (v, c) = step(&v, Some((&plan("c"), "r2")), &none, at(3), 30);
        assert_eq!(v.rollout.as_ref().unwrap().plan.id, "c");
        assert_eq!(
            c,
            [
                Change::Abandoned { plan: "b".into() },
                Change::Started {
                    plan: "c".into(),
                    serving: "a".into()
                }
            ]
        );
        // Back to the serving plan: the rollout is dropped.
        let (v, c) = step(&v, Some((&plan("a"), "r3")), &none, at(4), 30);
        assert!(v.rollout.is_none());
        assert_eq!(c, [Change::Abandoned { plan: "c".into() }]);
        // Mid-drain, a new plan: the drain ends at once (a, d and b never all run).
        let (v, _) = step(&v, Some((&plan("b"), "r4")), &|_| true, at(5), 30);
        assert_eq!(v.retiring.as_ref().unwrap().plan.id, "a");
        let (v, c) = step(&v, Some((&plan("d"), "r5")), &none, at(6), 30);
        assert!(v.retiring.is_none());
        assert_eq!(v.alive().len(), 2);
        assert_eq!(
            c,
            [
                Change::Retired { plan: "a".into() },
                Change::Started {
                    plan: "d".into(),
                    serving: "b".into()
                }
            ]
        );
    }

    #[test]
    fn versions_round_trip_through_status() {
        let (v, _) = step(
            &Versions::default(),
            Some((&plan("a"), "initial")),
            &|_| false,
            at(0),
            30,
        );
        let (v, _) = step(&v, Some((&plan("b"), "r")), &|_| false, at(1), 30);
        let status = CollaborativeInferenceStatus {
            plan: v.serving.clone(),
            rollout: v.rollout.clone(),
            retiring: v.retiring.clone(),
            ..Default::default()
        };
        let text = serde_json::to_string(&status).unwrap();
        let back: CollaborativeInferenceStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(
            Versions::of(&back),
            v,
            "a restarted controller resumes the rollout"
        );
        assert_eq!(v.newest().unwrap().id, "b");
    }
}
