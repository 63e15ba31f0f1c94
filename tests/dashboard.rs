//! The Grafana dashboard (charts/cnnpc/dashboards/cnnpc.json) queries only metrics the code
//! exports: every PromQL expression is parsed (promql-parser), and every metric it selects must
//! be a series of a shard metric (read from `cnnpc::runtime::metrics::Metrics`, the registry the
//! shard server serves) or of a controller metric ([`CONTROLLER_METRICS`]).

mod common;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/cnnpc/dashboards/cnnpc.json"
);

/// The controller's metrics (DESIGN.md, "Operator"; the agreed interface), by family name and
/// type.
///
/// `controller_metrics_are_what_the_operator_exports` checks this list against the operator's
/// registry, so a renamed controller metric fails a test instead of leaving an empty panel.
const CONTROLLER_METRICS: &[(&str, Kind, &[&str])] = &[
    ("cnnpc_controller_reconcile_total", Kind::Counter, &[]),
    (
        "cnnpc_controller_reconcile_errors_total",
        Kind::Counter,
        &["error"],
    ),
    (
        "cnnpc_controller_reconcile_duration_seconds",
        Kind::Histogram,
        &[],
    ),
    ("cnnpc_controller_replans_total", Kind::Counter, &["reason"]),
    (
        "cnnpc_plan_predicted_latency_seconds",
        Kind::Gauge,
        &["namespace", "name"],
    ),
    (
        "cnnpc_plan_observed_latency_seconds",
        Kind::Gauge,
        &["namespace", "name"],
    ),
    (
        "cnnpc_plan_phase",
        Kind::Gauge,
        &["namespace", "name", "plan_id", "phase"],
    ),
    (
        "cnnpc_tier_replicas",
        Kind::Gauge,
        &["namespace", "name", "tier", "state"],
    ),
    (
        "cnnpc_live_agreement",
        Kind::Gauge,
        &["namespace", "name", "bound"],
    ),
];

/// Labels Prometheus (prometheus-operator's ServiceMonitor) puts on the controller's series.
const TARGET_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "container",
    "service",
    "endpoint",
    "job",
    "instance",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The series names a family of this kind exposes.
fn series(name: &str, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        _ => vec![name.to_string()],
    }
}

/// The chart's PodMonitor, rendered by the real helm.
fn podmonitor() -> Value {
    let objs = common::helm::render(&serde_json::json!({"podMonitor": {"enabled": true}}));
    common::helm::one(&objs, "PodMonitor").clone()
}

/// The shard pods the operator's builders make, for every plan shape.
fn shard_pods() -> Vec<common::k8s::Pod> {
    let ci = common::plans::demo();
    common::plans::SHAPES
        .iter()
        .flat_map(|shape| {
            let plan = common::plans::plan(shape, 8, cnnpc::planner::accuracy::WireEncoding::Int8);
            common::plans::pods(&common::plans::children(&ci, &plan))
        })
        .collect()
}

/// The target labels every shard series gets: the PodMonitor's selector and relabelings
/// applied to each pod the builders make; only a label every pod gets (non-empty) counts.
fn podmonitor_labels() -> BTreeSet<String> {
    let pm = podmonitor();
    let mut common_labels: Option<BTreeSet<String>> = None;
    for pod in shard_pods() {
        let target = common::k8s::podmonitor_target(&pm, &pod).unwrap_or_else(|| {
            panic!(
                "the chart's PodMonitor does not scrape shard pod {}",
                pod.name
            )
        });
        let keys: BTreeSet<String> = target.keys().cloned().collect();
        common_labels = Some(match common_labels {
            None => keys,
            Some(c) => c.intersection(&keys).cloned().collect(),
        });
    }
    common_labels.expect("shard pods")
}

/// Every series name the code exports, with the labels a query may use on it: the shard's from
/// its real registry (plus what the PodMonitor adds), the controller's from
/// [`CONTROLLER_METRICS`]; both plus the scrape's target labels.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let shard = cnnpc::runtime::metrics::Metrics::new("edge", "p", "1");
    // Touch the labelled families so that gather() lists every one of them with its labels.
    shard
        .shard_compute_seconds
        .with_label_values(&["edge", "m"])
        .observe(0.0);
    shard
        .shard_codec_seconds
        .with_label_values(&["edge", "m"])
        .observe(0.0);
    shard
        .hop_seconds
        .with_label_values(&["end", "edge"])
        .observe(0.0);
    shard.hop_bytes_total.with_label_values(&["end", "edge"]);
    let mut out = BTreeMap::new();
    let families = shard.registry().gather();
    assert_eq!(
        families.len(),
        8,
        "the shard exports eight families (DESIGN.md, cnnpc_shadow_total and cnnpc_shard_codec_seconds)"
    );
    let target: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    let shard_target = podmonitor_labels();
    let mut add = |name: &str, kind: Kind, labels: BTreeSet<String>| {
        for series in series(name, kind) {
            let mut l = labels.clone();
            if series.ends_with("_bucket") {
                l.insert("le".into());
            }
            out.insert(series, l);
        }
    };
    for f in families {
        use prometheus::proto::MetricType;
        let kind = match f.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            other => panic!("unexpected metric type {other:?} of {}", f.name()),
        };
        let mut labels = shard_target.clone();
        for m in f.get_metric() {
            labels.extend(m.get_label().iter().map(|l| l.name().to_string()));
        }
        add(f.name(), kind, labels);
    }
    for (name, kind, labels) in CONTROLLER_METRICS {
        let mut l = target.clone();
        l.extend(labels.iter().map(|x| x.to_string()));
        add(name, *kind, l);
    }
    out
}

/// Grafana's variables are not PromQL: substitute values a query could run with.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// Collects the metric names an expression selects, and what is wrong with it: a nameless
/// selector, a matcher on a label the metric lacks, a `by`/`without` label none of the
/// aggregated metrics has.
struct Check<'a> {
    known: &'a BTreeMap<String, BTreeSet<String>>,
    names: BTreeSet<String>,
    problems: Vec<String>,
}

struct Collect(BTreeSet<String>);

impl ExprVisitor for Collect {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        match e {
            Expr::VectorSelector(vs) => self.0.extend(vs.name.clone()),
            Expr::MatrixSelector(ms) => self.0.extend(ms.vs.name.clone()),
            _ => {}
        }
        Ok(true)
    }
}

impl ExprVisitor for Check<'_> {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    let mut inner = Collect(BTreeSet::new());
                    walk_expr(&mut inner, &a.expr)?;
                    let have: BTreeSet<&String> = inner
                        .0
                        .iter()
                        .filter_map(|n| self.known.get(n))
                        .flatten()
                        .collect();
                    for l in &m.labels().labels {
                        if !have.contains(l) {
                            self.problems
                                .push(format!("groups by {l}, a label none of {:?} has", inner.0));
                        }
                    }
                }
                return Ok(true);
            }
            _ => return Ok(true),
        };
        let Some(name) = &vs.name else {
            self.problems
                .push(format!("a selector without a metric name: {vs}"));
            return Ok(true);
        };
        self.names.insert(name.clone());
        if let Some(labels) = self.known.get(name) {
            for m in vs
                .matchers
                .matchers
                .iter()
                .chain(vs.matchers.or_matchers.iter().flatten())
            {
                if m.name != "__name__" && !labels.contains(&m.name) {
                    self.problems
                        .push(format!("{name} has no label {}", m.name));
                }
            }
        }
        Ok(true)
    }
}

/// The metric names an expression selects; an error for a syntax error or a label problem.
fn check(
    expr: &str,
    known: &BTreeMap<String, BTreeSet<String>>,
) -> Result<BTreeSet<String>, String> {
    let ast = parser::parse(&substitute(expr)).map_err(|e| format!("{expr}: {e}"))?;
    let mut v = Check {
        known,
        names: BTreeSet::new(),
        problems: Vec::new(),
    };
    walk_expr(&mut v, &ast)?;
    if !v.problems.is_empty() {
        return Err(format!("{expr}: {}", v.problems.join("; ")));
    }
    Ok(v.names)
}

/// Every query in the dashboard: panel targets, and the selector inside each templating
/// variable's `label_values(selector, label)`.
fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels<'a>(v: &'a Value, acc: &mut Vec<&'a Value>) {
        for p in v.as_array().into_iter().flatten() {
            acc.push(p);
            panels(&p["panels"], acc);
        }
    }
    let mut all = Vec::new();
    panels(&dash["panels"], &mut all);
    for p in all {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                expr.to_string(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = var["query"]["query"]
                .as_str()
                .expect("a query variable's query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _label)| sel.trim().to_string())
                .unwrap_or_else(|| panic!("unsupported variable query {q}"));
            out.push((format!("variable {}", var["name"]), inner));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard file"))
        .expect("dashboard is JSON")
}

#[test]
fn every_promql_expression_names_an_exported_metric() {
    let exported = exported();
    let qs = queries(&dashboard());
    assert!(qs.len() >= 15, "only {} queries", qs.len());
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (where_, expr) in &qs {
        match check(expr, &exported) {
            Ok(names) => {
                assert!(!names.is_empty(), "{where_}: {expr} selects no metric");
                for n in names {
                    if !exported.contains_key(&n) {
                        problems.push(format!("{where_}: {n} is not exported by cnnpc"));
                    }
                    used.insert(n);
                }
            }
            Err(e) => problems.push(format!("{where_}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What the issue asks the dashboard to show, each from its metric.
    for needed in [
        "cnnpc_request_seconds_bucket",         // end-to-end p50/p95
        "cnnpc_plan_predicted_latency_seconds", // vs predicted
        "cnnpc_shard_compute_seconds_bucket",   // per-tier compute
        "cnnpc_hop_bytes_total",                // per-link bytes and throughput
        "cnnpc_requests_total",                 // errors
        "cnnpc_controller_replans_total",       // replans
        "cnnpc_plan_info",                      // current plan
    ] {
        assert!(used.contains(needed), "no panel queries {needed}");
    }
}

#[test]
fn the_checker_rejects_unknown_metrics_labels_syntax_errors_and_nameless_selectors() {
    let known = exported();
    let names = check("sum(rate(cnnpc_bogus_total[$__rate_interval]))", &known).unwrap();
    assert!(!names.iter().all(|n| known.contains_key(n)));
    // A histogram family name is not itself a series.
    assert!(!known.contains_key("cnnpc_request_seconds"));
    assert!(known["cnnpc_request_seconds_bucket"].contains("le"));
    assert!(check("sum(rate(cnnpc_requests_total[5m])", &known).is_err());
    assert!(check("{tier=\"edge\"}", &known).is_err());
    // cnnpc_request_seconds has no tier label (it is observed at the entry tier only).
    let e = check(
        "sum by (tier) (rate(cnnpc_request_seconds_count[5m]))",
        &known,
    )
    .unwrap_err();
    assert!(e.contains("groups by tier"), "{e}");
    let e = check("cnnpc_hop_bytes_total{tier=\"edge\"}", &known).unwrap_err();
    assert!(e.contains("has no label tier"), "{e}");
    // What the PodMonitor adds is known; a label nobody adds is not.
    assert!(check("cnnpc_plan_info{name=\"x\", pod_tier=\"end\"}", &known).is_ok());
    assert!(check("cnnpc_controller_replans_total{name=\"x\"}", &known).is_err());
}

#[test]
fn the_podmonitor_labels_every_shard_series_with_its_resource_tier_and_plan() {
    use cnnpc::operator::labels::{self as contract, prom};
    let pm = podmonitor();
    for pod in shard_pods() {
        let t = common::k8s::podmonitor_target(&pm, &pod).expect("scraped");
        assert_eq!(t.get("namespace"), Some(&pod.namespace), "{}", pod.name);
        assert_eq!(
            t.get(prom::NAME),
            pod.labels.get(contract::INSTANCE),
            "{}: {t:?}",
            pod.name
        );
        assert_eq!(
            t.get(prom::TIER),
            pod.labels.get(contract::COMPONENT),
            "{}: {t:?}",
            pod.name
        );
        assert_eq!(
            t.get(prom::PLAN_ID),
            pod.labels.get(contract::PLAN_ID),
            "{}: {t:?}",
            pod.name
        );
    }
    // The controller's replanning queries select by exactly these labels.
    let sel = cnnpc::operator::observe::selector("ml", "demo", "p1");
    for l in ["namespace", prom::NAME, prom::PLAN_ID] {
        assert!(sel.contains(&format!("{l}=")), "{sel}");
    }
}

#[test]
fn panels_are_well_formed() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "cnnpc-overview");
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty());
            let refs: BTreeSet<_> = targets
                .iter()
                .map(|t| t["refId"].as_str().unwrap())
                .collect();
            assert_eq!(refs.len(), targets.len(), "refIds repeat in {}", p["title"]);
        }
    }
    let vars: Vec<_> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "name"]);
}

#[test]
fn controller_metrics_are_what_the_operator_exports() {
    let m = cnnpc::operator::metrics::Metrics::default();
    {
        let _t = m.count_and_measure();
    }
    m.errors.with_label_values(&["kube"]).inc();
    m.replans.with_label_values(&["observed"]).inc();
    m.predicted.with_label_values(&["ns", "a"]).set(0.05);
    m.observed.with_label_values(&["ns", "a"]).set(0.06);
    m.phase
        .with_label_values(&["ns", "a", "p", "serving"])
        .set(1);
    m.replicas
        .with_label_values(&["ns", "a", "end", "ready"])
        .set(1);
    m.agreement
        .with_label_values(&["ns", "a", "value"])
        .set(0.97);
    let text = m.render();
    for (name, kind, labels) in CONTROLLER_METRICS {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "the operator does not export {name} as a {kind}:\n{text}"
        );
        let sample = text
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no sample of {name}"));
        for l in *labels {
            assert!(
                sample.contains(&format!("{l}=")),
                "{name} lacks label {l}: {sample}"
            );
        }
    }
}
