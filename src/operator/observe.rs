//! What the shards observed, read for the controller as totals over a window
//! ([`Window`]): from Prometheus (`/api/v1/query`, `increase` over the window) or, without
//! Prometheus, from the shards' own `/metrics` (the difference of two scrapes). Whether the
//! window holds enough to act on is [`evidence`](super::evidence)'s to judge.
//! The shards export (`runtime::metrics`) `cnnpc_shard_compute_seconds{tier}`,
//! `cnnpc_shard_codec_seconds{tier}`, `cnnpc_hop_seconds{from,to}` and
//! `cnnpc_hop_bytes_total{from,to}` and, at the entry tier, `cnnpc_request_seconds`. All of
//! the controller's metric I/O is here; the parsing is pure and tested on its own.

use super::evidence::{Totals, Window};
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

/// The PromQL queries, each summed over the window `range` (e.g. `300s`) by `increase`:
/// per tier, per hop and end to end, the count, the seconds, the histogram buckets, and per hop
/// the bytes. Sums over a window, not the last two samples, so requests between scrapes count
/// and one request cannot stand for a rate.
pub fn queries(sel: &str, range: &str) -> Vec<(Query, String)> {
    let inc =
        |metric: &str, by: &str| format!("sum by ({by}) (increase({metric}{{{sel}}}[{range}]))");
    let mut out = Vec::new();
    for (series, metric, by) in [
        (Series::Tier, "cnnpc_shard_compute_seconds", "tier"),
        (Series::Codec, "cnnpc_shard_codec_seconds", "tier"),
        (Series::Hop, "cnnpc_hop_seconds", "from, to"),
        (Series::Request, "cnnpc_request_seconds", "namespace"),
    ] {
        out.push((
            Query(series, Part::Count),
            inc(&format!("{metric}_count"), by),
        ));
        out.push((Query(series, Part::Sum), inc(&format!("{metric}_sum"), by)));
        out.push((
            Query(series, Part::Buckets),
            inc(&format!("{metric}_bucket"), &format!("{by}, le")),
        ));
    }
    out.push((
        Query(Series::Hop, Part::Bytes),
        inc("cnnpc_hop_bytes_total", "from, to"),
    ));
    out.push((
        Query(Series::Shadow, Part::Count),
        inc("cnnpc_shadow_total", "result"),
    ));
    out
}

/// Which totals a query answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query(pub Series, pub Part);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Tier,
    /// `cnnpc_shard_codec_seconds` by tier.
    Codec,
    Hop,
    Request,
    /// `cnnpc_shadow_total` by result.
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Count,
    Sum,
    Buckets,
    Bytes,
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

/// The series key of a sample whose labels `label` reads: the tier, `from->to`, or `""` end
/// to end.
fn key_of<'a>(series: Series, label: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    match series {
        Series::Tier | Series::Codec => label("tier").map(str::to_string),
        Series::Hop => Some(format!("{}->{}", label("from")?, label("to")?)),
        Series::Request | Series::Shadow => Some(String::new()),
    }
}

/// Adds shadow rows by result to the window's (agree, disagree).
fn add_shadow(w: &mut Window, result: Option<&str>, v: f64) {
    match result {
        Some("agree") => w.shadow.0 += v,
        Some("disagree") => w.shadow.1 += v,
        _ => {}
    }
}

fn totals(w: &mut Window, series: Series, key: String) -> &mut Totals {
    match series {
        Series::Tier => w.tiers.entry(key).or_default(),
        Series::Codec => w.codecs.entry(key).or_default(),
        Series::Hop => w.hops.entry(key).or_default(),
        Series::Request | Series::Shadow => &mut w.request,
    }
}

/// Adds one answer to the window.
fn add(w: &mut Window, Query(series, part): Query, samples: &[Sample]) {
    for (l, v) in samples {
        if series == Series::Shadow {
            add_shadow(w, l.get("result").map(String::as_str), *v);
            continue;
        }
        let Some(k) = key_of(series, |name| l.get(name).map(String::as_str)) else {
            continue;
        };
        let t = totals(w, series, k);
        match part {
            Part::Count => t.count += v,
            Part::Sum => t.sum_s += v,
            Part::Bytes => t.bytes += v,
            Part::Buckets => {
                let Some(le) = l.get("le").and_then(|x| x.parse::<f64>().ok()) else {
                    continue;
                };
                if le.is_finite() {
                    t.buckets.push((le, *v));
                }
            }
        }
    }
}

fn sort_buckets(w: &mut Window) {
    let all = w
        .tiers
        .values_mut()
        .chain(w.codecs.values_mut())
        .chain(w.hops.values_mut())
        .chain(std::iter::once(&mut w.request));
    for t in all {
        t.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// Assembles a window of `seconds` from the answers to [`queries`].
pub fn window_from(seconds: f64, answers: &[(Query, Vec<Sample>)]) -> Window {
    let mut w = Window {
        seconds,
        ..Window::default()
    };
    for (q, samples) in answers {
        add(&mut w, *q, samples);
    }
    // A hop or tier seen only through a zero count is no observation.
    w.tiers.retain(|_, t| t.count > 0.0);
    w.codecs.retain(|_, t| t.count > 0.0);
    w.hops.retain(|_, t| t.count > 0.0);
    sort_buckets(&mut w);
    w
}

/// Cumulative counters read from one or more shards' `/metrics` texts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub window: Window,
}

/// Adds the counters in one Prometheus text exposition to `acc`.
pub fn parse_exposition(text: &str, acc: &mut Counters) {
    let w = &mut acc.window;
    for s in samples(text) {
        let (series, base) = match s.name {
            n if n.starts_with("cnnpc_shard_compute_seconds_") => (Series::Tier, n),
            n if n.starts_with("cnnpc_shard_codec_seconds_") => (Series::Codec, n),
            n if n.starts_with("cnnpc_hop_seconds_") || n == "cnnpc_hop_bytes_total" => {
                (Series::Hop, n)
            }
            n if n.starts_with("cnnpc_request_seconds_") => (Series::Request, n),
            "cnnpc_shadow_total" => {
                add_shadow(w, s.label("result"), s.value);
                continue;
            }
            _ => continue,
        };
        let Some(key) = key_of(series, |name| s.label(name)) else {
            continue;
        };
        let t = totals(w, series, key);
        if base.ends_with("_count") {
            t.count += s.value;
        } else if base.ends_with("_sum") {
            t.sum_s += s.value;
        } else if base.ends_with("_bytes_total") {
            t.bytes += s.value;
        } else if base.ends_with("_bucket") {
            let Some(le) = s.label("le").and_then(|x| x.parse::<f64>().ok()) else {
                continue;
            };
            if !le.is_finite() {
                continue;
            }
            // Several shards of a tier: add bucket by bucket.
            match t.buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += s.value,
                None => t.buckets.push((le, s.value)),
            }
        }
    }
    sort_buckets(w);
}

fn minus(after: &Totals, before: Option<&Totals>) -> Option<Totals> {
    let b = before.cloned().unwrap_or_default();
    // A counter that went down was reset (a restarted shard): no observation from it.
    if after.count <= b.count || after.sum_s < b.sum_s || after.bytes < b.bytes {
        return None;
    }
    let buckets = after
        .buckets
        .iter()
        .map(|&(le, c)| {
            let c0 = b.buckets.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, (c - c0).max(0.0))
        })
        .collect();
    Some(Totals {
        count: after.count - b.count,
        sum_s: after.sum_s - b.sum_s,
        bytes: after.bytes - b.bytes,
        buckets,
    })
}

/// What happened between two scrapes `seconds` apart (`before` then `after`); series without
/// new requests (or reset by a restart) are left out.
pub fn window_between(before: &Counters, after: &Counters, seconds: f64) -> Window {
    let (b, a) = (&before.window, &after.window);
    let mut w = Window {
        seconds,
        ..Window::default()
    };
    let between = |a: &BTreeMap<String, Totals>, b: &BTreeMap<String, Totals>| {
        a.iter()
            .filter_map(|(k, t)| Some((k.clone(), minus(t, b.get(k))?)))
            .collect()
    };
    w.tiers = between(&a.tiers, &b.tiers);
    w.codecs = between(&a.codecs, &b.codecs);
    w.hops = between(&a.hops, &b.hops);
    if let Some(d) = minus(&a.request, Some(&b.request)) {
        w.request = d;
    }
    if a.shadow.0 >= b.shadow.0 && a.shadow.1 >= b.shadow.1 {
        w.shadow = (a.shadow.0 - b.shadow.0, a.shadow.1 - b.shadow.1);
    }
    w
}

/// Runs the [`queries`] over the last `range_s` seconds against Prometheus at `base`.
pub async fn prometheus(base: &str, selector: &str, range_s: u32) -> Result<Window, String> {
    let mut answers = Vec::new();
    for (q, text) in queries(selector, &format!("{range_s}s")) {
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            utf8_percent_encode(&text, NON_ALPHANUMERIC)
        );
        let body = super::fetch::get(&url, 16 << 20, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        answers.push((q, parse_vector(&body)?));
    }
    Ok(window_from(f64::from(range_s), &answers))
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

    fn answer(json: &str) -> Vec<Sample> {
        parse_vector(json.as_bytes()).unwrap()
    }

    #[test]
    fn prometheus_vectors_parse_and_assemble_a_window() {
        let count = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"tier":"end"},"value":[1.5,"40"]},
            {"metric":{"tier":"edge"},"value":[1.5,"NaN"]}]}}"#,
        );
        assert_eq!(count.len(), 1, "NaN dropped");
        let sum = answer(
            r#"{"status":"success","data":{"result":[{"metric":{"tier":"end"},"value":[1,"0.48"]}]}}"#,
        );
        let buckets = answer(
            r#"{"status":"success","data":{"result":[
            {"metric":{"tier":"end","le":"0.025"},"value":[1,"40"]},
            {"metric":{"tier":"end","le":"0.01"},"value":[1,"10"]},
            {"metric":{"tier":"end","le":"+Inf"},"value":[1,"40"]}]}}"#,
        );
        let hop_n = answer(
            r#"{"status":"success","data":{"result":[{"metric":{"from":"end","to":"edge"},"value":[1,"40"]}]}}"#,
        );
        let hop_b = answer(
            r#"{"status":"success","data":{"result":[{"metric":{"from":"end","to":"edge"},"value":[1,"4e6"]}]}}"#,
        );
        let w = window_from(
            300.0,
            &[
                (Query(Series::Tier, Part::Count), count),
                (Query(Series::Tier, Part::Sum), sum),
                (Query(Series::Tier, Part::Buckets), buckets),
                (Query(Series::Hop, Part::Count), hop_n),
                (Query(Series::Hop, Part::Bytes), hop_b),
            ],
        );
        let end = &w.tiers["end"];
        assert_eq!((end.count, end.sum_s), (40.0, 0.48));
        assert_eq!(
            end.buckets,
            [(0.01, 10.0), (0.025, 40.0)],
            "sorted, +Inf left out"
        );
        assert_eq!(w.hops["end->edge"].bytes, 4e6);
        assert!(parse_vector(br#"{"status":"error","error":"bad query"}"#)
            .unwrap_err()
            .contains("bad query"));
        assert!(parse_vector(b"<html>").is_err());
        let q = queries(&selector("ns", "x\"y", "p1"), "300s");
        assert!(
            q[0].1.contains(r#"name="x\"y",pod_plan_id="p1""#),
            "{}",
            q[0].1
        );
        assert_eq!(
            q[0].1,
            format!(
                "sum by (tier) (increase(cnnpc_shard_compute_seconds_count{{{}}}[300s]))",
                selector("ns", "x\"y", "p1")
            )
        );
        assert!(q.iter().any(
            |(k, t)| *k == Query(Series::Hop, Part::Buckets) && t.contains("by (from, to, le)")
        ));
        assert!(q.iter().any(|(k, t)| *k == Query(Series::Codec, Part::Sum)
            && t.starts_with("sum by (tier) (increase(cnnpc_shard_codec_seconds_sum{")));
    }

    #[test]
    fn scraped_counters_give_totals_between_scrapes() {
        let text = |n: f64| {
            format!(
                "# TYPE x histogram\ncnnpc_shard_compute_seconds_bucket{{model=\"m\",tier=\"edge\",le=\"0.025\"}} {n}\n\
                 cnnpc_shard_compute_seconds_bucket{{model=\"m\",tier=\"edge\",le=\"+Inf\"}} {n}\n\
                 cnnpc_shard_compute_seconds_sum{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_shard_compute_seconds_count{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_shard_codec_seconds_sum{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_shard_codec_seconds_count{{model=\"m\",tier=\"edge\"}} {}\n\
                 cnnpc_hop_seconds_sum{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_hop_seconds_count{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_hop_bytes_total{{from=\"end\",to=\"edge\"}} {}\n\
                 cnnpc_request_seconds_sum {}\ncnnpc_request_seconds_count {}\n",
                0.01 * n, n, 0.002 * n, n, 0.1 * n, n, 5000.0 * n, 0.2 * n, n
            )
        };
        let (mut a, mut b) = (Counters::default(), Counters::default());
        parse_exposition(&text(10.0), &mut a);
        parse_exposition(&text(30.0), &mut b);
        let w = window_between(&a, &b, 30.0);
        let edge = &w.tiers["edge"];
        assert_eq!(edge.count, 20.0);
        assert!((edge.sum_s - 0.2).abs() < 1e-12);
        assert_eq!(edge.buckets, [(0.025, 20.0)]);
        // The codec is its own series, not added into compute.
        let codec = &w.codecs["edge"];
        assert_eq!(codec.count, 20.0);
        assert!((codec.sum_s - 0.04).abs() < 1e-12);
        let hop = &w.hops["end->edge"];
        assert!((hop.sum_s - 2.0).abs() < 1e-12 && (hop.bytes - 100_000.0).abs() < 1e-9);
        assert_eq!(w.request.count, 20.0);
        // No new requests: nothing observed; a reset counter: nothing either.
        let none = window_between(&b, &b, 30.0);
        assert!(none.tiers.is_empty() && none.hops.is_empty() && none.request.count == 0.0);
        assert!(window_between(&b, &a, 30.0).tiers.is_empty());
    }
}
