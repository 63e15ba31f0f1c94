//! Replanning from what the shards observe.
//!
//! The shards export (`runtime::metrics`) `cnnpc_shard_compute_seconds{tier}`,
//! `cnnpc_hop_seconds{from,to}` and `cnnpc_hop_bytes_total{from,to}` and, at the entry tier,
//! `cnnpc_request_seconds`. The controller reads them from Prometheus (`/api/v1/query`, the
//! last two samples of each series via `irate`, so a change shows within two scrape intervals)
//! or, without Prometheus, scrapes the shards' `/metrics` and takes the difference of two
//! scrapes. From them:
//! - per tier, compute scale = old scale × observed mean compute time / the time the plan
//!   predicted for that tier;
//! - per hop, throughput = mean bytes × 8 / mean hop time; a hop that spans both physical
//!   links (edge idle) scales both by the same factor.
//!
//! The decisions here are pure; the I/O is in [`prometheus_observation`] and [`scrape`].

use super::crd::PlanStatus;
use super::planning::Adjustments;
use crate::runtime::metrics::samples;
use std::collections::BTreeMap;

/// Means over the observation window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Per tier: mean compute seconds per request.
    pub compute_s: BTreeMap<String, f64>,
    /// Per hop `from->to`: (mean seconds, mean bytes) per request.
    pub hops: BTreeMap<String, (f64, f64)>,
    /// Mean end-to-end seconds at the entry tier.
    pub request_s: Option<f64>,
}

impl Observation {
    pub fn is_empty(&self) -> bool {
        self.compute_s.is_empty() && self.hops.is_empty() && self.request_s.is_none()
    }
}

const PHYSICAL: [(&str, &str); 2] = [("end", "edge"), ("edge", "cloud")];

fn tier_index(t: &str) -> Option<usize> {
    super::crd::TIERS.iter().position(|x| *x == t)
}

/// The new assumptions after `obs`, starting from the ones the current plan was made with.
/// Numbers that are missing, zero or not finite leave the old assumption as it was.
pub fn adjust(current: &PlanStatus, assumed: &Adjustments, obs: &Observation) -> Adjustments {
    let mut out = assumed.clone();
    for t in &current.tiers {
        let (Some(observed), true) = (obs.compute_s.get(&t.tier), t.segments.is_some()) else {
            continue;
        };
        let predicted_s = t.compute_ms / 1e3;
        if !(observed.is_finite() && *observed > 0.0 && predicted_s > 1e-9) {
            continue;
        }
        let old = assumed.compute_scale.get(&t.tier).copied().unwrap_or(1.0);
        out.compute_scale
            .insert(t.tier.clone(), old * observed / predicted_s);
    }
    for (hop, &(secs, bytes)) in &obs.hops {
        let Some((from, to)) = hop.split_once("->") else {
            continue;
        };
        let (Some(a), Some(b)) = (tier_index(from), tier_index(to)) else {
            continue;
        };
        if !(secs.is_finite() && secs > 0.0 && bytes.is_finite() && bytes > 0.0 && a < b) {
            continue;
        }
        let observed_mbps = bytes * 8.0 / secs / 1e6;
        let names: Vec<String> = PHYSICAL[a..b]
            .iter()
            .map(|(f, t)| format!("{f}->{t}"))
            .collect();
        let old: Vec<f64> = names
            .iter()
            .map(|n| assumed.link_mbps.get(n).copied().unwrap_or(f64::NAN))
            .collect();
        if old.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
            continue;
        }
        // Path bandwidth the old assumptions give, and the factor that makes it the observed one.
        let path: f64 = 1.0 / old.iter().map(|m| 1.0 / m).sum::<f64>();
        let factor = observed_mbps / path;
        for (n, m) in names.iter().zip(old) {
            out.link_mbps.insert(n.clone(), m * factor);
        }
    }
    out
}

/// Whether any assumption moved by more than `tolerance` (relative): only then is a new
/// search worth running.
pub fn changed(old: &Adjustments, new: &Adjustments, tolerance: f64) -> bool {
    let moved = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        b.iter().any(|(k, v)| match a.get(k) {
            Some(o) if *o > 0.0 => ((v - o) / o).abs() > tolerance,
            _ => true,
        })
    };
    moved(&old.link_mbps, &new.link_mbps) || moved(&old.compute_scale, &new.compute_scale)
}

/// Roll a new plan out only when it differs and is predicted faster than the current plan
/// (re-costed under the same new assumptions) by more than `hysteresis` of the current latency.
/// A current plan that can no longer run (`current_ms` None) is always replaced.
pub fn should_roll_out(
    current_id: &str,
    current_ms: Option<f64>,
    new_id: &str,
    new_ms: f64,
    hysteresis: f64,
) -> bool {
    if current_id == new_id {
        return false;
    }
    match current_ms {
        None => true,
        Some(cur) => cur > 0.0 && (cur - new_ms) / cur > hysteresis,
    }
}

/// The reason recorded for a replan from observations, e.g.
/// `observed end->edge 2.1 Mbit/s (assumed 20.0)`.
pub fn reason(old: &Adjustments, new: &Adjustments) -> String {
    let mut parts = Vec::new();
    for (k, v) in &new.link_mbps {
        let o = old.link_mbps.get(k).copied().unwrap_or(f64::NAN);
        if (v - o).abs() > 1e-9 * o.abs().max(1.0) {
            parts.push(format!("{k} {v:.2} Mbit/s (assumed {o:.2})"));
        }
    }
    for (k, v) in &new.compute_scale {
        let o = old.compute_scale.get(k).copied().unwrap_or(1.0);
        if (v - o).abs() > 1e-9 * o.abs().max(1.0) {
            parts.push(format!("{k} compute x{v:.2} (assumed x{o:.2})"));
        }
    }
    format!("observed {}", parts.join(", "))
}

// ---- Prometheus HTTP API ----

/// The label matchers that select one plan's shards in Prometheus: the namespace and the pod
/// labels as the chart's PodMonitor relabels them ([`labels::prom`](super::labels::prom)).
pub fn selector(namespace: &str, name: &str, plan_id: &str) -> String {
    use super::labels::prom;
    format!(
        "namespace=\"{}\",{}=\"{}\",{}=\"{}\"",
        escape(namespace),
        prom::NAME,
        escape(name),
        prom::PLAN_ID,
        escape(plan_id)
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The PromQL queries: (what, query). `range` bounds how far back the last two samples are
/// looked for (e.g. `1m`).
pub fn queries(sel: &str, range: &str) -> Vec<(&'static str, String)> {
    let ratio = |num: &str, den: &str, by: &str| {
        format!(
            "sum by ({by}) (irate({num}{{{sel}}}[{range}])) / sum by ({by}) (irate({den}{{{sel}}}[{range}]))"
        )
    };
    vec![
        (
            "compute",
            ratio(
                "cnnpc_shard_compute_seconds_sum",
                "cnnpc_shard_compute_seconds_count",
                "tier",
            ),
        ),
        (
            "hop_seconds",
            ratio("cnnpc_hop_seconds_sum", "cnnpc_hop_seconds_count", "from, to"),
        ),
        (
            "hop_bytes",
            ratio("cnnpc_hop_bytes_total", "cnnpc_hop_seconds_count", "from, to"),
        ),
        (
            "request",
            format!(
                "sum(irate(cnnpc_request_seconds_sum{{{sel}}}[{range}])) / sum(irate(cnnpc_request_seconds_count{{{sel}}}[{range}]))"
            ),
        ),
    ]
}

/// One instant-vector sample: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// Parses a `/api/v1/query` answer (`resultType` vector); NaN and ±Inf samples are dropped.
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus query failed: {}",
            v["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or("Prometheus answer has no data.result")?;
    let mut out = Vec::new();
    for r in result {
        let labels: BTreeMap<String, String> = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|x| x.is_finite());
        if let Some(x) = value {
            out.push((labels, x));
        }
    }
    Ok(out)
}

/// Assembles an observation from the answers to [`queries`].
pub fn observation_from(
    compute: &[Sample],
    hop_seconds: &[Sample],
    hop_bytes: &[Sample],
    request: &[Sample],
) -> Observation {
    let hop_key =
        |l: &BTreeMap<String, String>| Some(format!("{}->{}", l.get("from")?, l.get("to")?));
    let bytes: BTreeMap<String, f64> = hop_bytes
        .iter()
        .filter_map(|(l, v)| Some((hop_key(l)?, *v)))
        .collect();
    Observation {
        compute_s: compute
            .iter()
            .filter_map(|(l, v)| Some((l.get("tier")?.clone(), *v)))
            .collect(),
        hops: hop_seconds
            .iter()
            .filter_map(|(l, s)| {
                let k = hop_key(l)?;
                let b = *bytes.get(&k)?;
                Some((k, (*s, b)))
            })
            .collect(),
        request_s: request.first().map(|(_, v)| *v),
    }
}

// ---- Scraping the shards directly ----

/// Cumulative sums and counts read from one or more shards' `/metrics` texts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// tier → (sum seconds, count)
    pub compute: BTreeMap<String, (f64, f64)>,
    /// hop → (sum seconds, count, bytes)
    pub hops: BTreeMap<String, (f64, f64, f64)>,
    /// (sum seconds, count)
    pub request: (f64, f64),
}

/// Adds the counters in one Prometheus text exposition to `acc`.
pub fn parse_exposition(text: &str, acc: &mut Counters) {
    for s in samples(text) {
        let (name, value) = (s.name, s.value);
        let hop = || Some(format!("{}->{}", s.label("from")?, s.label("to")?));
        match name {
            "cnnpc_shard_compute_seconds_sum" | "cnnpc_shard_compute_seconds_count" => {
                if let Some(t) = s.label("tier") {
                    let e = acc.compute.entry(t.to_string()).or_default();
                    if name.ends_with("_sum") {
                        e.0 += value
                    } else {
                        e.1 += value
                    }
                }
            }
            "cnnpc_hop_seconds_sum" | "cnnpc_hop_seconds_count" | "cnnpc_hop_bytes_total" => {
                if let Some(h) = hop() {
                    let e = acc.hops.entry(h).or_default();
                    match name {
                        "cnnpc_hop_seconds_sum" => e.0 += value,
                        "cnnpc_hop_seconds_count" => e.1 += value,
                        _ => e.2 += value,
                    }
                }
            }
            "cnnpc_request_seconds_sum" => acc.request.0 += value,
            "cnnpc_request_seconds_count" => acc.request.1 += value,
            _ => {}
        }
    }
}

/// Means over the requests between two scrapes (`before` then `after`); series without new
/// requests (or reset by a restart) are left out.
pub fn observation_between(before: &Counters, after: &Counters) -> Observation {
    let mut obs = Observation::default();
    for (t, (s1, c1)) in &after.compute {
        let (s0, c0) = before.compute.get(t).copied().unwrap_or_default();
        if c1 > &c0 && s1 >= &s0 {
            obs.compute_s.insert(t.clone(), (s1 - s0) / (c1 - c0));
        }
    }
    for (h, (s1, c1, b1)) in &after.hops {
        let (s0, c0, b0) = before.hops.get(h).copied().unwrap_or_default();
        if c1 > &c0 && s1 >= &s0 && b1 >= &b0 {
            let n = c1 - c0;
            obs.hops.insert(h.clone(), ((s1 - s0) / n, (b1 - b0) / n));
        }
    }
    let ((s0, c0), (s1, c1)) = (before.request, after.request);
    if c1 > c0 && s1 >= s0 {
        obs.request_s = Some((s1 - s0) / (c1 - c0));
    }
    obs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{Encoding, PlanTierStatus};

    fn plan(tiers: &[(&str, Option<[u32; 2]>, f64)]) -> PlanStatus {
        PlanStatus {
            id: "p".into(),
            summary: String::new(),
            deployment: String::new(),
            encoding: Encoding::Int8,
            cuts: vec![],
            tiers: tiers
                .iter()
                .map(|(t, s, ms)| PlanTierStatus {
                    tier: t.to_string(),
                    segments: s.map(|s| s.to_vec()),
                    compute_ms: *ms,
                })
                .collect(),
            latency_ms: 0.0,
            accuracy: None,
        }
    }

    fn assumed() -> Adjustments {
        Adjustments {
            link_mbps: BTreeMap::from([("end->edge".into(), 20.0), ("edge->cloud".into(), 10.0)]),
            compute_scale: BTreeMap::from([("end".into(), 2.0)]),
        }
    }

    #[test]
    fn compute_scale_follows_observed_over_predicted() {
        let p = plan(&[
            ("end", Some([0, 1]), 10.0),
            ("edge", Some([2, 3]), 4.0),
            ("cloud", None, 0.0),
        ]);
        let obs = Observation {
            compute_s: BTreeMap::from([
                ("end".into(), 0.015),  // 15 ms against 10 predicted
                ("edge".into(), 0.004), // as predicted
                ("cloud".into(), 9.0),  // runs nothing in the plan: ignored
            ]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.compute_scale["end"] - 3.0).abs() < 1e-9, "{a:?}");
        assert!((a.compute_scale["edge"] - 1.0).abs() < 1e-9);
        assert!(!a.compute_scale.contains_key("cloud"));
        assert_eq!(a.link_mbps, assumed().link_mbps);
    }

    #[test]
    fn hop_throughput_sets_the_link_and_a_two_link_hop_scales_both() {
        let p = plan(&[
            ("end", Some([0, 1]), 1.0),
            ("edge", None, 0.0),
            ("cloud", Some([2, 3]), 1.0),
        ]);
        // 250 000 bytes in 0.4 s = 5 Mbit/s over a path assumed 1/(1/20+1/10) = 6.67 Mbit/s.
        let obs = Observation {
            hops: BTreeMap::from([("end->cloud".into(), (0.4, 250_000.0))]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.link_mbps["end->edge"] - 15.0).abs() < 1e-9, "{a:?}");
        assert!((a.link_mbps["edge->cloud"] - 7.5).abs() < 1e-9);
        // One link only.
        let obs = Observation {
            hops: BTreeMap::from([("end->edge".into(), (0.1, 25_000.0))]),
            ..Observation::default()
        };
        let a = adjust(&p, &assumed(), &obs);
        assert!((a.link_mbps["end->edge"] - 2.0).abs() < 1e-9);
        assert_eq!(a.link_mbps["edge->cloud"], 10.0);
        assert!(changed(&assumed(), &a, 0.05));
        assert!(!changed(&assumed(), &assumed(), 0.05));
        assert!(reason(&assumed(), &a).contains("end->edge 2.00 Mbit/s (assumed 20.00)"));
    }

    #[test]
    fn bad_numbers_change_nothing() {
        let p = plan(&[("end", Some([0, 1]), 10.0)]);
        let obs = Observation {
            compute_s: BTreeMap::from([("end".into(), f64::NAN)]),
            hops: BTreeMap::from([
                ("end->edge".into(), (0.0, 10.0)),
                ("cloud->end".into(), (1.0, 10.0)),
                ("nonsense".into(), (1.0, 10.0)),
            ]),
            request_s: None,
        };
        assert_eq!(adjust(&p, &assumed(), &obs), assumed());
    }

    #[test]
    fn hysteresis_gates_the_roll_out() {
        assert!(
            !should_roll_out("a", Some(100.0), "a", 10.0, 0.1),
            "same plan"
        );
        assert!(
            !should_roll_out("a", Some(100.0), "b", 95.0, 0.1),
            "5% < 10%"
        );
        assert!(
            should_roll_out("a", Some(100.0), "b", 85.0, 0.1),
            "15% > 10%"
        );
        assert!(
            should_roll_out("a", None, "b", 500.0, 0.1),
            "current cannot run"
        );
    }

    #[test]
    fn prometheus_vectors_parse_and_assemble() {
        let compute = parse_vector(
            br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"tier":"end"},"value":[1.5,"0.012"]},
            {"metric":{"tier":"edge"},"value":[1.5,"NaN"]}]}}"#,
        )
        .unwrap();
        assert_eq!(compute.len(), 1, "NaN dropped");
        let secs = parse_vector(br#"{"status":"success","data":{"result":[{"metric":{"from":"end","to":"edge"},"value":[1,"0.5"]}]}}"#).unwrap();
        let bytes = parse_vector(br#"{"status":"success","data":{"result":[{"metric":{"from":"end","to":"edge"},"value":[1,"1000"]}]}}"#).unwrap();
        let obs = observation_from(&compute, &secs, &bytes, &[]);
        assert_eq!(obs.compute_s["end"], 0.012);
        assert_eq!(obs.hops["end->edge"], (0.5, 1000.0));
        assert!(parse_vector(br#"{"status":"error","error":"bad query"}"#)
            .unwrap_err()
            .contains("bad query"));
        assert!(parse_vector(b"<html>").is_err());
        let q = queries(&selector("ns", "x\"y", "p1"), "1m");
        assert!(
            q[0].1.contains(r#"name="x\"y",pod_plan_id="p1""#),
            "{}",
            q[0].1
        );
        assert!(q[0]
            .1
            .starts_with("sum by (tier) (irate(cnnpc_shard_compute_seconds_sum{"));
    }

    #[test]
    fn scraped_counters_give_means_between_scrapes() {
        let text = |n: f64| {
            format!(
                "# TYPE x histogram\ncnnpc_shard_compute_seconds_sum{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_shard_compute_seconds_count{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_hop_seconds_sum{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_hop_seconds_count{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_hop_bytes_total{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_request_seconds_sum {}\ncnnpc_request_seconds_count {}\n",
                0.01 * n, n, 0.1 * n, n, 5000.0 * n, 0.2 * n, n
            )
        };
        let (mut a, mut b) = (Counters::default(), Counters::default());
        parse_exposition(&text(10.0), &mut a);
        parse_exposition(&text(30.0), &mut b);
        let obs = observation_between(&a, &b);
        assert!((obs.compute_s["edge"] - 0.01).abs() < 1e-12);
        let (s, by) = obs.hops["end->edge"];
        assert!((s - 0.1).abs() < 1e-12 && (by - 5000.0).abs() < 1e-9);
        assert!((obs.request_s.unwrap() - 0.2).abs() < 1e-12);
        // No new requests: nothing observed.
        assert!(observation_between(&b, &b).is_empty());
    }
}
