//! Shadow sampling at the entry: a fraction of requests also runs, off the request path,
//! through the unmodified model (a shard serving the whole model, `--shadow-url`), and the
//! served answer's top-1 is compared with the full model's per batch row:
//! `cnnpc_shadow_total{result="agree"|"disagree"|"error"}`. The controller turns the counts
//! into a live agreement with its confidence bound. Sampling is deterministic (exactly the
//! fraction, evenly spread), and at most [`IN_FLIGHT`] shadow calls run at once: a sample that
//! finds them busy is skipped, never queued, so shadowing cannot slow serving.

use super::{forward_plain, Shard};
use crate::onnx::frame::{Frame, FrameLimits};
use axum::http::Uri;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Shadow calls at once.
pub const IN_FLIGHT: usize = 2;

/// The entry's shadow: where the whole model runs, and how often.
#[derive(Debug)]
pub struct Shadow {
    pub url: Uri,
    fraction: f64,
    seen: AtomicU64,
    busy: Arc<Semaphore>,
}

impl Shadow {
    pub fn new(url: Uri, fraction: f64) -> Shadow {
        Shadow {
            url,
            fraction: fraction.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
            busy: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Whether this request is sampled: the n-th is when ⌊(n+1)·f⌋ > ⌊n·f⌋, so exactly `f`
    /// of any run of requests, evenly spread.
    pub fn sampled(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.fraction).floor() > (n * self.fraction).floor()
    }
}

/// The top-1 index of each batch row of a frame's tensor (rows = the first axis).
pub fn top1_rows(frame: &[u8], limits: &FrameLimits) -> Result<Vec<usize>, String> {
    let f = Frame::decode(frame, limits).map_err(|e| e.to_string())?;
    let data = f.to_f32().map_err(|e| e.to_string())?;
    let rows = match f.shape() {
        [n, _, ..] if *n > 0 => *n,
        _ => 1,
    };
    if data.is_empty() || data.len() % rows != 0 {
        return Err(format!(
            "{} values do not split into {rows} rows",
            data.len()
        ));
    }
    Ok(data
        .chunks(data.len() / rows)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0
        })
        .collect())
}

/// (agreeing rows, rows) of two answers.
pub fn agreement(served: &[u8], full: &[u8], limits: &FrameLimits) -> Result<(u64, u64), String> {
    let (a, b) = (top1_rows(served, limits)?, top1_rows(full, limits)?);
    if a.len() != b.len() {
        return Err(format!(
            "{} rows served, {} from the full model",
            a.len(),
            b.len()
        ));
    }
    Ok((
        a.iter().zip(&b).filter(|(x, y)| x == y).count() as u64,
        a.len() as u64,
    ))
}

/// Runs the sampled `input` (a frame) through the whole model and counts the agreement with
/// `served` (the answer's frame). Spawned; returns at once when the shadow is busy.
pub(super) fn compare(shard: &Arc<Shard>, request_id: &str, input: Vec<u8>, served: Bytes) {
    let Some(shadow) = &shard.shadow else { return };
    let Ok(permit) = shadow.busy.clone().try_acquire_owned() else {
        return;
    };
    let (shard, request_id) = (shard.clone(), request_id.to_string());
    tokio::spawn(async move {
        let _permit = permit;
        let Some(shadow) = &shard.shadow else { return };
        let counter = &shard.metrics.shadow_total;
        let full = forward_plain(&shard, &shadow.url, &request_id, input).await;
        match full.and_then(|full| agreement(&served, &full, &shard.cfg.limits)) {
            Ok((agree, rows)) => {
                counter.with_label_values(&["agree"]).inc_by(agree);
                counter
                    .with_label_values(&["disagree"])
                    .inc_by(rows - agree);
            }
            Err(e) => {
                tracing::warn!(request_id, error = %e, "shadow comparison failed");
                counter.with_label_values(&["error"]).inc();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::accuracy::WireEncoding;

    fn frame(v: &[f32], shape: &[usize]) -> Vec<u8> {
        Frame::from_tensor(v, shape, 1, WireEncoding::F32, None)
            .unwrap()
            .encode()
    }

    #[test]
    fn sampling_takes_exactly_the_fraction_evenly() {
        let s = Shadow::new("http://x".parse().unwrap(), 0.25);
        let picks: Vec<bool> = (0..8).map(|_| s.sampled()).collect();
        assert_eq!(
            picks,
            [false, false, false, true, false, false, false, true]
        );
        let all = Shadow::new("http://x".parse().unwrap(), 1.0);
        assert!((0..5).all(|_| all.sampled()));
        let none = Shadow::new("http://x".parse().unwrap(), 0.0);
        assert!((0..5).all(|_| !none.sampled()));
    }

    #[test]
    fn agreement_is_per_row_top1() {
        let l = FrameLimits::default();
        let served = frame(&[0.1, 0.9, 0.0, 0.7, 0.2, 0.1], &[2, 3]);
        let full = frame(&[0.2, 0.5, 0.3, 0.1, 0.1, 0.8], &[2, 3]);
        assert_eq!(agreement(&served, &full, &l).unwrap(), (1, 2));
        assert_eq!(agreement(&served, &served, &l).unwrap(), (2, 2));
        let one_row = frame(&[0.1, 0.9, 0.0], &[1, 3]);
        assert!(agreement(&served, &one_row, &l)
            .unwrap_err()
            .contains("2 rows served"));
        assert!(top1_rows(b"junk", &l).is_err());
    }
}
