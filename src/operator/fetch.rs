//! Getting bytes over HTTP(S) (models, Prometheus answers, shard metrics) and resolving a
//! spec's model: a URL checked against its SHA-256 into a cache, or a file under a directory.

use super::crd::ModelSource;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest model the controller downloads.
pub const MAX_MODEL_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FetchError {
    #[error("{url} is not an http(s) URL")]
    BadUrl { url: String },
    #[error("cannot reach {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read {path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

impl FetchError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::ChecksumMismatch { .. } => "ChecksumMismatch",
            FetchError::BadUrl { .. } | FetchError::Invalid(_) => "InvalidSpec",
            _ => "ModelUnavailable",
        }
    }
}

pub use crate::digest::sha256_hex;

/// GET `url` (http or https, native roots) with a total timeout and a size limit.
pub async fn get(url: &str, limit: usize, timeout: Duration) -> Result<Bytes, FetchError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| FetchError::BadUrl { url: url.into() })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(FetchError::BadUrl { url: url.into() });
    }
    let unreachable = |why: String| FetchError::Unreachable {
        url: url.into(),
        why,
    };
    let exec = hyper_util::rt::TokioExecutor::new();
    let request = if uri.scheme_str() == Some("https") {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| unreachable(format!("no TLS root certificates: {e}")))?
            .https_only()
            .enable_http1()
            .build();
        hyper_util::client::legacy::Client::builder(exec)
            .build::<_, Empty<Bytes>>(https)
            .get(uri)
    } else {
        hyper_util::client::legacy::Client::builder(exec)
            .build_http::<Empty<Bytes>>()
            .get(uri)
    };
    let work = async {
        let resp = request.await.map_err(|e| unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.into(),
                status: resp.status().as_u16(),
            });
        }
        Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge {
                        url: url.into(),
                        limit,
                    }
                } else {
                    unreachable(e.to_string())
                }
            })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Checks `bytes` against the expected lower-case hex SHA-256.
pub fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), FetchError> {
    let actual = sha256_hex(bytes);
    if actual != expected.to_ascii_lowercase() {
        return Err(FetchError::ChecksumMismatch {
            what: what.into(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// Where the controller finds models.
#[derive(Debug, Clone)]
pub struct ModelStore {
    /// Downloaded models, one file per SHA-256.
    pub cache_dir: PathBuf,
    /// Root under which `model.path` is read (the controller's mount of the model volume).
    pub model_dir: PathBuf,
    pub timeout: Duration,
}

impl ModelStore {
    /// The model bytes of `source`.
    pub async fn resolve(&self, source: &ModelSource) -> Result<Vec<u8>, FetchError> {
        match (&source.url, &source.path) {
            (Some(url), None) => {
                let sha = source
                    .sha256
                    .as_deref()
                    .ok_or_else(|| FetchError::Invalid("model.url needs model.sha256".into()))?;
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(FetchError::Invalid(format!(
                        "model.sha256 must be 64 hex digits, got {sha:?}"
                    )));
                }
                let cached = self
                    .cache_dir
                    .join(format!("{}.onnx", sha.to_ascii_lowercase()));
                if let Ok(bytes) = std::fs::read(&cached) {
                    if sha256_hex(&bytes) == sha.to_ascii_lowercase() {
                        return Ok(bytes);
                    }
                }
                let bytes = get(url, MAX_MODEL_BYTES, self.timeout).await?;
                verify(url, &bytes, sha)?;
                // The cache is an optimisation: failing to write it is not an error.
                if std::fs::create_dir_all(&self.cache_dir).is_ok() {
                    let tmp = cached.with_extension("part");
                    if std::fs::write(&tmp, &bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, &cached);
                    }
                }
                Ok(bytes.to_vec())
            }
            (None, Some(path)) => {
                let p = Path::new(path);
                if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                    return Err(FetchError::Invalid(format!(
                        "model.path {path:?} must be relative, without `..`"
                    )));
                }
                let full = self.model_dir.join(p);
                let bytes = std::fs::read(&full).map_err(|e| FetchError::File {
                    path: full.display().to_string(),
                    why: e.to_string(),
                })?;
                if let Some(sha) = &source.sha256 {
                    verify(path, &bytes, sha)?;
                }
                Ok(bytes)
            }
            _ => Err(FetchError::Invalid(
                "give exactly one of model.url and model.path".into(),
            )),
        }
    }
}

impl ModelStore {
    /// Where the controller reads a calibration file (or folder, `folder`): under the model
    /// directory, or downloaded (checked against its SHA-256) into the cache.
    pub async fn resolve_file(
        &self,
        f: &super::crd::FileSource,
        what: &str,
        folder: bool,
    ) -> Result<PathBuf, FetchError> {
        match (&f.url, &f.path) {
            (Some(url), None) => {
                if folder {
                    return Err(FetchError::Invalid(format!(
                        "{what} is an image folder: give its path on the model volume, not a url"
                    )));
                }
                let sha = f.sha256.as_deref().ok_or_else(|| {
                    FetchError::Invalid(format!("{what}.url needs {what}.sha256"))
                })?;
                let cached = self
                    .cache_dir
                    .join(format!("{}.npy", sha.to_ascii_lowercase()));
                if std::fs::read(&cached).is_ok_and(|b| sha256_hex(&b) == sha.to_ascii_lowercase())
                {
                    return Ok(cached);
                }
                let bytes = get(url, MAX_MODEL_BYTES, self.timeout).await?;
                verify(url, &bytes, sha)?;
                std::fs::create_dir_all(&self.cache_dir).map_err(|e| FetchError::File {
                    path: self.cache_dir.display().to_string(),
                    why: e.to_string(),
                })?;
                let tmp = cached.with_extension("part");
                std::fs::write(&tmp, &bytes)
                    .and_then(|()| std::fs::rename(&tmp, &cached))
                    .map_err(|e| FetchError::File {
                        path: cached.display().to_string(),
                        why: e.to_string(),
                    })?;
                Ok(cached)
            }
            (None, Some(path)) => {
                let p = Path::new(path);
                if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                    return Err(FetchError::Invalid(format!(
                        "{what}.path {path:?} must be relative, without `..`"
                    )));
                }
                let full = self.model_dir.join(p);
                let ok = if folder {
                    full.is_dir()
                } else {
                    full.is_file()
                };
                if !ok {
                    return Err(FetchError::File {
                        path: full.display().to_string(),
                        why: format!("no such {}", if folder { "folder" } else { "file" }),
                    });
                }
                if let (Some(sha), false) = (&f.sha256, folder) {
                    let bytes = std::fs::read(&full).map_err(|e| FetchError::File {
                        path: full.display().to_string(),
                        why: e.to_string(),
                    })?;
                    verify(path, &bytes, sha)?;
                }
                Ok(full)
            }
            _ => Err(FetchError::Invalid(format!(
                "give exactly one of {what}.path and {what}.url"
            ))),
        }
    }
}

/// `cnnpc fetch`: download `url`, check it, write it to `out` (what a shard's init container runs).
pub async fn fetch_to_file(url: &str, sha256: &str, out: &Path) -> Result<usize, FetchError> {
    let bytes = get(url, MAX_MODEL_BYTES, Duration::from_secs(600)).await?;
    verify(url, &bytes, sha256)?;
    let tmp = out.with_extension("part");
    let io = |e: std::io::Error| FetchError::File {
        path: out.display().to_string(),
        why: e.to_string(),
    };
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(verify("x", b"abc", &sha256_hex(b"abc")).is_ok());
        let e = verify("x", b"abd", &sha256_hex(b"abc")).unwrap_err();
        assert_eq!(e.reason(), "ChecksumMismatch");
    }

    #[tokio::test]
    async fn unreachable_and_bad_urls_are_errors_not_panics() {
        let e = get("http://127.0.0.1:1/m.onnx", 10, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "ModelUnavailable", "{e}");
        let e = get("ftp://x/y", 10, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::BadUrl { .. }));
    }

    #[tokio::test]
    async fn path_models_are_read_under_the_model_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"model").unwrap();
        let store = ModelStore {
            cache_dir: dir.path().join("cache"),
            model_dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(1),
        };
        let src = |p: &str| ModelSource {
            path: Some(p.into()),
            ..ModelSource::default()
        };
        assert_eq!(store.resolve(&src("m.onnx")).await.unwrap(), b"model");
        assert!(matches!(
            store.resolve(&src("../etc/passwd")).await,
            Err(FetchError::Invalid(_))
        ));
        assert!(matches!(
            store.resolve(&src("missing.onnx")).await,
            Err(FetchError::File { .. })
        ));
    }
}
