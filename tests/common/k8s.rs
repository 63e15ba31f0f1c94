//! What a cluster would do with the objects we render, for the parts a test can reproduce
//! exactly from the Kubernetes and Prometheus documentation: label selectors, NetworkPolicy
//! ingress rules, and Prometheus relabeling of a discovered pod.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// A pod as policies and discovery see it.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    /// Named container ports (name → number).
    pub ports: BTreeMap<String, i32>,
}

impl Pod {
    pub fn new(name: &str, namespace: &str, labels: Labels) -> Pod {
        Pod {
            name: name.into(),
            namespace: namespace.into(),
            labels,
            ports: BTreeMap::from([("http".to_string(), 8080)]),
        }
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist), ANDed; an empty
/// selector selects everything.
pub fn selects(sel: &LabelSelector, l: &Labels) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| l.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => l.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => l.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => l.contains_key(&e.key),
            "DoesNotExist" => !l.contains_key(&e.key),
            other => panic!("unknown selector operator {other}"),
        }
    });
    by_labels && by_expr
}

/// A plain `matchLabels` map (a Service's or a Deployment's selector) as a LabelSelector.
pub fn match_labels(v: &Value) -> LabelSelector {
    LabelSelector {
        match_labels: Some(serde_json::from_value(v.clone()).expect("a label map")),
        ..LabelSelector::default()
    }
}

/// The labels every namespace carries (Kubernetes ≥ 1.21 sets this one itself).
pub fn namespace_labels(ns: &str) -> Labels {
    labels(&[("kubernetes.io/metadata.name", ns)])
}

fn peer_admits(peer: &NetworkPolicyPeer, policy_ns: &str, src: &Pod) -> bool {
    if peer.ip_block.is_some() {
        return false;
    }
    let ns_ok = match &peer.namespace_selector {
        Some(s) => selects(s, &namespace_labels(&src.namespace)),
        None => src.namespace == policy_ns,
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|s| selects(s, &src.labels));
    ns_ok && pod_ok
}

fn port_admits(p: &NetworkPolicyPort, dst: &Pod, port: &str) -> bool {
    if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
        return false;
    }
    let number = dst.ports.get(port).copied();
    match &p.port {
        None => true,
        Some(IntOrString::String(name)) => name == port,
        Some(IntOrString::Int(n)) => Some(*n) == number,
    }
}

/// Whether `src` may open a TCP connection to `dst`'s named port `port` under `policies`: a pod
/// no Ingress policy selects accepts everything; a selected one accepts what any rule of any
/// policy selecting it allows (policies add up).
pub fn ingress_allowed(policies: &[NetworkPolicy], src: &Pod, dst: &Pod, port: &str) -> bool {
    let applying: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(dst.namespace.as_str()))
        .filter(|p| {
            let spec = p.spec.as_ref().expect("a spec");
            let ingress = spec
                .policy_types
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| x == "Ingress"));
            ingress
                && selects(
                    spec.pod_selector
                        .as_ref()
                        .unwrap_or(&LabelSelector::default()),
                    &dst.labels,
                )
        })
        .collect();
    if applying.is_empty() {
        return true;
    }
    applying.iter().any(|p| {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        p.spec
            .as_ref()
            .unwrap()
            .ingress
            .iter()
            .flatten()
            .any(|rule| {
                let from_ok = rule.from.as_ref().is_none_or(|f| {
                    f.is_empty() || f.iter().any(|peer| peer_admits(peer, ns, src))
                });
                let port_ok = rule.ports.as_ref().is_none_or(|ps| {
                    ps.is_empty() || ps.iter().any(|pp| port_admits(pp, dst, port))
                });
                from_ok && port_ok
            })
    })
}

/// Prometheus' name for a Kubernetes label in `__meta_kubernetes_pod_label_<name>`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The labels Kubernetes pod discovery gives a target before relabeling (the part of
/// Prometheus' `kubernetes_sd_configs` role `pod` a PodMonitor's relabelings can read).
pub fn discovered(pod: &Pod) -> Labels {
    let mut l = Labels::new();
    l.insert("__meta_kubernetes_namespace".into(), pod.namespace.clone());
    l.insert("__meta_kubernetes_pod_name".into(), pod.name.clone());
    for (k, v) in &pod.labels {
        l.insert(
            format!("__meta_kubernetes_pod_label_{}", sanitize(k)),
            v.clone(),
        );
        l.insert(
            format!("__meta_kubernetes_pod_labelpresent_{}", sanitize(k)),
            "true".into(),
        );
    }
    l
}

fn full_match(re: &str, s: &str) -> Option<Vec<String>> {
    // The relabelings we write use `(.*)`-style regexes only; anything else is a test to extend.
    match re {
        "(.*)" | "(.+)" => {
            (re == "(.*)" || !s.is_empty()).then(|| vec![s.to_string(), s.to_string()])
        }
        other => panic!("relabeling regex {other:?} is not supported by this test"),
    }
}

/// Applies Prometheus relabel configs (as a PodMonitor's `relabelings`: camelCase keys) to a
/// target's labels; `None` when a `keep`/`drop` drops the target. A label set to "" is removed,
/// as Prometheus does.
pub fn relabel(configs: &[Value], mut l: Labels) -> Option<Labels> {
    for c in configs {
        let action = c["action"]
            .as_str()
            .unwrap_or("replace")
            .to_ascii_lowercase();
        let sep = c["separator"].as_str().unwrap_or(";");
        let regex = c["regex"].as_str().unwrap_or("(.*)");
        let value: Vec<String> = c["sourceLabels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| l.get(s.as_str().unwrap()).cloned().unwrap_or_default())
            .collect();
        let value = value.join(sep);
        match action.as_str() {
            "replace" => {
                if let Some(groups) = full_match(regex, &value) {
                    let target = c["targetLabel"]
                        .as_str()
                        .expect("replace needs targetLabel");
                    let out = c["replacement"]
                        .as_str()
                        .unwrap_or("$1")
                        .replace("${1}", &groups[1])
                        .replace("$1", &groups[1]);
                    if out.is_empty() {
                        l.remove(target);
                    } else {
                        l.insert(target.to_string(), out);
                    }
                }
            }
            "keep" => {
                full_match(regex, &value)?;
            }
            "drop" => {
                if full_match(regex, &value).is_some() {
                    return None;
                }
            }
            other => panic!("relabel action {other} is not supported by this test"),
        }
        l.retain(|_, v| !v.is_empty());
    }
    Some(l)
}

/// The labels of series Prometheus scrapes from `pod` through PodMonitor `pm`
/// (prometheus-operator's own relabelings first: namespace, pod, container, endpoint, job,
/// then the monitor's), or `None` when the monitor does not select the pod.
pub fn podmonitor_target(pm: &Value, pod: &Pod) -> Option<Labels> {
    let spec = &pm["spec"];
    let ns_sel = &spec["namespaceSelector"];
    let ns_ok = ns_sel["any"] == true
        || ns_sel["matchNames"]
            .as_array()
            .map_or(pm["metadata"]["namespace"] == pod.namespace.as_str(), |n| {
                n.iter().any(|x| x == pod.namespace.as_str())
            });
    let selector: LabelSelector = serde_json::from_value(spec["selector"].clone()).ok()?;
    if !ns_ok || !selects(&selector, &pod.labels) {
        return None;
    }
    let ep = &spec["podMetricsEndpoints"][0];
    let port = ep["port"].as_str().expect("a named port");
    if !pod.ports.contains_key(port) {
        return None;
    }
    let mut l = discovered(pod);
    l.insert("namespace".into(), pod.namespace.clone());
    l.insert("pod".into(), pod.name.clone());
    l.insert("container".into(), "shard".into());
    l.insert("endpoint".into(), port.into());
    l.insert(
        "job".into(),
        format!(
            "{}/{}",
            pm["metadata"]["namespace"].as_str()?,
            pm["metadata"]["name"].as_str()?
        ),
    );
    l.insert("instance".into(), format!("10.0.0.1:{}", pod.ports[port]));
    let relabelings: Vec<Value> = ep["relabelings"].as_array().cloned().unwrap_or_default();
    let mut out = relabel(&relabelings, l)?;
    out.retain(|k, _| !k.starts_with("__"));
    Some(out)
}
