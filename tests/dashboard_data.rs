//! Every dashboard panel shows data: each panel's PromQL, with the variables substituted as
//! Grafana would, is evaluated against a real Prometheus (Debian's `prometheus`) that scrapes
//! real shard servers under traffic and the controller's metrics endpoint, with the relabelings
//! of the chart's own PodMonitor and ServiceMonitor (rendered by the real helm) applied to
//! targets labelled as Kubernetes discovery labels them (from the operator's own pod labels).
//! Every panel must return at least one series, and no label it groups by may be empty.
//! Without the `prometheus` binary the test is skipped loudly, or fails when
//! `CNNPC_REQUIRE_PROMETHEUS=1` (as `make test` sets it).

mod common;

use cnnpc::onnx::frame::Frame;
use cnnpc::operator::core::TierHealth;
use cnnpc::operator::crd::{
    CollaborativeInferenceStatus, Estimate, LiveAgreement, ObservationStatus, PlanStatus,
};
use cnnpc::operator::labels;
use cnnpc::operator::metrics::{self, Metrics};
use cnnpc::operator::rollout::Versions;
use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::runtime::server::{self, ShardConfig, ShardModel, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "ns";
const NAME: &str = "demo";
const PLAN: &str = "p1";
const RATE_INTERVAL: &str = "15s";

/// Answers `shape`-shaped values after `ms`.
struct Fixed {
    ms: u64,
    shape: Vec<usize>,
}

impl ShardModel for Fixed {
    fn run(&self, _: Tensor) -> Result<Tensor, String> {
        std::thread::sleep(Duration::from_millis(self.ms));
        let n = self.shape.iter().product();
        Ok(Tensor {
            shape: self.shape.clone(),
            data: (0..n).map(|i| (i % 5) as f32).collect(),
        })
    }
    fn name(&self) -> &str {
        "fixed"
    }
}

async fn start_shard(cfg: ShardConfig, model: Fixed) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        cfg,
        Arc::new(model),
        listener,
        std::future::pending(),
    ));
    addr
}

/// prometheus-operator's relabelings (camelCase) as Prometheus `relabel_configs`.
fn relabel_configs(relabelings: &Value) -> Value {
    let key = |k: &str| {
        match k {
            "sourceLabels" => "source_labels",
            "targetLabel" => "target_label",
            other => other,
        }
        .to_string()
    };
    Value::Array(
        relabelings
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                Value::Object(
                    r.as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let v = if k == "action" {
                                json!(v.as_str().unwrap().to_lowercase())
                            } else {
                                v.clone()
                            };
                            (key(k), v)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// A target labelled as Kubernetes pod discovery labels a pod with these labels.
fn pod_target(addr: SocketAddr, pod: &str, pod_labels: &BTreeMap<String, String>) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("__meta_kubernetes_namespace".into(), json!(NS));
    l.insert("__meta_kubernetes_pod_name".into(), json!(pod));
    for (k, v) in pod_labels {
        l.insert(
            format!("__meta_kubernetes_pod_label_{}", common::k8s::sanitize(k)),
            json!(v),
        );
    }
    json!({"targets": [addr.to_string()], "labels": l})
}

/// The relabelings prometheus-operator itself puts before a monitor's own.
fn operator_relabelings() -> Value {
    json!([
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ])
}

async fn query(prom: &str, q: &str) -> Result<Vec<Value>, String> {
    let url = format!(
        "{prom}/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = cnnpc::operator::fetch::get(&url, 16 << 20, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{q}: {}", v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The labels an expression groups by (`by (a, b)`), `le` aside.
fn grouped_by(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let after = &rest[i + 4..];
        let end = after.find(')').unwrap_or(after.len());
        out.extend(
            after[..end]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s != "le"),
        );
        rest = &after[end..];
    }
    out.sort();
    out.dedup();
    out
}

fn plan(id: &str) -> PlanStatus {
    serde_json::from_value(json!({
        "id": id, "summary": "end-cloud cut 0 int8", "deployment": "end-cloud", "encoding": "int8",
        "tiers": [{"tier": "end", "segments": [0, 0], "computeMs": 2.0},
                  {"tier": "edge", "computeMs": 0.0},
                  {"tier": "cloud", "segments": [1, 3], "computeMs": 1.0}],
        "latencyMs": 12.5,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_returns_labelled_series_from_a_real_prometheus() {
    let Some(bin) = common::prom::binary() else {
        return;
    };

    // The chart's monitors, as the real helm renders them.
    let objs = common::helm::render(&json!({
        "podMonitor": {"enabled": true}, "serviceMonitor": {"enabled": true}
    }));
    let pm = common::helm::one(&objs, "PodMonitor");
    let sm = common::helm::one(&objs, "ServiceMonitor");
    let pod_relabel = relabel_configs(&pm["spec"]["podMetricsEndpoints"][0]["relabelings"]);
    let honor = sm["spec"]["endpoints"][0]["honorLabels"]
        .as_bool()
        .unwrap_or(false);

    // Real shards: end → cloud, the entry shadowing into a whole-model shard.
    let whole = start_shard(
        ShardConfig {
            tier: "shadow".into(),
            plan_id: "whole".into(),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 1,
            shape: vec![1, 4],
        },
    )
    .await;
    let cloud = start_shard(
        ShardConfig {
            tier: "cloud".into(),
            plan_id: PLAN.into(),
            cuts: "0".into(),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 1,
            shape: vec![1, 4],
        },
    )
    .await;
    let end = start_shard(
        ShardConfig {
            tier: "end".into(),
            next: Some(format!("http://{cloud}").parse().unwrap()),
            encoding: WireEncoding::Int8,
            plan_id: PLAN.into(),
            cuts: "0".into(),
            shadow: Some((format!("http://{whole}").parse().unwrap(), 0.5)),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 2,
            shape: vec![1, 8, 8, 8],
        },
    )
    .await;

    // The controller's metrics endpoint, its gauges written by the controller's own code.
    let cm = Metrics::default();
    let status = CollaborativeInferenceStatus {
        observation: Some(ObservationStatus {
            live_agreement: Some(LiveAgreement {
                samples: 100,
                agreement: Estimate {
                    value: 0.97,
                    low: 0.92,
                    high: 0.99,
                },
            }),
            ..ObservationStatus::default()
        }),
        ..CollaborativeInferenceStatus::default()
    };
    let after = Versions {
        serving: Some(plan(PLAN)),
        ..Versions::default()
    };
    let health: Vec<TierHealth> = ["end", "cloud"]
        .iter()
        .map(|t| TierHealth {
            tier: t.to_string(),
            ready: 1,
            wanted: 1,
            unready_since: None,
        })
        .collect();
    cm.export_state(NS, NAME, &Versions::default(), &after, &status, &health);
    cm.predicted.with_label_values(&[NS, NAME]).set(0.0125);
    cm.observed.with_label_values(&[NS, NAME]).set(0.013);
    cm.replans.with_label_values(&["initial"]).inc();
    let ctl_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ctl = ctl_listener.local_addr().unwrap();
    let router = metrics::router(cm.clone(), metrics::Health::default());
    tokio::spawn(async move { axum::serve(ctl_listener, router).await });

    // Prometheus: the pods through the PodMonitor's relabelings, the controller through the
    // ServiceMonitor's (honor_labels), both every second.
    let mut pod_relabels = operator_relabelings().as_array().unwrap().clone();
    pod_relabels.extend(pod_relabel.as_array().unwrap().iter().cloned());
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "shards", "static_configs": [
                pod_target(end, "demo-end-p1-abc", &labels::shard_pod(NAME, "end", PLAN, true)),
                pod_target(cloud, "demo-cloud-p1-abc", &labels::shard_pod(NAME, "cloud", PLAN, false)),
             ], "relabel_configs": pod_relabels},
            {"job_name": "controller", "honor_labels": honor, "static_configs": [
                {"targets": [ctl.to_string()], "labels": {"namespace": "cnnpc-system"}}]},
        ],
    });
    let prometheus = common::prom::start(&bin, &serde_yaml::to_string(&config).unwrap());
    let prom = prometheus.url.clone();

    // Traffic into the entry, and a controller reconciling, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, cm) = (stop.clone(), cm.clone());
        tokio::spawn(async move {
            use http_body_util::{BodyExt, Full};
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<bytes::Bytes>>();
            let frame =
                Frame::from_tensor(&[0.5f32; 48], &[1, 3, 4, 4], 1, WireEncoding::F32, None)
                    .unwrap()
                    .encode();
            let mut ok = 0u32;
            while !stop.load(Ordering::Relaxed) {
                drop(cm.count_and_measure());
                let req = hyper::Request::post(format!("http://{end}/v1/infer"))
                    .body(Full::new(bytes::Bytes::from(frame.clone())))
                    .unwrap();
                if let Ok(r) = client.request(req).await {
                    if r.status().is_success() && r.into_body().collect().await.is_ok() {
                        ok += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ok
        })
    };

    // The panels, variables substituted as Grafana would for one selected resource.
    let dashboard: Value =
        serde_json::from_str(&common::read("charts/cnnpc/dashboards/cnnpc.json")).unwrap();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                let e = e
                    .replace("$namespace", NS)
                    .replace("$name", NAME)
                    .replace("$__rate_interval", RATE_INTERVAL);
                exprs.push((p["title"].as_str().unwrap_or("?").to_string(), e));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = v["query"]["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
        {
            // label_values(metric{sel}, label): the metric must have series with that label.
            let (metric, label) = q.trim_end_matches(')').rsplit_once(',').unwrap();
            let metric = metric.replace("$namespace", NS);
            exprs.push((
                format!("variable {}", v["name"]),
                format!("max by ({}) ({metric})", label.trim()),
            ));
        }
    }
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());

    // Poll until every expression has data (rates need a few scrapes), at most 60 s.
    let t0 = Instant::now();
    let mut missing: Vec<String>;
    loop {
        missing = Vec::new();
        for (title, e) in &exprs {
            match query(&prom, e).await {
                Ok(series) if !series.is_empty() => {
                    for by in grouped_by(e) {
                        for s in &series {
                            let v = s["metric"][&by].as_str().unwrap_or("");
                            if v.is_empty() {
                                missing.push(format!(
                                    "{title}: a series with an empty `{by}`: {s}\n  {e}"
                                ));
                            }
                        }
                    }
                }
                Ok(_) => missing.push(format!("{title}: no series\n  {e}")),
                Err(err) => missing.push(format!("{title}: {err}")),
            }
        }
        if missing.is_empty() || t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let served = traffic.await.unwrap();
    eprintln!(
        "{} panel expressions, {served} requests served, {:.1} s",
        exprs.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "panels without data:\n{}",
        missing.join("\n")
    );
}
