//! Status conditions as data: set a condition, keeping its `lastTransitionTime` unless its
//! status changes, so a reconcile that decides the same thing writes the same status (and the
//! controller can skip the write).

use super::crd::Condition;

pub const PLANNED: &str = "Planned";
pub const DEPLOYED: &str = "Deployed";
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
/// True while a new plan comes up beside the serving one or the old one drains.
pub const PROGRESSING: &str = "Progressing";

/// Whether the last round of observations had enough evidence to act on.
pub const OBSERVED: &str = "Observed";

/// The condition types, in the order status lists them.
pub const TYPES: [&str; 6] = [PLANNED, DEPLOYED, READY, DEGRADED, PROGRESSING, OBSERVED];

/// What a condition should say now.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Want {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Want {
        Want {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// `old` conditions updated with `wants`: a condition whose status is unchanged keeps its
/// `lastTransitionTime`; conditions not mentioned in `wants` are kept as they were. Sorted in
/// [`TYPES`] order.
pub fn merge(
    old: &[Condition],
    wants: &[Want],
    now: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for w in wants {
        let status = status_str(w.status);
        match out.iter_mut().find(|c| c.type_ == w.type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.to_string();
                }
                c.status = status.to_string();
                c.reason = w.reason.clone();
                c.message = w.message.clone();
                c.observed_generation = generation;
            }
            None => out.push(Condition {
                type_: w.type_.to_string(),
                status: status.to_string(),
                reason: w.reason.clone(),
                message: w.message.clone(),
                last_transition_time: now.to_string(),
                observed_generation: generation,
            }),
        }
    }
    out.sort_by_key(|c| {
        TYPES
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(TYPES.len())
    });
    out
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let a = merge(
            &[],
            &[Want::new(READY, false, "Pending", "waiting")],
            "t1",
            Some(1),
        );
        assert_eq!(a[0].last_transition_time, "t1");
        // Same status, new reason and message: time kept.
        let b = merge(
            &a,
            &[Want::new(READY, false, "Rolling", "2 of 3")],
            "t2",
            Some(2),
        );
        assert_eq!(b[0].last_transition_time, "t1");
        assert_eq!(b[0].reason, "Rolling");
        assert_eq!(b[0].observed_generation, Some(2));
        // Status flips: time moves.
        let c = merge(&b, &[Want::new(READY, true, "AllReady", "")], "t3", Some(2));
        assert_eq!(c[0].last_transition_time, "t3");
        assert!(is_true(&c, READY));
    }

    #[test]
    fn conditions_are_kept_in_type_order() {
        let c = merge(
            &[],
            &[
                Want::new(DEGRADED, false, "AllTiers", ""),
                Want::new(PLANNED, true, "Planned", ""),
                Want::new(READY, true, "AllReady", ""),
            ],
            "t",
            None,
        );
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [PLANNED, READY, DEGRADED]);
        // Merging again with the same wants changes nothing.
        let again = merge(&c, &[Want::new(READY, true, "AllReady", "")], "later", None);
        assert_eq!(again, c);
    }
}
