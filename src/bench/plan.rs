//! `cnnpc bench plan`: CNNPC against the exhaustive optimum on every reference setting.
//!
//! Accuracy comes from the synthetic surface (`planner::surface`), smooth and with ±0.3%
//! measurement noise, since the reference published no accuracy tables. For each setting and
//! accuracy floor it records both searches' latency, oracle calls and wall time, the gap, and
//! the chosen plan's speedup over end-only and over the best uncompressed split.

use crate::planner::accuracy::{Measurements, MeasuringOracle, WireEncoding};
use crate::planner::plan::Plan;
use crate::planner::profile::Profile;
use crate::planner::search::{Objective, Planner, SearchConfig, Strategy};
use crate::planner::surface::{SampledSurface, SyntheticSurface};
use crate::session::{self, Accuracy, ProfileSource, TierChoice, Topology};
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
    /// The same CNNPC search on the surface seen through [`SAMPLES`] evaluation samples, with
    /// sequential measurement: its plan's latency, points measured, and samples run.
    pub sampled_ms: f64,
    pub sampled_oracle_calls: usize,
    pub sampled_samples: usize,
    /// Its plan's true (surface) accuracy meets A0 − the rule's tolerance.
    pub sampled_meets: bool,
}

/// The evaluation set of the sampled search (the demo's for a 0.99 floor).
pub const SAMPLES: usize = 384;

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
    /// Sampled searches: points measured in total, samples run in total, and those samples
    /// as whole-set measurements (samples / SAMPLES): what the points cost.
    pub sampled_oracle_calls: usize,
    pub sampled_samples: usize,
    pub sampled_whole_set_equivalents: f64,
    pub sampled_meets: usize,
}

#[derive(Debug, Serialize)]
pub struct PlanBench {
    pub summary: PlanBenchSummary,
    pub rows: Vec<PlanBenchRow>,
    /// Several encodings at once, each search run without and with reuse across encodings.
    pub reuse: ReuseBench,
}

/// One setting of the reuse grid: the same search with `SearchConfig::reuse` off (each
/// encoding searched on its own: before) and on (after), against the exhaustive optimum over
/// the same encodings, on the exact surface and through the sampled one.
#[derive(Debug, Serialize)]
pub struct ReuseRow {
    pub model: String,
    pub end_device: String,
    pub edge_cloud_mbps: f64,
    pub min_accuracy: f64,
    pub exhaustive_ms: f64,
    pub before_calls: usize,
    pub after_calls: usize,
    pub before_ms: f64,
    pub after_ms: f64,
    /// (plan − exhaustive) / exhaustive, percent.
    pub before_gap_percent: f64,
    pub after_gap_percent: f64,
    /// The plan's true accuracy meets A0.
    pub before_meets: bool,
    pub after_meets: bool,
    /// Through the sampled surface: points and samples, and whether the plan's true accuracy
    /// meets A0 − tolerance.
    pub sampled_before_calls: usize,
    pub sampled_after_calls: usize,
    pub sampled_before_samples: usize,
    pub sampled_after_samples: usize,
    pub sampled_before_meets: bool,
    pub sampled_after_meets: bool,
}

#[derive(Debug, Serialize)]
pub struct ReuseBench {
    pub encodings: Vec<WireEncoding>,
    pub floors: Vec<f64>,
    pub searches: usize,
    pub before_calls: usize,
    pub after_calls: usize,
    pub before_meets: usize,
    pub after_meets: usize,
    pub before_max_gap_percent: f64,
    pub after_max_gap_percent: f64,
    pub sampled_before_calls: usize,
    pub sampled_after_calls: usize,
    pub sampled_before_samples: usize,
    pub sampled_after_samples: usize,
    pub sampled_before_meets: usize,
    pub sampled_after_meets: usize,
    pub rows: Vec<ReuseRow>,
}

/// The reuse grid: 2 models × 2 end devices × 3 edge→cloud bandwidths × these floors (36
/// searches), with the demo's encodings.
pub const REUSE_FLOORS: [f64; 3] = [0.99, 0.95, 0.9];
pub const REUSE_ENCODINGS: [WireEncoding; 2] = [WireEncoding::Int8, WireEncoding::Int4];

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
                for (surface, noise) in [("smooth", 0.0), ("noisy", 0.003)] {
                    for &a0 in floors {
                        let row = bench_one(p, device, ec, surface, noise, a0)?;
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
        reuse: reuse_bench(profiles, &REUSE_FLOORS, &REUSE_ENCODINGS)?,
    })
}

/// The reference topology with end device `device` and `ec` Mbit/s edge→cloud, built.
fn reference_topology(
    profile: &Profile,
    device: &str,
    ec: f64,
) -> Result<crate::planner::topology::Topology, String> {
    let mut topology = Topology::end_edge_cloud(20.0, ec);
    topology.tiers[0] = TierChoice {
        device: Some(device.to_string()),
        ..TierChoice::new("end")
    };
    session::topology_spec(&topology, profile)
        .map_err(|e| e.to_string())?
        .build(profile)
        .map_err(|e| e.to_string())
}

/// A search's (latency, points, samples, true accuracy) on `oracle`, sampled or exact.
#[allow(clippy::too_many_arguments)]
fn one_search(
    planner: &Planner,
    surface: &SyntheticSurface,
    sampled: bool,
    strategy: Strategy,
    encodings: &[WireEncoding],
    reuse: bool,
    a0: f64,
) -> Result<(f64, usize, usize, f64, f64), String> {
    let mut exact = surface.clone();
    let mut through = SampledSurface {
        surface: surface.clone(),
        samples: SAMPLES,
        seed: 11,
    };
    let oracle: &mut dyn crate::planner::accuracy::AccuracyOracle =
        if sampled { &mut through } else { &mut exact };
    let mut known = Measurements::default();
    let mut m = MeasuringOracle::new(oracle, &mut known);
    let mut config = SearchConfig::new(encodings.to_vec(), true);
    config.reuse = reuse;
    let c = planner
        .search(
            strategy,
            Some(Objective::MinLatency { min_accuracy: a0 }),
            &config,
            Some(&mut m),
        )
        .map_err(|e| e.to_string())?;
    let truth = surface.accuracy(&planner.point(c.layout, &c.kept, c.encoding));
    let threshold = m.threshold_for(a0);
    Ok((c.latency_ms, m.calls, m.samples, truth, threshold))
}

/// CNNPC with several encodings, reuse off against on, over the grid (see [`ReuseRow`]).
pub fn reuse_bench(
    profiles: &[Profile],
    floors: &[f64],
    encodings: &[WireEncoding],
) -> Result<ReuseBench, String> {
    let mut rows = Vec::new();
    for p in profiles {
        for device in p.devices_for("end") {
            for ec in [10.0, 5.0, 1.0] {
                let t = reference_topology(p, device, ec)?;
                let planner = Planner::new(p, &t).map_err(|e| e.to_string())?;
                let surface = SyntheticSurface::new(p.cuts.len(), 1.0, 0.0, 7);
                for &a0 in floors {
                    let run = |sampled, strategy, reuse| {
                        one_search(&planner, &surface, sampled, strategy, encodings, reuse, a0)
                    };
                    let ex = run(false, Strategy::Exhaustive, false)?;
                    let (b, a) = (
                        run(false, Strategy::Cnnpc, false)?,
                        run(false, Strategy::Cnnpc, true)?,
                    );
                    let (sb, sa) = (
                        run(true, Strategy::Cnnpc, false)?,
                        run(true, Strategy::Cnnpc, true)?,
                    );
                    let gap = |ms: f64| (ms - ex.0) / ex.0 * 100.0;
                    rows.push(ReuseRow {
                        model: p.model.clone(),
                        end_device: device.to_string(),
                        edge_cloud_mbps: ec,
                        min_accuracy: a0,
                        exhaustive_ms: ex.0,
                        before_calls: b.1,
                        after_calls: a.1,
                        before_ms: b.0,
                        after_ms: a.0,
                        before_gap_percent: gap(b.0),
                        after_gap_percent: gap(a.0),
                        before_meets: b.3 >= a0,
                        after_meets: a.3 >= a0,
                        sampled_before_calls: sb.1,
                        sampled_after_calls: sa.1,
                        sampled_before_samples: sb.2,
                        sampled_after_samples: sa.2,
                        sampled_before_meets: sb.3 >= sb.4,
                        sampled_after_meets: sa.3 >= sa.4,
                    });
                }
            }
        }
    }
    let sum = |f: &dyn Fn(&ReuseRow) -> usize| rows.iter().map(f).sum::<usize>();
    let count = |f: &dyn Fn(&ReuseRow) -> bool| rows.iter().filter(|r| f(r)).count();
    let max = |f: &dyn Fn(&ReuseRow) -> f64| rows.iter().map(f).fold(0.0f64, f64::max);
    Ok(ReuseBench {
        encodings: encodings.to_vec(),
        floors: floors.to_vec(),
        searches: rows.len(),
        before_calls: sum(&|r| r.before_calls),
        after_calls: sum(&|r| r.after_calls),
        before_meets: count(&|r| r.before_meets),
        after_meets: count(&|r| r.after_meets),
        before_max_gap_percent: max(&|r| r.before_gap_percent),
        after_max_gap_percent: max(&|r| r.after_gap_percent),
        sampled_before_calls: sum(&|r| r.sampled_before_calls),
        sampled_after_calls: sum(&|r| r.sampled_after_calls),
        sampled_before_samples: sum(&|r| r.sampled_before_samples),
        sampled_after_samples: sum(&|r| r.sampled_after_samples),
        sampled_before_meets: count(&|r| r.sampled_before_meets),
        sampled_after_meets: count(&|r| r.sampled_after_meets),
        rows,
    })
}

/// One planning session on the reference topology with end device `device`.
fn plan(
    profile: &Profile,
    device: &str,
    ec: f64,
    surface: &SyntheticSurface,
    strategy: Strategy,
    objective: Option<Objective>,
) -> Result<(session::Outcome, f64), String> {
    let mut topology = Topology::end_edge_cloud(20.0, ec);
    topology.tiers[0] = TierChoice {
        device: Some(device.to_string()),
        ..TierChoice::new("end")
    };
    let request = session::Request {
        name: profile.model.clone(),
        model: None,
        input_shape: None,
        profile: ProfileSource::Given(profile.clone()),
        accuracy: Accuracy::Surface(surface.clone()),
        known: Measurements::default(),
        topology,
        objective,
        strategy,
        config: SearchConfig::new(vec![WireEncoding::Int8], true),
        baselines: Some(SearchConfig::new(vec![WireEncoding::Int8], false)),
    };
    let start = Instant::now();
    let out = session::run(request, &mut |_| {}).map_err(|e| e.to_string())?;
    Ok((out, start.elapsed().as_secs_f64() * 1e3))
}

fn baseline(out: &session::Outcome, strategy: Strategy) -> Result<&Plan, String> {
    out.baselines
        .iter()
        .find(|b| b.strategy == strategy.name())
        .ok_or_else(|| format!("no {} baseline", strategy.name()))
}

fn bench_one(
    profile: &Profile,
    device: &str,
    ec: f64,
    surface: &str,
    noise: f64,
    a0: f64,
) -> Result<PlanBenchRow, String> {
    let objective = Some(Objective::MinLatency { min_accuracy: a0 });
    let oracle = SyntheticSurface::new(profile.cuts.len(), 1.0, noise, 7);
    let (cnnpc, wall) = plan(profile, device, ec, &oracle, Strategy::Cnnpc, objective)?;
    let (ex, ex_wall) = plan(
        profile,
        device,
        ec,
        &oracle,
        Strategy::Exhaustive,
        objective,
    )?;
    let end = baseline(&cnnpc, Strategy::EndOnly)?;
    let ns = baseline(&cnnpc, Strategy::Neurosurgeon)?;
    let p = &cnnpc.plan;
    let truth = oracle.accuracy(&p.compression_point(profile.wire_encoding));
    let sampled = sampled_search(profile, device, ec, &oracle, a0)?;
    Ok(PlanBenchRow {
        model: profile.model.clone(),
        end_device: device.to_string(),
        edge_cloud_mbps: ec,
        surface: surface.to_string(),
        min_accuracy: a0,
        cnnpc_ms: p.latency_ms,
        cnnpc_accuracy: p.accuracy.unwrap_or(f64::NAN),
        cnnpc_deployment: p.deployment.clone(),
        cnnpc_oracle_calls: cnnpc.calls,
        cnnpc_wall_ms: wall,
        exhaustive_ms: ex.plan.latency_ms,
        exhaustive_oracle_calls: ex.calls,
        exhaustive_wall_ms: ex_wall,
        gap_percent: (p.latency_ms - ex.plan.latency_ms) / ex.plan.latency_ms * 100.0,
        violates_objective: truth < a0,
        end_only_ms: end.latency_ms,
        neurosurgeon_ms: ns.latency_ms,
        speedup_vs_end_only: end.latency_ms / p.latency_ms,
        speedup_vs_neurosurgeon: ns.latency_ms / p.latency_ms,
        sampled_ms: sampled.0,
        sampled_oracle_calls: sampled.1,
        sampled_samples: sampled.2,
        sampled_meets: sampled.3,
    })
}

/// CNNPC through a [`SampledSurface`] of [`SAMPLES`]: (latency, points, samples, whether the
/// plan's true accuracy meets A0 − tolerance).
fn sampled_search(
    profile: &Profile,
    device: &str,
    ec: f64,
    surface: &SyntheticSurface,
    a0: f64,
) -> Result<(f64, usize, usize, bool), String> {
    let t = reference_topology(profile, device, ec)?;
    let planner = Planner::new(profile, &t).map_err(|e| e.to_string())?;
    let mut oracle = SampledSurface {
        surface: surface.clone(),
        samples: SAMPLES,
        seed: 11,
    };
    let mut known = Measurements::default();
    let mut m = MeasuringOracle::new(&mut oracle, &mut known);
    let config = SearchConfig::new(vec![WireEncoding::Int8], true);
    let objective = Objective::MinLatency { min_accuracy: a0 };
    let c = planner
        .search(Strategy::Cnnpc, Some(objective), &config, Some(&mut m))
        .map_err(|e| e.to_string())?;
    let truth = surface.accuracy(&planner.point(c.layout, &c.kept, c.encoding));
    let meets = truth >= m.rule.threshold(a0);
    Ok((c.latency_ms, m.calls, m.samples, meets))
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
        sampled_oracle_calls: rows.iter().map(|r| r.sampled_oracle_calls).sum(),
        sampled_samples: rows.iter().map(|r| r.sampled_samples).sum(),
        sampled_whole_set_equivalents: rows.iter().map(|r| r.sampled_samples).sum::<usize>() as f64
            / SAMPLES as f64,
        sampled_meets: rows.iter().filter(|r| r.sampled_meets).count(),
    }
}

/// The reuse grid as Markdown: run by run, points before and after, and the totals.
pub fn reuse_markdown(r: &ReuseBench) -> String {
    use std::fmt::Write as _;
    let enc: Vec<&str> = r.encodings.iter().map(|e| e.name()).collect();
    let mut s = format!(
        "Encodings {}: {} searches, each without reuse (before) and with it (after).\n\n\
         | model | end | edge→cloud | A0 | points before | after | gap before % | after % | sampled points before | after | samples before | after |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        enc.join(","),
        r.searches
    );
    for x in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
            x.model,
            x.end_device,
            x.edge_cloud_mbps,
            x.min_accuracy,
            x.before_calls,
            x.after_calls,
            x.before_gap_percent,
            x.after_gap_percent,
            x.sampled_before_calls,
            x.sampled_after_calls,
            x.sampled_before_samples,
            x.sampled_after_samples
        );
    }
    let _ = writeln!(
        s,
        "\nExact surface: {} points before, {} after; plans meeting A0 {}/{} before, {}/{}; \
         max gap {:.2}% before, {:.2}% after.\nSampled (384, sequential): {} points and {} \
         samples before, {} and {} after; plans meeting A0 − 0.01 {}/{} before, {}/{} after.",
        r.before_calls,
        r.after_calls,
        r.before_meets,
        r.searches,
        r.after_meets,
        r.searches,
        r.before_max_gap_percent,
        r.after_max_gap_percent,
        r.sampled_before_calls,
        r.sampled_before_samples,
        r.sampled_after_calls,
        r.sampled_after_samples,
        r.sampled_before_meets,
        r.searches,
        r.sampled_after_meets,
        r.searches
    );
    s
}
