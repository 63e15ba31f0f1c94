//! Measured points kept in a CSV file (`planner::table` layout) under a first line naming what
//! they were measured with; a file measured with anything else is not reused. The CLI and the
//! demo keep one per model and calibration under `~/.cache/cnnpc`; the operator keeps its
//! points in the plan ConfigMap instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::planner::accuracy::Measurements;
use crate::planner::plan::MeasuredOn;
use crate::planner::profile::Profile;
use crate::planner::table;

#[derive(Debug, Clone)]
pub struct MeasurementCache {
    pub path: PathBuf,
    key: String,
}

const KEY_PREFIX: &str = "# cnnpc measurements: ";

impl MeasurementCache {
    pub fn new(path: impl Into<PathBuf>, key: impl Into<String>) -> Self {
        MeasurementCache {
            path: path.into(),
            key: key.into(),
        }
    }

    /// The points stored for this key; none when the file is missing or was measured with
    /// something else (`Ok(None)` then, so the caller can say so).
    pub fn load(&self, profile: &Profile) -> Result<Option<Measurements>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(Measurements::default()))
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()))
            }
        };
        let first = text.lines().next().unwrap_or("");
        if first.strip_prefix(KEY_PREFIX) != Some(self.key.as_str()) {
            return Ok(None);
        }
        let points = table::parse_csv(&text, profile)
            .with_context(|| format!("in {}", self.path.display()))?;
        Ok(Some(points))
    }

    /// Writes every point (atomically: a crash never leaves half a file).
    pub fn store(&self, points: &Measurements) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = format!("{KEY_PREFIX}{}\n{}", self.key, table::to_csv(points));
        let tmp = self.path.with_extension("csv.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The cache file of `stem`'s measurements on `m`'s data: `<stem>-<set>-<fit>-<eval>.csv` for
/// a built-in set, `<stem>-data-<digest prefix>-<fit>-<eval>.csv` for files.
pub fn file_name(stem: &str, m: &MeasuredOn) -> String {
    let data = match m.data.strip_prefix("builtin:") {
        Some(_) => m.calibration.clone(),
        None => format!("data-{}", &m.data[..m.data.len().min(12)]),
    };
    format!("{stem}-{data}-{}-{}.csv", m.fit.count, m.eval.count)
}

/// `$XDG_CACHE_HOME/cnnpc`, else `~/.cache/cnnpc`, else `.cnnpc-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Path::new(&x).join("cnnpc");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Path::new(&h).join(".cache").join("cnnpc");
    }
    PathBuf::from(".cnnpc-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::accuracy::{CompressionPoint, WireEncoding};

    fn profile() -> Profile {
        Profile::parse(
            "model: m\nwire_encoding: int8\ninput: {elements: 10, bytes: 10}\n\
             cuts:\n  - {name: a, channels: 8, elements: 80, bytes: 80}\n\
             devices:\n  d: {tier: end, run_ms: [1, 1]}\n",
        )
        .unwrap()
    }

    #[test]
    fn cache_round_trips_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.csv");
        let mut points = Measurements::default();
        points.insert(
            CompressionPoint::new(&[0], &[3], &[8], WireEncoding::Int8),
            0.75,
        );
        let cache = MeasurementCache::new(&path, "k1");
        assert_eq!(
            cache.load(&profile()).unwrap(),
            Some(Measurements::default())
        );
        cache.store(&points).unwrap();
        assert_eq!(cache.load(&profile()).unwrap(), Some(points));
        assert_eq!(
            MeasurementCache::new(&path, "k2").load(&profile()).unwrap(),
            None
        );
    }
}
