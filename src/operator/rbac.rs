//! Exactly the API access the controller uses (the Helm chart's ClusterRole is tested
//! against this list).

/// One RBAC rule: API group ("" = core), resource, verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const WATCH: &[&str] = &["get", "list", "watch"];
const CHILDREN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Every (apiGroup, resource, verbs) the controller calls.
/// - the custom resource: watched; its status written by server-side apply (`patch`);
/// - children (ConfigMaps, Deployments, Services, HorizontalPodAutoscalers): listed, watched, applied (`create` is needed
///   for server-side apply of a new object, `patch` otherwise), deleted when no longer wanted;
///   ConfigMaps are also read for `spec.profile`;
/// - events (events.k8s.io): created, and patched when the recorder folds repeats into a series;
/// - the leader-election Lease: read, created, updated.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            api_group: "cnnpc.io",
            resource: "collaborativeinferences",
            verbs: WATCH,
        },
        Rule {
            api_group: "cnnpc.io",
            resource: "collaborativeinferences/status",
            verbs: &["get", "patch"],
        },
        Rule {
            api_group: "",
            resource: "configmaps",
            verbs: CHILDREN,
        },
        Rule {
            api_group: "",
            resource: "services",
            verbs: CHILDREN,
        },
        Rule {
            api_group: "apps",
            resource: "deployments",
            verbs: CHILDREN,
        },
        Rule {
            api_group: "autoscaling",
            resource: "horizontalpodautoscalers",
            verbs: CHILDREN,
        },
        Rule {
            api_group: "events.k8s.io",
            resource: "events",
            verbs: &["create", "patch"],
        },
        Rule {
            api_group: "coordination.k8s.io",
            resource: "leases",
            verbs: &["get", "create", "update"],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_unique_and_least_privilege() {
        let r = rules();
        let mut keys: Vec<_> = r.iter().map(|r| (r.api_group, r.resource)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), r.len(), "one rule per resource");
        // Nothing may touch secrets, pods or cluster-wide objects.
        for rule in &r {
            assert!(!["secrets", "pods", "nodes", "clusterroles"].contains(&rule.resource));
            assert!(!rule.verbs.contains(&"*"));
        }
        let ci = r
            .iter()
            .find(|r| r.resource == "collaborativeinferences")
            .unwrap();
        assert!(
            !ci.verbs.contains(&"patch"),
            "the controller never edits the spec"
        );
    }
}
