//! `cnnpc bench plan`: CNNPC against the exhaustive optimum on every reference setting.
//!
//! Accuracy comes from the synthetic surface (`planner::surface`), smooth and with ±0.3%
//! measurement noise, since the reference published no accuracy tables. For each setting and
//! accuracy floor it records both searches' latency, oracle calls and wall time, the gap, and
//! the chosen plan's speedup over end-only and over the best uncompressed split.

use crate::planner::accuracy::{Measurements, MeasuringOracle, WireEncoding};
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, Strategy};
use crate::planner::surface::SyntheticSurface;
use crate::planner::topology::TopologySpec;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct PlanBenchRow {
    pub model: String,
    pub end_device: String,
    pub edge_cloud_mbps: f64,
    pub surface: String,
    pub min_accuracy: f64,
    pub cnnpc_ms: f64,
    pub cnnpc_accuracy: f64,
    pub cnnpc_deployment: String,
    pub cnnpc_oracle_calls: usize,
    pub cnnpc_wall_ms: f64,
    pub exhaustive_ms: f64,
    pub exhaustive_oracle_calls: usize,
    pub exhaustive_wall_ms: f64,
    /// (cnnpc − exhaustive) / exhaustive, percent.
    pub gap_percent: f64,
    pub violates_objective: bool,
    pub end_only_ms: f64,
    pub neurosurgeon_ms: f64,
    pub speedup_vs_end_only: f64,
    pub speedup_vs_neurosurgeon: f64,
}

#[derive(Debug, Serialize)]
pub struct PlanBenchSummary {
    pub searches: usize,
    pub violations: usize,
    pub max_gap_percent: f64,
    pub mean_gap_percent: f64,
    pub exact: usize,
    pub median_oracle_calls: usize,
    pub max_oracle_calls: usize,
    pub median_exhaustive_calls: usize,
    pub max_cnnpc_wall_ms: f64,
    pub median_cnnpc_wall_ms: f64,
    pub max_speedup_vs_end_only: f64,
    pub max_speedup_vs_neurosurgeon: f64,
}

#[derive(Debug, Serialize)]
pub struct PlanBench {
    pub summary: PlanBenchSummary,
    pub rows: Vec<PlanBenchRow>,
}

pub const FLOORS: [f64; 6] = [0.99, 0.97, 0.95, 0.9, 0.85, 0.8];

/// Runs the benchmark over `profiles` (name, parsed profile). `progress` is told each row.
pub fn plan_bench(
    profiles: &[Profile],
    floors: &[f64],
    progress: &mut dyn FnMut(&PlanBenchRow),
) -> Result<PlanBench, String> {
    let mut rows = Vec::new();
    for p in profiles {
        for device in p.devices_for("end") {
            for ec in [10.0, 5.0, 1.0] {
                let topo = TopologySpec::end_edge_cloud(device, 20.0, ec)
                    .build(p)
                    .map_err(|e| e.to_string())?;
                let planner = Planner::new(p, &topo).map_err(|e| e.to_string())?;
                let config = SearchConfig::new(vec![WireEncoding::Int8], true);
                for (surface, noise) in [("smooth", 0.0), ("noisy", 0.003)] {
                    for &a0 in floors {
                        let row = bench_one(&planner, &config, device, ec, surface, noise, a0)?;
                        progress(&row);
                        rows.push(row);
                    }
                }
            }
        }
    }
    Ok(PlanBench {
        summary: summarise(&rows),
        rows,
    })
}

fn bench_one(
    planner: &Planner,
    config: &SearchConfig,
    device: &str,
    ec: f64,
    surface: &str,
    noise: f64,
    a0: f64,
) -> Result<PlanBenchRow, String> {
    let objective = Some(Objective::MinLatency { min_accuracy: a0 });
    let mut oracle = SyntheticSurface::new(planner.profile.cuts.len(), 1.0, noise, 7);
    let mut run = |strategy| -> Result<(crate::planner::search::Candidate, usize, f64), String> {
        let mut known = Measurements::default();
        let mut m = MeasuringOracle::new(&mut oracle, &mut known);
        let start = Instant::now();
        let c = planner
            .search(strategy, objective, config, Some(&mut m))
            .map_err(|e| e.to_string())?;
        Ok((c, m.calls, start.elapsed().as_secs_f64() * 1e3))
    };
    let (cnnpc, calls, wall) = run(Strategy::Cnnpc)?;
    let (ex, ex_calls, ex_wall) = run(Strategy::Exhaustive)?;
    let plain = SearchConfig::new(config.encodings.clone(), false);
    let end = planner
        .search(Strategy::EndOnly, None, &plain, None)
        .map_err(|e| e.to_string())?;
    let ns = planner
        .search(Strategy::Neurosurgeon, None, &plain, None)
        .map_err(|e| e.to_string())?;
    let truth = oracle.accuracy(&planner.point(cnnpc.layout, &cnnpc.kept, cnnpc.encoding));
    Ok(PlanBenchRow {
        model: planner.profile.model.clone(),
        end_device: device.to_string(),
        edge_cloud_mbps: ec,
        surface: surface.to_string(),
        min_accuracy: a0,
        cnnpc_ms: cnnpc.latency_ms,
        cnnpc_accuracy: cnnpc.accuracy.unwrap_or(f64::NAN),
        cnnpc_deployment: planner.layouts[cnnpc.layout].name(planner.topology),
        cnnpc_oracle_calls: calls,
        cnnpc_wall_ms: wall,
        exhaustive_ms: ex.latency_ms,
        exhaustive_oracle_calls: ex_calls,
        exhaustive_wall_ms: ex_wall,
        gap_percent: (cnnpc.latency_ms - ex.latency_ms) / ex.latency_ms * 100.0,
        violates_objective: truth < a0,
        end_only_ms: end.latency_ms,
        neurosurgeon_ms: ns.latency_ms,
        speedup_vs_end_only: end.latency_ms / cnnpc.latency_ms,
        speedup_vs_neurosurgeon: ns.latency_ms / cnnpc.latency_ms,
    })
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

fn summarise(rows: &[PlanBenchRow]) -> PlanBenchSummary {
    let gaps: Vec<f64> = rows.iter().map(|r| r.gap_percent).collect();
    let max = |v: &mut dyn Iterator<Item = f64>| v.fold(0.0f64, f64::max);
    PlanBenchSummary {
        searches: rows.len(),
        violations: rows.iter().filter(|r| r.violates_objective).count(),
        max_gap_percent: max(&mut gaps.iter().copied()),
        mean_gap_percent: gaps.iter().sum::<f64>() / gaps.len().max(1) as f64,
        exact: gaps.iter().filter(|g| g.abs() < 1e-9).count(),
        median_oracle_calls: median(rows.iter().map(|r| r.cnnpc_oracle_calls).collect())
            .unwrap_or(0),
        max_oracle_calls: rows.iter().map(|r| r.cnnpc_oracle_calls).max().unwrap_or(0),
        median_exhaustive_calls: median(rows.iter().map(|r| r.exhaustive_oracle_calls).collect())
            .unwrap_or(0),
        max_cnnpc_wall_ms: max(&mut rows.iter().map(|r| r.cnnpc_wall_ms)),
        median_cnnpc_wall_ms: median(rows.iter().map(|r| r.cnnpc_wall_ms).collect()).unwrap_or(0.0),
        max_speedup_vs_end_only: max(&mut rows.iter().map(|r| r.speedup_vs_end_only)),
        max_speedup_vs_neurosurgeon: max(&mut rows.iter().map(|r| r.speedup_vs_neurosurgeon)),
    }
}
