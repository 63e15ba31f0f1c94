//! `cnnpc bench compress`: bytes on the wire against agreement at one cut of a real model, for
//! every wire encoding (with and without zstd) and a ladder of pruning ratios.
//!
//! Lives outside `onnx` because the byte counts are real frames ([`Frame::from_tensor`] +
//! `encoded_len`: header, per-channel parameters, payload, zstd when it pays) and the frame
//! codec is in `runtime`, below `onnx`. Agreement comes from the live oracle, which sees the same
//! values the frame decodes to (`quantise::roundtrip`); zstd is lossless, so one measurement
//! serves both rows of an encoding.

use std::fmt::Write as _;

use serde::Serialize;

use crate::onnx::frame::{Frame, ZSTD_LEVEL};
use crate::onnx::oracle::LiveOracle;
use crate::onnx::OnnxError;
use crate::planner::accuracy::{CompressionPoint, WireEncoding};

/// The compression target of the issue: this many times fewer bytes than the f32 cut...
pub const TARGET_FACTOR: f64 = 16.0;
/// ...at this agreement or better.
pub const TARGET_AGREEMENT: f64 = 0.99;

#[derive(Debug, Clone, Serialize)]
pub struct CompressRow {
    pub encoding: WireEncoding,
    pub zstd: bool,
    pub kept: u32,
    pub channels: u32,
    pub method: String,
    /// Mean frame bytes per image (all tensors of the cut).
    pub bytes: f64,
    /// f32 unpruned bytes / `bytes`.
    pub reduction: f64,
    pub agreement: f64,
    pub accuracy: Option<f64>,
    pub mean_output_diff: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompressReport {
    pub model: String,
    pub cut: usize,
    pub tensors: Vec<String>,
    pub shape: Vec<String>,
    pub channels: u32,
    pub fit_images: usize,
    pub eval_images: usize,
    pub reference_accuracy: Option<f64>,
    pub f32_bytes: f64,
    pub rows: Vec<CompressRow>,
    /// The smallest row meeting the target, if any.
    pub best: Option<CompressRow>,
    /// Seconds per oracle measurement (mean over the report's measurements).
    pub seconds_per_measurement: f64,
}

/// Measure `cut` of the oracle's model at every `kept` (channels kept, `channels` = unpruned)
/// and every encoding.
pub fn compress_report(
    model: &str,
    oracle: &mut LiveOracle,
    cut: usize,
    kept: &[u32],
    encodings: &[WireEncoding],
    fit_images: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<CompressReport, OnnxError> {
    let c = oracle.cuts().get(cut).cloned().ok_or_else(|| {
        OnnxError::BadInput(format!(
            "no cut {cut}: the model has {} cuts (`cnnpc cuts` lists them)",
            oracle.cuts().len()
        ))
    })?;
    let channels =
        u32::try_from(c.channels).map_err(|_| OnnxError::BadInput("too many channels".into()))?;
    let method = oracle.method.name().to_string();
    let mut rows = Vec::new();
    let mut eval_images = 0;
    let total = kept.len() * encodings.len();
    for (i, (&k, &enc)) in kept
        .iter()
        .flat_map(|k| encodings.iter().map(move |e| (k, e)))
        .enumerate()
    {
        let point = CompressionPoint::new(&[cut], &[k], &[channels], enc);
        // Frame bytes per image, plain and zstd, summed over the cut's tensors.
        let (mut plain, mut packed) = (0usize, 0usize);
        let mut err = None;
        let mut observe = |_cut: usize, _pos: usize, values: &[f32], shape: &[usize]| match (
            Frame::from_tensor(values, shape, 1, enc, None),
            Frame::from_tensor(values, shape, 1, enc, Some(ZSTD_LEVEL)),
        ) {
            (Ok(a), Ok(b)) => {
                plain += a.encoded_len();
                packed += b.encoded_len();
            }
            (Err(e), _) | (_, Err(e)) => err = Some(e.to_string()),
        };
        let e = oracle.evaluate_at(&point, &[cut], Some(&mut observe))?;
        if let Some(e) = err {
            return Err(OnnxError::BadInput(format!("frame: {e}")));
        }
        eval_images = e.images;
        progress(&format!(
            "[{}/{total}] cut {cut}, {k}/{channels} channels, {enc}: agreement {:.1}% ({:.1} s)",
            i + 1,
            e.agreement * 100.0,
            e.seconds
        ));
        let per_image = |b: usize| b as f64 / e.images.max(1) as f64;
        for (zstd, bytes) in [(false, plain), (true, packed)] {
            rows.push(CompressRow {
                encoding: enc,
                zstd,
                kept: k,
                channels,
                method: if k < channels {
                    method.clone()
                } else {
                    "none".into()
                },
                bytes: per_image(bytes),
                reduction: 0.0,
                agreement: e.agreement,
                accuracy: e.accuracy,
                mean_output_diff: e.mean_output_diff,
                seconds: e.seconds,
            });
        }
    }
    let f32_bytes = rows
        .iter()
        .find(|r| r.encoding == WireEncoding::F32 && !r.zstd && r.kept == channels)
        .map(|r| r.bytes)
        .unwrap_or_else(|| {
            // No unpruned f32 row measured: the raw size (header bytes aside).
            let elems: f64 = c
                .tensors
                .iter()
                .map(|t| {
                    t.shape
                        .iter()
                        .skip(1)
                        .filter_map(|d| d.fixed())
                        .product::<i64>() as f64
                })
                .sum();
            elems * 4.0
        });
    for r in &mut rows {
        r.reduction = f32_bytes / r.bytes.max(1.0);
    }
    let best = rows
        .iter()
        .filter(|r| r.reduction >= TARGET_FACTOR && r.agreement >= TARGET_AGREEMENT)
        .min_by(|a, b| a.bytes.total_cmp(&b.bytes))
        .or_else(|| {
            rows.iter()
                .filter(|r| r.agreement >= TARGET_AGREEMENT)
                .min_by(|a, b| a.bytes.total_cmp(&b.bytes))
        })
        .cloned();
    let measured: Vec<f64> = rows.iter().step_by(2).map(|r| r.seconds).collect();
    Ok(CompressReport {
        model: model.to_string(),
        cut,
        tensors: c.tensor_names(),
        shape: c
            .tensors
            .iter()
            .map(|t| {
                t.shape
                    .iter()
                    .map(|d| match d.fixed() {
                        Some(v) => v.to_string(),
                        None => "N".into(),
                    })
                    .collect::<Vec<_>>()
                    .join("x")
            })
            .collect(),
        channels,
        fit_images,
        eval_images,
        reference_accuracy: oracle.reference_accuracy(),
        f32_bytes,
        rows,
        best,
        seconds_per_measurement: measured.iter().sum::<f64>() / measured.len().max(1) as f64,
    })
}

/// A README-ready markdown table of a report.
pub fn render_markdown(r: &CompressReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**{}**, cut {} ({} = {}), {} eval images{}; f32 cut = {:.0} B/image; {:.2} s per measurement",
        r.model,
        r.cut,
        r.tensors.join(" + "),
        r.shape.join(" + "),
        r.eval_images,
        r.reference_accuracy
            .map(|a| format!(", unmodified accuracy {:.1}%", a * 100.0))
            .unwrap_or_default(),
        r.f32_bytes,
        r.seconds_per_measurement,
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| kept / C | encoding | zstd | bytes/image | reduction | agreement | accuracy | mean max Δp |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {}/{} | {} | {} | {:.0} | {:.1}x | {:.1}% | {} | {:.4} |",
            row.kept,
            row.channels,
            row.encoding,
            if row.zstd { "yes" } else { "no" },
            row.bytes,
            row.reduction,
            row.agreement * 100.0,
            row.accuracy
                .map(|a| format!("{:.1}%", a * 100.0))
                .unwrap_or_else(|| "–".into()),
            row.mean_output_diff,
        );
    }
    if let Some(b) = &r.best {
        let _ = writeln!(
            s,
            "\nSmallest at ≥ {:.0}% agreement: {}/{} channels, {}{}: {:.0} B ({:.1}x fewer than f32), {:.1}% agreement{}.",
            TARGET_AGREEMENT * 100.0,
            b.kept,
            b.channels,
            b.encoding,
            if b.zstd { "+zstd" } else { "" },
            b.bytes,
            b.reduction,
            b.agreement * 100.0,
            if b.reduction >= TARGET_FACTOR { " — meets the 16x target" } else { " — misses the 16x target" },
        );
    }
    s
}

/// Channels kept in a report: C, C/2, C/4, ... down to C/32, at least one, no repeats.
pub fn kept_ladder(channels: u32) -> Vec<u32> {
    let mut v: Vec<u32> = [1, 2, 4, 8, 16, 32]
        .iter()
        .map(|d| (channels / d).max(1))
        .collect();
    v.dedup();
    v
}

/// Agreement at one cut for a few pruning ratios (f32 on the wire, so pruning alone).
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub cut: usize,
    pub tensors: Vec<String>,
    pub channels: u32,
    /// (channels kept, agreement), most kept first.
    pub agreement: Vec<(u32, f64)>,
}

/// The divisors of C the sweep measures at every cut.
pub const SWEEP_DIVISORS: [u32; 3] = [4, 8, 16];

/// Agreement against pruning ratio at every single-tensor cut: where in the network pruning
/// costs least. Cuts of several tensors (residual blocks) are left out: pruning keeps at least
/// one channel per tensor, so their ladders are not comparable.
pub fn sweep(
    oracle: &mut LiveOracle,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SweepRow>, OnnxError> {
    let cuts: Vec<(usize, crate::onnx::Cut)> = oracle
        .cuts()
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, c)| c.tensors.len() == 1)
        .collect();
    let mut rows = Vec::new();
    for (n, (i, cut)) in cuts.iter().enumerate() {
        let c = u32::try_from(cut.channels)
            .map_err(|_| OnnxError::BadInput("too many channels".into()))?;
        let mut agreement = Vec::new();
        for d in SWEEP_DIVISORS {
            let k = (c / d).max(1);
            if agreement.last().is_some_and(|&(last, _)| last == k) {
                continue;
            }
            let point = CompressionPoint::new(&[*i], &[k], &[c], WireEncoding::F32);
            agreement.push((k, oracle.evaluate(&point)?.agreement));
        }
        progress(&format!(
            "[{}/{}] sweep cut {i} ({c} channels): {}",
            n + 1,
            cuts.len(),
            agreement
                .iter()
                .map(|(k, a)| format!("{k} kept {:.1}%", a * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        rows.push(SweepRow {
            cut: *i,
            tensors: cut.tensor_names(),
            channels: c,
            agreement,
        });
    }
    Ok(rows)
}

/// Markdown table of a sweep.
pub fn render_sweep_markdown(model: &str, rows: &[SweepRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**{model}**: agreement by channels kept at each single-tensor cut (f32 on the wire)\n"
    );
    let _ = writeln!(s, "| cut | tensor | C | C/4 | C/8 | C/16 |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|");
    for r in rows {
        let mut cells: Vec<String> = r
            .agreement
            .iter()
            .map(|(k, a)| format!("{:.1}% ({k})", a * 100.0))
            .collect();
        cells.resize(SWEEP_DIVISORS.len(), "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.cut,
            r.tensors.join(" + "),
            r.channels,
            cells.join(" | ")
        );
    }
    s
}

/// What `cnnpc bench compress` writes.
#[derive(Debug, Clone, Serialize)]
pub struct CompressBench {
    pub report: CompressReport,
    /// Empty unless asked for (`--sweep`).
    pub sweep: Vec<SweepRow>,
}
