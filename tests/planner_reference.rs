//! The latency model reproduces the reference CNNPC code (`latency_support.py`) on its own
//! tables: the formulas are re-implemented here straight from the reference's T_R / T_C tables,
//! independently of our profiles, and compared on every deployment shape and setting.

use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::planner::latency::{all_deployments, Deployment, LatencyModel, Layout};
use cnnpc::planner::profile::Profile;
use cnnpc::planner::search::{Planner, SearchConfig, Strategy};
use cnnpc::planner::topology::{Topology, TopologySpec};
use serde_json::Value;

const O: f64 = 0.53 + 1.13;
const O_END: f64 = 0.53 + 1.127;

fn reference() -> Value {
    serde_json::from_str(include_str!(
        "../model_profile/reference/cnnpc-profiles.json"
    ))
    .unwrap()
}

fn profile(model: &str) -> Profile {
    let text = std::fs::read_to_string(format!(
        "{}/model_profile/{model}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    Profile::parse(&text).unwrap()
}

fn table(v: &Value) -> Vec<Vec<f64>> {
    v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn topology(p: &Profile, device: &str, ec: f64, quirk: bool) -> Topology {
    let mut spec = TopologySpec::end_edge_cloud(device, 20.0, ec);
    spec.reference_cloud_only = quirk;
    spec.build(p).unwrap()
}

/// The reference `get_T`, for cuts (c1, c2) and pruned fractions (r1, r2), by shape.
fn reference_t(tr: &[Vec<f64>], tc: &[Vec<f64>], d: &Deployment, r: &[f64]) -> f64 {
    let s = tr.len();
    let sum = |from: usize, to: usize, col: usize| (from..to).map(|k| tr[k][col]).sum::<f64>();
    let (b1, b2) = (d.boundaries[0], d.boundaries[1]);
    match (b1, b2) {
        (b1, b2) if b1 == s && b2 == s => sum(0, s, 0) + O_END, // end only
        (0, b2) if b2 == s => sum(0, s, 1) + tc[0][0] + O,      // edge only
        (0, 0) => sum(0, s, 2) + tc[0][1] + O,                  // cloud only (reference quirk)
        (0, c) => tc[0][0] + sum(0, c, 1) + sum(c, s, 2) + tc[c][1] * (1.0 - r[0]) + O, // edge-cloud
        (c, b2) if b2 == s => sum(0, c, 0) + sum(c, s, 1) + tc[c][0] * (1.0 - r[0]) + O, // end-edge
        (c1, c2) if c1 == c2 => {
            sum(0, c1, 0) + sum(c1, s, 2) + (tc[c1][0] + tc[c1][1]) * (1.0 - r[0]) + O
            // end-cloud
        }
        (c1, c2) => {
            sum(0, c1, 0)
                + sum(c1, c2, 1)
                + sum(c2, s, 2)
                + tc[c1][0] * (1.0 - r[0])
                + tc[c2][1] * (1.0 - r[1])
                + O
        }
    }
}

#[test]
fn every_shape_matches_the_reference_formulas_on_every_setting() {
    let reference = reference();
    let mut checked = 0;
    for model in ["mobilenet", "resnet"] {
        let p = profile(model);
        let m = &reference["models"][model];
        for device in ["MI8", "MI8SE"] {
            let tr = table(&m["run_ms"][device]);
            for (ec, key) in [
                (10.0, "end_edge_20mbps__edge_cloud_10mbps"),
                (5.0, "end_edge_20mbps__edge_cloud_5mbps"),
                (1.0, "end_edge_20mbps__edge_cloud_1mbps"),
            ] {
                let tc = table(&m["transfer_ms"][key]);
                let topo = topology(&p, device, ec, true);
                let lm = LatencyModel {
                    profile: &p,
                    topology: &topo,
                    encoding: WireEncoding::Int8,
                };
                for d in all_deployments(3, p.segments()) {
                    let layout = Layout::new(d.clone(), p.segments(), true);
                    // Every kept count for single cuts, a spread of them for pairs.
                    let ch: Vec<u32> = layout.cuts.iter().map(|&c| p.cuts[c].channels).collect();
                    let mut kepts: Vec<Vec<u32>> = vec![ch.clone()];
                    match ch.as_slice() {
                        [c] => kepts.extend((1..=*c).map(|k| vec![k])),
                        [a, b] => {
                            for k1 in [1, a / 3, a / 2, *a] {
                                for k2 in [1, b / 4, b - 1, *b] {
                                    kepts.push(vec![k1.max(1), k2.max(1)]);
                                }
                            }
                        }
                        _ => {}
                    }
                    for kept in kepts {
                        let r: Vec<f64> = kept
                            .iter()
                            .zip(&ch)
                            .map(|(k, c)| 1.0 - f64::from(*k) / f64::from(*c))
                            .collect();
                        let ours = lm.breakdown(&layout, &kept).total_ms;
                        let linear = lm.linear(&layout).at(&kept);
                        let theirs = reference_t(&tr, &tc, &d, &r);
                        assert!(
                            (ours - theirs).abs() < 1e-3,
                            "{model} {device} {ec} Mbit/s {d:?} kept {kept:?}: ours {ours}, reference {theirs}"
                        );
                        assert!((ours - linear).abs() < 1e-9);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 3000, "only {checked} cases checked");
}

#[test]
fn design_check_values_mobilenet_mi8_10mbps() {
    let p = profile("mobilenet");
    let topo = topology(&p, "MI8", 10.0, false);
    let planner = Planner::new(&p, &topo).unwrap();
    let config = SearchConfig::new(vec![WireEncoding::Int8], false);
    let end = planner
        .search(Strategy::EndOnly, None, &config, None)
        .unwrap();
    assert!(
        (end.latency_ms - 80.0856).abs() < 1e-3,
        "{}",
        end.latency_ms
    );
    let ns = planner
        .search(Strategy::Neurosurgeon, None, &config, None)
        .unwrap();
    assert!((ns.latency_ms - 50.6316).abs() < 1e-3, "{}", ns.latency_ms);

    // Every cut pruned to one channel: the floor over all deployments.
    let model = planner.model(WireEncoding::Int8);
    let (floor, layout) = planner
        .layouts
        .iter()
        .map(|l| (model.linear(l).at(&vec![1; l.cuts.len()]), l))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    assert!((floor - 24.2787).abs() < 1e-3, "{floor}");
    assert_eq!(layout.cuts, vec![0, 4]);
    let ratios: Vec<f64> = layout
        .cuts
        .iter()
        .map(|&c| 1.0 - 1.0 / f64::from(p.cuts[c].channels))
        .collect();
    assert_eq!(ratios, vec![0.96875, 0.984375]);
}

#[test]
fn cloud_only_pays_both_links_unless_reproducing_the_reference() {
    let p = profile("mobilenet");
    let physical = topology(&p, "MI8", 10.0, false);
    let quirk = topology(&p, "MI8", 10.0, true);
    let cloud: f64 = p.devices["cloud"].run_ms.iter().sum();
    let config = SearchConfig::new(vec![WireEncoding::Int8], false);
    let t = |topo: &Topology| {
        Planner::new(&p, topo)
            .unwrap()
            .search(Strategy::CloudOnly, None, &config, None)
            .unwrap()
            .latency_ms
    };
    assert!((t(&quirk) - (cloud + 114.84388 + O)).abs() < 1e-3);
    assert!((t(&physical) - (cloud + 57.42188 + 114.84388 + O)).abs() < 1e-3);
}

#[test]
fn the_input_crosses_a_link_in_the_plan_encoding() {
    let p = profile("mobilenet"); // counts one byte per element (int8)
    let topo = topology(&p, "MI8", 10.0, false);
    let input = |encoding| {
        LatencyModel {
            profile: &p,
            topology: &topo,
            encoding,
        }
        .input_bytes()
    };
    let bytes = p.input.bytes;
    assert_eq!(input(WireEncoding::Int8), bytes);
    assert_eq!(input(WireEncoding::F16), 2.0 * bytes);
    assert_eq!(input(WireEncoding::F32), 4.0 * bytes);
    // At int4 too, half a byte per element: its accuracy is measured (tests/input_encoding.rs).
    assert_eq!(input(WireEncoding::Int4), bytes / 2.0);
}
