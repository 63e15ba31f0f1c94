//! The accuracy table: measured points in the CSV layout of the reference's MySQL table,
//! `cut_a,ratio_a,cut_b,ratio_b,accuracy[,encoding[,samples]]`.
//!
//! A ratio is the fraction of channels *removed* at that cut (the reference's convention), so
//! `ratio = 1 - kept/channels`. A single-cut point leaves `cut_b`/`ratio_b` empty; the
//! uncompressed model is a row with every cut empty (or, in the profile's encoding, every ratio
//! 0). In an encoding coarser than the profile's, a cut with ratio 0 is an unpruned cut the
//! encoding crosses ([`CompressionPoint::crossing`]). The optional encoding
//! column (`f32`, `f16`, `int8`, `int4`) defaults to the profile's wire encoding. A cut of
//! `input` (ratio 0) marks a point whose raw input crosses a link in that encoding
//! ([`CompressionPoint::input`]); its other cut, if any, reads as in any row. The optional
//! samples column marks a sampled measurement: `accuracy` is then its estimate over the first
//! `samples` evaluation samples, which a later search may extend. The same layout
//! stores the live oracle's measurements, so a replan can reuse them.

use crate::planner::accuracy::{
    AccuracyOracle, CompressionPoint, CutCompression, Measured, Measurements, OracleError,
    WireEncoding,
};
use crate::planner::profile::Profile;
use crate::planner::sequential::Tally;
use std::fmt::Write as _;

pub const HEADER: &str = "cut_a,ratio_a,cut_b,ratio_b,accuracy,encoding,samples";

/// The "cut" of a row whose raw input crosses a link in the row's encoding (ratio 0).
pub const INPUT: &str = "input";

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("accuracy table line {line}: {message}")]
pub struct TableError {
    pub line: usize,
    pub message: String,
}

/// Parses a table against `profile` (which gives each cut's channel count).
pub fn parse_csv(text: &str, profile: &Profile) -> Result<Measurements, TableError> {
    let mut out = Measurements::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let row = raw.trim();
        // The header may follow comment lines (the measurement cache starts with one).
        if row.is_empty() || row.starts_with('#') || row.starts_with("cut_a") {
            continue;
        }
        let err = |message: String| TableError { line, message };
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if !(5..=7).contains(&fields.len()) {
            return Err(err(format!(
                "expected 5 to 7 comma-separated fields ({HEADER}), found {}",
                fields.len()
            )));
        }
        let encoding = match fields.get(5) {
            Some(s) if !s.is_empty() => s.parse::<WireEncoding>().map_err(err)?,
            _ => profile.wire_encoding,
        };
        let mut cuts = Vec::new();
        let mut input = false;
        for (cut_field, ratio_field, name) in
            [(fields[0], fields[1], "a"), (fields[2], fields[3], "b")]
        {
            if cut_field == INPUT {
                if input || !(ratio_field.is_empty() || parse_num(ratio_field) == Some(0.0)) {
                    return Err(err(format!(
                        "cut_{name} = {INPUT} takes ratio 0 (the input is encoded, not pruned), once"
                    )));
                }
                input = true;
                continue;
            }
            if cut_field.is_empty() {
                if !(ratio_field.is_empty() || parse_num(ratio_field) == Some(0.0)) {
                    return Err(err(format!("ratio_{name} given without cut_{name}")));
                }
                continue;
            }
            let cut: usize = cut_field
                .parse()
                .map_err(|_| err(format!("cut_{name} must be a cut index, got {cut_field:?}")))?;
            let channels = profile.cuts.get(cut).map(|c| c.channels).ok_or_else(|| {
                err(format!(
                    "cut_{name} = {cut}, but the profile has cuts 0..{}",
                    profile.cuts.len()
                ))
            })?;
            let ratio = parse_num(ratio_field)
                .filter(|r| (0.0..1.0).contains(r))
                .ok_or_else(|| {
                    err(format!(
                        "ratio_{name} must be a number in [0, 1), got {ratio_field:?}"
                    ))
                })?;
            let exact = f64::from(channels) * (1.0 - ratio);
            let kept = exact.round();
            if (exact - kept).abs() > 0.01 || kept < 1.0 {
                return Err(err(format!(
                    "ratio_{name} = {ratio} does not keep a whole number of the {channels} channels at cut {cut}"
                )));
            }
            cuts.push((cut, kept as u32, channels));
        }
        if cuts.len() == 2 && cuts[0].0 == cuts[1].0 {
            return Err(err(format!("cut_a and cut_b are both {}", cuts[0].0)));
        }
        let accuracy = parse_num(fields[4])
            .filter(|a| (0.0..=1.0).contains(a))
            .ok_or_else(|| {
                err(format!(
                    "accuracy must be a number in [0, 1], got {:?}",
                    fields[4]
                ))
            })?;
        let (idx, kept, channels): (Vec<usize>, Vec<u32>, Vec<u32>) = cuts.into_iter().fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
        let samples = match fields.get(6) {
            Some(s) if !s.is_empty() => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| err(format!("samples must be a count > 0, got {s:?}")))?,
            ),
            _ => None,
        };
        // In an encoding coarser than the profile's, a ratio-0 cut is encoded where it crosses
        // (the planner's points list it); otherwise it is the unmodified model there.
        let lossy = encoding.loses_against(profile.wire_encoding);
        let point =
            CompressionPoint::crossing(&idx, &kept, &channels, encoding, lossy).with_input(input);
        if let Some(previous) = out.get(&point) {
            if previous != accuracy {
                return Err(err(format!(
                    "{point} already has accuracy {previous}; this row says {accuracy}"
                )));
            }
        }
        match samples {
            // Scores are counts for binary metrics; rounding undoes the decimal's last digit.
            Some(n) => {
                let hits = (accuracy * n as f64 * 1e6).round() / 1e6;
                out.insert_tally(point, Tally { hits, samples: n })
            }
            None => out.insert(point, accuracy),
        }
    }
    Ok(out)
}

fn parse_num(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Writes measurements in the same layout (with the encoding column), for reuse by a later run.
pub fn to_csv(points: &Measurements) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    let field = |c: Option<&CutCompression>| match c {
        Some(c) => (c.cut.to_string(), format!("{}", c.prune_ratio())),
        None => (String::new(), String::new()),
    };
    for (p, m) in points.entries() {
        let (acc, samples) = match m {
            Measured::Exact(a) => (a, String::new()),
            Measured::Sampled(t) => (t.estimate(), t.samples.to_string()),
        };
        // The layout has room for two crossings, as many as three tiers can have.
        if p.cuts.len() + usize::from(p.input) > 2 {
            continue;
        }
        let ((ca, ra), (cb, rb)) = if p.input {
            ((INPUT.to_string(), "0".to_string()), field(p.cuts.first()))
        } else if p.cuts.is_empty() {
            ((String::new(), "0".to_string()), field(None))
        } else {
            (field(p.cuts.first()), field(p.cuts.get(1)))
        };
        let _ = writeln!(out, "{ca},{ra},{cb},{rb},{acc},{},{samples}", p.encoding);
    }
    out
}

/// An oracle that answers from a table and knows nothing else.
pub struct TableOracle {
    pub table: Measurements,
}

impl AccuracyOracle for TableOracle {
    fn measure(&mut self, point: &CompressionPoint) -> Result<f64, OracleError> {
        self.table
            .get(point)
            .ok_or_else(|| OracleError::Unknown(point.to_string()))
    }
}
