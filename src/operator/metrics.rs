//! The controller's own Prometheus metrics (names are a contract: the Helm chart's
//! ServiceMonitor and the dashboard read them), and its HTTP endpoint.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `cnnpc_controller_reconcile_total` | counter | — |
//! | `cnnpc_controller_reconcile_errors_total` | counter | error |
//! | `cnnpc_controller_reconcile_duration_seconds` | histogram | — |
//! | `cnnpc_controller_replans_total` | counter | reason |
//! | `cnnpc_plan_predicted_latency_seconds` | gauge | namespace, name |
//! | `cnnpc_plan_observed_latency_seconds` | gauge | namespace, name |
//! | `cnnpc_controller_leader` | gauge | — (1 while this replica holds the Lease) |
//! | `cnnpc_plan_phase` | gauge | namespace, name, plan_id, phase (serving, rolling_out, retiring): 1 per living plan |
//! | `cnnpc_tier_replicas` | gauge | namespace, name, tier, state (ready, wanted): the serving plan's |
//! | `cnnpc_live_agreement` | gauge | namespace, name, bound (value, low, high): shadow agreement |

use super::core::TierHealth;
use super::crd::CollaborativeInferenceStatus;
use super::rollout::Versions;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub errors: IntCounterVec,
    pub duration: Histogram,
    pub replans: IntCounterVec,
    pub predicted: GaugeVec,
    pub observed: GaugeVec,
    pub leader: IntGauge,
    pub phase: IntGaugeVec,
    pub replicas: IntGaugeVec,
    pub agreement: GaugeVec,
}

/// The `error` label's values (`Error::metric_label`), created at 0 so a panel of them has a
/// series before the first error.
pub const ERROR_LABELS: [&str; 10] = [
    "kube",
    "model_unavailable",
    "checksum_mismatch",
    "invalid_spec",
    "invalid_model",
    "invalid_profile",
    "unknown_cut",
    "impossible_objective",
    "calibration",
    "task",
];

/// The `reason` label's values (`Trigger::label`), created at 0.
pub const REPLAN_REASONS: [&str; 8] = [
    "initial",
    "spec_changed",
    "plan_lost",
    "tier_lost",
    "tier_recovered",
    "observed",
    "rolled_back",
    "live_agreement",
];

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::new(),
            reconciles: IntCounter::new(
                "cnnpc_controller_reconcile_total",
                "Reconciliations started.",
            )
            .expect("valid metric"),
            errors: IntCounterVec::new(
                Opts::new(
                    "cnnpc_controller_reconcile_errors_total",
                    "Reconciliations that failed, by error.",
                ),
                &["error"],
            )
            .expect("valid metric"),
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "cnnpc_controller_reconcile_duration_seconds",
                    "Time a reconciliation took (planning included).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
            )
            .expect("valid metric"),
            replans: IntCounterVec::new(
                Opts::new(
                    "cnnpc_controller_replans_total",
                    "Plans rolled out, by reason (initial, spec_changed, plan_lost, tier_lost, tier_recovered, observed, rolled_back, live_agreement).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            predicted: GaugeVec::new(
                Opts::new(
                    "cnnpc_plan_predicted_latency_seconds",
                    "Latency the deployed plan is predicted to have.",
                ),
                &["namespace", "name"],
            )
            .expect("valid metric"),
            observed: GaugeVec::new(
                Opts::new(
                    "cnnpc_plan_observed_latency_seconds",
                    "Mean end-to-end latency observed at the entry tier.",
                ),
                &["namespace", "name"],
            )
            .expect("valid metric"),
            leader: IntGauge::new(
                "cnnpc_controller_leader",
                "1 while this replica holds the leader Lease.",
            )
            .expect("valid metric"),
            phase: IntGaugeVec::new(
                Opts::new(
                    "cnnpc_plan_phase",
                    "1 for each living plan of a resource, by phase (serving, rolling_out, retiring).",
                ),
                &["namespace", "name", "plan_id", "phase"],
            )
            .expect("valid metric"),
            replicas: IntGaugeVec::new(
                Opts::new(
                    "cnnpc_tier_replicas",
                    "Replicas of the serving plan's tier Deployments, ready and wanted.",
                ),
                &["namespace", "name", "tier", "state"],
            )
            .expect("valid metric"),
            agreement: GaugeVec::new(
                Opts::new(
                    "cnnpc_live_agreement",
                    "Shadow-sampled agreement of served top-1 with the unmodified model, and its interval.",
                ),
                &["namespace", "name", "bound"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.errors.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.replans.clone()),
            Box::new(m.predicted.clone()),
            Box::new(m.observed.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.phase.clone()),
            Box::new(m.replicas.clone()),
            Box::new(m.agreement.clone()),
        ] {
            m.registry.register(c).expect("distinct names");
        }
        for e in ERROR_LABELS {
            m.errors.with_label_values(&[e]);
        }
        for r in REPLAN_REASONS {
            m.replans.with_label_values(&[r]);
        }
        m
    }
}

/// Observes the reconcile duration when dropped (on every return path).
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// The rollout timeline, the serving plan's replicas and the live agreement as gauges (for
    /// the dashboard); series of plans and tiers no longer there are removed.
    pub fn export_state(
        &self,
        ns: &str,
        name: &str,
        before: &Versions,
        after: &Versions,
        status: &CollaborativeInferenceStatus,
        health: &[TierHealth],
    ) {
        let phases = |v: &Versions| -> Vec<(String, &'static str)> {
            v.serving
                .iter()
                .map(|p| (p.id.clone(), "serving"))
                .chain(v.rollout.iter().map(|r| (r.plan.id.clone(), "rolling_out")))
                .chain(v.retiring.iter().map(|r| (r.plan.id.clone(), "retiring")))
                .collect()
        };
        let now = phases(after);
        for (id, phase) in phases(before) {
            if !now.contains(&(id.clone(), phase)) {
                let _ = self.phase.remove_label_values(&[ns, name, &id, phase]);
            }
        }
        for (id, phase) in &now {
            self.phase.with_label_values(&[ns, name, id, phase]).set(1);
        }
        for tier in super::crd::TIERS {
            match health.iter().find(|h| h.tier == tier) {
                Some(h) => {
                    let r = &self.replicas;
                    r.with_label_values(&[ns, name, tier, "ready"])
                        .set(i64::from(h.ready));
                    r.with_label_values(&[ns, name, tier, "wanted"])
                        .set(i64::from(h.wanted));
                }
                None => {
                    for state in ["ready", "wanted"] {
                        let _ = self.replicas.remove_label_values(&[ns, name, tier, state]);
                    }
                }
            }
        }
        if let Some(a) = status
            .observation
            .as_ref()
            .and_then(|o| o.live_agreement.as_ref())
        {
            let g = &self.agreement;
            g.with_label_values(&[ns, name, "value"])
                .set(a.agreement.value);
            g.with_label_values(&[ns, name, "low"]).set(a.agreement.low);
            g.with_label_values(&[ns, name, "high"])
                .set(a.agreement.high);
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What `/readyz` reports: ready once the controller runs (as leader or standing by).
#[derive(Clone, Default)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Metrics, health: Health) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = health.ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_exposed_and_the_timer_observes_on_drop() {
        let m = Metrics::default();
        {
            let _t = m.count_and_measure();
        }
        m.errors.with_label_values(&["kube"]).inc();
        m.replans.with_label_values(&["observed"]).inc();
        m.predicted.with_label_values(&["ns", "a"]).set(0.05);
        m.observed.with_label_values(&["ns", "a"]).set(0.06);
        let text = m.render();
        for want in [
            "cnnpc_controller_reconcile_total 1",
            "cnnpc_controller_reconcile_errors_total{error=\"kube\"} 1",
            "cnnpc_controller_reconcile_duration_seconds_count 1",
            "cnnpc_controller_replans_total{reason=\"observed\"} 1",
            "cnnpc_plan_predicted_latency_seconds{name=\"a\",namespace=\"ns\"} 0.05",
            "cnnpc_plan_observed_latency_seconds{name=\"a\",namespace=\"ns\"} 0.06",
            "cnnpc_controller_leader 0",
            "cnnpc_controller_reconcile_errors_total{error=\"task\"} 0",
            "cnnpc_controller_replans_total{reason=\"rolled_back\"} 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
