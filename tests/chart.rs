//! The Helm chart (charts/cnnpc) renders — without a helm binary, through `cnnpc::chart` — to
//! valid Kubernetes objects for default and non-default values; its values match
//! values.schema.json and its README; its RBAC is exactly what the controller needs; its `crds/`
//! is the generated CRD file.

use cnnpc::chart::{Chart, Rendered};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> Chart {
    Chart::load(root().join("charts/cnnpc")).expect("the chart loads and its templates parse")
}

const NS: &str = "cnnpc-system";

/// Non-default values exercising every optional part and every override.
fn custom_values() -> Value {
    json!({
        "image": {"repository": "registry.example/cnnpc", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "fullnameOverride": "ci",
        "controller": {
            "replicas": 2,
            "watchNamespace": "inference",
            "shardImage": "registry.example/cnnpc-shard:1.2.3",
            "logLevel": "debug",
            "extraArgs": ["--flag"],
            "extraEnv": [{"name": "A", "value": "b"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
            "nodeSelector": {"cnnpc.io/tier": "cloud"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cnnpc",
                             "effect": "NoSchedule"}],
            "podAnnotations": {"a": "b"},
            "podLabels": {"team": "ml"},
            "priorityClassName": "high"
        },
        "serviceAccount": {"annotations": {"x": "y"}},
        "serviceMonitor": {"enabled": true, "labels": {"release": "kps"}},
        "podMonitor": {"enabled": true, "labels": {"release": "kps"}},
        "networkPolicy": {
            "enabled": true,
            "namespaces": ["inference", "staging"],
            "allowSkippedTier": false,
            "extraFrom": [{"namespaceSelector": {"matchLabels":
                {"kubernetes.io/metadata.name": "monitoring"}}}],
            "entryFrom": [{"podSelector": {"matchLabels": {"app": "client"}}}]
        },
        "dashboard": {"enabled": true, "namespace": "monitoring"}
    })
}

/// Checks every document is a Kubernetes object and deserializes the known kinds into their
/// k8s-openapi types (which checks apiVersion, kind and every field's type); returns them.
fn objects(rendered: &[Rendered]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rendered {
        let docs = r.documents().unwrap();
        assert!(!docs.is_empty(), "{} rendered no object", r.template);
        for d in docs {
            let what = format!("{}: {}", r.template, d);
            let api = d["apiVersion"]
                .as_str()
                .unwrap_or_else(|| panic!("no apiVersion in {what}"));
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("no kind in {what}"));
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("no name in {what}"));
            assert!(
                !name.is_empty()
                    && name.len() <= 63
                    && name.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '-'
                        || c == '.'),
                "bad name {name:?} in {what}"
            );
            let typed = match kind {
                "Deployment" => serde_json::from_value::<Deployment>(d.clone()).map(drop),
                "Service" => serde_json::from_value::<Service>(d.clone()).map(drop),
                "ServiceAccount" => serde_json::from_value::<ServiceAccount>(d.clone()).map(drop),
                "ClusterRole" => serde_json::from_value::<ClusterRole>(d.clone()).map(drop),
                "ClusterRoleBinding" => {
                    serde_json::from_value::<ClusterRoleBinding>(d.clone()).map(drop)
                }
                "ConfigMap" => serde_json::from_value::<ConfigMap>(d.clone()).map(drop),
                "NetworkPolicy" => serde_json::from_value::<NetworkPolicy>(d.clone()).map(drop),
                "ServiceMonitor" | "PodMonitor" => {
                    assert_eq!(api, "monitoring.coreos.com/v1", "{what}");
                    assert!(d["spec"]["selector"]["matchLabels"].is_object(), "{what}");
                    Ok(())
                }
                other => panic!("{}: unexpected kind {other}", r.template),
            };
            typed.unwrap_or_else(|e| panic!("{what} is not a valid {kind}: {e}"));
            out.push(d);
        }
    }
    out
}

fn by_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = by_kind(objs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn args(deploy: &Value) -> Vec<String> {
    deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].clone())
}

/// Labels `selector` picks are all on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn default_values_render_the_controller_install() {
    let chart = chart();
    let objs = objects(&chart.render("cnnpc", NS, &Value::Null).unwrap());
    let kinds: BTreeSet<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]),
        "optional parts are off by default"
    );
    for o in &objs {
        let cluster_scoped = matches!(
            o["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        );
        assert_eq!(
            o["metadata"]["namespace"].as_str(),
            (!cluster_scoped).then_some(NS),
            "{o}"
        );
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/name"], "cnnpc");
    }

    let d = one(&objs, "Deployment");
    assert_eq!(d["metadata"]["name"], "cnnpc-controller");
    let pod = &d["spec"]["template"];
    assert!(selects(
        &d["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "cnnpc:0.1.0", "tag defaults to appVersion");
    let a = args(d);
    assert_eq!(a[0], "controller");
    assert_eq!(arg_after(&a, "--listen").as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(
        arg_after(&a, "--shard-image").as_deref(),
        Some("cnnpc:0.1.0")
    );
    assert_eq!(
        arg_after(&a, "--lease-name").as_deref(),
        Some("cnnpc-controller")
    );
    assert_eq!(
        arg_after(&a, "--namespace"),
        None,
        "all namespaces by default"
    );
    // Non-root, read-only root filesystem, no privilege escalation, writable /tmp.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
    assert_eq!(spec["volumes"][0]["name"], c["volumeMounts"][0]["name"]);
    assert!(spec["volumes"][0]["emptyDir"].is_object());
    // Probes on the controller's port, by name.
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // The metrics Service reaches the pod's named port.
    let s = one(&objs, "Service");
    assert!(selects(&s["spec"]["selector"], &pod["metadata"]["labels"]));
    assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");

    // The binding ties the ServiceAccount the pod runs as to the role.
    let sa = one(&objs, "ServiceAccount");
    assert_eq!(spec["serviceAccountName"], sa["metadata"]["name"]);
    let crb = one(&objs, "ClusterRoleBinding");
    let cr = one(&objs, "ClusterRole");
    assert_eq!(crb["roleRef"]["name"], cr["metadata"]["name"]);
    assert_eq!(crb["roleRef"]["kind"], "ClusterRole");
    assert_eq!(crb["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(crb["subjects"][0]["namespace"], NS);
}

#[test]
fn non_default_values_render_every_optional_part() {
    let chart = chart();
    let objs = objects(&chart.render("prod", NS, &custom_values()).unwrap());

    let d = one(&objs, "Deployment");
    assert_eq!(d["metadata"]["name"], "ci-controller");
    assert_eq!(d["spec"]["replicas"], 2);
    let spec = &d["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["image"], "registry.example/cnnpc:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(spec["nodeSelector"], json!({"cnnpc.io/tier": "cloud"}));
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert_eq!(spec["priorityClassName"], "high");
    assert_eq!(c["resources"]["limits"]["cpu"], "1");
    assert_eq!(c["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["team"], "ml");
    assert_eq!(d["spec"]["template"]["metadata"]["annotations"]["a"], "b");
    let a = args(d);
    assert_eq!(arg_after(&a, "--namespace").as_deref(), Some("inference"));
    assert_eq!(
        arg_after(&a, "--shard-image").as_deref(),
        Some("registry.example/cnnpc-shard:1.2.3")
    );
    assert_eq!(a.last().map(String::as_str), Some("--flag"));
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"A") && env.contains(&"RUST_LOG"), "{env:?}");

    // ServiceMonitor: the controller's Service, keeping the namespace/name labels it exports.
    let sm = one(&objs, "ServiceMonitor");
    let svc = one(&objs, "Service");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");

    // PodMonitor: the shard pods' labels (the operator's contract), CR name → `name`.
    let pm = one(&objs, "PodMonitor");
    let shard_labels = json!({
        "app.kubernetes.io/name": "cnnpc", "app.kubernetes.io/component": "shard",
        "app.kubernetes.io/managed-by": "cnnpc-controller", "app.kubernetes.io/instance": "demo",
        "cnnpc.io/tier": "edge"
    });
    assert!(selects(
        &pm["spec"]["selector"]["matchLabels"],
        &shard_labels
    ));
    let relabel = &pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    assert_eq!(relabel["targetLabel"], "name");
    assert_eq!(
        relabel["sourceLabels"][0],
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
    );

    // NetworkPolicies: per namespace, edge ← end, cloud ← edge (no skipping here), end ← entryFrom.
    let nps = by_kind(&objs, "NetworkPolicy");
    assert_eq!(nps.len(), 6, "3 policies in each of 2 namespaces");
    let tier_of = |np: &Value| {
        np["spec"]["podSelector"]["matchLabels"]["cnnpc.io/tier"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let from_tiers = |np: &Value| -> Vec<String> {
        np["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                p["podSelector"]["matchLabels"]["cnnpc.io/tier"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    for ns in ["inference", "staging"] {
        let here: BTreeMap<String, &Value> = nps
            .iter()
            .filter(|n| n["metadata"]["namespace"] == ns)
            .map(|n| (tier_of(n), *n))
            .collect();
        assert_eq!(
            here.keys().cloned().collect::<Vec<_>>(),
            ["cloud", "edge", "end"]
        );
        assert_eq!(from_tiers(here["edge"]), ["end"]);
        assert_eq!(from_tiers(here["cloud"]), ["edge"]);
        assert!(from_tiers(here["end"]).is_empty());
        for np in here.values() {
            assert!(selects(&np["spec"]["podSelector"]["matchLabels"], &{
                let mut l = shard_labels.clone();
                l["cnnpc.io/tier"] = json!(tier_of(np));
                l
            }));
            let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
            // The controller (it scrapes shards without Prometheus) and the extra peer.
            assert!(from.iter().any(|p| p["podSelector"]["matchLabels"]
                ["app.kubernetes.io/component"]
                == "controller"
                && p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == NS));
            assert!(from.iter().any(|p| p["namespaceSelector"]["matchLabels"]
                ["kubernetes.io/metadata.name"]
                == "monitoring"));
            assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 8080);
        }
        assert!(here["end"]["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["podSelector"]["matchLabels"]["app"] == "client"));
    }
    // With skipping allowed (the default), the cloud also accepts the end tier; no entryFrom: no
    // end-tier policy.
    let objs2 = objects(
        &chart
            .render("prod", NS, &json!({"networkPolicy": {"enabled": true}}))
            .unwrap(),
    );
    let nps2 = by_kind(&objs2, "NetworkPolicy");
    assert_eq!(nps2.len(), 2);
    let cloud = nps2.iter().find(|n| tier_of(n) == "cloud").unwrap();
    assert_eq!(from_tiers(cloud), ["edge", "end"]);
    assert!(nps2.iter().all(|n| n["metadata"]["namespace"] == NS));

    // The dashboard ConfigMap carries the sidecar label and exactly the dashboard file.
    let cm = one(&objs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file = std::fs::read_to_string(root().join("charts/cnnpc/dashboards/cnnpc.json")).unwrap();
    assert_eq!(cm["data"]["cnnpc.json"].as_str().unwrap(), file.trim_end());
    let _: Value = serde_json::from_str(cm["data"]["cnnpc.json"].as_str().unwrap()).unwrap();
}

#[test]
fn the_release_name_and_overrides_shape_object_names() {
    let chart = chart();
    let objs = objects(&chart.render("team-a", NS, &Value::Null).unwrap());
    assert_eq!(
        one(&objs, "Deployment")["metadata"]["name"],
        "team-a-cnnpc-controller"
    );
    let objs = objects(
        &chart
            .render("x", NS, &json!({"serviceAccount": {"create": false, "name": "existing"}, "rbac": {"create": false}}))
            .unwrap(),
    );
    assert!(by_kind(&objs, "ServiceAccount").is_empty());
    assert!(by_kind(&objs, "ClusterRole").is_empty());
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "existing"
    );
    // Helm's `required`: no ServiceAccount to create and none named is an error, not a default.
    let err = chart
        .render("x", NS, &json!({"serviceAccount": {"create": false}}))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("serviceAccount.name is required"),
        "{err:#}"
    );
}

/// What the controller calls: `cnnpc::operator::rbac::rules()`, the operator's own list.
fn expected_rules() -> Vec<PolicyRule> {
    cnnpc::operator::rbac::rules()
        .into_iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.api_group.to_string()]),
            resources: Some(vec![r.resource.to_string()]),
            verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// (group, resource, verb) triples a set of rules grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(
            r.non_resource_urls.is_none() && r.resource_names.is_none(),
            "{r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert!(g != "*" && res != "*" && v != "*", "wildcard in {r:?}");
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_is_exactly_what_the_controller_calls_and_takes_no_values() {
    let chart = chart();
    let role_of = |values: &Value| -> ClusterRole {
        let objs = objects(&chart.render("cnnpc", NS, values).unwrap());
        serde_json::from_value(one(&objs, "ClusterRole").clone()).unwrap()
    };
    let role = role_of(&Value::Null);
    let rules = role.rules.clone().unwrap();
    assert_eq!(grants(&rules), grants(&expected_rules()));
    assert_eq!(
        rules,
        expected_rules(),
        "same rules, same order: the file diffs against the list"
    );
    assert_eq!(
        role_of(&custom_values()).rules,
        role.rules,
        "rules must not depend on values"
    );
    // The one template holds every rule: no other template grants anything.
    let other = std::fs::read_dir(root().join("charts/cnnpc/templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "clusterrole.yaml")
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("verbs:"))
        .collect::<Vec<_>>();
    assert!(
        other.is_empty(),
        "rules outside clusterrole.yaml: {other:?}"
    );
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/cnnpc/values.schema.json")).unwrap(),
    )
    .unwrap();
    jsonschema::draft7::new(&schema).expect("values.schema.json is a valid draft-07 schema")
}

fn schema_errors(v: &jsonschema::Validator, values: &Value) -> Vec<String> {
    v.iter_errors(values)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn values_match_the_schema_and_the_schema_rejects_mistakes() {
    let chart = chart();
    let v = validator();
    assert_eq!(
        schema_errors(&v, &chart.values),
        Vec::<String>::new(),
        "values.yaml"
    );
    assert_eq!(
        schema_errors(&v, &chart.values_with(&custom_values())),
        Vec::<String>::new()
    );
    for (bad, why) in [
        (json!({"controler": {}}), "a misspelt section"),
        (json!({"controller": {"replica": 2}}), "a misspelt key"),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "an unknown pull policy",
        ),
        (
            json!({"controller": {"port": 70000}}),
            "a port out of range",
        ),
        (
            json!({"networkPolicy": {"enabled": "yes"}}),
            "a string for a boolean",
        ),
        (
            json!({"serviceMonitor": {"interval": "30 seconds"}}),
            "a malformed duration",
        ),
    ] {
        assert!(
            !schema_errors(&v, &chart.values_with(&bad)).is_empty(),
            "schema accepts {why}: {bad}"
        );
    }
}

/// Every leaf of values.yaml, as a dotted path.
fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m)
            if !m.is_empty()
                && prefix != "controller.resources"
                && !prefix.ends_with("SecurityContext")
                && !prefix.ends_with("securityContext")
                && !prefix.ends_with("namespaceSelector")
                && !prefix.ends_with("labels") =>
        {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(x, &p, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn the_chart_readme_documents_every_value_with_its_default() {
    let chart = chart();
    let readme = std::fs::read_to_string(root().join("charts/cnnpc/README.md")).unwrap();
    let mut keys = Vec::new();
    leaves(&chart.values, "", &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    let mut problems = Vec::new();
    for k in &keys {
        let default = k.split('.').fold(&chart.values, |v, part| &v[part]);
        let row = format!("| `{k}` | `{}` |", serde_json::to_string(default).unwrap());
        if !readme.contains(&row) {
            problems.push(row);
        }
    }
    assert!(
        problems.is_empty(),
        "README values rows missing or stale, want:\n{}",
        problems.join("\n")
    );
}

#[test]
fn notes_render() {
    let notes = chart()
        .notes(
            "cnnpc",
            NS,
            &json!({"controller": {"watchNamespace": "ml"}}),
        )
        .unwrap();
    assert!(notes.contains("namespace cnnpc-system"), "{notes}");
    assert!(notes.contains("in namespace ml only"), "{notes}");
}

#[test]
fn chart_version_follows_the_crate() {
    let c = chart();
    assert_eq!(c.metadata["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(c.metadata["apiVersion"], "v2");
}

/// The generated CRD file (`cnnpc crd` → crds/, the operator's deliverable).
const CRD_FILE: &str = "cnnpc.io_collaborativeinferences.yaml";

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn chart_crds_are_the_generated_crd_file() {
    let top = root().join("crds");
    let chart_crds = root().join("charts/cnnpc/crds");
    let top_files = yaml_files(&top);
    let chart_files = yaml_files(&chart_crds);
    // The chart ships exactly the top-level CRD files, byte for byte.
    assert_eq!(
        chart_files, top_files,
        "charts/cnnpc/crds/ and crds/ hold different files"
    );
    for f in &top_files {
        assert_eq!(
            std::fs::read(chart_crds.join(f)).unwrap(),
            std::fs::read(top.join(f)).unwrap(),
            "charts/cnnpc/crds/{f} differs from crds/{f}: cp crds/{f} charts/cnnpc/crds/"
        );
    }
    if top_files.is_empty() {
        // Until the operator lands `cnnpc crd` and crds/, there is nothing to ship; say so loudly.
        eprintln!(
            "NOTE: crds/{CRD_FILE} does not exist yet (operator branch); the chart ships no CRD"
        );
    } else {
        assert!(top_files.contains(CRD_FILE), "{top_files:?}");
        let crd =
            &cnnpc::chart::parse_documents(&std::fs::read_to_string(top.join(CRD_FILE)).unwrap())
                .unwrap()[0];
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        assert_eq!(crd["metadata"]["name"], "collaborativeinferences.cnnpc.io");
    }
}

/// README.md's CRD reference is generated from the CRD file (`CNNPC_BLESS=1` rewrites it); until
/// the operator's CRD exists, the README keeps the marked placeholder the merge fills.
#[test]
fn readme_crd_reference_is_generated_from_the_crd() {
    let readme_path = root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let begin = readme
        .find(cnnpc::chart::CRD_REFERENCE_BEGIN)
        .expect("README.md has the CRD-REFERENCE:BEGIN marker");
    let body_start = begin
        + readme[begin..]
            .find("-->")
            .expect("the BEGIN marker closes")
        + 3;
    let end = readme
        .find(cnnpc::chart::CRD_REFERENCE_END)
        .expect("README.md has the CRD-REFERENCE:END marker");
    assert!(body_start <= end);
    let section = &readme[body_start..end];
    match std::fs::read_to_string(root().join("crds").join(CRD_FILE)) {
        Err(_) => {
            eprintln!("NOTE: no crds/{CRD_FILE} yet: the README's CRD reference is a placeholder");
            assert!(section.contains("Placeholder"), "{section}");
        }
        Ok(crd) => {
            let want = format!("\n{}", cnnpc::chart::crd_reference(&crd).unwrap());
            if std::env::var_os("CNNPC_BLESS").is_some() && section != want {
                let new = format!("{}{want}{}", &readme[..body_start], &readme[end..]);
                std::fs::write(&readme_path, new).unwrap();
                return;
            }
            assert_eq!(section, want, "README's CRD reference is stale: CNNPC_BLESS=1 cargo test --all-targets --test chart");
        }
    }
}
