//! The reference profiles and topologies the planner tests search on.

use cnnpc::planner::profile::Profile;
use cnnpc::planner::topology::{Topology, TopologySpec};

/// `model_profile/<model>.yaml`.
pub fn profile(model: &str) -> Profile {
    Profile::parse(&super::read(&format!("model_profile/{model}.yaml"))).unwrap()
}

/// End device `device`, 20 Mbit/s end→edge, `ec` Mbit/s edge→cloud.
pub fn topo(p: &Profile, device: &str, ec: f64) -> Topology {
    TopologySpec::end_edge_cloud(device, 20.0, ec)
        .build(p)
        .unwrap()
}
