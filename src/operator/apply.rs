//! Server-side apply and prune, once for every child kind (stackable's `ClusterResources` is
//! the model): apply each wanted object whose content differs from the live one (by the spec
//! hash the builders stamp), delete each live child no longer wanted. The field manager is
//! the controller's, and it forces ownership of its own fields.

use super::labels::MANAGER;
use super::resources::spec_hash;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// What one [`apply_and_prune`] did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
}

pub fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Applies `wanted` (skipping objects whose live copy in `live` carries the same spec hash) and
/// deletes every object of `live` that is neither wanted nor in `keep`.
pub async fn apply_and_prune<K>(
    api: &Api<K>,
    wanted: &[K],
    live: &[K],
    keep: &[String],
) -> Result<Applied, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let mut done = Applied::default();
    for w in wanted {
        let name = w.name_any();
        let current = live.iter().find(|l| l.name_any() == name);
        if current.and_then(|l| spec_hash(l.meta())) != spec_hash(w.meta()) {
            api.patch(&name, &params(), &Patch::Apply(w)).await?;
            done.applied.push(name);
        }
    }
    for l in live {
        let name = l.name_any();
        if !wanted.iter().any(|w| w.name_any() == name) && !keep.contains(&name) {
            api.delete(&name, &DeleteParams::background()).await?;
            done.deleted.push(name);
        }
    }
    Ok(done)
}
