//! The Open Inference Protocol at the entry, as clients call it: real `cnnpc shard` processes
//! (PP-OCR's direction classifier split end → cloud) on loopback, called with the protocol's
//! published request shapes, with curl-style raw HTTP, with `cnnpc infer`, and with Triton's
//! own Python client (tritonclient[http], `make tools`), which no one here wrote.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::shard::{self, ShardProcess};

const ELEMENTS: usize = 3 * 48 * 192;
const CUT: &str = shard::PPOCR_CUT;
const MODEL_NAME: &str = shard::PPOCR_MODEL_NAME;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cnnpc")
}

/// Raw HTTP/1.1, one request per connection: exactly the bytes a curl user sends.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The end → cloud chain and the unsplit model as a reference, all ready.
struct Chain {
    entry: ShardProcess,
    _cloud: ShardProcess,
    whole: ShardProcess,
}

fn chain(model: &Path) -> Chain {
    let mut cloud = shard::ppocr(
        model,
        &["--split-at", CUT, "--part", "1", "--tier", "cloud"],
    );
    let next = cloud.url();
    let mut entry = shard::ppocr(
        model,
        &[
            "--split-at",
            CUT,
            "--part",
            "0",
            "--tier",
            "end",
            "--next",
            &next,
        ],
    );
    let mut whole = shard::ppocr(model, &["--tier", "cloud"]);
    for s in [&mut cloud, &mut entry, &mut whole] {
        s.wait_ready();
    }
    Chain {
        entry,
        _cloud: cloud,
        whole,
    }
}

/// A deterministic input in the model's range.
fn input() -> Vec<f32> {
    (0..ELEMENTS)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn infer_json(port: u16, data: &[f32]) -> Value {
    let body = json!({
        "id": "42",
        "inputs": [{"name": "x", "shape": [1, 3, 48, 192], "datatype": "FP32", "data": data}],
    });
    let (status, _, body) = http(
        port,
        "POST",
        &format!("/v2/models/{MODEL_NAME}/infer"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    json_of(&body)
}

fn outputs(v: &Value) -> Vec<f64> {
    v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn the_entry_speaks_the_protocol_and_answers_as_the_unsplit_model() {
    let Some(model) = shard::ppocr_model() else {
        return;
    };
    let c = chain(&model);
    let port = c.entry.port;

    // Server metadata, liveness, readiness of the whole chain.
    let (status, _, body) = http(port, "GET", "/v2", &[], b"");
    assert_eq!(status, 200);
    let meta = json_of(&body);
    assert_eq!(meta["name"], "cnnpc");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    assert_eq!(http(port, "GET", "/v2/health/live", &[], b"").0, 200);
    assert_eq!(http(port, "GET", "/v2/health/ready", &[], b"").0, 200);
    assert_eq!(
        http(
            port,
            "GET",
            &format!("/v2/models/{MODEL_NAME}/ready"),
            &[],
            b""
        )
        .0,
        200
    );

    // Model metadata: the whole model's input and output, not the first shard's.
    let (status, _, body) = http(port, "GET", &format!("/v2/models/{MODEL_NAME}"), &[], b"");
    assert_eq!(status, 200);
    let m = json_of(&body);
    assert_eq!(m["name"], MODEL_NAME);
    assert_eq!(
        m["inputs"][0],
        json!({"name": "x", "datatype": "FP32", "shape": [1, 3, 48, 192]})
    );
    assert_eq!(m["outputs"][0]["shape"], json!([1, 2]));
    assert_eq!(m["outputs"][0]["datatype"], "FP32");

    // JSON tensors, as in the protocol's examples: the split answers as the unsplit model.
    let x = input();
    let split = infer_json(port, &x);
    let whole = infer_json(c.whole.port, &x);
    assert_eq!(split["model_name"], MODEL_NAME);
    assert_eq!(split["id"], "42", "the request id is echoed");
    assert_eq!(split["outputs"][0]["shape"], json!([1, 2]));
    assert_eq!(split["outputs"][0]["name"], m["outputs"][0]["name"]);
    let (a, b) = (outputs(&split), outputs(&whole));
    assert!(
        a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-4),
        "split {a:?} vs unsplit {b:?}"
    );
    // The plan and each tier's compute time ride along as parameters.
    let params = &split["parameters"];
    assert_eq!(params["plan_id"], "p1");
    assert!(params["compute_ms_end"].as_f64().unwrap() > 0.0, "{params}");
    assert!(
        params["compute_ms_cloud"].as_f64().unwrap() > 0.0,
        "{params}"
    );

    // The binary tensor extension, UINT8 input and binary output.
    let header = json!({
        "inputs": [{"name": "x", "shape": [1, 3, 48, 192], "datatype": "FP32",
                    "parameters": {"binary_data_size": ELEMENTS * 4}}],
        "outputs": [{"name": m["outputs"][0]["name"], "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for v in &x {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let hl = header.len().to_string();
    let (status, h, resp) = http(
        port,
        "POST",
        &format!("/v2/models/{MODEL_NAME}/infer"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", &hl),
        ],
        &body,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let n: usize = header_value(&h, "inference-header-content-length")
        .parse()
        .unwrap();
    let out_json = json_of(&resp[..n]);
    assert_eq!(out_json["outputs"][0]["parameters"]["binary_data_size"], 8);
    let bin: Vec<f64> = resp[n..]
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert!(
        bin.iter().zip(&a).all(|(p, q)| (p - q).abs() < 1e-6),
        "{bin:?} vs {a:?}"
    );
    assert!(
        header_value(&h, "server-timing").starts_with("end;dur="),
        "{h:?}"
    );
    let u8_req = json!({"inputs": [{"name": "x", "shape": [1, 3, 48, 192], "datatype": "UINT8",
                                     "data": vec![1u8; ELEMENTS]}]});
    let (status, _, resp) = http(
        port,
        "POST",
        &format!("/v2/models/{MODEL_NAME}/infer"),
        &[],
        u8_req.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
}

fn header_value<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    header(h, name).unwrap_or_else(|| panic!("no {name} in {h:?}"))
}

#[test]
fn bad_requests_get_protocol_errors_and_the_server_stays_healthy() {
    let Some(model) = shard::ppocr_model() else {
        return;
    };
    let c = chain(&model);
    let port = c.entry.port;
    let infer = format!("/v2/models/{MODEL_NAME}/infer");
    let ok_shape = json!([1, 3, 48, 192]);
    // (what, path, headers, body, status, a phrase of the message)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("malformed JSON", infer.clone(), vec![], b"{\"inputs\": [".to_vec(), 400, "malformed"),
        (
            "wrong datatype",
            infer.clone(),
            vec![],
            json!({"inputs": [{"name": "x", "shape": ok_shape, "datatype": "INT64", "data": [1]}]})
                .to_string()
                .into_bytes(),
            400,
            "INT64",
        ),
        (
            "wrong shape",
            infer.clone(),
            vec![],
            json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
                .to_string()
                .into_bytes(),
            400,
            "the model takes [1, 3, 48, 192]",
        ),
        (
            "data shorter than the shape",
            infer.clone(),
            vec![],
            json!({"inputs": [{"name": "x", "shape": ok_shape, "datatype": "FP32", "data": [1, 2]}]})
                .to_string()
                .into_bytes(),
            400,
            "x",
        ),
        (
            "wrong input name",
            infer.clone(),
            vec![],
            json!({"inputs": [{"name": "image", "shape": ok_shape, "datatype": "FP32", "data": vec![0.0; ELEMENTS]}]})
                .to_string()
                .into_bytes(),
            400,
            "it takes \"x\"",
        ),
        ("unknown model", "/v2/models/nope/infer".into(), vec![], b"{}".to_vec(), 404, "nope"),
        ("unknown model metadata", "/v2/models/nope".into(), vec![], vec![], 404, "nope"),
        (
            "an image that is not one",
            infer.clone(),
            vec![("Content-Type", "image/png")],
            b"not a png".to_vec(),
            400,
            "PNG or JPEG",
        ),
        (
            "header length past the body",
            infer.clone(),
            vec![("Inference-Header-Content-Length", "99999")],
            b"{}".to_vec(),
            400,
            "Inference-Header-Content-Length",
        ),
    ];
    for (what, path, headers, body, want, needle) in cases {
        let method = if path.ends_with("/nope") {
            "GET"
        } else {
            "POST"
        };
        let (status, h, resp) = http(port, method, &path, &headers, &body);
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&resp));
        let e = json_of(&resp);
        let msg = e["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error object: {e}"));
        assert!(msg.contains(needle), "{what}: {msg}");
        assert_eq!(
            e.as_object().unwrap().len(),
            1,
            "{what}: exactly the protocol's object: {e}"
        );
        if method == "POST" {
            assert!(header(&h, "x-request-id").is_some(), "{what}");
        }
    }
    // An oversized image: refused from Content-Length (33 MiB), before the body is read.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {infer} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        33 << 20
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"413", "{}", String::from_utf8_lossy(&head));
    // Still healthy, still right.
    assert_eq!(http(port, "GET", "/v2/health/ready", &[], b"").0, 200);
    let a = outputs(&infer_json(port, &input()));
    let b = outputs(&infer_json(c.whole.port, &input()));
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-4));
    // Every failure was counted by outcome on the entry tier.
    let (_, _, metrics) = http(port, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics);
    let bad: f64 = text
        .lines()
        .find(|l| l.starts_with("cnnpc_requests_total{outcome=\"bad_request\",tier=\"end\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no bad_request count in {text}"));
    assert!(bad >= 9.0, "{bad}");
}

/// Labelled text-line images (as `cnnpc dataset export` writes them).
fn images(dir: &Path, count: usize) -> Vec<PathBuf> {
    let out = Command::new(bin())
        .args([
            "dataset",
            "export",
            "--set",
            "text-lines",
            "--count",
            &count.to_string(),
        ])
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = walk(dir);
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "png") {
            out.push(p);
        }
    }
    out
}

fn cnnpc_infer(args: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("infer")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cnnpc infer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out.stdout)
}

#[test]
fn images_in_classes_out_and_cnnpc_infer_agrees_with_the_model() {
    let Some(model) = shard::ppocr_model() else {
        return;
    };
    let c = chain(&model);
    let url = format!("http://127.0.0.1:{}", c.entry.port);
    let dir = tempfile::tempdir().unwrap();
    let files = images(dir.path(), 6);
    // The images preprocessed exactly as the calibration loader does, run through the
    // unsplit model served whole: the reference top-1.
    let loaded = cnnpc::dataset::files::load_images(
        dir.path(),
        &cnnpc::dataset::files::Preprocess {
            scale: 0.003_921_568_6,
            mean: vec![0.5],
            std: vec![0.5],
            ..Default::default()
        },
        &[1, 3, 48, 192],
    )
    .unwrap();
    let file_args: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["--url", url.as_str(), "--top-k", "2", "--image"];
    args.extend(&file_args);
    let report = cnnpc_infer(&args);
    assert_eq!(
        report["model"], MODEL_NAME,
        "the model is found from the entry"
    );
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), files.len());
    // load_images walks the folder in its own order: pair by the same sorted file list.
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    for (i, chunk) in loaded.items.data.chunks_exact(ELEMENTS).enumerate() {
        let want = outputs(&infer_json(c.whole.port, chunk));
        let want_top = if want[0] >= want[1] { 0 } else { 1 };
        let name = sorted[i].to_str().unwrap();
        let a = answers.iter().find(|a| a["input"] == name).unwrap();
        assert_eq!(a["top_k"][0]["index"], want_top, "{name}: {a}");
        assert_eq!(a["top_k"].as_array().unwrap().len(), 2);
        assert_eq!(a["plan_id"], "p1");
        assert!(a["latency_ms"].as_f64().unwrap() > 0.0);
        let p = a["top_k"][0]["score"].as_f64().unwrap() + a["top_k"][1]["score"].as_f64().unwrap();
        assert!((p - 1.0).abs() < 1e-3, "scores are a distribution: {a}");
    }
    // A raw upload, as a browser or curl sends it.
    let bytes = std::fs::read(&files[0]).unwrap();
    let (status, _, body) = http(
        c.entry.port,
        "POST",
        &format!("/v2/models/{MODEL_NAME}/infer?top_k=1"),
        &[("Content-Type", "image/png")],
        &bytes,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["top_k"].as_array().unwrap().len(), 1);

    // A bounded load check: every request answered, percentiles ordered, one plan.
    let r = cnnpc_infer(&[
        "--url",
        &url,
        "--image",
        file_args[0],
        file_args[1],
        "--requests",
        "24",
        "--concurrency",
        "3",
    ]);
    let load = &r["load"];
    assert_eq!(load["ok"], 24, "{load}");
    assert_eq!(load["errors"], 0, "{load}");
    let q = |k: &str| load[k].as_f64().unwrap();
    assert!(
        q("p50_ms") > 0.0 && q("p50_ms") <= q("p95_ms") && q("p95_ms") <= q("p99_ms"),
        "{load}"
    );
    assert_eq!(load["plans"], json!({"p1": 24}));
}

/// Triton's Python client against our entry, JSON and binary, and the same class as
/// `cnnpc infer --npy` on the same tensor.
#[test]
fn tritonclient_calls_the_entry() {
    let Some(model) = shard::ppocr_model() else {
        return;
    };
    let python = common::root().join("tools/venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var("CNNPC_REQUIRE_OIP_CLIENT").is_err(),
            "tools/venv has no tritonclient: bash scripts/fetch-oip-client.sh (make tools)"
        );
        eprintln!("SKIP: no tritonclient in tools/venv (bash scripts/fetch-oip-client.sh)");
        return;
    }
    let c = chain(&model);
    let dir = tempfile::tempdir().unwrap();
    let x = input();
    let npy = dir.path().join("x.npy");
    cnnpc::dataset::files::write_npy(&npy, &[1, 3, 48, 192], &x).unwrap();
    let script = r#"
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
url, model, npy = sys.argv[1], sys.argv[2], sys.argv[3]
c = httpclient.InferenceServerClient(url=url)
out = {"live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready(model)}
meta = c.get_model_metadata(model)
inp, outp = meta["inputs"][0], meta["outputs"][0]
x = np.load(npy).astype(np.float32)
for binary in (False, True):
    i = httpclient.InferInput(inp["name"], list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    o = httpclient.InferRequestedOutput(outp["name"], binary_data=binary)
    r = c.infer(model, [i], outputs=[o])
    out["binary" if binary else "json"] = r.as_numpy(outp["name"]).reshape(-1).tolist()
    out["parameters"] = r.get_response().get("parameters", {})
try:
    c.get_model_metadata("nope")
    out["unknown"] = None
except InferenceServerException as e:
    out["unknown"] = str(e.status())
print(json.dumps(out))
"#;
    let url = format!("127.0.0.1:{}", c.entry.port);
    let out = Command::new(&python)
        .args(["-c", script, &url, MODEL_NAME, npy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tritonclient: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_of(&out.stdout);
    assert_eq!(
        (
            r["live"].clone(),
            r["ready"].clone(),
            r["model_ready"].clone()
        ),
        (json!(true), json!(true), json!(true))
    );
    let nums = |k: &str| -> Vec<f64> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (j, b) = (nums("json"), nums("binary"));
    let reference = outputs(&infer_json(c.whole.port, &x));
    for v in [&j, &b] {
        assert!(
            v.iter().zip(&reference).all(|(p, q)| (p - q).abs() < 1e-4),
            "{v:?} vs {reference:?}"
        );
    }
    assert_eq!(r["parameters"]["plan_id"], "p1");
    assert!(
        r["unknown"].as_str().unwrap_or("").contains("404"),
        "{}",
        r["unknown"]
    );
    // `cnnpc infer --npy` names the same class.
    let ours = cnnpc_infer(&[
        "--url",
        &format!("http://{url}"),
        "--npy",
        npy.to_str().unwrap(),
    ]);
    let top = ours["answers"][0]["top_k"][0]["index"].as_u64().unwrap() as usize;
    let theirs = if j[0] >= j[1] { 0 } else { 1 };
    assert_eq!(top, theirs, "cnnpc infer {ours} vs tritonclient {j:?}");
}
