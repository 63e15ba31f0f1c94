//! `cnnpc dataset export`: a built-in calibration set written as files, examples of the data
//! `--calibration` takes (an image folder with class sub-folders, or .npy inputs and labels).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

use crate::dataset::{self, CalibrationSet};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// PNG files in one sub-folder per class (`<index>_<label>`).
    Images,
    /// `inputs.npy` (preprocessed float32) and `labels.npy` (int64).
    Npy,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Write a built-in set's inputs as files.
    Export {
        /// rotated-pages, open-nsfw or text-lines.
        #[arg(long)]
        set: CalibrationSet,
        #[arg(long, value_enum, default_value_t = Format::Images)]
        format: Format,
        /// How many inputs.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// The first input (disjoint ranges give disjoint sets).
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: &DatasetCommand) -> Result<()> {
    let DatasetCommand::Export {
        set,
        format,
        count,
        first,
        out,
    } = cmd;
    let font = dataset::font()?;
    std::fs::create_dir_all(out)?;
    match format {
        Format::Images => {
            dataset::export::images(*set, &font, *first, *count, out)?;
        }
        Format::Npy => {
            let labels = (*set != CalibrationSet::OpenNsfw).then(|| out.join("labels.npy"));
            dataset::export::npy(
                *set,
                &font,
                *first,
                *count,
                &out.join("inputs.npy"),
                labels.as_deref(),
            )?;
        }
    }
    eprintln!("wrote {count} {} inputs to {}", set.name(), out.display());
    Ok(())
}
