//! The shard's Prometheus metrics. The names and labels are a contract (DESIGN.md, "Runtime"):
//! the dashboards and the controller's replanning read them, so change them only there too.
//!
//! | name | type | labels | observed |
//! |---|---|---|---|
//! | `cnnpc_shard_compute_seconds` | histogram | tier, model | per request, model run (+ emulated slowdown) |
//! | `cnnpc_shard_codec_seconds` | histogram | tier, model | per request, reading the input frame and framing the output (+ emulated slowdown) |
//! | `cnnpc_hop_seconds` | histogram | from, to | at the receiver: request head → last body byte |
//! | `cnnpc_hop_bytes_total` | counter | from, to | at the receiver: body bytes of the cut tensor |
//! | `cnnpc_request_seconds` | histogram | — | at the entry tier, successful requests, end to end |
//! | `cnnpc_requests_total` | counter | tier, outcome | every `POST /v1/infer`, one outcome each |
//! | `cnnpc_plan_info` | gauge | plan_id, cuts | constant 1 |

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a `POST /v1/infer` ended; the `outcome` label of `cnnpc_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A malformed or oversized frame (400 or 413).
    BadRequest,
    /// Refused for want of a concurrency slot (503).
    Overloaded,
    /// The next tier could not be reached or answered an error (502, or its 503 relayed).
    UpstreamError,
    /// The next tier did not answer within the forward timeout (504).
    UpstreamTimeout,
    /// The model failed on a well-formed input, or its output could not be framed (500).
    ModelError,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::Overloaded,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
        Outcome::ModelError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::Overloaded => "overloaded",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::ModelError => "model_error",
        }
    }
}

/// Buckets from 0.5 ms to 30 s: a shard runs in ms, a hop over a slow link takes up to seconds.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// One shard's metrics, in a registry of their own (so several shards can share a process, as
/// in `cnnpc demo` and the tests, without clashing in the global registry).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub shard_compute_seconds: HistogramVec,
    pub shard_codec_seconds: HistogramVec,
    pub hop_seconds: HistogramVec,
    pub hop_bytes_total: IntCounterVec,
    pub request_seconds: prometheus::Histogram,
    pub requests_total: IntCounterVec,
    pub plan_info: IntGaugeVec,
    /// Entry only: sampled requests' top-1 against the unmodified model's.
    pub shadow_total: IntCounterVec,
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec()),
        labels,
    )
    .expect("static histogram definition is valid")
}

impl Metrics {
    /// Registers every metric; `tier` pre-creates the `requests_total` series of each outcome at
    /// 0, so a dashboard's `rate()` sees the first error instead of a series appearing from nowhere.
    pub fn new(tier: &str, plan_id: &str, cuts: &str) -> Metrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static counter definition is valid")
        };
        let m = Metrics {
            registry: Registry::new(),
            shard_compute_seconds: histogram(
                "cnnpc_shard_compute_seconds",
                "Time to run this tier's shard on one request, including emulated slowdown.",
                &["tier", "model"],
            ),
            shard_codec_seconds: histogram(
                "cnnpc_shard_codec_seconds",
                "Time to read this tier's input frame and frame its output on one request, including emulated slowdown.",
                &["tier", "model"],
            ),
            hop_seconds: histogram(
                "cnnpc_hop_seconds",
                "Time to receive the cut tensor from the previous tier (request head to last body byte).",
                &["from", "to"],
            ),
            hop_bytes_total: counter(
                "cnnpc_hop_bytes_total",
                "Bytes of cut-tensor frames received from the previous tier.",
                &["from", "to"],
            ),
            request_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "cnnpc_request_seconds",
                    "End-to-end latency of successful requests, observed at the entry tier.",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
            )
            .expect("static histogram definition is valid"),
            requests_total: counter(
                "cnnpc_requests_total",
                "Inference requests handled by this tier, by outcome.",
                &["tier", "outcome"],
            ),
            plan_info: IntGaugeVec::new(
                Opts::new("cnnpc_plan_info", "The plan this shard serves (always 1)."),
                &["plan_id", "cuts"],
            )
            .expect("static gauge definition is valid"),
            shadow_total: counter(
                "cnnpc_shadow_total",
                "Shadow-sampled batch rows whose served top-1 agrees (or not) with the unmodified model's, and failed comparisons.",
                &["result"],
            ),
        };
        for c in [
            Box::new(m.shard_compute_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.shard_codec_seconds.clone()),
            Box::new(m.hop_seconds.clone()),
            Box::new(m.hop_bytes_total.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.requests_total.clone()),
            Box::new(m.plan_info.clone()),
            Box::new(m.shadow_total.clone()),
        ] {
            m.registry
                .register(c)
                .expect("distinct names in a fresh registry");
        }
        for o in Outcome::ALL {
            m.requests_total.with_label_values(&[tier, o.as_str()]);
        }
        m.plan_info.with_label_values(&[plan_id, cuts]).set(1);
        for r in ["agree", "disagree", "error"] {
            m.shadow_total.with_label_values(&[r]);
        }
        m
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn count(&self, tier: &str, outcome: Outcome) {
        self.requests_total
            .with_label_values(&[tier, outcome.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels must match
/// exactly, in any order). For readers of a shard's `/metrics`: the demo, the controller.
pub fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).find_map(|s| {
        let matches = s.name == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|l| s.labels.contains(l));
        matches.then_some(s.value)
    })
}

/// One sample line of a text exposition: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, &'a str)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Every well-formed sample of a text exposition (comments and malformed lines skipped). Label
/// values are taken as written: ours never contain quotes or commas.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.trim().rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut labels = Vec::new();
            for pair in rest.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                labels.push((k.trim(), v.trim().strip_prefix('"')?.strip_suffix('"')?));
            }
            Some(Sample {
                name,
                labels,
                value: value.parse().ok()?,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_values_are_read_back_by_name_and_labels() {
        let m = Metrics::new("edge", "p1", "3");
        m.hop_bytes_total
            .with_label_values(&["end", "edge"])
            .inc_by(1234);
        m.request_seconds.observe(0.5);
        let text = m.render();
        let hop = |f, t| sample_value(&text, "cnnpc_hop_bytes_total", &[("to", t), ("from", f)]);
        assert_eq!(hop("end", "edge"), Some(1234.0));
        assert_eq!(hop("edge", "cloud"), None);
        assert_eq!(
            sample_value(&text, "cnnpc_request_seconds_sum", &[]),
            Some(0.5)
        );
        assert_eq!(sample_value(&text, "cnnpc_hop_bytes_total", &[]), None);
    }

    #[test]
    fn every_contract_name_is_exposed() {
        let m = Metrics::new("edge", "p1", "3,7");
        m.shard_compute_seconds
            .with_label_values(&["edge", "m"])
            .observe(0.01);
        m.hop_seconds
            .with_label_values(&["end", "edge"])
            .observe(0.1);
        m.hop_bytes_total
            .with_label_values(&["end", "edge"])
            .inc_by(10);
        m.request_seconds.observe(0.2);
        let text = m.render();
        for name in [
            "cnnpc_shard_compute_seconds_bucket{model=\"m\",tier=\"edge\"",
            "cnnpc_hop_seconds_count{from=\"end\",to=\"edge\"} 1",
            "cnnpc_hop_bytes_total{from=\"end\",to=\"edge\"} 10",
            "cnnpc_request_seconds_count 1",
            "cnnpc_requests_total{outcome=\"upstream_timeout\",tier=\"edge\"} 0",
            "cnnpc_plan_info{cuts=\"3,7\",plan_id=\"p1\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
