//! `manifests/` is the chart rendered with default values (no drift), parses as Kubernetes
//! objects in an order `kubectl apply -f manifests/` can apply, and the sample CR fits the
//! agreed spec, the kind cluster's tiers and — once it exists — the CRD's schema.

use cnnpc::chart::{parse_documents, plain_manifests, Chart, MANIFESTS_NAMESPACE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_manifest(name: &str) -> String {
    std::fs::read_to_string(root().join("manifests").join(name)).unwrap()
}

fn committed() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(root().join("manifests"))
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

#[test]
fn manifests_are_the_chart_rendered_with_default_values() {
    let chart = Chart::load(root().join("charts/cnnpc")).unwrap();
    let want = plain_manifests(&chart).unwrap();
    if std::env::var_os("CNNPC_BLESS").is_some() {
        for (name, text) in &want {
            std::fs::write(root().join("manifests").join(name), text).unwrap();
        }
    }
    let have = committed();
    let names = |f: &[(String, String)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&have),
        names(&want),
        "manifests/ holds other files than the chart renders: run `make manifests`"
    );
    for ((name, h), (_, w)) in have.iter().zip(&want) {
        if h != w {
            let line = h
                .lines()
                .zip(w.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "manifests/{name} drifted from charts/cnnpc at line {}: run `make manifests`\n  committed: {:?}\n  rendered:  {:?}",
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
        let docs = parse_documents(&text).unwrap_or_else(|e| panic!("manifests/{name}: {e}"));
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
    let ns = &parse_documents(&read_manifest("00-namespace.yaml")).unwrap()[0];
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "the controller's namespace enforces the restricted Pod Security Standard"
    );
    let deploy = parse_documents(&read_manifest("02-cnnpc.yaml"))
        .unwrap()
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
    let ranks: Vec<usize> = rest.iter().map(|k| cnnpc::chart::install_rank(k)).collect();
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
    let docs = parse_documents(&text).unwrap();
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
        &parse_documents(&std::fs::read_to_string(root().join("e2e/kind-config.yaml")).unwrap())
            .unwrap()[0];
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

#[test]
fn the_sample_validates_against_the_crd_schema_when_the_crd_exists() {
    let path = root().join("crds/cnnpc.io_collaborativeinferences.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "NOTE: {} does not exist yet (operator branch): sample not checked against it",
            path.display()
        );
        // Still a check: without the CRD, the chart must not ship one either.
        assert!(!root()
            .join("charts/cnnpc/crds/cnnpc.io_collaborativeinferences.yaml")
            .exists());
        return;
    };
    let crd: CustomResourceDefinition =
        serde_json::from_value(parse_documents(&text).unwrap().remove(0)).unwrap();
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
    let mut s = sample();
    // The API server checks metadata itself; the schema covers spec (and status).
    s.as_object_mut().unwrap().remove("metadata");
    let errors: Vec<String> = validator
        .iter_errors(&s)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the sample does not fit the CRD: {errors:#?}"
    );
}
