//! KServe's Open Inference Protocol (v2, REST) on a shard: what clients call at the entry tier.
//! The codec is [`crate::runtime::oip`]; this module is its transport, an adapter over the same
//! chain the tensor frames take (`run_chain`), so both paths compute and forward alike.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v2` | server metadata (name, version, extensions) |
//! | `GET /v2/health/live` | 200 while the process serves |
//! | `GET /v2/health/ready`, `GET /v2/models/{name}/ready` | 200 when the whole chain to the last tier can answer, else 503 |
//! | `GET /v2/models/{name}` | the whole model's input and output: names, datatypes, shapes |
//! | `POST /v2/models/{name}/infer`, JSON or binary tensors | the output tensor; `parameters` carry the plan id and per-tier compute times |
//! | `POST /v2/models/{name}/infer`, `Content-Type: image/*` | top-k classes with scores (`?top_k=N`, default 5), the image preprocessed as the resource declares |
//! | `POST /v2/repository/index` | the one model served and its state |
//!
//! Errors are the protocol's `{"error": "..."}` objects: 400 malformed or mismatched input,
//! 404 unknown model, 408 body too slow, 413 body over the limit, 500 model failure, 502/504
//! next tier failing or silent, 503 + `Retry-After: 1` no free slot or not ready.

use super::{
    chain_ready, discard_body, new_request_id, run_chain, valid_token, Answer, Failure, Input,
    Shard, ShardModel, Tensor, REQUEST_ID, SERVER_TIMING, TIER,
};
use crate::dataset::files::{ImageInput, Preprocess};
use crate::onnx::frame::Frame;
use crate::runtime::metrics::Outcome;
use crate::runtime::oip::{self, MetadataTensor, OipError};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, info_span, warn, Instrument};

/// Largest request body by default: a 224×224×3 FP32 input as JSON is ~2 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Classes in an image answer unless `?top_k=` says otherwise.
pub const DEFAULT_TOP_K: usize = 5;

/// The whole model as clients see it at the entry: one input, one output.
#[derive(Debug, Clone, Default)]
pub struct OipModel {
    /// The name clients call it by (`/v2/models/{name}`); empty: the shard's model name.
    pub name: String,
    /// The model's input name; `None`: any name is taken.
    pub input_name: Option<String>,
    /// The whole model's input shape; `None`: the first shard's (if fixed).
    pub input_shape: Option<Vec<usize>>,
    /// The model's output name; empty: `output`.
    pub output_name: String,
    /// The whole model's output shape for metadata, -1 where unknown; empty: unknown.
    pub output_shape: Vec<i64>,
    /// How uploaded images become the input; `None`: [`Preprocess::default`].
    pub preprocess: Option<Preprocess>,
    /// Class names by output index, for image answers.
    pub class_names: Vec<String>,
    /// Largest request body; 0: [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
}

pub(super) fn routes(r: Router<Arc<Shard>>) -> Router<Arc<Shard>> {
    r.route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(model_infer))
        .route("/v2/repository/index", post(repository_index))
}

fn model_name(shard: &Shard) -> &str {
    if shard.cfg.oip.name.is_empty() {
        &shard.cfg.model_name
    } else {
        &shard.cfg.oip.name
    }
}

fn output_name(shard: &Shard) -> &str {
    if shard.cfg.oip.output_name.is_empty() {
        "output"
    } else {
        &shard.cfg.oip.output_name
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, oip::JSON_CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// The protocol's error object, with `Retry-After` where a retry may succeed.
fn error_response(status: StatusCode, message: &str) -> Response {
    let mut resp = json_response(status, &json!({ "error": message }));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn from_oip(e: OipError) -> Failure {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let outcome = if status.is_server_error() {
        Outcome::ModelError
    } else {
        Outcome::BadRequest
    };
    Failure::new(status, outcome, e.message)
}

fn unknown_model(shard: &Shard, name: &str) -> Option<Response> {
    (name != model_name(shard)).then(|| {
        error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "model {name:?} is not served here; this server serves {:?}",
                model_name(shard)
            ),
        )
    })
}

async fn server_metadata() -> Response {
    let meta = oip::ServerMetadata::new("cnnpc", env!("CARGO_PKG_VERSION"));
    json_response(StatusCode::OK, &json!(meta))
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "live": true }))
}

async fn ready(State(shard): State<Arc<Shard>>) -> Response {
    match chain_ready(&shard).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "ready": true })),
        Err(why) => error_response(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

async fn model_ready(State(shard): State<Arc<Shard>>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown_model(&shard, &name) {
        return r;
    }
    match chain_ready(&shard).await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "name": name, "ready": true })),
        Err(why) => error_response(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

async fn repository_index(State(shard): State<Arc<Shard>>) -> Response {
    let state = match chain_ready(&shard).await {
        Ok(()) => "READY",
        Err(_) => "UNAVAILABLE",
    };
    json_response(
        StatusCode::OK,
        &json!([{ "name": model_name(&shard), "version": "", "state": state }]),
    )
}

/// The input shape requests must have: the whole model's, or the first shard's.
fn input_shape(shard: &Shard, model: &dyn ShardModel) -> Option<Vec<usize>> {
    shard
        .cfg
        .oip
        .input_shape
        .clone()
        .or_else(|| model.input_shape().map(<[usize]>::to_vec))
}

async fn model_metadata(State(shard): State<Arc<Shard>>, Path(name): Path<String>) -> Response {
    if let Some(r) = unknown_model(&shard, &name) {
        return r;
    }
    let shape = shard
        .model()
        .ok()
        .and_then(|m| input_shape(&shard, &*m))
        .map_or_else(|| vec![-1], |s| s.iter().map(|&d| d as i64).collect());
    let output_shape = if shard.cfg.oip.output_shape.is_empty() {
        vec![-1]
    } else {
        shard.cfg.oip.output_shape.clone()
    };
    let meta = oip::ModelMetadata {
        name: model_name(&shard).to_string(),
        versions: Vec::new(),
        platform: "onnx".into(),
        inputs: vec![MetadataTensor {
            name: shard
                .cfg
                .oip
                .input_name
                .clone()
                .unwrap_or_else(|| "input".into()),
            datatype: "FP32".into(),
            shape,
        }],
        outputs: vec![MetadataTensor {
            name: output_name(&shard).to_string(),
            datatype: "FP32".into(),
            shape: output_shape,
        }],
    };
    json_response(StatusCode::OK, &json!(meta))
}

pub(super) fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_token(s, 128))
        .map_or_else(new_request_id, str::to_owned)
}

async fn model_infer(
    State(shard): State<Arc<Shard>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(req.headers());
    let span = info_span!(
        "infer",
        request_id = %request_id,
        tier = %shard.cfg.tier,
        from = "client",
        api = "oip",
    );
    async {
        let result = infer(&shard, &name, &request_id, started, req).await;
        let outcome = result.as_ref().map_or_else(|f| f.outcome, |_| Outcome::Ok);
        shard.metrics.count(&shard.cfg.tier, outcome);
        let elapsed = started.elapsed();
        let mut resp = match result {
            Ok(resp) => {
                shard.metrics.request_seconds.observe(elapsed.as_secs_f64());
                info!(
                    outcome = outcome.as_str(),
                    ms = elapsed.as_secs_f64() * 1e3,
                    "done"
                );
                resp
            }
            Err(f) => {
                warn!(
                    outcome = outcome.as_str(),
                    status = f.status.as_u16(),
                    error = %f.message,
                    "failed"
                );
                error_response(f.status, &f.message)
            }
        };
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(REQUEST_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&shard.cfg.tier) {
            headers.insert(TIER, v);
        }
        resp
    }
    .instrument(span)
    .await
}

async fn infer(
    shard: &Arc<Shard>,
    name: &str,
    request_id: &str,
    started: Instant,
    req: Request,
) -> Result<Response, Failure> {
    if name != model_name(shard) {
        discard_body(req, &shard.cfg.limits).await;
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            Outcome::BadRequest,
            format!(
                "model {name:?} is not served here; this server serves {:?}",
                model_name(shard)
            ),
        ));
    }
    let Ok(_permit) = shard.slots.clone().try_acquire_owned() else {
        discard_body(req, &shard.cfg.limits).await;
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Overloaded,
            format!(
                "tier {} is at its limit of {} concurrent requests",
                shard.cfg.tier, shard.cfg.max_concurrency
            ),
        ));
    };
    let model = shard
        .model()
        .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, Outcome::ModelError, e))?;
    let (parts, body) = req.into_parts();
    let body = read_body(shard, &parts.headers, body).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let shape = input_shape(shard, &*model);
    if content_type.starts_with("image/") {
        let top_k = top_k(parts.uri.query())?;
        let shape = shape.ok_or_else(|| {
            Failure::bad_request("the model's input shape is not fixed; images cannot be sized")
        })?;
        let preprocess = shard.cfg.oip.preprocess.clone().unwrap_or_default();
        let image = ImageInput::new(&preprocess, &shape)
            .map_err(|e| Failure::bad_request(format!("this model cannot take images: {e:#}")))?;
        let mut data = Vec::new();
        image
            .append(&body, &mut data)
            .map_err(|e| Failure::bad_request(format!("the body ({content_type}): {e:#}")))?;
        let answer = run_chain(
            shard,
            request_id,
            model,
            Input::Tensor(Tensor { shape, data }),
        )
        .await?;
        let (out_shape, scores) = output_of(shard, &answer)?;
        let classes = ranked(&scores, top_k, &shard.cfg.oip.class_names);
        let body = json!({
            "model_name": model_name(shard),
            "id": request_id,
            "parameters": parameters(shard, &answer.timing, started),
            "output_shape": out_shape,
            "top_k": classes,
        });
        let mut resp = json_response(StatusCode::OK, &body);
        set_timing(&mut resp, &answer.timing);
        return Ok(resp);
    }
    let header_length = parts
        .headers
        .get(oip::HEADER_LENGTH_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| OipError::bad_request("Inference-Header-Content-Length is not ASCII"))
                .and_then(oip::parse_header_length)
        })
        .transpose()
        .map_err(from_oip)?;
    let limits = oip::Limits {
        max_body_bytes: max_body(shard),
        max_elements: usize::try_from(shard.cfg.limits.max_elements).unwrap_or(usize::MAX),
    };
    let mut request = oip::parse_infer_request(&body, header_length, &limits).map_err(from_oip)?;
    drop(body);
    let mut inputs = std::mem::take(&mut request.inputs);
    let (Some(input), true) = (inputs.pop(), inputs.is_empty()) else {
        return Err(Failure::bad_request(format!(
            "this model takes one input; the request has {}",
            inputs.len() + 1
        )));
    };
    if let Some(want) = &shape {
        oip::check_input(&input, shard.cfg.oip.input_name.as_deref(), want).map_err(from_oip)?;
    }
    let tensor = Tensor {
        shape: input.shape,
        data: input.data.into_f32(),
    };
    let answer = run_chain(shard, request_id, model, Input::Tensor(tensor)).await?;
    let (out_shape, data) = output_of(shard, &answer)?;
    let encoded = oip::encode_infer_response(
        model_name(shard),
        None,
        &request,
        parameters(shard, &answer.timing, started),
        &[oip::OutputTensor {
            name: output_name(shard).to_string(),
            shape: out_shape,
            data,
        }],
    )
    .map_err(from_oip)?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoded.content_type)],
        encoded.body,
    )
        .into_response();
    if let Some(n) = encoded.header_length {
        resp.headers_mut()
            .insert(oip::HEADER_LENGTH_HEADER, HeaderValue::from(n));
    }
    set_timing(&mut resp, &answer.timing);
    Ok(resp)
}

fn max_body(shard: &Shard) -> usize {
    match shard.cfg.oip.max_body_bytes {
        0 => DEFAULT_MAX_BODY_BYTES,
        n => n,
    }
}

/// Reads the whole body, refusing it from `Content-Length` or as soon as it passes the limit.
async fn read_body(
    shard: &Shard,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<bytes::Bytes, Failure> {
    let max = max_body(shard);
    let too_large = |n: String| {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadRequest,
            format!("the request body is {n} bytes; the limit is {max}"),
        )
    };
    if let Some(cl) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
    {
        if cl > max as u64 {
            return Err(too_large(cl.to_string()));
        }
    }
    let read = tokio::time::timeout(shard.cfg.read_timeout, Limited::new(body, max).collect());
    match read.await {
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            Outcome::BadRequest,
            format!(
                "request body not received within {:?}",
                shard.cfg.read_timeout
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large("over".into())),
        Ok(Err(e)) => Err(Failure::bad_request(format!("reading the body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The last tier's answer, a frame of f32, as shape and values.
fn output_of(shard: &Shard, answer: &Answer) -> Result<(Vec<usize>, Vec<f32>), Failure> {
    let bad = |e: String| {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            Outcome::UpstreamError,
            format!("the last tier's answer is not a tensor frame: {e}"),
        )
    };
    let frame = Frame::decode(&answer.body, &shard.cfg.limits).map_err(|e| bad(e.to_string()))?;
    let data = frame.to_f32().map_err(|e| bad(e.to_string()))?;
    Ok((frame.shape().to_vec(), data))
}

/// The plan id, each tier's compute time and the entry's total so far, as response parameters
/// (flat scalars: the protocol's parameter values are strings, numbers or booleans).
fn parameters(shard: &Shard, timing: &str, started: Instant) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("plan_id".into(), json!(shard.cfg.plan_id));
    for (tier, ms) in parse_timing(timing) {
        p.insert(format!("compute_ms_{tier}"), json!(ms));
    }
    p.insert(
        "entry_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1e3),
    );
    p
}

/// `end;dur=3.1, cloud;dur=20.4` → `[("end", 3.1), ("cloud", 20.4)]`.
pub fn parse_timing(timing: &str) -> Vec<(String, f64)> {
    timing
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.trim().split(';');
            let name = parts.next()?.trim();
            let dur = parts.find_map(|p| p.trim().strip_prefix("dur="))?;
            Some((name.to_string(), dur.parse().ok()?))
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

fn set_timing(resp: &mut Response, timing: &str) {
    if let Ok(v) = HeaderValue::from_str(timing) {
        resp.headers_mut().insert(SERVER_TIMING, v);
    }
}

fn top_k(query: Option<&str>) -> Result<usize, Failure> {
    let Some(v) = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("top_k="))
    else {
        return Ok(DEFAULT_TOP_K);
    };
    v.parse::<usize>()
        .ok()
        .filter(|k| (1..=1000).contains(k))
        .ok_or_else(|| Failure::bad_request(format!("top_k={v:?} must be 1..=1000")))
}

/// The `k` best classes: index, name (if known) and score. Scores are the outputs when they
/// already form a distribution, else their softmax.
pub fn ranked(outputs: &[f32], k: usize, names: &[String]) -> Vec<Value> {
    let sum: f32 = outputs.iter().sum();
    let distribution = outputs.iter().all(|v| (0.0..=1.0).contains(v)) && (sum - 1.0).abs() < 1e-3;
    let scores: Vec<f32> = if distribution {
        outputs.to_vec()
    } else {
        let max = outputs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = outputs.iter().map(|v| (v - max).exp()).collect();
        let z: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / z).collect()
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| {
            let mut c = json!({ "index": i, "score": scores[i] });
            if let Some(name) = names.get(i) {
                c["label"] = json!(name);
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_parse_in_chain_order() {
        assert_eq!(
            parse_timing("end;dur=3.5, cloud;dur=20"),
            [("end".to_string(), 3.5), ("cloud".to_string(), 20.0)]
        );
        assert!(parse_timing("").is_empty());
        assert_eq!(parse_timing("x;desc=a, y;dur=bad, z;dur=1").len(), 1);
    }

    #[test]
    fn ranking_softmaxes_logits_and_keeps_distributions() {
        let r = ranked(&[1.0, 3.0, 2.0], 2, &["a".into(), "b".into()]);
        assert_eq!(r[0]["index"], 1);
        assert_eq!(r[0]["label"], "b");
        assert_eq!(r[1]["index"], 2);
        assert!(r[1].get("label").is_none(), "no name for class 2");
        let p = r[0]["score"].as_f64().unwrap();
        assert!((p - 0.665).abs() < 0.01, "{p}");
        let d = ranked(&[0.25, 0.75], 5, &[]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0]["score"], 0.75);
    }

    #[test]
    fn top_k_is_bounded() {
        assert_eq!(top_k(None).unwrap(), DEFAULT_TOP_K);
        assert_eq!(top_k(Some("a=1&top_k=3")).unwrap(), 3);
        assert!(top_k(Some("top_k=0")).is_err());
        assert!(top_k(Some("top_k=x")).is_err());
    }
}
