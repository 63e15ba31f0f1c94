//! CollaborativeInferences and plans of every deployment shape, and the children the operator's
//! builders make of them: what the chart's selectors and policies must fit.

use super::k8s::{Labels, Pod};
use cnnpc::operator::crd::{
    CollaborativeInference, CollaborativeInferenceSpec, PlanCutStatus, PlanStatus, PlanTierStatus,
};
use cnnpc::operator::resources::{build_children, BuildContext, Children};
use cnnpc::planner::accuracy::WireEncoding as Encoding;
use cnnpc::planner::plan::{Items, MeasuredOn};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const CR: &str = "demo";
pub const CR_NS: &str = "ml";

pub fn resource(name: &str, ns: &str, spec: Value) -> CollaborativeInference {
    let mut base = json!({"model": {"path": "m.onnx", "volume": {"name": "v", "emptyDir": {}}}});
    if let (Some(b), Some(o)) = (base.as_object_mut(), spec.as_object()) {
        b.extend(o.clone());
    }
    let spec: CollaborativeInferenceSpec = serde_json::from_value(base).unwrap();
    let mut ci = CollaborativeInference::new(name, spec);
    ci.metadata.namespace = Some(ns.into());
    ci.metadata.uid = Some(format!("uid-{name}"));
    ci
}

pub fn demo() -> CollaborativeInference {
    resource(CR, CR_NS, json!({}))
}

/// A plan of shape `deployment` (`end-edge-cloud`, `edge-only`, ...) over 6 segments, cutting
/// after segment 1 and 3, keeping `kept` of 16 channels at each cut.
pub fn plan(deployment: &str, kept: u32, encoding: Encoding) -> PlanStatus {
    let computing: Vec<&str> = if let Some(t) = deployment.strip_suffix("-only") {
        vec![t]
    } else {
        deployment.split('-').collect()
    };
    let bounds: &[[u32; 2]] = match computing.len() {
        1 => &[[0, 5]],
        2 => &[[0, 1], [2, 5]],
        _ => &[[0, 1], [2, 3], [4, 5]],
    };
    let tiers = ["end", "edge", "cloud"]
        .iter()
        .map(|t| PlanTierStatus {
            tier: t.to_string(),
            segments: computing
                .iter()
                .position(|c| c == t)
                .map(|i| bounds[i].to_vec()),
            compute_ms: 1.0,
            codec_ms: None,
        })
        .collect();
    let cuts = computing
        .windows(2)
        .enumerate()
        .map(|(i, w)| PlanCutStatus {
            point: [1, 3][i],
            tensors: vec![format!("t{}", [1, 3][i])],
            from: w[0].into(),
            to: w[1].into(),
            channels: 16,
            kept,
        })
        .collect();
    PlanStatus {
        id: format!("p-{deployment}"),
        summary: deployment.into(),
        deployment: deployment.into(),
        encoding,
        cuts,
        tiers,
        latency_ms: 10.0,
        accuracy: Some(0.99),
        accuracy_interval: None,
        measured_on: (kept < 16).then(record),
    }
}

/// What the pruned plans were "measured" on.
pub fn record() -> MeasuredOn {
    MeasuredOn {
        model: "ab".repeat(32),
        shape: vec![],
        calibration: "rotated-pages".into(),
        data: "builtin:rotated-pages:v1".into(),
        metric: Default::default(),
        fit: Items {
            first: 100_000,
            count: 32,
        },
        eval: Items {
            first: 0,
            count: 32,
        },
        pruning: "greedy+lsq".into(),
    }
}

/// Every deployment shape a plan can have.
pub const SHAPES: [&str; 7] = [
    "end-edge-cloud",
    "end-edge",
    "end-cloud",
    "edge-cloud",
    "end-only",
    "edge-only",
    "cloud-only",
];

pub fn children(ci: &CollaborativeInference, plan: &PlanStatus) -> Children {
    build_children(ci, plan, BTreeMap::new(), &BuildContext::new("cnnpc:test")).unwrap()
}

/// The pod each shard Deployment runs (one replica), as policies and discovery see it.
pub fn pods(children: &Children) -> Vec<Pod> {
    children
        .deployments
        .iter()
        .map(|d| {
            let t = d.spec.as_ref().unwrap().template.clone();
            let labels: Labels = t.metadata.unwrap().labels.unwrap();
            let mut pod = Pod::new(
                &format!("{}-6d5f9c-x1", d.metadata.name.as_deref().unwrap()),
                d.metadata.namespace.as_deref().unwrap(),
                labels,
            );
            pod.ports = t.spec.unwrap().containers[0]
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect();
            pod
        })
        .collect()
}

/// The `--next` URL of each shard Deployment, by Deployment name.
pub fn next_urls(children: &Children) -> BTreeMap<String, String> {
    children
        .deployments
        .iter()
        .filter_map(|d| {
            let args = d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                .args
                .clone()?;
            let i = args.iter().position(|a| a == "--next")?;
            Some((d.metadata.name.clone()?, args[i + 1].clone()))
        })
        .collect()
}
