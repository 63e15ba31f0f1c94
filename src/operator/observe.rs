//! What the shards observed, read for the controller: from Prometheus (`/api/v1/query`, the
//! last two samples of each series via `irate`, so a change shows within two scrape intervals)
//! or, without Prometheus, from the shards' own `/metrics` (the difference of two scrapes).
//! The shards export (`runtime::metrics`) `cnnpc_shard_compute_seconds{tier}`,
//! `cnnpc_hop_seconds{from,to}` and `cnnpc_hop_bytes_total{from,to}` and, at the entry tier,
//! `cnnpc_request_seconds`. All of the controller's metric I/O is here; the parsing is pure and
//! tested on its own.

use super::decide::Observation;
use crate::runtime::metrics::samples;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::time::Duration;

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

/// Runs the [`queries`] against Prometheus at `base`.
pub async fn prometheus(base: &str, selector: &str, range: &str) -> Result<Observation, String> {
    let mut answers = Vec::new();
    for (_, q) in queries(selector, range) {
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            utf8_percent_encode(&q, NON_ALPHANUMERIC)
        );
        let body = super::fetch::get(&url, 16 << 20, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        answers.push(parse_vector(&body)?);
    }
    Ok(observation_from(
        &answers[0],
        &answers[1],
        &answers[2],
        &answers[3],
    ))
}

/// Scrapes the shards' `/metrics` and adds up their counters.
pub async fn scrape(urls: &[String]) -> Result<Counters, String> {
    let mut acc = Counters::default();
    for u in urls {
        let body = super::fetch::get(u, 4 << 20, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        parse_exposition(&String::from_utf8_lossy(&body), &mut acc);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

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
