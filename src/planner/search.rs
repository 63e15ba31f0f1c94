//! The search: where to cut and how hard to prune, for an accuracy floor (A0) or a latency
//! budget (T0), spending as few accuracy measurements as it can.
//!
//! CNNPC's two ideas, as implemented here:
//! - **CRS (shrinking the solution space)**: transfer time is linear in the channels kept, so the
//!   incumbent's latency caps how many channels a deployment may keep and still win. Deployments
//!   whose most compressed plan cannot beat the incumbent are never looked at, and inside one only
//!   the channel counts under the cap are.
//! - **CAE (accuracy estimation)**: accuracy between measured points is linearly interpolated,
//!   conservatively; a point is measured only when its estimate says it could beat the incumbent.
//!
//! What we add: single-cut curves are bracketed (interpolation with a bisection safeguard, so a
//! curve costs O(log C) measurements at worst, usually 2–4), monotonicity rules points out for
//! free (pruning more never helps accuracy), two-cut estimates compose the single-cut curves
//! (losses at two cuts compound), every returned plan's accuracy is a *measurement*, never an
//! estimate, and refinement stops once it can gain no more than `tolerance` of the latency.

use crate::planner::accuracy::{CompressionPoint, MeasuringOracle, OracleError, WireEncoding};
use crate::planner::latency::{all_deployments, LatencyModel, Layout};
use crate::planner::profile::Profile;
use crate::planner::topology::Topology;

/// What the plan must achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Lowest latency with accuracy ≥ A0.
    MinLatency { min_accuracy: f64 },
    /// Highest accuracy with latency ≤ T0 (ms).
    MaxAccuracy { max_latency_ms: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Cnnpc,
    Exhaustive,
    Neurosurgeon,
    EndOnly,
    EdgeOnly,
    CloudOnly,
}

impl Strategy {
    pub const ALL: [Strategy; 6] = [
        Self::Cnnpc,
        Self::Exhaustive,
        Self::Neurosurgeon,
        Self::EndOnly,
        Self::EdgeOnly,
        Self::CloudOnly,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Self::Cnnpc => "cnnpc",
            Self::Exhaustive => "exhaustive",
            Self::Neurosurgeon => "neurosurgeon",
            Self::EndOnly => "end-only",
            Self::EdgeOnly => "edge-only",
            Self::CloudOnly => "cloud-only",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            format!("unknown strategy {s:?} (cnnpc, exhaustive, neurosurgeon, end-only, edge-only, cloud-only)")
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Wire encodings the plan may use; the first is used when nothing can be measured.
    pub encodings: Vec<WireEncoding>,
    /// Whether channels may be pruned at all (off: ratios stay 0).
    pub prune: bool,
    /// Stop refining once the remaining possible gain is below this fraction of the latency.
    pub tolerance: f64,
    /// Joint (two-cut) measurements allowed per deployment (12: with 6, a random search case
    /// stopped 2% above the optimum; on the benchmark grid 12 costs no extra measurement).
    pub max_joint_probes: usize,
    /// Reuse what one encoding's search measured in the next's: search the coarsest encoding
    /// first, start each from the best plan so far, and let monotonicity across encodings
    /// decide points (a finer encoding of a point that meets meets; a coarser one of a point
    /// that fails fails). Off: every encoding is searched on its own, as CNNPC does.
    pub reuse: bool,
}

impl SearchConfig {
    pub fn new(encodings: Vec<WireEncoding>, prune: bool) -> Self {
        SearchConfig {
            encodings,
            prune,
            tolerance: 0.002,
            max_joint_probes: 12,
            reuse: true,
        }
    }
}

/// One evaluated plan: a deployment, the channels kept at each of its cuts, an encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub layout: usize,
    pub kept: Vec<u32>,
    pub encoding: WireEncoding,
    pub latency_ms: f64,
    pub accuracy: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no plan reaches accuracy {required}: the best achievable is {best:.4} (the uncompressed model)")]
    AccuracyUnreachable { required: f64, best: f64 },
    #[error("no plan meets {required} ms: the fastest takes {best:.3} ms ({deployment})")]
    LatencyUnreachable {
        required: f64,
        best: f64,
        deployment: String,
    },
    #[error("strategy {0} needs a deployment this topology does not have")]
    NoSuchDeployment(&'static str),
    #[error(
        "accuracy floor {floor} needs at least {needs} evaluation samples and there are {have}: \
         even if every one agreed, the lower end of the {pct}% interval on {have} samples could \
         not reach {threshold:.4} (the floor minus the tolerance {tolerance}); give more \
         evaluation data or a lower floor",
        pct = confidence * 100.0,
        threshold = floor - tolerance
    )]
    TooFewSamples {
        floor: f64,
        tolerance: f64,
        confidence: f64,
        needs: usize,
        have: usize,
    },
    #[error("an accuracy objective needs an accuracy oracle (an --accuracy-table)")]
    NeedsOracle,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Oracle(#[from] OracleError),
}

const EPS: f64 = 1e-9;

/// The search space for one profile and topology: every deployment, laid out once.
pub struct Planner<'a> {
    pub profile: &'a Profile,
    pub topology: &'a Topology,
    pub layouts: Vec<Layout>,
}

impl<'a> Planner<'a> {
    pub fn new(profile: &'a Profile, topology: &'a Topology) -> Result<Self, SearchError> {
        if let Some(t) = topology
            .tiers
            .iter()
            .find(|t| t.run_ms.len() != profile.segments())
        {
            return Err(SearchError::Invalid(format!(
                "tier {} has {} segment times, the profile {} segments",
                t.name,
                t.run_ms.len(),
                profile.segments()
            )));
        }
        let layouts = all_deployments(topology.tiers.len(), profile.segments())
            .into_iter()
            .map(|d| Layout::new(d, profile.segments(), topology.reference_cloud_only))
            .collect();
        Ok(Planner {
            profile,
            topology,
            layouts,
        })
    }

    pub fn model(&self, encoding: WireEncoding) -> LatencyModel<'a> {
        LatencyModel {
            profile: self.profile,
            topology: self.topology,
            encoding,
        }
    }

    pub fn channels(&self, layout: &Layout) -> Vec<u32> {
        layout
            .cuts
            .iter()
            .map(|&c| self.profile.cuts[c].channels)
            .collect()
    }

    pub fn point(&self, layout: usize, kept: &[u32], encoding: WireEncoding) -> CompressionPoint {
        let l = &self.layouts[layout];
        // Nothing loses in the profile's own encoding (the encoding its data come in: f32 from
        // a client, 8 bits in the reference's counts), only in a coarser one: then every
        // crossing, pruned or not, and the input if it crosses, is part of the point.
        let lossy = encoding.loses_against(self.profile.wire_encoding);
        CompressionPoint::crossing(&l.cuts, kept, &self.channels(l), encoding, lossy)
            .with_input(l.relays_input() && lossy)
    }

    fn uncompressed(&self, layout: usize, encoding: WireEncoding) -> Candidate {
        let l = &self.layouts[layout];
        let kept = self.channels(l);
        Candidate {
            layout,
            latency_ms: self.model(encoding).linear(l).at(&kept),
            kept,
            encoding,
            accuracy: None,
        }
    }

    /// The layout where tier `tier` alone computes.
    fn only(&self, tier: &str) -> Option<usize> {
        let t = self.topology.tiers.iter().position(|t| t.name == tier)?;
        self.layouts.iter().position(|l| {
            l.ranges
                .iter()
                .enumerate()
                .all(|(i, (s, e))| (i == t) == (s < e))
        })
    }

    /// Runs `strategy`. `oracle` may be absent only when no accuracy objective is set.
    pub fn search(
        &self,
        strategy: Strategy,
        objective: Option<Objective>,
        config: &SearchConfig,
        oracle: Option<&mut MeasuringOracle>,
    ) -> Result<Candidate, SearchError> {
        if config.encodings.is_empty() {
            return Err(SearchError::Invalid("no wire encoding allowed".into()));
        }
        if let Some(Objective::MinLatency { min_accuracy }) = objective {
            if !(min_accuracy > 0.0 && min_accuracy <= 1.0) {
                return Err(SearchError::Invalid(format!(
                    "minimum accuracy must be in (0, 1], got {min_accuracy}"
                )));
            }
        }
        if let Some(Objective::MaxAccuracy { max_latency_ms }) = objective {
            if !(max_latency_ms.is_finite() && max_latency_ms > 0.0) {
                return Err(SearchError::Invalid(format!(
                    "maximum latency must be a number > 0 ms, got {max_latency_ms}"
                )));
            }
        }
        let Some(m) = oracle else {
            return self.search_once(strategy, objective, config, None);
        };
        let samples_needed =
            matches!(strategy, Strategy::Cnnpc | Strategy::Exhaustive) && config.prune;
        let (theta, judged) = match objective {
            Some(Objective::MinLatency { min_accuracy }) => {
                if let Some(have) = m.sequential().filter(|_| samples_needed) {
                    let needs = m.rule.samples_needed(min_accuracy);
                    if have < needs {
                        return Err(SearchError::TooFewSamples {
                            floor: min_accuracy,
                            tolerance: m.rule.tolerance,
                            confidence: m.rule.confidence,
                            needs,
                            have,
                        });
                    }
                }
                let theta = m.threshold_for(min_accuracy);
                (
                    Some(theta),
                    Some(Objective::MinLatency {
                        min_accuracy: theta,
                    }),
                )
            }
            other => (None, other),
        };
        let before = m.set_threshold(theta);
        let found = self.judged(strategy, judged, config, m);
        m.set_threshold(before);
        match (found, objective) {
            (
                Err(SearchError::AccuracyUnreachable { best, .. }),
                Some(Objective::MinLatency { min_accuracy }),
            ) => Err(SearchError::AccuracyUnreachable {
                required: min_accuracy,
                best,
            }),
            (found, _) => found,
        }
    }

    /// Searches until the plan found, measured on the whole evaluation set, still meets the
    /// threshold: an early-stopped measurement only let the search consider a point. Each
    /// failed round leaves one more point measured in full (and failing), so this ends.
    fn judged(
        &self,
        strategy: Strategy,
        objective: Option<Objective>,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
    ) -> Result<Candidate, SearchError> {
        // A bound for safety only: every round but the last adds a failing point.
        for _ in 0..10_000 {
            let mut c = self.search_once(strategy, objective, config, Some(&mut *m))?;
            if c.accuracy.is_none() {
                return Ok(c);
            }
            // Measured in full, even where monotonicity let the search take it as meeting.
            let value = m.full(&self.point(c.layout, &c.kept, c.encoding))?;
            c.accuracy = Some(value);
            match objective {
                Some(Objective::MinLatency { min_accuracy }) if value < min_accuracy => {
                    m.failed_in_full += 1;
                }
                _ => return Ok(c),
            }
        }
        Err(SearchError::Invalid(
            "the search did not settle on a plan measured in full".into(),
        ))
    }

    /// One search with the measurements known so far (floors are thresholds on search values).
    fn search_once(
        &self,
        strategy: Strategy,
        objective: Option<Objective>,
        config: &SearchConfig,
        oracle: Option<&mut MeasuringOracle>,
    ) -> Result<Candidate, SearchError> {
        let baseline = |layout: Option<usize>, name| -> Result<Candidate, SearchError> {
            let layout = layout.ok_or(SearchError::NoSuchDeployment(name))?;
            Ok(self.uncompressed(layout, self.profile.wire_encoding))
        };
        let fixed = match strategy {
            Strategy::EndOnly => Some(baseline(self.only("end"), "end-only")?),
            Strategy::EdgeOnly => Some(baseline(self.only("edge"), "edge-only")?),
            Strategy::CloudOnly => Some(baseline(self.only("cloud"), "cloud-only")?),
            Strategy::Neurosurgeon => Some(self.neurosurgeon(self.profile.wire_encoding)),
            Strategy::Cnnpc | Strategy::Exhaustive if objective.is_none() || !config.prune => {
                Some(self.neurosurgeon(self.profile.wire_encoding))
            }
            _ => None,
        };
        if let Some(mut c) = fixed {
            if let Some(m) = oracle {
                c.accuracy = Some(m.accuracy(&self.point(c.layout, &c.kept, c.encoding))?);
            }
            return self.check(c, objective);
        }
        let (objective, m) = match (objective, oracle) {
            (Some(o), Some(m)) => (o, m),
            _ => return Err(SearchError::NeedsOracle),
        };
        let mut best: Option<Candidate> = None;
        let mut encodings = config.encodings.clone();
        if config.reuse {
            // Coarsest first: its plans are the fastest when accuracy allows, so they bound
            // the finer encodings' searches hardest.
            encodings.sort_by_key(|e| e.bits());
        }
        for enc in encodings {
            let found = match (strategy, objective) {
                (Strategy::Exhaustive, o) => self.exhaustive(enc, o, m)?,
                (_, Objective::MinLatency { min_accuracy }) => {
                    let start = best.as_ref().filter(|_| config.reuse);
                    self.min_latency(enc, min_accuracy, config, m, start)?
                }
                (_, Objective::MaxAccuracy { max_latency_ms }) => {
                    self.max_accuracy(enc, max_latency_ms, config, m)?
                }
            };
            if let Some(c) = found {
                if best.as_ref().is_none_or(|b| better(&c, b, objective)) {
                    best = Some(c);
                }
            }
        }
        match best {
            Some(c) => Ok(c),
            None => Err(self.unreachable(objective, config, m)?),
        }
    }

    fn check(&self, c: Candidate, objective: Option<Objective>) -> Result<Candidate, SearchError> {
        match objective {
            Some(Objective::MinLatency { min_accuracy }) => match c.accuracy {
                Some(a) if a < min_accuracy => Err(SearchError::AccuracyUnreachable {
                    required: min_accuracy,
                    best: a,
                }),
                None => Err(SearchError::NeedsOracle),
                _ => Ok(c),
            },
            Some(Objective::MaxAccuracy { max_latency_ms }) if c.latency_ms > max_latency_ms => {
                Err(SearchError::LatencyUnreachable {
                    required: max_latency_ms,
                    best: c.latency_ms,
                    deployment: self.layouts[c.layout].name(self.topology),
                })
            }
            _ => Ok(c),
        }
    }

    /// The error for an objective no plan meets, naming the best value that is achievable.
    fn unreachable(
        &self,
        objective: Objective,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
    ) -> Result<SearchError, OracleError> {
        Ok(match objective {
            Objective::MinLatency { min_accuracy } => {
                let mut best = 0.0f64;
                for &e in &config.encodings {
                    best = best.max(m.accuracy(&CompressionPoint::uncompressed(e))?);
                }
                SearchError::AccuracyUnreachable {
                    required: min_accuracy,
                    best,
                }
            }
            Objective::MaxAccuracy { max_latency_ms } => {
                // The fastest plan prunes every cut to one channel.
                let mut fastest: Option<(f64, usize)> = None;
                for &e in &config.encodings {
                    let model = self.model(e);
                    for (i, l) in self.layouts.iter().enumerate() {
                        let ones = vec![if config.prune { 1 } else { u32::MAX }; l.cuts.len()];
                        let kept: Vec<u32> = ones
                            .iter()
                            .zip(self.channels(l))
                            .map(|(a, b)| (*a).min(b))
                            .collect();
                        let t = model.linear(l).at(&kept);
                        if fastest.is_none_or(|(f, _)| t < f) {
                            fastest = Some((t, i));
                        }
                    }
                }
                let (best, i) = fastest.unwrap_or((f64::INFINITY, 0));
                SearchError::LatencyUnreachable {
                    required: max_latency_ms,
                    best,
                    deployment: self.layouts[i].name(self.topology),
                }
            }
        })
    }

    /// The best uncompressed plan over every deployment ("Neurosurgeon" in the reference).
    pub fn neurosurgeon(&self, encoding: WireEncoding) -> Candidate {
        self.uncompressed_by_latency(encoding)
            .into_iter()
            .next()
            .expect("at least one deployment")
    }

    /// Every uncompressed plan in `encoding`, fastest first (ties in layout order: the same
    /// profile gives the same plan).
    pub(crate) fn uncompressed_by_latency(&self, encoding: WireEncoding) -> Vec<Candidate> {
        let mut all: Vec<Candidate> = (0..self.layouts.len())
            .map(|i| self.uncompressed(i, encoding))
            .collect();
        all.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms));
        all
    }

    /// The fastest uncompressed plan in `encoding` that meets `a0`, with its accuracy: the
    /// unmodified model's where nothing crosses in a lossy encoding, measured where the input
    /// or a whole cut does (with `reuse`, bounded from below by a coarser encoding's instead,
    /// as [`Planner::judged`] measures the plan returned in full). `None` only when the
    /// unmodified model misses `a0` too.
    pub(crate) fn fastest_uncompressed(
        &self,
        encoding: WireEncoding,
        a0: f64,
        reuse: bool,
        m: &mut MeasuringOracle,
    ) -> Result<Option<Candidate>, OracleError> {
        for mut c in self.uncompressed_by_latency(encoding) {
            let p = self.point(c.layout, &c.kept, encoding);
            let a = m.value_against(&p, a0, reuse)?;
            if a >= a0 {
                c.accuracy = Some(a);
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Every point of every deployment, measured: the true optimum under the oracle.
    fn exhaustive(
        &self,
        enc: WireEncoding,
        objective: Objective,
        m: &mut MeasuringOracle,
    ) -> Result<Option<Candidate>, OracleError> {
        let model = self.model(enc);
        let mut best: Option<Candidate> = None;
        for (i, l) in self.layouts.iter().enumerate() {
            let lin = model.linear(l);
            let channels = self.channels(l);
            let mut kept = vec![1u32; channels.len()];
            loop {
                let latency_ms = lin.at(&kept);
                // Under a latency budget, points over it are never measured; under an accuracy
                // floor every point is, which is what makes this the ground truth.
                let ok_latency = match objective {
                    Objective::MaxAccuracy { max_latency_ms } => latency_ms <= max_latency_ms,
                    Objective::MinLatency { .. } => true,
                };
                if ok_latency {
                    let a = m.accuracy(&self.point(i, &kept, enc))?;
                    let c = Candidate {
                        layout: i,
                        kept: kept.clone(),
                        encoding: enc,
                        latency_ms,
                        accuracy: Some(a),
                    };
                    if meets(&c, objective)
                        && best.as_ref().is_none_or(|b| better(&c, b, objective))
                    {
                        best = Some(c);
                    }
                }
                if !next_vector(&mut kept, &channels) {
                    break;
                }
            }
        }
        Ok(best)
    }
}

/// Steps `kept` through every vector in `1..=channels[i]` (odometer order); false when done.
fn next_vector(kept: &mut [u32], channels: &[u32]) -> bool {
    for (k, &c) in kept.iter_mut().zip(channels) {
        if *k < c {
            *k += 1;
            return true;
        }
        *k = 1;
    }
    false
}

fn meets(c: &Candidate, objective: Objective) -> bool {
    match objective {
        Objective::MinLatency { min_accuracy } => c.accuracy.is_some_and(|a| a >= min_accuracy),
        Objective::MaxAccuracy { max_latency_ms } => c.latency_ms <= max_latency_ms,
    }
}

/// Whether `a` is a better answer to `objective` than `b` (ties go to the other criterion).
fn better(a: &Candidate, b: &Candidate, objective: Objective) -> bool {
    let (aa, ba) = (a.accuracy.unwrap_or(0.0), b.accuracy.unwrap_or(0.0));
    match objective {
        Objective::MinLatency { .. } => {
            a.latency_ms < b.latency_ms - EPS
                || ((a.latency_ms - b.latency_ms).abs() <= EPS && aa > ba)
        }
        Objective::MaxAccuracy { .. } => aa > ba || (aa == ba && a.latency_ms < b.latency_ms - EPS),
    }
}
