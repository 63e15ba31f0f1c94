//! One label contract (`cnnpc::operator::labels`), checked from every side that selects by it:
//! each label selector the real helm renders from the chart, and each selector of the e2e suite,
//! selects the pods and Services the operator's child builders produce; the chart's
//! NetworkPolicies allow exactly the hops the plans need, the controller's scrapes, and nothing
//! else.

mod common;

use cnnpc::operator::labels as contract;
use cnnpc::planner::accuracy::WireEncoding as Encoding;
use common::helm::{self, by_kind, render};
use common::k8s::{self, ingress_allowed, labels, match_labels, selects, Pod};
use common::plans::{self, CR, CR_NS, SHAPES};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Every shard pod and Service the builders make, over every plan shape, of two resources in
/// the same namespace.
struct World {
    pods: Vec<Pod>,
}

fn world() -> World {
    let mut pods = Vec::new();
    for name in [CR, "other"] {
        let ci = plans::resource(name, CR_NS, json!({}));
        for shape in SHAPES {
            let ch = plans::children(&ci, &plans::plan(shape, 8, Encoding::Int8));
            pods.extend(plans::pods(&ch));
        }
    }
    World { pods }
}

fn values_all_monitors(extra: Value) -> Value {
    helm::merge(
        &json!({
            "podMonitor": {"enabled": true},
            "serviceMonitor": {"enabled": true},
            "networkPolicy": {"enabled": true, "namespaces": [CR_NS]},
        }),
        &extra,
    )
}

/// Every label selector in a rendered object, with where it is.
fn selectors_in(obj: &Value) -> Vec<(String, LabelSelector)> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let at = |p: &str| format!("{kind}/{name} {p}");
    let mut out = Vec::new();
    let sel = |v: &Value| serde_json::from_value::<LabelSelector>(v.clone()).unwrap();
    match kind {
        "Deployment" => out.push((at("spec.selector"), sel(&obj["spec"]["selector"]))),
        "Service" => out.push((at("spec.selector"), match_labels(&obj["spec"]["selector"]))),
        "PodMonitor" | "ServiceMonitor" => {
            out.push((at("spec.selector"), sel(&obj["spec"]["selector"])))
        }
        "NetworkPolicy" => {
            out.push((at("spec.podSelector"), sel(&obj["spec"]["podSelector"])));
            for (i, rule) in obj["spec"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                for (j, peer) in rule["from"].as_array().into_iter().flatten().enumerate() {
                    if !peer["podSelector"].is_null() {
                        out.push((
                            at(&format!("ingress[{i}].from[{j}].podSelector")),
                            sel(&peer["podSelector"]),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// The chart's own pods (the controller), from its rendered Deployments.
fn chart_pods(objs: &[Value]) -> Vec<Pod> {
    by_kind(objs, "Deployment")
        .iter()
        .map(|d| {
            let labels: k8s::Labels =
                serde_json::from_value(d["spec"]["template"]["metadata"]["labels"].clone())
                    .unwrap();
            Pod::new(
                &format!("{}-abc", d["metadata"]["name"].as_str().unwrap()),
                d["metadata"]["namespace"].as_str().unwrap(),
                labels,
            )
        })
        .collect()
}

#[test]
fn every_selector_the_chart_renders_selects_pods_or_services_that_exist() {
    let w = world();
    let objs = render(&values_all_monitors(json!({
        "networkPolicy": {"entryFrom": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                          "allowSkippedTier": true}
    })));
    let chart = chart_pods(&objs);
    let chart_services: Vec<k8s::Labels> = by_kind(&objs, "Service")
        .iter()
        .map(|s| serde_json::from_value(s["metadata"]["labels"].clone()).unwrap())
        .collect();
    let mut checked = 0;
    for obj in &objs {
        for (at, sel) in selectors_in(obj) {
            let is_shard = sel.match_labels.as_ref().is_some_and(|m| {
                m.get(contract::NAME).map(String::as_str) == Some(contract::SHARD_APP)
            });
            let hits = if obj["kind"] == "ServiceMonitor" {
                chart_services.iter().filter(|l| selects(&sel, l)).count()
            } else if is_shard {
                w.pods.iter().filter(|p| selects(&sel, &p.labels)).count()
            } else {
                chart.iter().filter(|p| selects(&sel, &p.labels)).count()
            };
            // A client peer (entryFrom) selects the user's pods, not ours.
            let users = sel
                .match_labels
                .as_ref()
                .is_some_and(|m| m.contains_key("app"));
            assert!(
                hits > 0 || users,
                "{at} selects nothing the operator or the chart makes: {sel:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} selectors found");
    // The PodMonitor selects every shard pod, of every resource and plan.
    let pm = helm::one(&objs, "PodMonitor");
    let pm_sel: LabelSelector = serde_json::from_value(pm["spec"]["selector"].clone()).unwrap();
    for p in &w.pods {
        assert!(
            selects(&pm_sel, &p.labels),
            "the PodMonitor misses {}: {:?}",
            p.name,
            p.labels
        );
    }
    // Each per-tier NetworkPolicy selects exactly that tier's pods.
    for np in by_kind(&objs, "NetworkPolicy") {
        let name = np["metadata"]["name"].as_str().unwrap();
        let sel: LabelSelector = serde_json::from_value(np["spec"]["podSelector"].clone()).unwrap();
        for tier in ["edge", "cloud"] {
            if name.ends_with(&format!("-shard-{tier}")) {
                for p in &w.pods {
                    assert_eq!(
                        selects(&sel, &p.labels),
                        p.labels[contract::COMPONENT] == tier,
                        "{name} and {}",
                        p.name
                    );
                }
            }
        }
        if name.ends_with("-shard-entry") {
            for p in &w.pods {
                let first = p.labels.contains_key(contract::ENTRY);
                assert_eq!(selects(&sel, &p.labels), first, "{name} and {}", p.name);
            }
        }
    }
}

#[test]
fn builder_services_and_the_controllers_lists_select_exactly_their_own() {
    for shape in SHAPES {
        let ci = plans::demo();
        let ch = plans::children(&ci, &plans::plan(shape, 8, Encoding::Int8));
        let other = plans::children(
            &plans::resource("other", CR_NS, json!({})),
            &plans::plan(shape, 8, Encoding::Int8),
        );
        let mine = plans::pods(&ch);
        let theirs = plans::pods(&other);
        for s in &ch.services {
            let sel =
                match_labels(&serde_json::to_value(&s.spec.as_ref().unwrap().selector).unwrap());
            let tier = &s.metadata.labels.as_ref().unwrap()[contract::COMPONENT];
            let picked: Vec<&Pod> = mine
                .iter()
                .chain(&theirs)
                .filter(|p| selects(&sel, &p.labels))
                .collect();
            assert_eq!(
                picked.len(),
                1,
                "{shape}: Service {:?} picks {picked:?}",
                s.metadata.name
            );
            assert_eq!(&picked[0].labels[contract::COMPONENT], tier);
            assert_eq!(picked[0].labels[contract::INSTANCE], CR);
        }
        for d in &ch.deployments {
            let spec = d.spec.as_ref().unwrap();
            let tpl = spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            assert!(
                selects(&spec.selector, tpl),
                "{shape}: {:?} does not select its pods",
                d.metadata.name
            );
        }
        // What the controller lists (and prunes) as its children: all of ours, none of theirs.
        let list = contract::children_selector(CR);
        let objects = ch
            .deployments
            .iter()
            .map(|d| d.metadata.labels.clone().unwrap())
            .chain(
                ch.services
                    .iter()
                    .map(|s| s.metadata.labels.clone().unwrap()),
            )
            .chain([ch.config_map.metadata.labels.clone().unwrap()]);
        for l in objects {
            assert!(contract::selector_matches(&list, &l), "{shape}: {l:?}");
            assert!(contract::selector_matches(
                &contract::managed_selector(),
                &l
            ));
        }
        for d in &other.deployments {
            assert!(!contract::selector_matches(
                &list,
                d.metadata.labels.as_ref().unwrap()
            ));
        }
        // Exactly one entry pod per plan: the first tier's.
        let entries: Vec<&Pod> = mine
            .iter()
            .filter(|p| contract::selector_matches(&contract::entry_pods_selector(CR), &p.labels))
            .collect();
        assert_eq!(entries.len(), 1, "{shape}");
        let first = shape.split('-').next().unwrap();
        assert_eq!(entries[0].labels[contract::COMPONENT], first, "{shape}");
        for tier in ["end", "edge", "cloud"] {
            let sel = contract::tier_pods_selector(CR, tier);
            let n = mine
                .iter()
                .filter(|p| contract::selector_matches(&sel, &p.labels))
                .count();
            assert_eq!(n, usize::from(shape.contains(tier)), "{shape} {tier}");
        }
    }
}

/// The e2e suite's selectors: the Rust tests build theirs from the contract; e2e/run.sh writes
/// its own, which must select what the builders make (or, on nodes, the tier labels the sample
/// places by).
#[test]
fn the_e2e_suites_selectors_select_what_the_builders_make() {
    let script = common::read("e2e/run.sh");
    let w = world();
    let controller = chart_pods(&render(&json!({})));
    let mut found = 0;
    for (i, _) in script.match_indices(" -l ") {
        let rest = &script[i + 4..];
        let sel: String = rest
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect();
        let sel = sel.replace("$CR", CR).replace("${CR}", CR);
        found += 1;
        if sel.starts_with("cnnpc.io/tier") {
            continue; // node labels: where the sample's nodeSelectors place tiers
        }
        let hits = w
            .pods
            .iter()
            .chain(&controller)
            .filter(|p| contract::selector_matches(&sel, &p.labels))
            .count();
        assert!(
            hits > 0,
            "e2e/run.sh selects {sel:?}, which matches no pod the operator or the chart makes"
        );
    }
    assert!(found > 0, "e2e/run.sh selects nothing: the check is void");
    // The controller, as the e2e tests find it: its pod and its metrics Service.
    let objs = helm::template_in("cnnpc-e2e", "cnnpc-e2e-system", &json!({})).unwrap();
    let objs: Vec<Value> = objs.into_iter().map(|d| d.value).collect();
    let sel = contract::controller_selector("cnnpc-e2e");
    for kind in ["Deployment", "Service"] {
        let o = helm::one(&objs, kind);
        let l: k8s::Labels = serde_json::from_value(o["metadata"]["labels"].clone()).unwrap();
        assert!(
            contract::selector_matches(&sel, &l),
            "{sel} misses the controller {kind}: {l:?}"
        );
    }
    let pod = &chart_pods(&objs)[0];
    assert!(
        contract::selector_matches(&sel, &pod.labels),
        "{sel} misses the controller pod"
    );
    assert!(!contract::selector_matches(
        &contract::controller_selector("other"),
        &pod.labels
    ));
    let rust = common::read("tests/e2e.rs");
    assert!(
        !rust.contains("app.kubernetes.io/") && !rust.contains("cnnpc.io/plan-id"),
        "tests/e2e.rs must build its selectors from cnnpc::operator::labels"
    );
}

/// Who is who in the reachability matrix.
fn cast(objs: &[Value]) -> Vec<(&'static str, Pod)> {
    let ch = plans::children(
        &plans::demo(),
        &plans::plan("end-edge-cloud", 8, Encoding::Int8),
    );
    let shards = plans::pods(&ch);
    let tier = |t: &str| {
        shards
            .iter()
            .find(|p| p.labels[contract::COMPONENT] == t)
            .unwrap()
            .clone()
    };
    let controller = chart_pods(objs)
        .into_iter()
        .next()
        .expect("the controller pod");
    vec![
        ("end", tier("end")),
        ("edge", tier("edge")),
        ("cloud", tier("cloud")),
        ("controller", controller),
        (
            "client",
            Pod::new("client", CR_NS, labels(&[("app", "client")])),
        ),
        (
            "other pod",
            Pod::new("other", CR_NS, labels(&[("app", "other")])),
        ),
        (
            "prometheus",
            Pod::new(
                "prometheus-0",
                "monitoring",
                labels(&[("app", "prometheus")]),
            ),
        ),
    ]
}

fn policies(objs: &[Value]) -> Vec<NetworkPolicy> {
    by_kind(objs, "NetworkPolicy")
        .into_iter()
        .map(|n| serde_json::from_value(n.clone()).unwrap())
        .collect()
}

/// The matrix as text: one row per source, ✓/✗ per destination tier.
fn matrix(objs: &[Value]) -> String {
    let nps = policies(objs);
    let who = cast(objs);
    let mut s = String::from("from \\ to   end edge cloud\n");
    for (name, src) in &who {
        s.push_str(&format!("{name:<11}"));
        for (_, dst) in who.iter().take(3) {
            s.push_str(if ingress_allowed(&nps, src, dst, "http") {
                "  ✓ "
            } else {
                "  ✗ "
            });
        }
        s.push('\n');
    }
    s
}

#[test]
fn network_policies_allow_the_intended_matrix() {
    // Defaults: the entry (first tier) is open to clients, skipping the edge is allowed.
    let open = render(&values_all_monitors(json!({})));
    let got = matrix(&open);
    println!("networkPolicy.enabled=true (defaults):\n{got}");
    assert_eq!(
        got,
        "from \\ to   end edge cloud\n\
         end          ✓   ✓   ✓ \n\
         edge         ✓   ✗   ✓ \n\
         cloud        ✓   ✗   ✗ \n\
         controller   ✓   ✓   ✓ \n\
         client       ✓   ✗   ✗ \n\
         other pod    ✓   ✗   ✗ \n\
         prometheus   ✓   ✗   ✗ \n"
    );
    // Locked down: only listed clients enter, the edge may not be skipped, Prometheus scrapes.
    let strict = render(&values_all_monitors(json!({"networkPolicy": {
        "entryFrom": [{"podSelector": {"matchLabels": {"app": "client"}}}],
        "allowSkippedTier": false,
        "extraFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    }})));
    let got = matrix(&strict);
    println!("entryFrom=[app=client], allowSkippedTier=false, extraFrom=[ns monitoring]:\n{got}");
    assert_eq!(
        got,
        "from \\ to   end edge cloud\n\
         end          ✗   ✓   ✗ \n\
         edge         ✗   ✗   ✓ \n\
         cloud        ✗   ✗   ✗ \n\
         controller   ✓   ✓   ✓ \n\
         client       ✓   ✗   ✗ \n\
         other pod    ✗   ✗   ✗ \n\
         prometheus   ✓   ✓   ✓ \n"
    );
}

#[test]
fn every_hop_every_plan_shape_needs_is_allowed_and_the_controller_reaches_every_shard() {
    for extra in [
        json!({}),
        json!({"networkPolicy": {"entryFrom": [{"podSelector": {"matchLabels": {"app": "client"}}}]}}),
    ] {
        let objs = render(&values_all_monitors(extra.clone()));
        let nps = policies(&objs);
        let controller = chart_pods(&objs).remove(0);
        let client = Pod::new("client", CR_NS, labels(&[("app", "client")]));
        for shape in SHAPES {
            let ch = plans::children(&plans::demo(), &plans::plan(shape, 8, Encoding::Int4));
            let pods = plans::pods(&ch);
            let by_deploy: BTreeMap<String, &Pod> = ch
                .deployments
                .iter()
                .zip(&pods)
                .map(|(d, p)| (d.metadata.name.clone().unwrap(), p))
                .collect();
            for (from, url) in plans::next_urls(&ch) {
                // http://<service>.<ns>.svc:8080 → the Service → the pods it selects.
                let host = url
                    .trim_start_matches("http://")
                    .split(['.', ':'])
                    .next()
                    .unwrap();
                let svc = ch
                    .services
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(host))
                    .unwrap_or_else(|| panic!("{shape}: --next {url} names no Service"));
                let sel = match_labels(
                    &serde_json::to_value(&svc.spec.as_ref().unwrap().selector).unwrap(),
                );
                let dst: Vec<&&Pod> = by_deploy
                    .values()
                    .filter(|p| selects(&sel, &p.labels))
                    .collect();
                assert_eq!(dst.len(), 1, "{shape}: {url}");
                let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
                    .target_port
                    .clone();
                let port = match port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                    other => panic!("{other:?}"),
                };
                assert!(
                    ingress_allowed(&nps, by_deploy[&from], dst[0], &port),
                    "{shape} with {extra}: {from} cannot reach {url}"
                );
            }
            for p in &pods {
                assert!(
                    ingress_allowed(&nps, &controller, p, "http"),
                    "{shape}: the controller cannot scrape {}",
                    p.name
                );
                let entry = p.labels.contains_key(contract::ENTRY);
                assert_eq!(
                    ingress_allowed(&nps, &client, p, "http"),
                    entry,
                    "{shape}: client → {}",
                    p.name
                );
            }
        }
    }
}
