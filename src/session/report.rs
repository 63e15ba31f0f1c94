//! What `cnnpc plan` prints: the plan next to the baselines, as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::planner::plan::Plan;
use crate::planner::search::Objective;

/// The plan, the objective it was searched for, and the baselines it is compared with.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    #[serde(flatten)]
    pub plan: Plan,
    pub objective: Option<BTreeMap<&'static str, f64>>,
    pub baselines: BTreeMap<String, Baseline>,
}

#[derive(Debug, Serialize)]
pub struct Baseline {
    pub latency_ms: f64,
    pub accuracy: Option<f64>,
    pub deployment: String,
}

impl PlanReport {
    pub fn new(plan: Plan, objective: Option<Objective>, baselines: &[Plan]) -> PlanReport {
        PlanReport {
            objective: objective.map(|o| match o {
                Objective::MinLatency { min_accuracy } => {
                    BTreeMap::from([("min_accuracy", min_accuracy)])
                }
                Objective::MaxAccuracy { max_latency_ms } => {
                    BTreeMap::from([("max_latency_ms", max_latency_ms)])
                }
            }),
            baselines: baselines
                .iter()
                .map(|b| {
                    (
                        b.strategy.clone(),
                        Baseline {
                            latency_ms: b.latency_ms,
                            accuracy: b.accuracy,
                            deployment: b.deployment.clone(),
                        },
                    )
                })
                .collect(),
            plan,
        }
    }

    pub fn render_table(&self) -> String {
        let p = &self.plan;
        let mut s = String::new();
        let objective = match &self.objective {
            None => "none (no pruning)".to_string(),
            Some(o) => o
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            s,
            "model {}  strategy {}  objective {}",
            p.model, p.strategy, objective
        );
        let _ = writeln!(
            s,
            "deployment {}  latency {:.3} ms  accuracy {}  encoding {}  accuracy measurements {}",
            p.deployment,
            p.latency_ms,
            fmt_acc(p.accuracy),
            p.wire_encoding,
            p.oracle_calls
        );
        // A profile with measured wire costs prices the codec per tier too.
        let codec = !p.codec_ms.is_empty();
        let _ = writeln!(
            s,
            "\n{:<7} {:<8} {:>10} {:>11}{}",
            "tier",
            "device",
            "segments",
            "compute ms",
            if codec { "    codec ms" } else { "" }
        );
        for t in &p.tiers {
            let seg = t.segments.map_or("-".into(), |[a, b]| format!("{a}..{b}"));
            let c = if codec {
                format!(" {:>11.3}", t.codec_ms)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{:<7} {:<8} {:>10} {:>11.3}{c}",
                t.tier, t.device, seg, t.compute_ms
            );
        }
        let _ = writeln!(
            s,
            "\n{:<12} {:>8} {:>7} {:>11} {:>11} {:>12}",
            "link", "Mbit/s", "carries", "kept", "bytes", "transfer ms"
        );
        for l in &p.links {
            let kept = p
                .cuts
                .iter()
                .find(|c| l.carries == format!("cut {}", c.point))
                .map_or("-".into(), |c| {
                    format!("{}/{}", c.kept_channels, c.channels)
                });
            let _ = writeln!(
                s,
                "{:<12} {:>8} {:>7} {:>11} {:>11.0} {:>12.3}",
                format!("{}->{}", l.from, l.to),
                l.mbps,
                l.carries,
                kept,
                l.bytes,
                l.transfer_ms
            );
        }
        let _ = writeln!(s, "overhead {:.3} ms", p.overhead_ms);
        let _ = writeln!(
            s,
            "\n{:<14} {:<16} {:>11} {:>9} {:>8}",
            "compared with", "deployment", "latency ms", "accuracy", "speedup"
        );
        for (name, b) in &self.baselines {
            let _ = writeln!(
                s,
                "{:<14} {:<16} {:>11.3} {:>9} {:>7.2}x",
                name,
                b.deployment,
                b.latency_ms,
                fmt_acc(b.accuracy),
                b.latency_ms / p.latency_ms
            );
        }
        s
    }
}

fn fmt_acc(a: Option<f64>) -> String {
    a.map_or("-".into(), |a| format!("{:.4}", a))
}
