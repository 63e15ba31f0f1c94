//! `cnnpc bench oip`: what the Open Inference Protocol costs at the entry against the internal
//! tensor frame. One shard server on loopback serves the whole model; the same input is sent
//! as a frame (`POST /v1/infer`), as OIP binary tensors and as OIP JSON, one of each per round,
//! interleaved, so the three medians share the machine's state. The overhead of a path is its
//! median minus the frame's; the model's compute (from `Server-Timing`) is reported beside.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::onnx::frame::Frame;
use crate::planner::accuracy::WireEncoding;
use crate::runtime::server::{self, OipModel, ShardConfig, SERVER_TIMING};
use crate::runtime::tract_model::TractShard;

/// A path under test: its name, URL, headers and body.
type BenchPath<'a> = (&'a str, String, Vec<(&'a str, String)>, Bytes);

/// One path's figures, in ms per request.
#[derive(Debug, Clone, Serialize)]
pub struct PathRow {
    pub path: String,
    pub request_bytes: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    /// Median minus the frame path's median.
    pub overhead_ms: f64,
    /// Median over the frame path's median.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OipBench {
    pub model: String,
    pub input_shape: Vec<usize>,
    pub samples: usize,
    /// The model's own compute per request (median of the server's Server-Timing).
    pub compute_median_ms: f64,
    pub rows: Vec<PathRow>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Serves `model` whole and sends `samples` rounds of the three requests.
pub async fn run(name: &str, model: &[u8], samples: usize) -> Result<OipBench> {
    if samples < 3 {
        bail!("--samples must be at least 3");
    }
    let shard = TractShard::load(name, model).map_err(anyhow::Error::msg)?;
    let shape = shard.input_shape().to_vec();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = ShardConfig {
        tier: "end".into(),
        model_name: name.into(),
        oip: OipModel {
            name: name.into(),
            ..OipModel::default()
        },
        max_concurrency: 2,
        ..ShardConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(cfg, Arc::new(shard), listener, async {
        let _ = stopped.await;
    }));

    let elements: usize = shape.iter().product();
    let data: Vec<f32> = (0..elements)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let frame = Frame::from_tensor(&data, &shape, 1, WireEncoding::F32, None)?.encode();
    let header = serde_json::json!({
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": elements * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut binary = header.clone().into_bytes();
    for v in &data {
        binary.extend_from_slice(&v.to_le_bytes());
    }
    let json = serde_json::json!({
        "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}],
    })
    .to_string()
    .into_bytes();
    let infer = format!("http://{addr}/v2/models/{name}/infer");
    let header_len = header.len().to_string();
    let paths: Vec<BenchPath> = vec![
        (
            "frame",
            format!("http://{addr}/v1/infer"),
            vec![("content-type", server::FRAME_CONTENT_TYPE.to_string())],
            Bytes::from(frame),
        ),
        (
            "oip-binary",
            infer.clone(),
            vec![
                ("content-type", "application/octet-stream".to_string()),
                ("inference-header-content-length", header_len),
            ],
            Bytes::from(binary),
        ),
        (
            "oip-json",
            infer,
            vec![("content-type", "application/json".to_string())],
            Bytes::from(json),
        ),
    ];
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut compute = Vec::new();
    // One warm-up round, not counted.
    for round in 0..=samples {
        for (i, (what, url, headers, body)) in paths.iter().enumerate() {
            let mut req = hyper::Request::post(url.as_str());
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req.body(Full::new(body.clone()))?;
            let t0 = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
                .await
                .context("no answer in 60 s")??;
            let status = resp.status();
            let timing = resp
                .headers()
                .get(SERVER_TIMING)
                .and_then(|v| v.to_str().ok())
                .map(server::parse_timing)
                .unwrap_or_default();
            let answer = resp.into_body().collect().await?.to_bytes();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if !status.is_success() {
                bail!("{what}: {status}: {}", String::from_utf8_lossy(&answer));
            }
            if round > 0 {
                times[i].push(ms);
                if let Some((_, c)) = timing.first() {
                    compute.push(*c);
                }
            }
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    let frame_median = median(&mut times[0].clone());
    let rows = paths
        .iter()
        .zip(times.iter_mut())
        .map(|((what, _, _, body), t)| {
            let m = median(t);
            PathRow {
                path: what.to_string(),
                request_bytes: body.len(),
                median_ms: m,
                p95_ms: t[(t.len() * 95 / 100).min(t.len() - 1)],
                overhead_ms: m - frame_median,
                ratio: m / frame_median,
            }
        })
        .collect();
    Ok(OipBench {
        model: name.into(),
        input_shape: shape,
        samples,
        compute_median_ms: median(&mut compute),
        rows,
    })
}

pub fn markdown(r: &OipBench) -> String {
    let mut s = format!(
        "OIP vs the internal frame at the entry: {} {:?}, {} interleaved rounds, model compute {:.2} ms\n\n\
         | path | request bytes | median ms | p95 ms | overhead ms | × frame |\n|---|---:|---:|---:|---:|---:|\n",
        r.model, r.input_shape, r.samples, r.compute_median_ms
    );
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {:.2} | {:.2} | {:+.2} | {:.2} |\n",
            row.path, row.request_bytes, row.median_ms, row.p95_ms, row.overhead_ms, row.ratio
        );
    }
    s
}
