//! An Open Inference Protocol (v2 REST) client for a cnnpc entry: what `cnnpc infer`, the demo
//! and the e2e suite call it with. Plain HTTP/1.1 (the entry is a cluster Service, reached
//! in-cluster or through `kubectl port-forward`).

use crate::runtime::oip;
use crate::runtime::server::SERVER_TIMING;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{header, Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One class of an answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Class {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub score: f64,
}

/// One answer: the best classes, the plan that served it and where its time went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub top_k: Vec<Class>,
    pub plan_id: String,
    /// End to end, as this client saw it.
    pub latency_ms: f64,
    /// Compute per tier, from the answer's `Server-Timing`, in chain order.
    pub compute_ms: Vec<(String, f64)>,
}

/// What one request sends.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A PNG or JPEG; the entry preprocesses it and ranks the classes.
    Image { bytes: Bytes, content_type: String },
    /// A preprocessed FP32 tensor, sent with the binary tensor extension.
    Tensor { shape: Vec<usize>, data: Arc<[f32]> },
}

/// A client of one model at one entry.
#[derive(Clone)]
pub struct Client {
    base: String,
    model: String,
    input_name: String,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

fn http_client() -> hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(c)
}

/// `http://host:port[/v2/models/NAME[/infer]]` → the base and the model named in it, if any.
pub fn split_url(url: &str) -> Result<(String, Option<String>)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => bail!("--url {url}: https is not supported; call the entry over http (in-cluster, or through kubectl port-forward)"),
        _ => bail!("--url {url:?} must start with http://"),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--url {url:?} has no host"))?;
    let path = uri.path().trim_end_matches('/');
    let model = path
        .strip_prefix("/v2/models/")
        .map(|rest| rest.trim_end_matches("/infer").to_string())
        .filter(|m| !m.is_empty() && !m.contains('/'));
    if model.is_none() && !path.is_empty() {
        bail!("--url {url:?}: give the entry's base URL (http://host:port) or http://host:port/v2/models/NAME");
    }
    Ok((format!("http://{authority}"), model))
}

impl Client {
    /// Connects to the entry at `url` and learns the model's input from its metadata; without
    /// a model name (in `model` or the URL) the entry's one model is asked for.
    pub async fn connect(url: &str, model: Option<&str>) -> Result<Client> {
        let (base, in_url) = split_url(url)?;
        let mut c = Client {
            base,
            model: String::new(),
            input_name: String::new(),
            http: http_client(),
            timeout: Duration::from_secs(60),
        };
        c.model = match model.map(str::to_string).or(in_url) {
            Some(m) => m,
            None => {
                let (status, _, body) = c
                    .call(Method::POST, "/v2/repository/index", None, Bytes::new())
                    .await?;
                let index: Value = json_of(status, &body, "the model repository index")?;
                index
                    .get(0)
                    .and_then(|m| m["name"].as_str())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{} serves no model", c.base))?
            }
        };
        let meta = c.metadata().await?;
        c.input_name = meta["inputs"][0]["name"]
            .as_str()
            .unwrap_or("input")
            .to_string();
        Ok(c)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// `GET /v2/models/{name}`.
    pub async fn metadata(&self) -> Result<Value> {
        let path = format!("/v2/models/{}", self.model);
        let (status, _, body) = self.call(Method::GET, &path, None, Bytes::new()).await?;
        json_of(
            status,
            &body,
            &format!("the metadata of model {:?}", self.model),
        )
    }

    /// The whole chain's readiness (`GET /v2/health/ready`).
    pub async fn ready(&self) -> Result<bool> {
        let (status, _, _) = self
            .call(Method::GET, "/v2/health/ready", None, Bytes::new())
            .await?;
        Ok(status == StatusCode::OK)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: Option<Vec<(&str, String)>>,
        body: Bytes,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut req = hyper::Request::builder().method(method).uri(&url);
        for (k, v) in headers.unwrap_or_default() {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).context("building the request")?;
        let call = async {
            let resp = self.http.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| anyhow!("{url} did not answer within {:?}", self.timeout))?
            .with_context(|| format!("calling {url}"))
    }

    /// Sends one payload; the answer's best `top_k` classes.
    pub async fn infer(&self, payload: &Payload, top_k: usize) -> Result<Answer> {
        let started = Instant::now();
        let (path, headers, body) = match payload {
            Payload::Image {
                bytes,
                content_type,
            } => (
                format!("/v2/models/{}/infer?top_k={top_k}", self.model),
                vec![(header::CONTENT_TYPE.as_str(), content_type.clone())],
                bytes.clone(),
            ),
            Payload::Tensor { shape, data } => {
                let header = json!({
                    "inputs": [{
                        "name": self.input_name,
                        "shape": shape,
                        "datatype": "FP32",
                        "parameters": { "binary_data_size": data.len() * 4 },
                    }],
                    "parameters": { "binary_data_output": true },
                })
                .to_string();
                let mut body = Vec::with_capacity(header.len() + data.len() * 4);
                body.extend_from_slice(header.as_bytes());
                for v in data.iter() {
                    body.extend_from_slice(&v.to_le_bytes());
                }
                (
                    format!("/v2/models/{}/infer", self.model),
                    vec![
                        (
                            header::CONTENT_TYPE.as_str(),
                            oip::BINARY_CONTENT_TYPE.to_string(),
                        ),
                        (oip::HEADER_LENGTH_HEADER, header.len().to_string()),
                    ],
                    Bytes::from(body),
                )
            }
        };
        let (status, resp_headers, body) =
            self.call(Method::POST, &path, Some(headers), body).await?;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let compute_ms = resp_headers
            .get(SERVER_TIMING)
            .and_then(|v| v.to_str().ok())
            .map(crate::runtime::server::parse_timing)
            .unwrap_or_default();
        if !status.is_success() {
            bail!("{status}: {}", error_message(&body));
        }
        let (json, tail) = match resp_headers
            .get(oip::HEADER_LENGTH_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(n) => {
                let n = oip::parse_header_length(n).map_err(|e| anyhow!("{e}"))?;
                let (h, t) = body
                    .split_at_checked(n)
                    .ok_or_else(|| anyhow!("the answer is shorter than its JSON header"))?;
                (h, Some(t))
            }
            None => (&body[..], None),
        };
        let answer: Value = serde_json::from_slice(json).context("the answer is not JSON")?;
        let plan_id = answer["parameters"]["plan_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let top_k = match payload {
            Payload::Image { .. } => {
                serde_json::from_value::<Vec<ClassJson>>(answer["top_k"].clone())
                    .context("the answer has no top_k")?
                    .into_iter()
                    .map(|c| Class {
                        index: c.index,
                        label: c.label,
                        score: c.score,
                    })
                    .collect()
            }
            Payload::Tensor { .. } => {
                let scores = output_values(&answer, tail)?;
                crate::runtime::server::ranked(&scores, top_k, &[])
                    .into_iter()
                    .filter_map(|c| {
                        Some(Class {
                            index: c["index"].as_u64()? as usize,
                            label: None,
                            score: c["score"].as_f64()?,
                        })
                    })
                    .collect()
            }
        };
        Ok(Answer {
            top_k,
            plan_id,
            latency_ms,
            compute_ms,
        })
    }
}

#[derive(serde::Deserialize)]
struct ClassJson {
    index: usize,
    #[serde(default)]
    label: Option<String>,
    score: f64,
}

/// The first output's values, inline JSON or binary after the header.
fn output_values(answer: &Value, tail: Option<&[u8]>) -> Result<Vec<f32>> {
    let out = &answer["outputs"][0];
    if let Some(data) = out["data"].as_array() {
        return data
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| anyhow!("the output's data is not numbers"));
    }
    let size = out["parameters"]["binary_data_size"]
        .as_u64()
        .ok_or_else(|| anyhow!("the answer has neither data nor binary_data_size"))?
        as usize;
    let tail = tail.unwrap_or_default();
    if tail.len() < size || size % 4 != 0 {
        bail!("the binary output is {} bytes, {size} declared", tail.len());
    }
    Ok(tail[..size]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

fn json_of(status: StatusCode, body: &[u8], what: &str) -> Result<Value> {
    if !status.is_success() {
        bail!("{what}: {status}: {}", error_message(body));
    }
    serde_json::from_slice(body).with_context(|| format!("{what} is not JSON"))
}

/// What a bounded load check saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub concurrency: usize,
    pub ok: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub wall_s: f64,
    /// Answers per plan id: a replan under load shows as two ids.
    pub plans: BTreeMap<String, usize>,
    /// The first few error messages, with their counts.
    pub error_kinds: BTreeMap<String, usize>,
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends `requests` requests, cycling through `payloads`, at most `concurrency` at once;
/// `progress(done)` after each.
pub async fn load(
    client: &Client,
    payloads: &[Payload],
    requests: usize,
    concurrency: usize,
    top_k: usize,
    progress: impl Fn(usize) + Send + Sync + 'static,
) -> Result<LoadReport> {
    if payloads.is_empty() || concurrency == 0 {
        bail!("a load check needs at least one input and a concurrency of at least 1");
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(progress);
    let payloads: Arc<[Payload]> = payloads.to_vec().into();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(requests) {
        let (client, next, payloads, progress) = (
            client.clone(),
            next.clone(),
            payloads.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= requests {
                    return seen;
                }
                let r = client.infer(&payloads[i % payloads.len()], top_k).await;
                seen.push(r.map_err(|e| format!("{e:#}")));
                progress(i + 1);
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut plans = BTreeMap::new();
    let mut error_kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = 0;
    for t in tasks {
        for r in t.await.context("a load task failed")? {
            match r {
                Ok(a) => {
                    latencies.push(a.latency_ms);
                    *plans.entry(a.plan_id).or_insert(0) += 1;
                }
                Err(e) => {
                    errors += 1;
                    if error_kinds.len() < 5 || error_kinds.contains_key(&e) {
                        *error_kinds.entry(e).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mean_ms = if latencies.is_empty() {
        f64::NAN
    } else {
        latencies.iter().sum::<f64>() / latencies.len() as f64
    };
    Ok(LoadReport {
        requests,
        concurrency,
        ok: latencies.len(),
        errors,
        p50_ms: quantile(&latencies, 0.50),
        p95_ms: quantile(&latencies, 0.95),
        p99_ms: quantile(&latencies, 0.99),
        mean_ms,
        wall_s: started.elapsed().as_secs_f64(),
        plans,
        error_kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_entry_and_maybe_the_model() {
        assert_eq!(
            split_url("http://localhost:8080").unwrap(),
            ("http://localhost:8080".into(), None)
        );
        assert_eq!(
            split_url("http://h:1/v2/models/orientation/infer").unwrap(),
            ("http://h:1".into(), Some("orientation".into()))
        );
        assert_eq!(
            split_url("http://h:1/v2/models/m/").unwrap().1.as_deref(),
            Some("m")
        );
        assert!(split_url("https://h:1")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(split_url("h:1").is_err());
        assert!(split_url("http://h:1/other").is_err());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
