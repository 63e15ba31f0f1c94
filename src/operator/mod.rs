//! The Kubernetes operator: the only part that imports kube / k8s-openapi.
//!
//! - [`crd`]: the `CollaborativeInference` resource and its generated CRD.
//! - [`labels`]: the label contract every selector (chart, dashboard, e2e) is checked against.
//! - [`resources`]: pure builders of the children (plan ConfigMap, Deployments, Services).
//! - [`status`], [`core`]: conditions and the controller's decisions, as pure functions.
//! - [`planning`]: spec + model → plan through the one pipeline (`session`; blocking).
//! - Replanning is read → decide → apply: [`observe`] reads Prometheus or the shards,
//!   [`decide`] turns observations into assumptions and roll-out decisions (pure), [`apply`]
//!   server-side applies and prunes every child kind.
//! - [`rollout`]: whole-plan rollout beside the serving plan, the entry switch and the drain
//!   (pure).
//! - [`fetch`]: models over HTTP(S) with SHA-256, or from a mounted directory.
//! - [`controller`]: the reconciler (kube I/O), [`lease`]: leader election, [`metrics`].
//! - [`rbac`]: the API access the controller needs.
pub mod apply;
pub mod controller;
pub mod core;
pub mod crd;
pub mod crd_reference;
pub mod decide;
pub mod evidence;
pub mod fetch;
#[cfg(test)]
mod fixtures;
pub mod history;
pub mod labels;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod planning;
pub mod rbac;
pub mod resources;
pub mod rollout;
pub mod run;
pub mod status;
