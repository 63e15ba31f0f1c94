//! The user's own calibration data: a `.npy` of preprocessed float32 inputs (with an optional
//! `.npy` of integer labels), or a folder of PNG/JPEG images and the preprocessing that turns
//! them into the model's input (labels from sub-folder names, the ImageFolder convention).
//!
//! Everything is checked before a measurement runs: dtype, shape against the model's input,
//! labels against the items, every value finite, every image readable. The content hash
//! ([`Loaded::digest`]) covers the bytes and the preprocessing, so a measurement cache and a
//! shard refitting the pruning can tell the data from any other.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::onnx::calibration::Batch;
pub use crate::onnx::calibration::{ChannelOrder, Layout};

/// How images become the model's input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preprocess {
    /// Layout of the model's input.
    #[serde(default)]
    pub layout: Layout,
    /// Channel order the model expects.
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Each 0..255 value is multiplied by this first (default 1/255).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Then this is subtracted, per channel (one value: every channel; default 0).
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    /// Then divided by this, per channel (one value: every channel; default 1).
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
}

fn default_scale() -> f32 {
    1.0 / 255.0
}
fn default_mean() -> Vec<f32> {
    vec![0.0]
}
fn default_std() -> Vec<f32> {
    vec![1.0]
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            layout: Layout::default(),
            channel_order: ChannelOrder::default(),
            scale: default_scale(),
            mean: default_mean(),
            std: default_std(),
        }
    }
}

/// User data read and checked: every item in file order, the labels if any, and the hash.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `[N, ...]` in the model's input layout.
    pub items: Batch,
    /// SHA-256 over the bytes read (and the preprocessing, for images).
    pub digest: String,
}

fn per_channel(v: &[f32], c: usize, what: &str) -> Result<Vec<f32>> {
    match v.len() {
        1 => Ok(vec![v[0]; c]),
        n if n == c => Ok(v.to_vec()),
        n => bail!("--{what} has {n} values; the model's input has {c} channels (give 1 or {c})"),
    }
}

/// `input` is the model's input shape (batch first, e.g. `[1, 3, 224, 224]`).
pub fn load_npy(data: &Path, labels: Option<&Path>, input: &[usize]) -> Result<Loaded> {
    let bytes = std::fs::read(data).with_context(|| format!("cannot read {}", data.display()))?;
    let mut hash = Sha256::new();
    hash.update(&bytes);
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{} is not a .npy file", data.display()))?;
    let dtype = type_str(&npy.dtype());
    if !matches!(dtype.as_str(), "<f4" | "|f4") {
        bail!(
            "{} holds {dtype} values; cnnpc needs float32 (`<f4`), already preprocessed as the \
             model's input",
            data.display()
        );
    }
    if npy.order() != npyz::Order::C {
        bail!("{} is in Fortran order; save it in C order", data.display());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let item: &[usize] = &input[1..];
    if shape.len() != input.len() || shape[1..] != *item {
        bail!(
            "{} has shape {shape:?}; the model's input needs [N, {}]",
            data.display(),
            item.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let n = shape[0];
    if n == 0 {
        bail!("{} holds no items", data.display());
    }
    let values: Vec<f32> = npy
        .into_vec()
        .with_context(|| format!("reading {}", data.display()))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let per: usize = item.iter().product();
        bail!(
            "{}: item {} holds a non-finite value ({}) at position {}",
            data.display(),
            i / per.max(1),
            values[i],
            i % per.max(1)
        );
    }
    let labels = match labels {
        None => None,
        Some(p) => {
            let lb = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            hash.update(b"labels");
            hash.update(&lb);
            Some(read_labels(p, &lb, n)?)
        }
    };
    let mut shape = shape;
    shape[0] = n;
    Ok(Loaded {
        items: Batch {
            data: values,
            shape,
            labels,
        },
        digest: hex(hash),
    })
}

/// The dtype as numpy spells it (`<f4`); `descr()` quotes it for the header.
fn type_str(dtype: &npyz::DType) -> String {
    dtype.descr().trim_matches('\'').to_string()
}

fn read_labels(path: &Path, bytes: &[u8], n: usize) -> Result<Vec<usize>> {
    let npy = npyz::NpyFile::new(bytes)
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    let dtype = type_str(&npy.dtype());
    let shape = npy.shape().to_vec();
    if shape.len() != 1 {
        bail!(
            "{} has shape {shape:?}; labels are one integer per item, shape [N]",
            path.display()
        );
    }
    if shape[0] as usize != n {
        bail!("{} holds {} labels for {n} items", path.display(), shape[0]);
    }
    let wide: Vec<i64> = match dtype.trim_start_matches(['<', '|', '=']) {
        "i8" => npy.into_vec::<i64>()?,
        "i4" => npy.into_vec::<i32>()?.into_iter().map(i64::from).collect(),
        "i2" => npy.into_vec::<i16>()?.into_iter().map(i64::from).collect(),
        "i1" => npy.into_vec::<i8>()?.into_iter().map(i64::from).collect(),
        "u1" => npy.into_vec::<u8>()?.into_iter().map(i64::from).collect(),
        "u2" => npy.into_vec::<u16>()?.into_iter().map(i64::from).collect(),
        "u4" => npy.into_vec::<u32>()?.into_iter().map(i64::from).collect(),
        other => bail!(
            "{} holds {other} values; labels must be integers (int64, int32, uint8, ...)",
            path.display()
        ),
    };
    wide.into_iter()
        .enumerate()
        .map(|(i, l)| {
            usize::try_from(l)
                .map_err(|_| anyhow!("{}: label {i} is {l}, not a class index", path.display()))
        })
        .collect()
}

/// Image files with their class index, and the class names.
type Listing = (Vec<(PathBuf, Option<usize>)>, Vec<String>);

/// Every image under `dir` in a stable order, with its class when the images sit in
/// sub-folders (one per class, classes sorted by name as torchvision's ImageFolder does).
fn image_files(dir: &Path) -> Result<Listing> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
    };
    let entries = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("cannot read folder {}", d.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        v.sort();
        Ok(v)
    };
    let top = entries(dir)?;
    let dirs: Vec<&PathBuf> = top.iter().filter(|p| p.is_dir()).collect();
    let files: Vec<&PathBuf> = top.iter().filter(|p| is_image(p)).collect();
    if !dirs.is_empty() && !files.is_empty() {
        bail!(
            "{} holds both images and class folders; put every image in its class's folder",
            dir.display()
        );
    }
    let mut out = Vec::new();
    let mut classes = Vec::new();
    if dirs.is_empty() {
        out.extend(files.into_iter().map(|p| (p.clone(), None)));
    } else {
        for (k, d) in dirs.iter().enumerate() {
            classes.push(
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
            );
            for p in entries(d)?.into_iter().filter(|p| is_image(p)) {
                out.push((p, Some(k)));
            }
        }
    }
    if out.is_empty() {
        bail!("{} holds no PNG or JPEG images", dir.display());
    }
    Ok((out, classes))
}

/// How one image becomes one input: the checked preprocessing for a model input shape.
#[derive(Debug, Clone)]
pub struct ImageInput {
    p: Preprocess,
    channels: usize,
    h: usize,
    w: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl ImageInput {
    /// `input` is the model's input shape (batch first, e.g. `[1, 3, 224, 224]`).
    pub fn new(p: &Preprocess, input: &[usize]) -> Result<ImageInput> {
        let [_, a, b, c] = input else {
            bail!("images need a 4-D model input, not {input:?}");
        };
        let (channels, h, w) = match p.layout {
            Layout::Nchw => (*a, *b, *c),
            Layout::Nhwc => (*c, *a, *b),
        };
        if channels != 3 && channels != 1 {
            bail!(
                "the model's input has {channels} channels in {:?} layout; images give 1 or 3 (is the layout right?)",
                p.layout
            );
        }
        if !(p.scale.is_finite() && p.std.iter().all(|s| s.is_finite() && *s != 0.0)) {
            bail!("--scale must be finite and --std finite and non-zero");
        }
        Ok(ImageInput {
            mean: per_channel(&p.mean, channels, "mean")?,
            std: per_channel(&p.std, channels, "std")?,
            p: p.clone(),
            channels,
            h,
            w,
        })
    }

    /// Decodes a PNG or JPEG, resizes it to the input's height and width and appends its
    /// preprocessed values to `data`, in the input's layout.
    pub fn append(&self, bytes: &[u8], data: &mut Vec<f32>) -> Result<()> {
        let (channels, h, w) = (self.channels, self.h, self.w);
        let img = image::load_from_memory(bytes)
            .context("cannot decode it as PNG or JPEG")?
            .to_rgb8();
        let img = image::imageops::resize(
            &img,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        let (p, mean, std) = (&self.p, &self.mean, &self.std);
        let pixel = |x: usize, y: usize, k: usize| -> f32 {
            let px = img.get_pixel(x as u32, y as u32).0;
            let v = if channels == 1 {
                (f32::from(px[0]) + f32::from(px[1]) + f32::from(px[2])) / 3.0
            } else {
                let k = match p.channel_order {
                    ChannelOrder::Rgb => k,
                    ChannelOrder::Bgr => 2 - k,
                };
                f32::from(px[k])
            };
            (v * p.scale - mean[k.min(channels - 1)]) / std[k.min(channels - 1)]
        };
        data.reserve(channels * h * w);
        match p.layout {
            Layout::Nchw => {
                for k in 0..channels {
                    for y in 0..h {
                        for x in 0..w {
                            data.push(pixel(x, y, k));
                        }
                    }
                }
            }
            Layout::Nhwc => {
                for y in 0..h {
                    for x in 0..w {
                        for k in 0..channels {
                            data.push(pixel(x, y, k));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// `input` is the model's input shape (batch first, e.g. `[1, 3, 224, 224]`).
pub fn load_images(dir: &Path, p: &Preprocess, input: &[usize]) -> Result<Loaded> {
    let image = ImageInput::new(p, input)?;
    let (files, classes) = image_files(dir)?;
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(p).unwrap_or_default());
    hash.update(format!("{input:?}"));
    let mut data = Vec::with_capacity(files.len() * image.channels * image.h * image.w);
    let mut labels = Vec::new();
    for (path, class) in &files {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let rel = path.strip_prefix(dir).unwrap_or(path);
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update(&bytes);
        image
            .append(&bytes, &mut data)
            .with_context(|| format!("{} is not a readable PNG or JPEG", path.display()))?;
        if let Some(c) = class {
            labels.push(*c);
        }
    }
    let mut shape = input.to_vec();
    shape[0] = files.len();
    hash.update(classes.join("/"));
    Ok(Loaded {
        items: Batch {
            data,
            shape,
            labels: (!classes.is_empty()).then_some(labels),
        },
        digest: hex(hash),
    })
}

fn hex(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fixed permutation of `n` items (Fisher–Yates from a constant seed), so fit and eval
/// subsets mix the classes of a folder sorted by class.
pub fn order(n: usize) -> Vec<usize> {
    let mut rng = crate::onnx::random::Lcg(0x5eed_cafe);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.next_u32() as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

/// Items `first..first + count` of the permuted order, as a batch.
pub fn take(items: &Batch, first: u64, count: usize) -> Result<Batch> {
    let n = items.len();
    let first = first as usize;
    if first + count > n {
        bail!(
            "the calibration data has {n} inputs; items {first}..{} were asked for (fewer fit or \
             eval inputs, or more data)",
            first + count
        );
    }
    let per: usize = items.shape.iter().skip(1).product();
    let perm = order(n);
    let picked = &perm[first..first + count];
    let mut data = Vec::with_capacity(count * per);
    for &i in picked {
        data.extend_from_slice(&items.data[i * per..(i + 1) * per]);
    }
    let mut shape = items.shape.clone();
    shape[0] = count;
    Ok(Batch {
        data,
        shape,
        labels: items
            .labels
            .as_ref()
            .map(|l| picked.iter().map(|&i| l[i]).collect()),
    })
}

/// Writes `[N, ...]` float32 values as a C-order `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    use npyz::WriterBuilder;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
}

/// Writes class indices as an int64 `.npy` of shape `[N]`.
pub fn write_labels(path: &Path, labels: &[usize]) -> Result<()> {
    use npyz::WriterBuilder;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[labels.len() as u64])
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    w.extend(labels.iter().map(|&l| l as i64))?;
    w.finish()?;
    Ok(())
}
