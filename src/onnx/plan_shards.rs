//! From a plan to the shards its tiers run. The plan's cuts are found in the model by the
//! tensors that cross them (profile indices alone could name another model's cuts). The model
//! is pruned as the plan says, with statistics from the fit inputs the live oracle measured
//! with, so the shards compute what was measured. Then it is split at those cuts, and each
//! shard goes to its tier.

use super::calibration::Batch;
use super::cuts::Cut;
use super::error::OnnxError;
use super::prune::{prune_many, Method};
use super::split::split;
use crate::planner::plan::Plan;

/// One tier of a plan, in pipeline order, up to the last tier that computes.
#[derive(Debug, Clone)]
pub struct TierShard {
    pub tier: String,
    /// `None`: the tier runs nothing in this plan and only relays (its links are still crossed).
    pub model: Option<Vec<u8>>,
}

/// The model's cuts named by the plan's cuts, in plan order.
pub fn match_plan_cuts(cuts: &[Cut], plan: &Plan) -> Result<Vec<Cut>, OnnxError> {
    plan.cuts
        .iter()
        .map(|pc| {
            if pc.tensors.is_empty() {
                return Err(OnnxError::BadInput(format!(
                    "plan cut {} names no tensors, so it cannot be found in the model; plan with \
                     a profile made by `cnnpc profile`",
                    pc.point
                )));
            }
            let cut = cuts
                .iter()
                .find(|c| c.tensor_names() == pc.tensors)
                .ok_or_else(|| {
                    OnnxError::BadInput(format!(
                        "plan cut {} crosses {:?}, which is not a cut of this model (was the plan \
                         made for another model?)",
                        pc.point, pc.tensors
                    ))
                })?;
            if cut.channels != u64::from(pc.channels) {
                return Err(OnnxError::BadInput(format!(
                    "plan cut {} has {} channels, the model's cut {} has {}",
                    pc.point, pc.channels, cut.index, cut.channels
                )));
            }
            if pc.kept_channels == 0 || pc.kept_channels > pc.channels {
                return Err(OnnxError::BadInput(format!(
                    "plan cut {} keeps {} of {} channels",
                    pc.point, pc.kept_channels, pc.channels
                )));
            }
            Ok(cut.clone())
        })
        .collect()
}

/// Whether the plan prunes any cut (and so needs calibration inputs to build its shards).
pub fn prunes(plan: &Plan) -> bool {
    plan.cuts.iter().any(|c| c.kept_channels < c.channels)
}

/// The model as the plan runs it (pruned where it prunes) and the shard of every tier. `fit`
/// is required when the plan prunes: the inputs pruning statistics come from.
pub fn plan_shards(
    model: &[u8],
    cuts: &[Cut],
    plan: &Plan,
    fit: Option<&Batch>,
    method: Method,
) -> Result<(Vec<u8>, Vec<TierShard>), OnnxError> {
    let chosen = match_plan_cuts(cuts, plan)?;
    let names: Vec<Vec<String>> = chosen.iter().map(Cut::tensor_names).collect();
    let pruned_cuts: Vec<(Vec<String>, usize)> = plan
        .cuts
        .iter()
        .zip(&names)
        .filter(|(pc, _)| pc.kept_channels < pc.channels)
        .map(|(pc, n)| (n.clone(), pc.kept_channels as usize))
        .collect();
    let pruned = if pruned_cuts.is_empty() {
        model.to_vec()
    } else {
        let fit = fit.ok_or_else(|| {
            OnnxError::BadInput("the plan prunes, so its shards need calibration inputs".into())
        })?;
        prune_many(model, &pruned_cuts, fit, method)?
    };
    let shards = split(&pruned, &names)?;
    let tiers = assign_to_tiers(shards, plan)?;
    Ok((pruned, tiers))
}

/// Give `shards` (pipeline order, one per computing tier) to the plan's tiers.
pub fn assign_to_tiers(shards: Vec<Vec<u8>>, plan: &Plan) -> Result<Vec<TierShard>, OnnxError> {
    let last = plan
        .tiers
        .iter()
        .rposition(|t| t.segments.is_some())
        .ok_or_else(|| OnnxError::BadInput("the plan runs nothing on any tier".into()))?;
    let computing = plan.tiers.iter().filter(|t| t.segments.is_some()).count();
    if computing != shards.len() {
        return Err(OnnxError::BadInput(format!(
            "the plan has {} cuts but {computing} computing tiers (it should be one more)",
            plan.cuts.len()
        )));
    }
    let mut shards = shards.into_iter();
    Ok(plan.tiers[..=last]
        .iter()
        .map(|t| TierShard {
            tier: t.tier.clone(),
            model: t.segments.and_then(|_| shards.next()),
        })
        .collect())
}
