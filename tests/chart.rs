//! The Helm chart (charts/cnnpc), judged by the real helm (`scripts/fetch-tools.sh`): it lints
//! strictly; it renders with the default values and with a matrix that changes every key of
//! values.yaml, each change visible in the output; every rendered object is a valid typed
//! Kubernetes object; the controller's args parse with the binary's own clap definition; the
//! schema rejects mistakes; RBAC is exactly what the controller calls; the README documents
//! every value; `crds/` is the generated CRD.

mod common;

use clap::Parser;
use cnnpc::cli::{Cli, Command, ControllerArgs};
use common::helm::{self, by_kind, container_args, one, render};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const NS: &str = helm::NS;

/// Checks every object's name and deserializes each known kind into its k8s-openapi type
/// (apiVersion, kind and every field's type); unknown kinds fail.
fn check_typed(objs: &[Value]) {
    for d in objs {
        let what = d.to_string();
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
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
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
            other => panic!("unexpected kind {other}: {what}"),
        };
        typed.unwrap_or_else(|e| panic!("{what} is not a valid {kind}: {e}"));
    }
}

/// The controller's args as `cnnpc` parses them: a typo, a float where a number belongs or a
/// missing value fails here, not in a pod.
fn controller_args(objs: &[Value]) -> Result<ControllerArgs, String> {
    let deploy = one(objs, "Deployment");
    let args = container_args(deploy);
    let cli = Cli::try_parse_from(std::iter::once("cnnpc".to_string()).chain(args.clone()))
        .map_err(|e| format!("`cnnpc {}` does not parse: {e}", args.join(" ")))?;
    match cli.command {
        Command::Controller(a) => Ok(a),
        other => Err(format!(
            "the controller runs {other:?}, not `cnnpc controller`"
        )),
    }
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
fn helm_lint_strict_passes_with_default_and_every_optional_part() {
    for values in [json!({}), all_on()] {
        let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(f.path(), values.to_string()).unwrap();
        let out = helm::run(&[
            "lint",
            "--strict",
            helm::CHART,
            "-f",
            &f.path().to_string_lossy(),
        ])
        .unwrap_or_else(|e| panic!("helm lint --strict fails for {values}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn default_values_render_the_controller_install() {
    let objs = render(&json!({}));
    check_typed(&objs);
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
    let a = container_args(d);
    assert_eq!(a[0], "controller");
    // Helm reads 8080 from values.yaml as a float64: `printf "%d"` on it rendered
    // "0.0.0.0:%!d(float64=8080)", which no controller could listen on.
    assert_eq!(arg_after(&a, "--listen").as_deref(), Some("0.0.0.0:8080"));
    let parsed = controller_args(&objs).unwrap();
    assert_eq!(parsed.listen.port(), 8080);
    assert_eq!(parsed.shard_image, "cnnpc:0.1.0");
    assert_eq!(parsed.lease_name, "cnnpc-controller");
    assert_eq!(parsed.namespace, None, "all namespaces by default");
    assert_eq!(parsed.model_dir.to_str(), Some("/models"));
    assert_eq!(parsed.log_format.name(), "text");
    // Non-root, read-only root filesystem, no privilege escalation, writable /tmp.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
    assert_eq!(spec["volumes"][0]["name"], c["volumeMounts"][0]["name"]);
    assert!(spec["volumes"][0]["emptyDir"].is_object());
    // Probes on the port the controller listens on, by name.
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(
        c["ports"][0]["containerPort"],
        i64::from(parsed.listen.port())
    );
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

/// Non-default values exercising every optional part and many overrides at once.
fn all_on() -> Value {
    json!({
        "image": {"repository": "registry.example/cnnpc", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "fullnameOverride": "ci",
        "controller": {
            "replicas": 2,
            "watchNamespace": "inference",
            "shardImage": "registry.example/cnnpc-shard:1.2.3",
            "logLevel": "debug",
            "logFormat": "json",
            "port": 9090,
            "extraArgs": ["--profile-repeats", "3"],
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

#[test]
fn non_default_values_render_every_optional_part() {
    let objs = render(&all_on());
    check_typed(&objs);
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
    let a = controller_args(&objs).unwrap();
    assert_eq!(a.namespace.as_deref(), Some("inference"));
    assert_eq!(a.shard_image, "registry.example/cnnpc-shard:1.2.3");
    assert_eq!(a.profile_repeats, 3, "extraArgs reach the controller");
    assert_eq!(a.listen.port(), 9090);
    assert_eq!(a.log_format.name(), "json");
    assert_eq!(c["ports"][0]["containerPort"], 9090);
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
    assert_eq!(
        one(&objs, "PodMonitor")["metadata"]["labels"]["release"],
        "kps"
    );
    // NetworkPolicies: 3 in each of the 2 namespaces (tests/labels.rs checks what they allow).
    let nps = by_kind(&objs, "NetworkPolicy");
    assert_eq!(
        nps.len(),
        6,
        "edge, cloud and entry policies in each of 2 namespaces"
    );
    for ns in ["inference", "staging"] {
        assert_eq!(
            nps.iter()
                .filter(|n| n["metadata"]["namespace"] == ns)
                .count(),
            3
        );
    }
    // The dashboard ConfigMap carries the sidecar label and exactly the dashboard file.
    let cm = one(&objs, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file = common::read("charts/cnnpc/dashboards/cnnpc.json");
    assert_eq!(cm["data"]["cnnpc.json"].as_str().unwrap(), file.trim_end());
    let _: Value = serde_json::from_str(cm["data"]["cnnpc.json"].as_str().unwrap()).unwrap();
}

/// Every leaf of values.yaml, as a dotted path (maps that are passed through whole, such as
/// resources or labels, count as one leaf).
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

/// One change per key of values.yaml: (key, a non-default value, the values it needs to show).
fn matrix() -> Vec<(&'static str, Value, Value)> {
    let sm = json!({"serviceMonitor": {"enabled": true}});
    let pm = json!({"podMonitor": {"enabled": true}});
    let np = json!({"networkPolicy": {"enabled": true}});
    let dash = json!({"dashboard": {"enabled": true}});
    let none = json!({});
    vec![
        (
            "image.repository",
            json!("registry.example/cnnpc"),
            none.clone(),
        ),
        ("image.tag", json!("9.9.9"), none.clone()),
        ("image.pullPolicy", json!("Always"), none.clone()),
        (
            "imagePullSecrets",
            json!([{"name": "regcred"}]),
            none.clone(),
        ),
        ("nameOverride", json!("op"), none.clone()),
        ("fullnameOverride", json!("ci"), none.clone()),
        ("controller.replicas", json!(3), none.clone()),
        ("controller.watchNamespace", json!("ml"), none.clone()),
        ("controller.leaseName", json!("other-lease"), none.clone()),
        (
            "controller.shardImage",
            json!("registry.example/shard:1"),
            none.clone(),
        ),
        ("controller.logLevel", json!("debug"), none.clone()),
        ("controller.logFormat", json!("json"), none.clone()),
        ("controller.port", json!(9443), none.clone()),
        (
            "controller.extraArgs",
            json!(["--profile-repeats", "2"]),
            none.clone(),
        ),
        (
            "controller.extraEnv",
            json!([{"name": "A", "value": "b"}]),
            none.clone(),
        ),
        (
            "controller.resources",
            json!({"limits": {"cpu": "2", "memory": "1Gi"}}),
            none.clone(),
        ),
        (
            "controller.podSecurityContext",
            json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}),
            none.clone(),
        ),
        (
            "controller.securityContext",
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}),
            none.clone(),
        ),
        ("controller.tmpSizeLimit", json!("2Gi"), none.clone()),
        (
            "controller.modelVolume",
            json!({"hostPath": {"path": "/var/lib/cnnpc/models"}}),
            none.clone(),
        ),
        (
            "controller.nodeSelector",
            json!({"kubernetes.io/os": "linux"}),
            none.clone(),
        ),
        (
            "controller.tolerations",
            json!([{"key": "k", "operator": "Exists"}]),
            none.clone(),
        ),
        (
            "controller.affinity",
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}),
            none.clone(),
        ),
        ("controller.podAnnotations", json!({"a": "b"}), none.clone()),
        ("controller.podLabels", json!({"team": "ml"}), none.clone()),
        ("controller.priorityClassName", json!("high"), none.clone()),
        (
            "serviceAccount.create",
            json!(false),
            json!({"serviceAccount": {"name": "existing"}}),
        ),
        ("serviceAccount.name", json!("mine"), none.clone()),
        (
            "serviceAccount.annotations",
            json!({"iam": "role"}),
            none.clone(),
        ),
        ("rbac.create", json!(false), none.clone()),
        ("metrics.service.type", json!("NodePort"), none.clone()),
        ("metrics.service.port", json!(9100), none.clone()),
        (
            "metrics.service.annotations",
            json!({"a": "b"}),
            none.clone(),
        ),
        ("serviceMonitor.enabled", json!(true), none.clone()),
        ("serviceMonitor.interval", json!("1m"), sm.clone()),
        ("serviceMonitor.scrapeTimeout", json!("20s"), sm.clone()),
        ("serviceMonitor.labels", json!({"release": "kps"}), sm),
        ("podMonitor.enabled", json!(true), none.clone()),
        ("podMonitor.interval", json!("30s"), pm.clone()),
        (
            "podMonitor.namespaceSelector",
            json!({"matchNames": ["ml"]}),
            pm.clone(),
        ),
        ("podMonitor.labels", json!({"release": "kps"}), pm),
        ("networkPolicy.enabled", json!(true), none.clone()),
        ("networkPolicy.namespaces", json!(["ml"]), np.clone()),
        ("networkPolicy.allowSkippedTier", json!(false), np.clone()),
        (
            "networkPolicy.extraFrom",
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
            np.clone(),
        ),
        (
            "networkPolicy.entryFrom",
            json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
            np,
        ),
        ("dashboard.enabled", json!(true), none),
        ("dashboard.namespace", json!("monitoring"), dash.clone()),
        (
            "dashboard.labels",
            json!({"grafana_dashboard": "1", "team": "ml"}),
            dash.clone(),
        ),
        ("dashboard.annotations", json!({"folder": "ML"}), dash),
    ]
}

#[test]
fn every_key_of_values_yaml_changes_the_render_and_the_controller_args_still_parse() {
    let defaults = helm::default_values();
    let mut keys = Vec::new();
    leaves(&defaults, "", &mut keys);
    let cases = matrix();
    let covered: BTreeSet<&str> = cases.iter().map(|(k, _, _)| *k).collect();
    let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(
        keys.difference(&covered).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "keys of values.yaml the matrix does not change"
    );
    assert_eq!(
        covered.difference(&keys).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "matrix keys that values.yaml does not have"
    );
    // Render in parallel: ~50 helm runs.
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(key, value, base)| {
                s.spawn(move || {
                    let with = helm::merge(base, &helm::nested(key, value.clone()));
                    let r = (|| {
                        let before = render(base);
                        let after = helm::template(&with).map_err(|e| format!("helm: {e}"))?;
                        let after: Vec<Value> = after.into_iter().map(|d| d.value).collect();
                        check_typed(&after);
                        controller_args(&after)?;
                        if before == after {
                            return Err(format!(
                                "setting it to {value} changes nothing in the render"
                            ));
                        }
                        Ok(())
                    })();
                    (key.to_string(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(k, r)| r.err().map(|e| format!("{k}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_typo_or_a_float_in_the_args_fails_here_not_in_a_pod() {
    for (extra, why) in [
        (json!(["--profile-repeat", "3"]), "a misspelt flag"),
        (json!(["--profile-repeats", "2.5"]), "a float for a count"),
        (json!(["--lease-namespace"]), "a flag without its value"),
    ] {
        let objs = render(&json!({"controller": {"extraArgs": extra}}));
        assert!(controller_args(&objs).is_err(), "{why} parsed: {extra}");
    }
}

#[test]
fn values_the_schema_rejects_fail_the_render() {
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
            json!({"controller": {"port": "8080"}}),
            "a string for a port",
        ),
        (
            json!({"controller": {"logFormat": "xml"}}),
            "an unknown log format",
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
        let err = helm::template(&bad)
            .err()
            .unwrap_or_else(|| panic!("helm accepts {why}: {bad}"));
        assert!(err.contains("schema"), "{why}: {err}");
    }
}

#[test]
fn the_release_name_and_overrides_shape_object_names() {
    let objs: Vec<Value> = helm::template_in("team-a", NS, &json!({}))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    assert_eq!(
        one(&objs, "Deployment")["metadata"]["name"],
        "team-a-cnnpc-controller"
    );
    let objs = render(
        &json!({"serviceAccount": {"create": false, "name": "existing"}, "rbac": {"create": false}}),
    );
    assert!(by_kind(&objs, "ServiceAccount").is_empty());
    assert!(by_kind(&objs, "ClusterRole").is_empty());
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "existing"
    );
    // `required`: no ServiceAccount to create and none named is an error, not a default.
    let err = helm::template(&json!({"serviceAccount": {"create": false}})).unwrap_err();
    assert!(err.contains("serviceAccount.name is required"), "{err}");
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
    let role_of = |values: &Value| -> ClusterRole {
        serde_json::from_value(one(&render(values), "ClusterRole").clone()).unwrap()
    };
    let role = role_of(&json!({}));
    let rules = role.rules.clone().unwrap();
    assert_eq!(grants(&rules), grants(&expected_rules()));
    assert_eq!(
        rules,
        expected_rules(),
        "same rules, same order: the file diffs against the list"
    );
    assert_eq!(
        role_of(&all_on()).rules,
        role.rules,
        "rules must not depend on values"
    );
    let other = std::fs::read_dir(common::root().join("charts/cnnpc/templates"))
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

#[test]
fn the_chart_readme_documents_every_value_with_its_default() {
    let values = helm::default_values();
    let readme = common::read("charts/cnnpc/README.md");
    let mut keys = Vec::new();
    leaves(&values, "", &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    let mut problems = Vec::new();
    for k in &keys {
        let default = k.split('.').fold(&values, |v, part| &v[part]);
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
fn notes_render_through_a_client_side_install() {
    let notes = helm::notes(&json!({"controller": {"watchNamespace": "ml"}})).unwrap();
    assert!(notes.contains("namespace cnnpc-system"), "{notes}");
    assert!(notes.contains("in namespace ml only"), "{notes}");
}

#[test]
fn chart_version_follows_the_crate() {
    let meta: Value = serde_yaml::from_str(&common::read("charts/cnnpc/Chart.yaml")).unwrap();
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["apiVersion"], "v2");
}

#[test]
fn the_chart_ships_the_generated_crd_and_helm_shows_it() {
    let generated = cnnpc::operator::crd::crd_yaml();
    assert_eq!(
        common::read("crds/cnnpc.io_collaborativeinferences.yaml"),
        generated,
        "crds/ is stale: cargo run -- crd > crds/cnnpc.io_collaborativeinferences.yaml"
    );
    assert_eq!(
        common::read("charts/cnnpc/crds/cnnpc.io_collaborativeinferences.yaml"),
        generated,
        "charts/cnnpc/crds/ differs from crds/: cp crds/*.yaml charts/cnnpc/crds/"
    );
    let shown = common::yaml_documents(&helm::run(&["show", "crds", helm::CHART]).unwrap());
    assert_eq!(shown.len(), 1, "the chart ships one CRD");
    assert_eq!(
        shown[0]["metadata"]["name"],
        "collaborativeinferences.cnnpc.io"
    );
    let typed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(shown[0].clone()).unwrap();
    assert_eq!(typed.spec.group, "cnnpc.io");
}
