//! The label contract of everything the controller creates, defined once.
//!
//! In the style of KServe (`serving.kserve.io/inferenceservice`, `component`): the standard
//! `app.kubernetes.io/*` keys say which resource and which tier a pod or Service belongs to,
//! and two `cnnpc.io/*` keys carry what the standard ones cannot. Every selector that picks
//! shards reads these: the child builders and the controller (here), the Helm chart's
//! NetworkPolicies and PodMonitor (`charts/cnnpc/templates/_helpers.tpl`), the dashboard (through
//! the PodMonitor's relabelings, [`prom`]) and the e2e suite. `tests/labels.rs` renders the chart
//! with the real helm and checks each of its selectors against what the builders produce.
//!
//! | key | value | on |
//! |---|---|---|
//! | `app.kubernetes.io/name` | `cnnpc-shard` | every child |
//! | `app.kubernetes.io/instance` | the CollaborativeInference's name | every child |
//! | `app.kubernetes.io/component` | the tier (`end`, `edge`, `cloud`), `plan` or `entry` | every child |
//! | `app.kubernetes.io/part-of` | `cnnpc` | every child |
//! | `app.kubernetes.io/managed-by` | `cnnpc-controller` | every child |
//! | `cnnpc.io/plan-id` | the plan the object serves | shard pods, their Deployments and Services |
//! | `cnnpc.io/entry` | `"true"` | the pods of the plan's first tier (where requests enter) |
//!
//! Several plans' shards run side by side during a rollout, so every shard selector (a
//! Deployment's, a next-hop Service's, the entry Service's) includes the plan id: a plan's
//! tiers only ever talk to the same plan's tiers, and the entry moves from one plan to the next
//! by changing one label value.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PLAN_ID: &str = "cnnpc.io/plan-id";
pub const ENTRY: &str = "cnnpc.io/entry";

/// `app.kubernetes.io/name` of every child.
pub const SHARD_APP: &str = "cnnpc-shard";
/// `app.kubernetes.io/managed-by` of every child (also the field manager).
pub const MANAGER: &str = "cnnpc-controller";
/// `app.kubernetes.io/part-of` of every child.
pub const PROJECT: &str = "cnnpc";
/// `app.kubernetes.io/component` of the plan ConfigMap.
pub const PLAN_COMPONENT: &str = "plan";
/// `app.kubernetes.io/component` of the entry Service.
pub const ENTRY_COMPONENT: &str = "entry";

/// Labels of Prometheus series scraped from shard pods, as the chart's PodMonitor relabels the
/// pod labels above (the controller's metrics carry `namespace` and `name` themselves).
pub mod prom {
    /// The CollaborativeInference (from `app.kubernetes.io/instance`).
    pub const NAME: &str = "name";
    /// The tier the pod runs (from `app.kubernetes.io/component`); metrics' own `tier` label is
    /// the same value, this one is on every series, `cnnpc_plan_info` included.
    pub const TIER: &str = "pod_tier";
    /// The plan the pod serves (from `cnnpc.io/plan-id`): several plans' pods run side by side
    /// during a rollout, and the controller's queries must tell them apart.
    pub const PLAN_ID: &str = "pod_plan_id";
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The labels on every child object of `instance`; `component` is the tier, or
/// [`PLAN_COMPONENT`].
pub fn child(instance: &str, component: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME, SHARD_APP),
        (INSTANCE, instance),
        (COMPONENT, component),
        (PART_OF, PROJECT),
        (MANAGED_BY, MANAGER),
    ])
}

/// The labels of a shard pod: the child labels, the plan id, and [`ENTRY`] on the first tier.
pub fn shard_pod(
    instance: &str,
    tier: &str,
    plan_id: &str,
    entry: bool,
) -> BTreeMap<String, String> {
    let mut l = child(instance, tier);
    l.insert(PLAN_ID.into(), plan_id.into());
    if entry {
        l.insert(ENTRY.into(), "true".into());
    }
    l
}

/// What a tier's Deployment and next-hop Service select: the pods of one tier of one plan of
/// one resource.
pub fn tier_selector(instance: &str, tier: &str, plan_id: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME, SHARD_APP),
        (INSTANCE, instance),
        (COMPONENT, tier),
        (PLAN_ID, plan_id),
    ])
}

/// What the resource's entry Service selects: the first tier of the serving plan.
pub fn entry_selector(instance: &str, plan_id: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME, SHARD_APP),
        (INSTANCE, instance),
        (ENTRY, "true"),
        (PLAN_ID, plan_id),
    ])
}

/// Selector of every child of `instance` (what the controller lists and prunes), as a
/// label-selector string.
pub fn children_selector(instance: &str) -> String {
    format!("{INSTANCE}={instance},{MANAGED_BY}={MANAGER}")
}

/// Selector of every object any cnnpc controller manages (what the controller watches).
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Selector of `instance`'s shard pods of `tier` (what the e2e suite looks pods up by).
pub fn tier_pods_selector(instance: &str, tier: &str) -> String {
    format!("{NAME}={SHARD_APP},{INSTANCE}={instance},{COMPONENT}={tier}")
}

/// Selector of `instance`'s entry pods (the first tier of the plan).
pub fn entry_pods_selector(instance: &str) -> String {
    format!("{NAME}={SHARD_APP},{INSTANCE}={instance},{ENTRY}=true")
}

/// Selector of the chart's controller pods and metrics Service of Helm release `release`
/// (`cnnpc.controllerSelectorLabels` in charts/cnnpc/templates/_helpers.tpl, default
/// `nameOverride`): what the e2e suite finds the controller by.
pub fn controller_selector(release: &str) -> String {
    format!("{NAME}=cnnpc,{INSTANCE}={release},{COMPONENT}=controller")
}

/// Matches a label-selector string (`k=v,k2=v2`, `k`, `!k`, `k!=v`: what this crate writes)
/// against `labels`. For tests and the e2e suite, which must select exactly what `kubectl -l`
/// would.
pub fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels.get(k.trim()).map(String::as_str) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                let v = v.trim_start_matches('=');
                labels.get(k.trim()).map(String::as_str) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                !labels.contains_key(k.trim())
            } else {
                labels.contains_key(term)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_carry_the_child_labels_and_selectors_pick_them() {
        let pod = shard_pod("demo", "edge", "p1", false);
        assert!(child("demo", "edge")
            .iter()
            .all(|(k, v)| pod.get(k) == Some(v)));
        assert_eq!(pod[PLAN_ID], "p1");
        assert!(!pod.contains_key(ENTRY));
        assert!(selector_matches(&children_selector("demo"), &pod));
        assert!(selector_matches(&managed_selector(), &pod));
        assert!(selector_matches(&tier_pods_selector("demo", "edge"), &pod));
        assert!(!selector_matches(&tier_pods_selector("demo", "end"), &pod));
        assert!(!selector_matches(
            &tier_pods_selector("other", "edge"),
            &pod
        ));
        assert!(!selector_matches(&entry_pods_selector("demo"), &pod));
        assert!(selector_matches(
            &entry_pods_selector("demo"),
            &shard_pod("demo", "edge", "p1", true)
        ));
        let selects = |sel: BTreeMap<String, String>, pod: &BTreeMap<String, String>| {
            sel.iter().all(|(k, v)| pod.get(k) == Some(v))
        };
        assert!(selects(tier_selector("demo", "edge", "p1"), &pod));
        assert!(
            !selects(tier_selector("demo", "edge", "p2"), &pod),
            "another plan's pods"
        );
        let entry = shard_pod("demo", "end", "p1", true);
        assert!(selects(entry_selector("demo", "p1"), &entry));
        assert!(!selects(entry_selector("demo", "p2"), &entry));
        assert!(
            !selects(entry_selector("demo", "p1"), &pod),
            "not the first tier"
        );
    }

    #[test]
    fn selector_strings_follow_kubectl() {
        let l = map(&[("a", "1"), ("b", "2")]);
        assert!(selector_matches("a=1,b==2", &l));
        assert!(selector_matches("a, !c, b!=3", &l));
        assert!(!selector_matches("a=2", &l));
        assert!(!selector_matches("!a", &l));
        assert!(!selector_matches("c", &l));
        assert!(selector_matches("", &l));
    }
}
