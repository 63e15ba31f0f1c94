//! What `cnnpc demo` prints: one row per plan, measured next to predicted (table or JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::DemoOptions;
use crate::planner::accuracy::{AccuracyEvidence, WireEncoding};
use crate::planner::interval::{median_interval, wilson, z_for};
use crate::planner::plan::Plan;

/// The two links of the reference topology, always reported (0 when a plan does not use one).
pub const LINKS: [&str; 2] = ["end->edge", "edge->cloud"];

#[derive(Debug, Clone, Serialize)]
pub struct CutRow {
    pub point: usize,
    pub name: String,
    pub kept_channels: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub strategy: String,
    pub deployment: String,
    pub cuts: Vec<CutRow>,
    pub wire_encoding: WireEncoding,
    pub measured_p50_ms: f64,
    /// Where the latency's median lies at `P50_CONFIDENCE` (95%), from the requests alone (order
    /// statistics, no assumption on their distribution); `None` under 6 requests. Of 16 (a
    /// baseline's in the demo) it is the 4th and 13th fastest; of the CNNPC plan's 64, the 24th
    /// and 41st.
    pub measured_p50_interval_ms: Option<[f64; 2]>,
    pub measured_p95_ms: f64,
    pub measured_mean_ms: f64,
    /// The planner's latency model for this plan.
    pub predicted_ms: f64,
    /// Measured: frame bytes each link carried per request (zstd included).
    pub bytes_per_request: BTreeMap<String, f64>,
    /// The planner's estimate of the same (no zstd).
    pub predicted_bytes_per_request: BTreeMap<String, f64>,
    /// Top-1 accuracy of the served answers against the labels (when the inputs have labels).
    pub accuracy: Option<f64>,
    /// Top-1 agreement of the served answers with the unmodified model.
    pub agreement: f64,
    /// What the live oracle measured for this compression on its (disjoint) eval set.
    pub oracle_agreement: Option<f64>,
    /// Its samples and interval (absent for the unmodified model, which agrees with itself).
    pub oracle_interval: Option<AccuracyEvidence>,
    /// Per tier that computes: the latency model's compute time and the median over requests of
    /// the tier's own `cnnpc_shard_compute_seconds`, ms per request.
    pub predicted_compute_ms: BTreeMap<String, f64>,
    pub measured_compute_ms: BTreeMap<String, f64>,
    /// Per tier that reads or frames a tensor: the model's codec time and the median of the
    /// tier's own `cnnpc_shard_codec_seconds`, ms per request.
    pub predicted_codec_ms: BTreeMap<String, f64>,
    pub measured_codec_ms: BTreeMap<String, f64>,
    /// Per link crossed: the model's transfer time (its bytes over the link; the HTTP cost of
    /// the hop, which the model prices on the link too, is in `predicted_other_ms`, where the
    /// measurement finds it) and the median of the receiver's `cnnpc_hop_seconds` (request
    /// head to last body byte, through the emulated link), ms per request.
    pub predicted_transfer_ms: BTreeMap<String, f64>,
    pub measured_hop_ms: BTreeMap<String, f64>,
    /// What the terms leave: the model's entry and per-hop HTTP costs, and the median over
    /// requests of the latency minus every measured term (serialisation, HTTP, scheduling).
    pub predicted_other_ms: f64,
    pub measured_other_ms: f64,
    /// Each request's latency and its own measured terms, in the order sent (a baseline's
    /// request `i` went in round `i`; the CNNPC plan's go once after each baseline, so round
    /// `i / baselines`): where a median misses, which requests moved it.
    pub requests: Vec<RequestRow>,
}

/// One served request: its latency and its measured terms, ms.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    pub latency_ms: f64,
    #[serde(flatten)]
    pub terms: super::Terms,
}

/// The served plan's agreement with the unmodified model on held-out inputs (beyond the fit and
/// eval ones), run through its own shards.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub samples: usize,
    pub agreeing: usize,
    pub agreement: f64,
    pub lower: f64,
    pub upper: f64,
    pub confidence: f64,
}

impl HeldOut {
    pub fn new(agreeing: usize, samples: usize, confidence: f64) -> HeldOut {
        let (lower, upper) = wilson(agreeing as f64, samples as f64, z_for(confidence));
        HeldOut {
            samples,
            agreeing,
            agreement: agreeing as f64 / samples.max(1) as f64,
            lower,
            upper,
            confidence,
        }
    }
}

/// The `q` quantile of ascending `sorted` by nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: a value that was actually observed.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Takes the HTTP cost of a hop, `hop_ms`, out of each crossed link's predicted time and
/// returns what it took. The latency model prices a hop's HTTP round trip on its link (so a plan
/// pays it per link crossed), but the receiver's hop timer starts at the request's head: the
/// round trip lands in what the measured terms leave, and is compared there.
fn http_out_of_links(transfer_ms: &mut BTreeMap<String, f64>, hop_ms: f64) -> f64 {
    let mut moved = 0.0;
    for ms in transfer_ms.values_mut() {
        // A link the plan does not cross is priced 0, not its hop.
        if *ms > 0.0 {
            let out = hop_ms.clamp(0.0, *ms);
            *ms -= out;
            moved += out;
        }
    }
    moved
}

/// The median over requests of what the measured terms leave of each request's latency (paired
/// by request: the median of the differences, not the difference of the medians).
fn median_residual(latencies_ms: &[f64], per_request: &[super::Terms]) -> f64 {
    let mut left: Vec<f64> = latencies_ms
        .iter()
        .zip(per_request)
        .map(|(ms, t)| ms - t.total())
        .collect();
    crate::onnx::profile::median(&mut left)
}

impl PlanRow {
    /// Compares each hop's HTTP cost (the profile's `wire.hop_ms`, priced on every link the
    /// plan crosses) with what the measured terms leave, where it is paid, not with the link:
    /// the prediction's total is unchanged.
    pub fn with_hop_http_in_other(mut self, hop_ms: f64) -> PlanRow {
        self.predicted_other_ms += http_out_of_links(&mut self.predicted_transfer_ms, hop_ms);
        self
    }

    pub fn new(
        plan: &Plan,
        latencies_ms: &[f64],
        per_request: &[super::Terms],
        bytes: BTreeMap<String, f64>,
        predicted: &[usize],
        reference: &[usize],
        labels: Option<&[usize]>,
    ) -> PlanRow {
        let mut sorted = latencies_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = predicted.len().max(1) as f64;
        let hits = |truth: &[usize]| {
            predicted.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / n
        };
        let with_links = |m: &BTreeMap<String, f64>| {
            LINKS
                .iter()
                .map(|l| (l.to_string(), m.get(*l).copied().unwrap_or(0.0)))
                .collect()
        };
        let measured_other_ms = median_residual(latencies_ms, per_request);
        let super::Terms {
            compute: measured_compute_ms,
            codec: measured_codec_ms,
            hops: measured_hop_ms,
        } = super::Terms::median(per_request);
        let mean_ms = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
        let predicted_compute_ms: BTreeMap<String, f64> = plan
            .tiers
            .iter()
            .filter(|t| t.segments.is_some())
            .map(|t| (t.tier.clone(), t.compute_ms))
            .collect();
        let predicted_transfer_ms: BTreeMap<String, f64> = plan
            .transfer_ms
            .iter()
            .filter(|(k, _)| measured_hop_ms.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // Codec terms of the tiers that served this plan (a relay that only forwards counts 0).
        let predicted_codec_ms: BTreeMap<String, f64> = plan
            .codec_ms
            .iter()
            .filter(|(t, ms)| measured_codec_ms.contains_key(*t) && **ms > 0.0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let measured_codec_ms: BTreeMap<String, f64> = measured_codec_ms
            .into_iter()
            .filter(|(t, ms)| predicted_codec_ms.contains_key(t) || *ms > 0.05)
            .collect();
        let predicted_other_ms = plan.latency_ms
            - predicted_compute_ms.values().sum::<f64>()
            - predicted_codec_ms.values().sum::<f64>()
            - predicted_transfer_ms.values().sum::<f64>();
        PlanRow {
            predicted_compute_ms,
            measured_compute_ms,
            predicted_codec_ms,
            measured_codec_ms,
            predicted_transfer_ms,
            measured_hop_ms,
            predicted_other_ms,
            measured_other_ms,
            strategy: plan.strategy.clone(),
            deployment: plan.deployment.clone(),
            cuts: plan
                .cuts
                .iter()
                .map(|c| CutRow {
                    point: c.point,
                    name: c.name.clone(),
                    kept_channels: c.kept_channels,
                    channels: c.channels,
                })
                .collect(),
            wire_encoding: plan.wire_encoding,
            measured_p50_ms: percentile(&sorted, 0.5),
            measured_p50_interval_ms: median_interval(&sorted, P50_CONFIDENCE).map(|(a, b)| [a, b]),
            measured_p95_ms: percentile(&sorted, 0.95),
            measured_mean_ms: mean_ms,
            predicted_ms: plan.latency_ms,
            bytes_per_request: with_links(&bytes),
            predicted_bytes_per_request: with_links(&plan.bytes),
            accuracy: labels.map(hits),
            agreement: hits(reference),
            oracle_agreement: plan.accuracy,
            oracle_interval: plan.accuracy_interval,
            requests: latencies_ms
                .iter()
                .zip(per_request)
                .map(|(&latency_ms, t)| RequestRow {
                    latency_ms,
                    terms: t.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub end_edge_mbps: f64,
    pub edge_cloud_mbps: f64,
    /// Emulated slowdowns of this machine per tier.
    pub slowdown: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Speedup {
    /// CNNPC's measured p50 against each baseline's.
    pub vs_end_only: f64,
    pub vs_neurosurgeon: f64,
    /// CNNPC's measured p50 / its predicted latency.
    pub measured_over_predicted: f64,
    /// The p50's interval ([`PlanRow::measured_p50_interval_ms`]) over the same prediction: where
    /// the measurement leaves the ratio. A prediction outside it missed by more than the
    /// requests' own spread explains.
    pub measured_over_predicted_interval: Option<[f64; 2]>,
}

/// The confidence of the measured median's interval.
pub const P50_CONFIDENCE: f64 = 0.95;

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub model: String,
    pub topology: Topology,
    pub min_accuracy: f64,
    pub requests: usize,
    /// Sum of the profiled segments on this machine, ms per image.
    pub host_ms: f64,
    /// Fresh live-oracle measurements this run made; points reused from the cache.
    pub oracle_calls: usize,
    /// Evaluation samples those measurements ran (sequential: most stop early).
    pub oracle_samples: usize,
    pub oracle_points_reused: usize,
    /// The CNNPC plan on held-out inputs.
    pub held_out: Option<HeldOut>,
    pub plans: Vec<PlanRow>,
    pub speedup: Option<Speedup>,
    pub seconds: f64,
    /// This machine's pace: the whole model's median ms on it just before planning, each run
    /// after the idle pause the profile's rounds take, and once between every round of
    /// requests while serving. Both meet the machine after a pause, as a served run does:
    /// their ratio is the machine's change of speed between planning and serving.
    pub planning_pace_ms: f64,
    pub serving_pace_ms: f64,
    /// The serving pace's runs, one per round of requests, in order.
    pub serving_pace_runs_ms: Vec<f64>,
}

impl DemoReport {
    pub fn new(
        model: &str,
        opts: &DemoOptions,
        host_ms: f64,
        oracle: (usize, usize, usize),
        held_out: Option<HeldOut>,
        plans: Vec<PlanRow>,
        seconds: f64,
    ) -> DemoReport {
        let (oracle_calls, oracle_samples, reused) = oracle;
        let p50 = |s: &str| {
            plans
                .iter()
                .find(|p| p.strategy == s)
                .map(|p| p.measured_p50_ms)
        };
        let speedup = match (p50("cnnpc"), p50("end-only"), p50("neurosurgeon")) {
            (Some(c), Some(e), Some(n)) => Some(Speedup {
                vs_end_only: e / c,
                vs_neurosurgeon: n / c,
                measured_over_predicted: c / plans[0].predicted_ms,
                measured_over_predicted_interval: plans[0]
                    .measured_p50_interval_ms
                    .map(|[a, b]| [a / plans[0].predicted_ms, b / plans[0].predicted_ms]),
            }),
            _ => None,
        };
        DemoReport {
            model: model.to_string(),
            topology: Topology {
                end_edge_mbps: opts.end_edge_mbps,
                edge_cloud_mbps: opts.edge_cloud_mbps,
                slowdown: ["end", "edge", "cloud"]
                    .iter()
                    .zip(opts.slowdowns)
                    .map(|(t, s)| (t.to_string(), s))
                    .collect(),
            },
            min_accuracy: opts.min_accuracy,
            requests: opts.requests,
            host_ms,
            oracle_calls,
            oracle_samples,
            oracle_points_reused: reused,
            held_out,
            plans,
            speedup,
            seconds,
            planning_pace_ms: f64::NAN,
            serving_pace_ms: f64::NAN,
            serving_pace_runs_ms: Vec::new(),
        }
    }

    /// Records this machine's pace after a pause when planning (a median) and once between
    /// request rounds (each round's run; see the fields).
    pub fn with_pace(mut self, planning_ms: f64, serving_runs_ms: Vec<f64>) -> DemoReport {
        self.planning_pace_ms = planning_ms;
        self.serving_pace_ms = crate::onnx::profile::median(&mut serving_runs_ms.clone());
        self.serving_pace_runs_ms = serving_runs_ms;
        self
    }

    pub fn render_table(&self) -> String {
        let mut s = String::new();
        let t = &self.topology;
        let _ = writeln!(
            s,
            "{}: end {}x / edge {}x / cloud {}x this machine ({:.2} ms per image here), \
             end->edge {} Mbit/s, edge->cloud {} Mbit/s; {} held-out inputs through each plan \
             (the cnnpc plan's after each baseline's)",
            self.model,
            t.slowdown["end"],
            t.slowdown["edge"],
            t.slowdown["cloud"],
            self.host_ms,
            t.end_edge_mbps,
            t.edge_cloud_mbps,
            self.requests
        );
        let _ = writeln!(
            s,
            "plan searched for agreement >= {} with {} live accuracy measurements on {} samples \
             ({} reused)",
            self.min_accuracy, self.oracle_calls, self.oracle_samples, self.oracle_points_reused
        );
        if let Some(e) = self.plans.first().and_then(|p| p.oracle_interval) {
            let _ = writeln!(s, "cnnpc plan's agreement on the eval set: {e}");
        }
        if let Some(h) = &self.held_out {
            let _ = writeln!(
                s,
                "cnnpc plan's agreement on {} held-out inputs: {}/{} = {:.4}, {:.0}% interval \
                 [{:.4}, {:.4}]",
                h.samples,
                h.agreeing,
                h.samples,
                h.agreement,
                h.confidence * 100.0,
                h.lower,
                h.upper
            );
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "{:<13} {:<15} {:<22} {:>9} {:>8} {:>8} {:>11} {:>12} {:>9} {:>8}",
            "strategy",
            "deployment",
            "cuts (kept/channels)",
            "predicted",
            "p50 ms",
            "p95 ms",
            "end->edge B",
            "edge->cloud B",
            "agreement",
            "accuracy"
        );
        for p in &self.plans {
            let crosses = p.predicted_bytes_per_request.values().any(|&b| b > 0.0);
            let cuts = cuts_label(&p.cuts, p.wire_encoding, crosses);
            let _ = writeln!(
                s,
                "{:<13} {:<15} {:<22} {:>9.1} {:>8.1} {:>8.1} {:>11.0} {:>12.0} {:>8.1}% {:>8}",
                p.strategy,
                p.deployment,
                cuts,
                p.predicted_ms,
                p.measured_p50_ms,
                p.measured_p95_ms,
                p.bytes_per_request["end->edge"],
                p.bytes_per_request["edge->cloud"],
                p.agreement * 100.0,
                p.accuracy
                    .map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
            );
        }
        let _ = writeln!(
            s,
            "\npredicted / measured median per term, ms per request (compute and codec from each \
             tier's cnnpc_shard_compute_seconds and cnnpc_shard_codec_seconds, links from the \
             receiver's cnnpc_hop_seconds):"
        );
        for p in &self.plans {
            let mut terms: Vec<String> = Vec::new();
            for (t, ms) in &p.predicted_compute_ms {
                let m = p.measured_compute_ms.get(t).copied().unwrap_or(f64::NAN);
                terms.push(format!("{t} {ms:.1}/{m:.1}"));
            }
            let codec_tiers: std::collections::BTreeSet<&String> = p
                .predicted_codec_ms
                .keys()
                .chain(p.measured_codec_ms.keys())
                .collect();
            for t in codec_tiers {
                let ms = p.predicted_codec_ms.get(t).copied().unwrap_or(0.0);
                let m = p.measured_codec_ms.get(t).copied().unwrap_or(0.0);
                terms.push(format!("{t} codec {ms:.1}/{m:.1}"));
            }
            for (l, ms) in &p.predicted_transfer_ms {
                let m = p.measured_hop_ms.get(l).copied().unwrap_or(f64::NAN);
                terms.push(format!("{l} {ms:.1}/{m:.1}"));
            }
            terms.push(format!(
                "other {:.1}/{:.1}",
                p.predicted_other_ms, p.measured_other_ms
            ));
            let _ = writeln!(s, "  {:<13} {}", p.strategy, terms.join(", "));
        }
        if let Some(x) = &self.speedup {
            let spread = x
                .measured_over_predicted_interval
                .map_or(String::new(), |[a, b]| {
                    format!(
                        " (the p50's {:.0}% interval over {} requests: {a:.2}-{b:.2})",
                        P50_CONFIDENCE * 100.0,
                        self.plans.first().map_or(0, |p| p.requests.len())
                    )
                });
            let _ = writeln!(
                s,
                "\ncnnpc: {:.2}x faster than end-only, {:.2}x faster than the best uncompressed \
                 split (p50); measured / predicted = {:.2}{spread}",
                x.vs_end_only, x.vs_neurosurgeon, x.measured_over_predicted
            );
        }
        if self.planning_pace_ms.is_finite() && self.serving_pace_ms.is_finite() {
            let _ = writeln!(
                s,
                "this machine ran the whole model in {:.2} ms after a pause when planning and {:.2} ms \
                 once between request rounds ({:.2}x): predictions rest on the first",
                self.planning_pace_ms,
                self.serving_pace_ms,
                self.serving_pace_ms / self.planning_pace_ms
            );
        }
        let _ = writeln!(s, "demo took {:.0} s", self.seconds);
        s
    }
}

/// A plan's cuts as `point:kept/channels ... encoding`; without cuts, what crosses (the
/// input, in the plan's encoding) or `-` when nothing does.
fn cuts_label(cuts: &[CutRow], enc: WireEncoding, crosses: bool) -> String {
    if cuts.is_empty() {
        return if crosses {
            format!("input {enc}")
        } else {
            "-".to_string()
        };
    }
    let points: Vec<String> = cuts
        .iter()
        .map(|c| format!("{}:{}/{}", c.point, c.kept_channels, c.channels))
        .collect();
    format!("{} {enc}", points.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_without_cuts_names_the_input_it_sends() {
        let cut = CutRow {
            point: 0,
            name: "HardSwish.0".into(),
            kept_channels: 4,
            channels: 16,
        };
        let cuts = [cut];
        assert_eq!(cuts_label(&cuts, WireEncoding::Int4, true), "0:4/16 int4");
        assert_eq!(
            cuts_label(&[], WireEncoding::Int4, true),
            "input int4",
            "an int4 plan sends its input in int4"
        );
        assert_eq!(cuts_label(&[], WireEncoding::F32, true), "input f32");
        assert_eq!(cuts_label(&[], WireEncoding::Int4, false), "-");
    }

    fn terms(compute: f64, codec: f64, hop: f64) -> super::super::Terms {
        super::super::Terms {
            compute: BTreeMap::from([("end".to_string(), compute)]),
            codec: BTreeMap::from([("end".to_string(), codec)]),
            hops: BTreeMap::from([("end->edge".to_string(), hop)]),
        }
    }

    #[test]
    fn each_term_is_its_median_over_requests_and_one_slow_request_does_not_move_it() {
        // The third request is slow in every term: a mean would put compute at 40.
        let per = [
            terms(10.0, 2.0, 5.0),
            terms(12.0, 3.0, 6.0),
            terms(98.0, 40.0, 50.0),
        ];
        let m = super::super::Terms::median(&per);
        assert_eq!(m.compute["end"], 12.0);
        assert_eq!(m.codec["end"], 3.0);
        assert_eq!(m.hops["end->edge"], 6.0);
        // A term a request lacks (a tier that did not answer it) is the median of those it has.
        let mut partial = per.to_vec();
        partial[0].compute.insert("cloud".into(), 7.0);
        assert_eq!(super::super::Terms::median(&partial).compute["cloud"], 7.0);
        assert_eq!(per[2].total(), 188.0);
    }

    #[test]
    fn a_request_row_keeps_its_latency_beside_its_own_terms() {
        let row = RequestRow {
            latency_ms: 20.0,
            terms: terms(10.0, 2.0, 5.0),
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["latency_ms"], 20.0);
        assert_eq!(v["compute"]["end"], 10.0);
        assert_eq!(v["codec"]["end"], 2.0);
        assert_eq!(v["hops"]["end->edge"], 5.0);
    }

    #[test]
    fn the_serving_pace_is_the_median_of_its_runs_which_are_kept_in_order() {
        let r = DemoReport::new(
            "m",
            &DemoOptions::default(),
            10.0,
            (0, 0, 0),
            None,
            vec![],
            1.0,
        )
        .with_pace(10.5, vec![11.0, 14.5, 10.8, 14.9]);
        assert_eq!(r.planning_pace_ms, 10.5);
        assert_eq!(r.serving_pace_ms, (11.0 + 14.5) / 2.0);
        assert_eq!(r.serving_pace_runs_ms, vec![11.0, 14.5, 10.8, 14.9]);
    }

    #[test]
    fn what_the_terms_leave_is_paired_by_request() {
        // Terms sum to 17, 37 and 27 ms; the first request is slow outside every term.
        let per = [
            terms(10.0, 2.0, 5.0),
            terms(30.0, 2.0, 5.0),
            terms(20.0, 2.0, 5.0),
        ];
        let latencies = [100.0, 40.0, 30.0];
        // Residuals 83, 3, 3: the median is 3. The difference of the medians would be 40 - 27.
        assert_eq!(median_residual(&latencies, &per), 3.0);
    }

    #[test]
    fn a_hops_http_cost_moves_from_each_crossed_link_to_other_and_the_total_stays() {
        let mut transfer = BTreeMap::from([
            ("end->edge".to_string(), 3.4),
            ("edge->cloud".to_string(), 6.4),
            ("unused".to_string(), 0.0),
        ]);
        let moved = http_out_of_links(&mut transfer, 0.16);
        assert!((moved - 0.32).abs() < 1e-12, "two links crossed: {moved}");
        assert!((transfer["end->edge"] - 3.24).abs() < 1e-12);
        assert!((transfer["edge->cloud"] - 6.24).abs() < 1e-12);
        assert_eq!(transfer["unused"], 0.0, "a link not crossed pays no hop");
        let left: f64 = transfer.values().sum();
        assert!(
            (left + moved - (3.4 + 6.4)).abs() < 1e-12,
            "the total stays"
        );
        // A link priced below the cost it is given never goes below 0.
        let mut tiny = BTreeMap::from([("end->edge".to_string(), 0.1)]);
        assert_eq!(http_out_of_links(&mut tiny, 0.16), 0.1);
        assert_eq!(tiny["end->edge"], 0.0);
        assert_eq!(
            http_out_of_links(&mut tiny, -1.0),
            0.0,
            "a negative cost moves nothing"
        );
    }

    fn plan(strategy: &str, predicted_ms: f64) -> Plan {
        serde_json::from_value(serde_json::json!({
            "model": "m", "strategy": strategy, "deployment": "cloud-only",
            "latency_ms": predicted_ms, "accuracy": null, "oracle_calls": 0,
            "wire_encoding": "f32", "cuts": [], "compute_ms": {}, "transfer_ms": {},
            "bytes": {}, "overhead_ms": 0.0, "tiers": [], "links": []
        }))
        .expect("a plan")
    }

    fn row(strategy: &str, predicted_ms: f64, latencies_ms: &[f64]) -> PlanRow {
        let per = vec![terms(1.0, 0.0, 0.0); latencies_ms.len()];
        let answers = vec![0; latencies_ms.len()];
        PlanRow::new(
            &plan(strategy, predicted_ms),
            latencies_ms,
            &per,
            BTreeMap::new(),
            &answers,
            &answers,
            None,
        )
    }

    #[test]
    fn the_measured_median_carries_its_interval_and_so_does_measured_over_predicted() {
        // 16 requests, sent in no order: the median's 95% interval is the 4th and 13th fastest.
        let latencies: Vec<f64> = (1..=16).rev().map(|i| 20.0 + f64::from(i)).collect();
        let cnnpc = row("cnnpc", 25.0, &latencies);
        assert_eq!(cnnpc.measured_p50_ms, 28.0);
        assert_eq!(cnnpc.measured_p50_interval_ms, Some([24.0, 33.0]));
        let report = DemoReport::new(
            "m",
            &DemoOptions::default(),
            10.0,
            (0, 0, 0),
            None,
            vec![
                cnnpc,
                row("end-only", 200.0, &[200.0; 16]),
                row("neurosurgeon", 150.0, &[150.0; 16]),
            ],
            1.0,
        );
        let x = report.speedup.as_ref().expect("all three plans");
        assert_eq!(x.measured_over_predicted, 28.0 / 25.0);
        assert_eq!(
            x.measured_over_predicted_interval,
            Some([24.0 / 25.0, 33.0 / 25.0])
        );
        let table = report.render_table();
        assert!(
            table.contains(
                "measured / predicted = 1.12 (the p50's 95% interval over 16 requests: 0.96-1.32)"
            ),
            "{table}"
        );
        // Five requests cannot bound a median at 95%.
        let few = row("cnnpc", 25.0, &latencies[..5]);
        assert_eq!(few.measured_p50_interval_ms, None);
    }

    #[test]
    fn percentiles_are_observed_values_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&v[..1], 0.95), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
