//! `manifests/` is what the real helm renders from the chart with default values (no drift),
//! parses as Kubernetes objects in an order `kubectl apply -f manifests/` can apply, and the
//! samples fit the agreed spec, the kind cluster's tiers and the CRD's schema.

mod common;

use common::yaml_documents as parse_documents;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MANIFESTS_NAMESPACE: &str = "cnnpc-system";

fn root() -> PathBuf {
    common::root()
}

fn read_manifest(name: &str) -> String {
    std::fs::read_to_string(root().join("manifests").join(name)).unwrap()
}

fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn committed() -> Vec<(String, String)> {
    yaml_files(&root().join("manifests"))
}

/// Helm's install order by kind (`helm template` prints documents in this order); kinds not
/// listed go last.
fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicaSet",
        "Deployment",
        "StatefulSet",
        "Job",
        "CronJob",
        "Ingress",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

#[test]
fn manifests_are_what_helm_renders_with_default_values() {
    let out = tempfile::tempdir().unwrap();
    let helm = common::helm::bin();
    let status = std::process::Command::new("bash")
        .arg(root().join("scripts/render-manifests.sh"))
        .arg(out.path())
        .env("CNNPC_HELM", &helm)
        .status()
        .expect("bash runs");
    assert!(status.success(), "scripts/render-manifests.sh failed");
    let want = yaml_files(out.path());
    let have = committed();
    let names = |f: &[(String, String)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&have),
        names(&want),
        "manifests/ holds other files than helm renders: run `make manifests`"
    );
    for ((name, h), (_, w)) in have.iter().zip(&want) {
        if h != w {
            let line = h
                .lines()
                .zip(w.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "manifests/{name} differs from what helm renders at line {}: run `make manifests`\n  committed: {:?}\n  helm:      {:?}",
                line + 1,
                h.lines().nth(line),
                w.lines().nth(line)
            );
        }
    }
}

#[test]
fn manifests_parse_as_kubernetes_objects_in_apply_order() {
    let mut kinds = Vec::new();
    for (name, text) in committed() {
        let docs = parse_documents(&text);
        assert!(!docs.is_empty(), "manifests/{name} is empty");
        for d in docs {
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("no kind in {name}"))
                .to_string();
            assert!(
                d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
                "{name}: {d}"
            );
            let check = match kind.as_str() {
                "Namespace" => serde_json::from_value::<Namespace>(d.clone()).map(drop),
                "CustomResourceDefinition" => {
                    serde_json::from_value::<CustomResourceDefinition>(d.clone()).map(drop)
                }
                "Deployment" => serde_json::from_value::<Deployment>(d.clone()).map(drop),
                "Service" => serde_json::from_value::<Service>(d.clone()).map(drop),
                "ServiceAccount" => serde_json::from_value::<ServiceAccount>(d.clone()).map(drop),
                "ClusterRole" => serde_json::from_value::<ClusterRole>(d.clone()).map(drop),
                "ClusterRoleBinding" => {
                    serde_json::from_value::<ClusterRoleBinding>(d.clone()).map(drop)
                }
                other => panic!("manifests/{name}: unexpected kind {other} in the default install"),
            };
            check.unwrap_or_else(|e| panic!("manifests/{name}: invalid {kind}: {e}"));
            let cluster_scoped = matches!(
                kind.as_str(),
                "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
            );
            if !cluster_scoped {
                assert_eq!(
                    d["metadata"]["namespace"], MANIFESTS_NAMESPACE,
                    "{name}: {d}"
                );
            }
            kinds.push(kind);
        }
    }
    // kubectl applies a directory's files in name order: the namespace first, then the CRDs
    // (when the operator's crds/ exists), then the rest in Helm's install order.
    assert_eq!(kinds[0], "Namespace");
    let ns = &parse_documents(&read_manifest("00-namespace.yaml"))[0];
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "the controller's namespace enforces the restricted Pod Security Standard"
    );
    let deploy = parse_documents(&read_manifest("02-cnnpc.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    // What "restricted" requires of the pod and each container.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for c in pod["containers"].as_array().unwrap() {
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
    }
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    let crds = kinds[1..]
        .iter()
        .take_while(|k| *k == "CustomResourceDefinition")
        .count();
    let rest = &kinds[1 + crds..];
    assert!(
        !rest
            .iter()
            .any(|k| k == "CustomResourceDefinition" || k == "Namespace"),
        "CRDs must come right after the namespace: {kinds:?}"
    );
    let ranks: Vec<usize> = rest.iter().map(|k| install_rank(k)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "not in install order: {kinds:?}"
    );
    let set: BTreeSet<&str> = kinds.iter().map(String::as_str).collect();
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(set.contains(k), "manifests/ lacks a {k}");
    }
}

fn sample() -> Value {
    let text =
        std::fs::read_to_string(root().join("manifests/samples/collaborativeinference.yaml"))
            .unwrap();
    let docs = parse_documents(&text);
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

#[test]
fn the_sample_follows_the_agreed_spec_and_the_kind_cluster() {
    let s = sample();
    assert_eq!(s["apiVersion"], "cnnpc.io/v1alpha1");
    assert_eq!(s["kind"], "CollaborativeInference");
    let spec = s["spec"].as_object().unwrap();
    let agreed: BTreeSet<&str> = [
        "model",
        "inputShape",
        "tiers",
        "links",
        "objective",
        "compression",
        "calibration",
        "replan",
        "prometheusUrl",
        "image",
    ]
    .into();
    for k in spec.keys() {
        assert!(
            agreed.contains(k.as_str()),
            "spec.{k} is not in the agreed spec"
        );
    }
    let model = &spec["model"];
    assert!(
        (model["url"].is_string() && model["sha256"].is_string())
            ^ (model["path"].is_string() && model["volume"].is_object()),
        "model is either {{url, sha256}} or {{path, volume}}: {model}"
    );
    assert!(
        spec["objective"]["minAccuracy"].is_number()
            ^ spec["objective"]["maxLatencyMs"].is_number()
    );
    // Every tier's nodeSelector picks a node of e2e/kind-config.yaml, and there are three tiers.
    let kind =
        &parse_documents(&std::fs::read_to_string(root().join("e2e/kind-config.yaml")).unwrap())[0];
    let node_tiers: BTreeSet<String> = kind["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["labels"]["cnnpc.io/tier"].as_str().map(String::from))
        .collect();
    assert_eq!(
        node_tiers,
        BTreeSet::from(["cloud".into(), "edge".into(), "end".into()])
    );
    let tiers = spec["tiers"].as_object().unwrap();
    assert_eq!(tiers.keys().cloned().collect::<BTreeSet<_>>(), node_tiers);
    for (t, cfg) in tiers {
        assert_eq!(cfg["nodeSelector"]["cnnpc.io/tier"], t.as_str());
    }
    // The sample's hostPath is where kind mounts models/.
    let mounts: BTreeSet<&str> = kind["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["extraMounts"].as_array().into_iter().flatten())
        .map(|m| m["containerPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(model["volume"]["hostPath"]["path"].as_str().unwrap()));
}

/// Every CollaborativeInference the project ships for users to apply.
fn shipped_resources() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in ["manifests/samples", "e2e/samples", "examples"] {
        for (name, text) in yaml_files(&root().join(dir)) {
            for d in parse_documents(&text) {
                if d["kind"] == "CollaborativeInference" {
                    out.push((format!("{dir}/{name}"), d));
                }
            }
        }
    }
    out
}

#[test]
fn every_shipped_resource_validates_against_the_crd_schema() {
    let text =
        std::fs::read_to_string(root().join("crds/cnnpc.io_collaborativeinferences.yaml")).unwrap();
    let crd: CustomResourceDefinition =
        serde_json::from_value(parse_documents(&text).remove(0)).unwrap();
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .expect("the CRD serves v1alpha1");
    let schema =
        serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
    let validator =
        jsonschema::draft4::new(&schema).expect("openAPIV3Schema compiles as JSON Schema");
    let shipped = shipped_resources();
    assert!(
        shipped.len() >= 3,
        "{:?}",
        shipped.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (file, mut s) in shipped {
        assert_eq!(s["apiVersion"], "cnnpc.io/v1alpha1", "{file}");
        // The API server checks metadata itself; the schema covers spec (and status).
        s.as_object_mut().unwrap().remove("metadata");
        let errors: Vec<String> = validator
            .iter_errors(&s)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} does not fit the CRD: {errors:#?}"
        );
        // And the operator's own types read it.
        let _: cnnpc::operator::crd::CollaborativeInferenceSpec =
            serde_json::from_value(s["spec"].clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
