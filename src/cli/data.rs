//! The flags every command that measures accuracy or rebuilds a pruned model shares: the
//! model's input shape and the calibration data (built in, or the user's files), its labels,
//! the metric, and how images become inputs.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::dataset::{CalibrationSet, Preprocess, Source};
use crate::onnx::calibration::{ChannelOrder, Layout};
use crate::planner::accuracy::Metric;

/// `--input-shape 1,3,H,W`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShape(pub Vec<usize>);

impl std::str::FromStr for InputShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::onnx::shape::parse(s).map(InputShape)
    }
}

/// The model input's shape, where the model leaves it symbolic.
#[derive(Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// The model input's shape, batch included (e.g. 1,3,224,224): needed when the model
    /// declares symbolic height or width, as most exported vision models do.
    #[arg(long)]
    pub input_shape: Option<InputShape>,
}

impl ShapeArgs {
    pub fn get(&self) -> Option<&[usize]> {
        self.input_shape.as_ref().map(|s| &s.0[..])
    }

    /// The model file with the shape applied (or refused with what to give).
    pub fn apply(&self, model: &[u8]) -> Result<Vec<u8>> {
        Ok(crate::onnx::shape::apply(model, self.get())?)
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Calibration data: a built-in set (rotated-pages, open-nsfw, text-lines), a .npy of
    /// preprocessed float32 inputs [N, ...], or a folder of PNG/JPEG images (class sub-folders
    /// give labels). Default: the built-in set that fits the model's input.
    #[arg(long)]
    pub calibration: Option<String>,
    /// Integer labels [N] for a .npy calibration file.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// What the floor is compared with: agreement (top-1 with the unmodified model, the
    /// default), accuracy (top-1 against the labels) or cosine (of the outputs, for detection
    /// or segmentation maps).
    #[arg(long)]
    pub metric: Option<Metric>,
    /// Images: the model input's layout.
    #[arg(long, default_value = "nchw")]
    pub layout: Layout,
    /// Images: the channel order the model expects.
    #[arg(long, default_value = "rgb")]
    pub channel_order: ChannelOrder,
    /// Images: each 0..255 pixel value is multiplied by this first (default 1/255).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Images: then this is subtracted, per channel (e.g. 0.485,0.456,0.406; default 0).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub mean: Vec<f32>,
    /// Images: then divided by this, per channel (e.g. 0.229,0.224,0.225; default 1).
    #[arg(long, value_delimiter = ',')]
    pub std: Vec<f32>,
}

impl DataArgs {
    /// The image preprocessing these flags declare (defaults where not given).
    pub fn preprocess(&self) -> Preprocess {
        let d = Preprocess::default();
        Preprocess {
            layout: self.layout,
            channel_order: self.channel_order,
            scale: self.scale.unwrap_or(d.scale),
            mean: if self.mean.is_empty() {
                d.mean
            } else {
                self.mean.clone()
            },
            std: if self.std.is_empty() {
                d.std
            } else {
                self.std.clone()
            },
        }
    }

    /// The source these flags name; without `--calibration`, the built-in set that fits the
    /// (shaped) model's input.
    pub fn source(&self, shaped_model: &[u8]) -> Result<Source> {
        match &self.calibration {
            Some(s) => Source::parse(s, self.labels.as_deref(), Some(self.preprocess())),
            None => {
                if self.labels.is_some() {
                    anyhow::bail!("--labels needs --calibration data.npy");
                }
                Ok(Source::Builtin(CalibrationSet::for_model(shaped_model)?))
            }
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric.unwrap_or_default()
    }
}
