//! The plans served, newest first (`status.history`), and the rollback rule: a plan that, within
//! `rollbackIntervals` replan intervals of the entry moving to it, serves slower than the plan
//! it replaced by more than the hysteresis, with the evidence's confidence (the lower end of its
//! latency interval is past the mark), is rolled back and rejected. Pure.

use super::crd::{Estimate, HistoryEntry, PlanStatus, RejectedPlan};
use super::rollout::Change;
use k8s_openapi::jiff::Timestamp;

/// How many plans `status.history` keeps.
pub const KEEP: usize = 5;

pub const SERVING: &str = "Serving";
pub const REPLACED: &str = "Replaced";
pub const ROLLED_BACK: &str = "RolledBack";

/// A decision to go back.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub to: PlanStatus,
    pub reason: String,
    pub rejected: RejectedPlan,
}

fn at(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// Whether `serving`, observed at `latency` (ms, only when its evidence sufficed), must roll
/// back to the plan before it.
pub fn rollback(
    history: &[HistoryEntry],
    serving: &PlanStatus,
    latency: Option<Estimate>,
    now: Timestamp,
    hysteresis: f64,
    rollback_intervals: u32,
    interval_s: i64,
) -> Option<Rollback> {
    let latency = latency?;
    let [current, before, ..] = history else {
        return None;
    };
    if current.plan.id != serving.id || current.ended.is_some() || before.plan.id == serving.id {
        return None;
    }
    let baseline = before.observed_latency_ms?;
    let since = now.as_second() - at(&current.started)?;
    if since > i64::from(rollback_intervals) * interval_s {
        return None;
    }
    let mark = baseline * (1.0 + hysteresis);
    if latency.low <= mark {
        return None;
    }
    Some(Rollback {
        to: before.plan.clone(),
        reason: format!(
            "rolled back: {} served {:.3} ms (at least {:.3} at confidence) against {:.3} ms of {} \
             before it (hysteresis {hysteresis})",
            serving.id, latency.value, latency.low, baseline, before.plan.id
        ),
        rejected: RejectedPlan {
            id: serving.id.clone(),
            summary: serving.summary.clone(),
            reason: "served slower than the plan it replaced".into(),
            predicted_latency_ms: serving.latency_ms,
            observed_latency_ms: Some(latency),
            baseline_plan: Some(before.plan.id.clone()),
            baseline_latency_ms: Some(baseline),
            live_agreement: None,
            at: now.to_string(),
        },
    })
}

/// The history after a reconcile's `changes`: a plan the entry moves to (or the first plan)
/// starts an entry, the plan it leaves ends (`RolledBack` when it is the `rejected` one); the
/// serving entry carries the latest sufficient observed latency.
pub fn record(
    old: &[HistoryEntry],
    changes: &[Change],
    plans: &dyn Fn(&str) -> Option<PlanStatus>,
    rejected: &[String],
    observed_ms: Option<f64>,
    now: &str,
) -> Vec<HistoryEntry> {
    let mut h = old.to_vec();
    for c in changes {
        let to = match c {
            Change::Served { plan } => plan,
            Change::Switched { from, to } => {
                if let Some(e) = h
                    .iter_mut()
                    .find(|e| &e.plan.id == from && e.ended.is_none())
                {
                    e.ended = Some(now.to_string());
                    e.outcome = if rejected.contains(from) {
                        ROLLED_BACK
                    } else {
                        REPLACED
                    }
                    .into();
                }
                to
            }
            _ => continue,
        };
        if let Some(plan) = plans(to) {
            h.insert(
                0,
                HistoryEntry {
                    predicted_latency_ms: plan.latency_ms,
                    plan,
                    observed_latency_ms: None,
                    started: now.to_string(),
                    ended: None,
                    outcome: SERVING.into(),
                },
            );
        }
    }
    if let (Some(ms), Some(e)) = (observed_ms, h.first_mut()) {
        if e.ended.is_none() {
            e.observed_latency_ms = Some(ms);
        }
    }
    h.truncate(KEEP);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::accuracy::WireEncoding;

    fn plan(id: &str, ms: f64) -> PlanStatus {
        PlanStatus {
            id: id.into(),
            summary: format!("plan {id}"),
            deployment: "end-cloud".into(),
            encoding: WireEncoding::Int8,
            cuts: vec![],
            tiers: vec![],
            latency_ms: ms,
            accuracy: None,
            accuracy_interval: None,
            measured_on: None,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn est(value: f64, low: f64) -> Option<Estimate> {
        Some(Estimate {
            value,
            low,
            high: 2.0 * value - low,
        })
    }

    fn served_then_switched() -> Vec<HistoryEntry> {
        let plans = |id: &str| Some(plan(id, if id == "a" { 20.0 } else { 10.0 }));
        let h = record(
            &[],
            &[Change::Served { plan: "a".into() }],
            &plans,
            &[],
            None,
            &t(0).to_string(),
        );
        let h = record(&h, &[], &plans, &[], Some(21.0), &t(30).to_string());
        assert_eq!(h[0].observed_latency_ms, Some(21.0));
        record(
            &h,
            &[Change::Switched {
                from: "a".into(),
                to: "b".into(),
            }],
            &plans,
            &[],
            None,
            &t(60).to_string(),
        )
    }

    #[test]
    fn history_records_start_end_and_observed() {
        let h = served_then_switched();
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].plan.id.as_str(), h[0].outcome.as_str()),
            ("b", SERVING)
        );
        assert_eq!(h[0].started, t(60).to_string());
        assert_eq!(h[1].ended.as_deref(), Some(t(60).to_string().as_str()));
        assert_eq!(
            (h[1].outcome.as_str(), h[1].observed_latency_ms),
            (REPLACED, Some(21.0))
        );
        // Kept short.
        let mut long = h.clone();
        for i in 0..10 {
            long = record(
                &long,
                &[Change::Switched {
                    from: long[0].plan.id.clone(),
                    to: format!("p{i}"),
                }],
                &|id| Some(plan(id, 1.0)),
                &[],
                None,
                &t(100 + i).to_string(),
            );
        }
        assert_eq!(long.len(), KEEP);
        assert_eq!(long[0].plan.id, "p9");
    }

    #[test]
    fn a_plan_slower_than_the_one_it_replaced_rolls_back_within_the_intervals_only() {
        let h = served_then_switched();
        let b = plan("b", 10.0);
        // 21 ms before; the mark is 23.1 ms at hysteresis 0.1.
        let r = rollback(&h, &b, est(30.0, 25.0), t(90), 0.1, 3, 30).expect("rolls back");
        assert_eq!(r.to.id, "a");
        assert_eq!(r.rejected.id, "b");
        assert_eq!(r.rejected.baseline_latency_ms, Some(21.0));
        assert_eq!(r.rejected.observed_latency_ms.unwrap().value, 30.0);
        assert!(
            r.reason.starts_with("rolled back: b served 30.000 ms"),
            "{}",
            r.reason
        );
        // Not at confidence: the interval reaches below the mark.
        assert!(rollback(&h, &b, est(30.0, 22.0), t(90), 0.1, 3, 30).is_none());
        // Not enough evidence at all.
        assert!(rollback(&h, &b, None, t(90), 0.1, 3, 30).is_none());
        // Past the 3 intervals after the switch (t=60 + 90 s).
        assert!(rollback(&h, &b, est(30.0, 25.0), t(151), 0.1, 3, 30).is_none());
        assert!(
            rollback(&h, &b, est(30.0, 25.0), t(90), 0.1, 0, 30).is_none(),
            "0: never"
        );
        // Only the serving plan, and only once it was switched to.
        assert!(rollback(&h, &plan("c", 1.0), est(30.0, 25.0), t(90), 0.1, 3, 30).is_none());
        // The rolled-back switch marks the rejected plan.
        let back = record(
            &h,
            &[Change::Switched {
                from: "b".into(),
                to: "a".into(),
            }],
            &|id| Some(plan(id, 20.0)),
            &["b".to_string()],
            None,
            &t(100).to_string(),
        );
        assert_eq!(back[0].plan.id, "a");
        assert_eq!(back[1].outcome, ROLLED_BACK);
    }
}
