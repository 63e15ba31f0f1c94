//! Real shard servers on loopback (ephemeral ports), talking real HTTP: chained answers, metrics,
//! failures of the next tier, malformed and oversized frames, overload, link emulation, and —
//! as root — real tbf shaping between network namespaces.

use bytes::Bytes;
use cnnpc::onnx::frame::{Frame, FrameLimits, FLAG_ZSTD, MAGIC, PREAMBLE_LEN, VERSION};
use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::runtime::link::{ComputeEmulation, LinkEmulation};
use cnnpc::runtime::server::{self, ShardConfig, ShardModel, Tensor};
use cnnpc::testkit::netns::{self, NetChain, Netns};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- test models

/// `x·a + b`, elementwise.
struct Affine(f32, f32);
impl ShardModel for Affine {
    fn run(&self, x: Tensor) -> Result<Tensor, String> {
        Ok(Tensor {
            data: x.data.iter().map(|v| v * self.0 + self.1).collect(),
            shape: x.shape,
        })
    }
    fn name(&self) -> &str {
        "affine"
    }
}

/// Sum over axis 1: `[N, C, rest…] → [N, rest…]`.
struct ChannelSum;
impl ShardModel for ChannelSum {
    fn run(&self, x: Tensor) -> Result<Tensor, String> {
        let [n, c, rest @ ..] = x.shape.as_slice() else {
            return Err(format!("need rank ≥ 2, got shape {:?}", x.shape));
        };
        let inner: usize = rest.iter().product();
        let mut out = vec![0f32; n * inner];
        for (i, v) in x.data.iter().enumerate() {
            out[(i / (c * inner)) * inner + i % inner] += v;
        }
        let mut shape = vec![*n];
        shape.extend_from_slice(rest);
        Ok(Tensor { shape, data: out })
    }
    fn name(&self) -> &str {
        "channel_sum"
    }
}

/// Identity after a fixed sleep: a "slow" shard.
struct Slow(Duration);
impl ShardModel for Slow {
    fn run(&self, x: Tensor) -> Result<Tensor, String> {
        std::thread::sleep(self.0);
        Ok(x)
    }
    fn name(&self) -> &str {
        "slow"
    }
}

/// Identity that tells when it started and waits to be released: overload without timing luck.
struct Gate {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}
impl ShardModel for Gate {
    fn run(&self, x: Tensor) -> Result<Tensor, String> {
        let _ = self.started.lock().unwrap().send(());
        self.release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("gate never opened: {e}"))?;
        Ok(x)
    }
    fn name(&self) -> &str {
        "gate"
    }
}

struct Failing;
impl ShardModel for Failing {
    fn run(&self, _: Tensor) -> Result<Tensor, String> {
        Err("shape mismatch in layer 3".into())
    }
    fn name(&self) -> &str {
        "failing"
    }
}

struct Panicking;
impl ShardModel for Panicking {
    fn run(&self, _: Tensor) -> Result<Tensor, String> {
        panic!("kernel assertion failed")
    }
    fn name(&self) -> &str {
        "panicking"
    }
}

/// What the unsplit model would answer: the shards composed in-process.
fn unsplit(models: &[&dyn ShardModel], x: Tensor) -> Tensor {
    models.iter().fold(x, |t, m| m.run(t).unwrap())
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor {
        shape: shape.to_vec(),
        data: (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect(),
    }
}

fn f32_frame(t: &Tensor) -> Vec<u8> {
    Frame::from_tensor(&t.data, &t.shape, 1, WireEncoding::F32, None)
        .unwrap()
        .encode()
}

fn decode_answer(body: &[u8]) -> Tensor {
    let f = Frame::decode(body, &FrameLimits::default()).expect("answer is a frame");
    assert_eq!(f.encoding(), WireEncoding::F32, "answers are exact f32");
    Tensor {
        shape: f.shape().to_vec(),
        data: f.to_f32().unwrap(),
    }
}

// ---------------------------------------------------------------- servers

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// A shard server on its own runtime and thread. `kill` drops that runtime: the listener and
/// every open connection close at once, with no goodbye — like a crashed pod.
struct Server {
    addr: SocketAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(cfg: ShardConfig, model: impl ShardModel) -> Server {
        Self::start_in(None, "127.0.0.1:0".parse().unwrap(), cfg, model)
    }

    /// Starts the server in `ns` (if given), listening on `bind`.
    fn start_in(
        ns: Option<&Netns>,
        bind: SocketAddr,
        cfg: ShardConfig,
        model: impl ShardModel,
    ) -> Server {
        init_tracing();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = mpsc::channel();
        let body = move || -> std::io::Result<()> {
            let listener = std::net::TcpListener::bind(bind)?;
            listener.set_nonblocking(true)?;
            addr_tx.send(listener.local_addr()?).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = server::serve(cfg, Arc::new(model), listener, std::future::pending());
                tokio::select! {
                    r = serve => r.unwrap(),
                    _ = killed => {}
                }
            });
            rt.shutdown_background();
            Ok(())
        };
        let thread = match ns {
            Some(ns) => {
                let h = ns.spawn(body);
                std::thread::spawn(move || h.join().unwrap().unwrap())
            }
            None => std::thread::spawn(move || body().unwrap()),
        };
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cfg(tier: &str, next: Option<&Server>) -> ShardConfig {
    ShardConfig {
        tier: tier.into(),
        model_name: format!("{tier}-model"),
        next: next.map(|s| s.url().parse().unwrap()),
        forward_timeout: Duration::from_secs(5),
        plan_id: "test-plan".into(),
        cuts: "1,2".into(),
        ..ShardConfig::default()
    }
}

// ---------------------------------------------------------------- client helpers

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn call(req: hyper::Request<Full<Bytes>>) -> Answer {
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20 s")
        .expect("HTTP exchange");
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
    let mut req = hyper::Request::post(format!("{url}/v1/infer"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    call(req.body(Full::new(Bytes::from(body))).unwrap()).await
}

async fn get(url: &str, path: &str) -> Answer {
    call(
        hyper::Request::get(format!("{url}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Every sample of a scrape: `name{sorted labels}` → value.
async fn scrape(s: &Server) -> BTreeMap<String, f64> {
    let a = get(&s.url(), "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// `name{labels}` as the Prometheus encoder writes it: labels sorted by name.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.into();
    }
    let mut l = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn val(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(&key(name, labels)).copied().unwrap_or(0.0)
}

fn requests(m: &BTreeMap<String, f64>, tier: &str, outcome: &str) -> f64 {
    val(
        m,
        "cnnpc_requests_total",
        &[("tier", tier), ("outcome", outcome)],
    )
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn three_tier_chain_answers_like_the_unsplit_model() {
    let (a, b, c) = (Affine(2.0, 1.0), Affine(0.5, -3.0), ChannelSum);
    let cloud = Server::start(cfg("cloud", None), ChannelSum);
    let edge = Server::start(cfg("edge", Some(&cloud)), Affine(0.5, -3.0));
    let end = Server::start(cfg("end", Some(&edge)), Affine(2.0, 1.0));
    let x = input(&[1, 3, 4, 5]);
    let want = unsplit(&[&a, &b, &c], x.clone());

    let ans = post(&end.url(), f32_frame(&x), &[("x-request-id", "req-42")]).await;
    assert_eq!(ans.status, StatusCode::OK, "{:?}", ans.body);
    assert_eq!(ans.header("content-type"), server::FRAME_CONTENT_TYPE);
    assert_eq!(ans.header("x-request-id"), "req-42");
    assert_eq!(ans.header("x-cnnpc-tier"), "end");
    let got = decode_answer(&ans.body);
    assert_eq!(got.shape, vec![1, 4, 5]);
    // f32 on every hop: bit-identical to the in-process composition.
    assert_eq!(got, want);

    // No id given: one is made up and returned.
    let ans = post(&end.url(), f32_frame(&x), &[]).await;
    assert_eq!(ans.status, StatusCode::OK);
    let id = ans.header("x-request-id");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
}

#[tokio::test]
async fn quantised_zstd_hops_stay_within_the_codec_error() {
    let cloud = Server::start(cfg("cloud", None), ChannelSum);
    let end = Server::start(
        ShardConfig {
            encoding: WireEncoding::Int8,
            zstd: Some(3),
            ..cfg("end", Some(&cloud))
        },
        Affine(2.0, 1.0),
    );
    let x = input(&[2, 3, 6, 6]);
    let want = unsplit(&[&Affine(2.0, 1.0), &ChannelSum], x.clone());
    let ans = post(&end.url(), f32_frame(&x), &[]).await;
    assert_eq!(ans.status, StatusCode::OK);
    let got = decode_answer(&ans.body);
    assert_eq!(got.shape, want.shape);
    // int8 per channel: each of the 3 summed channels is off by at most half a step, step =
    // (its range)/255 ≤ (max-min of the whole affine output)/255.
    let y = Affine(2.0, 1.0).run(x).unwrap();
    let range = y.data.iter().fold(f32::MIN, |m, &v| m.max(v))
        - y.data.iter().fold(f32::MAX, |m, &v| m.min(v));
    let bound = 3.0 * 0.5 * range / 255.0 * 1.001;
    let err = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(err <= bound, "max error {err} > {bound}");
    assert!(err > 0.0, "int8 should not be exact here");
}

#[tokio::test]
async fn metrics_counters_move_by_the_right_amounts() {
    let edge = Server::start(cfg("edge", None), ChannelSum);
    let end = Server::start(cfg("end", Some(&edge)), Affine(2.0, 1.0));
    let x = input(&[1, 3, 8, 8]);
    let cut_bytes = f32_frame(&Affine(2.0, 1.0).run(x.clone()).unwrap()).len() as f64;
    let (end0, edge0) = (scrape(&end).await, scrape(&edge).await);

    const N: usize = 5;
    for _ in 0..N {
        assert_eq!(
            post(&end.url(), f32_frame(&x), &[]).await.status,
            StatusCode::OK
        );
    }
    let bad = post(&end.url(), b"not a frame".to_vec(), &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let (end1, edge1) = (scrape(&end).await, scrape(&edge).await);
    fn d(
        a: &BTreeMap<String, f64>,
        b: &BTreeMap<String, f64>,
        name: &str,
        l: &[(&str, &str)],
    ) -> f64 {
        val(b, name, l) - val(a, name, l)
    }
    let n = N as f64;

    assert_eq!(
        requests(&end1, "end", "ok") - requests(&end0, "end", "ok"),
        n
    );
    assert_eq!(
        requests(&end1, "end", "bad_request") - requests(&end0, "end", "bad_request"),
        1.0
    );
    assert_eq!(
        requests(&edge1, "edge", "ok") - requests(&edge0, "edge", "ok"),
        n
    );
    for o in [
        "overloaded",
        "upstream_error",
        "upstream_timeout",
        "model_error",
    ] {
        assert_eq!(requests(&end1, "end", o), 0.0, "{o} series exists at 0");
        assert!(end1.contains_key(&key(
            "cnnpc_requests_total",
            &[("tier", "end"), ("outcome", o)]
        )));
    }
    // The hop end → edge is counted by the receiver, in exact bytes, once per request.
    let hop = [("from", "end"), ("to", "edge")];
    assert_eq!(
        d(&edge0, &edge1, "cnnpc_hop_bytes_total", &hop),
        n * cut_bytes
    );
    assert_eq!(d(&edge0, &edge1, "cnnpc_hop_seconds_count", &hop), n);
    assert_eq!(val(&end1, "cnnpc_hop_seconds_count", &hop), 0.0);
    // End to end only at the entry tier, only successes.
    assert_eq!(d(&end0, &end1, "cnnpc_request_seconds_count", &[]), n);
    assert_eq!(val(&edge1, "cnnpc_request_seconds_count", &[]), 0.0);
    assert!(val(&end1, "cnnpc_request_seconds_sum", &[]) > 0.0);
    for (m0, m1, tier) in [(&end0, &end1, "end"), (&edge0, &edge1, "edge")] {
        let model = format!("{tier}-model");
        let labels = [("tier", tier), ("model", model.as_str())];
        assert_eq!(d(m0, m1, "cnnpc_shard_compute_seconds_count", &labels), n);
        assert_eq!(
            val(
                m1,
                "cnnpc_plan_info",
                &[("plan_id", "test-plan"), ("cuts", "1,2")]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn killed_next_tier_gives_502_and_readiness_flips() {
    let mut edge = Server::start(cfg("edge", None), ChannelSum);
    let end = Server::start(cfg("end", Some(&edge)), Affine(2.0, 1.0));
    let x = input(&[1, 2, 3, 3]);
    let ready = get(&end.url(), "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);
    // A first request leaves a pooled keep-alive connection to the edge behind.
    assert_eq!(
        post(&end.url(), f32_frame(&x), &[]).await.status,
        StatusCode::OK
    );
    let before = scrape(&end).await;

    edge.kill();
    let t0 = Instant::now();
    let ans = post(&end.url(), f32_frame(&x), &[("x-request-id", "after-kill")]).await;
    assert_eq!(ans.status, StatusCode::BAD_GATEWAY, "{:?}", ans.body);
    assert!(t0.elapsed() < Duration::from_secs(3), "no hang");
    let j = ans.json();
    assert_eq!(j["request_id"], "after-kill");
    assert!(j["error"].as_str().unwrap().contains("next tier"), "{j}");
    let after = scrape(&end).await;
    assert_eq!(
        requests(&after, "end", "upstream_error") - requests(&before, "end", "upstream_error"),
        1.0
    );
    assert_eq!(
        requests(&after, "end", "ok"),
        requests(&before, "end", "ok")
    );

    let ready = get(&end.url(), "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(
        get(&end.url(), "/healthz").await.status,
        StatusCode::OK,
        "alive, just not ready"
    );
}

#[tokio::test]
async fn silent_next_tier_gives_504_within_the_timeout() {
    // Accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let end = Server::start(
        ShardConfig {
            next: Some(format!("http://{hole_addr}").parse().unwrap()),
            forward_timeout: Duration::from_millis(300),
            ..cfg("end", None)
        },
        Affine(1.0, 0.0),
    );
    let t0 = Instant::now();
    let ans = post(&end.url(), f32_frame(&input(&[1, 1, 2, 2])), &[]).await;
    let took = t0.elapsed();
    assert_eq!(ans.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", ans.body);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(ans.json()["error"]
        .as_str()
        .unwrap()
        .contains("did not answer"));
    assert_eq!(
        requests(&scrape(&end).await, "end", "upstream_timeout"),
        1.0
    );
    keep.abort();
}

#[tokio::test]
async fn corrupt_frames_get_400_with_a_reason() {
    let s = Server::start(cfg("edge", None), ChannelSum);
    let good = f32_frame(&input(&[1, 2, 2, 2]));
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_version = good.clone();
    bad_version[4] = 9;
    let mut trailing = good.clone();
    trailing.push(0);
    let truncated = good[..good.len() - 3].to_vec();
    // A zstd-flagged payload that is not zstd.
    let mut not_zstd = good.clone();
    not_zstd[6] = FLAG_ZSTD;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"hello world".to_vec(), "magic"),
        ("empty", Vec::new(), "truncated"),
        ("bad magic", bad_magic, "magic"),
        ("bad version", bad_version, "version"),
        // hyper sends a Content-Length, which already disagrees with the frame's own length.
        ("trailing byte", trailing, "disagrees"),
        ("truncated", truncated.clone(), "disagrees"),
        ("not zstd", not_zstd, "zstd"),
    ];
    for (what, body, needle) in &cases {
        let ans = post(&s.url(), body.clone(), &[("x-request-id", "bad-1")]).await;
        assert_eq!(ans.status, StatusCode::BAD_REQUEST, "{what}");
        let j = ans.json();
        assert_eq!(j["request_id"], "bad-1");
        let e = j["error"].as_str().unwrap();
        assert!(e.contains(needle), "{what}: {e}");
    }
    // Without a Content-Length (chunked), the frame's own length check catches both.
    for (what, body, needle) in [
        (
            "chunked trailing byte",
            &cases[4].1,
            "frame declares 69 bytes but 70",
        ),
        (
            "chunked truncated",
            &truncated,
            "frame truncated: 69 bytes declared, 66 present",
        ),
    ] {
        let msg = [
            format!("{:x}\r\n", body.len()).as_bytes(),
            body,
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        let (status, answer) = raw_exchange(s.addr, CHUNKED_HEAD, &msg).await;
        assert_eq!(status, 400, "{what}");
        assert!(answer.contains(needle), "{what}: {answer}");
    }
    let forged = post(&s.url(), good.clone(), &[("x-cnnpc-from-tier", "end tier")]).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    let m = scrape(&s).await;
    assert_eq!(
        requests(&m, "edge", "bad_request"),
        cases.len() as f64 + 3.0,
        "each case, the two chunked ones and the forged tier header"
    );
    assert_eq!(requests(&m, "edge", "ok"), 0.0);
    // Still serving.
    assert_eq!(post(&s.url(), good, &[]).await.status, StatusCode::OK);
}

const CHUNKED_HEAD: &str =
    "POST /v1/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Sends raw bytes, then reads one HTTP/1.1 answer (status, body) without closing the write side.
async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((h, b)) = text.split_once("\r\n\r\n") {
                let len = h
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if b.len() >= len || n == 0 {
                    let status = h[9..12].parse().unwrap();
                    return (status, b.to_string());
                }
            }
            assert!(n > 0, "connection closed before an answer: {text:?}");
        }
    };
    // The client never sends the rest: an answer here proves the server did not wait for it.
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("answered before the body was complete")
}

/// A frame preamble claiming `payload_len` f32 payload bytes for shape `dims`.
fn preamble(dims: &[u32], payload_len: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[VERSION, 0, 0, dims.len() as u8, 0]);
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&payload_len.to_le_bytes());
    assert_eq!(h.len(), PREAMBLE_LEN);
    for d in dims {
        h.extend_from_slice(&d.to_le_bytes());
    }
    h
}

#[tokio::test]
async fn oversized_frames_are_refused_before_they_are_read() {
    let limits = FrameLimits {
        max_elements: 1 << 16,
        max_payload_bytes: 1 << 18,
        max_decompressed_bytes: 1 << 18,
        ..FrameLimits::default()
    };
    let s = Server::start(
        ShardConfig {
            limits,
            ..cfg("edge", None)
        },
        ChannelSum,
    );
    let chunked = CHUNKED_HEAD;
    let chunk = |b: &[u8]| [format!("{:x}\r\n", b.len()).as_bytes(), b, b"\r\n"].concat();

    // 1. Content-Length alone is enough: 10 GB announced, nothing sent.
    let head = "POST /v1/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\n";
    let (status, body) = raw_exchange(s.addr, head, b"").await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("Content-Length"), "{body}");

    // 2. Streamed, no length: the 21-byte preamble declares a 1 GiB payload.
    let (status, body) = raw_exchange(s.addr, chunked, &chunk(&preamble(&[1], 1 << 30))).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload length"), "{body}");

    // 3. The dims imply too many elements (the payload length alone would pass).
    let (status, body) =
        raw_exchange(s.addr, chunked, &chunk(&preamble(&[1, 1024, 1024], 1024))).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("element count"), "{body}");

    // 4. Content-Length within bounds but disagreeing with the frame: 400 from the first bytes.
    let p = preamble(&[4], 16);
    let head = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        1000
    );
    let (status, body) = raw_exchange(s.addr, &head, &p).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("disagrees"), "{body}");

    let m = scrape(&s).await;
    assert_eq!(requests(&m, "edge", "bad_request"), 4.0);
    assert_eq!(get(&s.url(), "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn overload_gets_503_with_retry_after_not_a_queue() {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Gate {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    };
    let s = Server::start(
        ShardConfig {
            max_concurrency: 1,
            ..cfg("cloud", None)
        },
        gate,
    );
    let x = input(&[1, 1, 2, 2]);
    let url = s.url();
    let body = f32_frame(&x);
    let first = tokio::spawn(async move { post(&url, body, &[]).await });
    // Wait until the one slot is really taken (the model is running), instead of sleeping.
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("first request reached the model");

    // A large body: the refusal comes before it is read, and the server reads and drops the
    // rest so the client sees the 503 rather than a reset connection. Framed before the clock
    // starts: only the server's answer is timed.
    let big = f32_frame(&input(&[1, 8, 256, 256]));
    let t0 = Instant::now();
    let second = post(&s.url(), big, &[]).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.header("retry-after"), "1");
    assert!(t0.elapsed() < Duration::from_secs(1), "refused at once");
    assert!(second.json()["error"]
        .as_str()
        .unwrap()
        .contains("limit of 1"));

    release_tx.send(()).unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(decode_answer(&first.body), x);
    let m = scrape(&s).await;
    assert_eq!(requests(&m, "cloud", "overloaded"), 1.0);
    assert_eq!(requests(&m, "cloud", "ok"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_requests_past_the_compute_threads_wait_for_a_core_instead_of_failing() {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Gate {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    };
    let s = Server::start(
        ShardConfig {
            max_concurrency: 2,
            compute_threads: 1,
            ..cfg("cloud", None)
        },
        gate,
    );
    let x = input(&[1, 1, 2, 2]);
    let started = Arc::new(Mutex::new(started_rx));
    let wait_start = |timeout: Duration| {
        let started = started.clone();
        tokio::task::spawn_blocking(move || started.lock().unwrap().recv_timeout(timeout))
    };
    let (u1, b1) = (s.url(), f32_frame(&x));
    let first = tokio::spawn(async move { post(&u1, b1, &[]).await });
    wait_start(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the first request reached the model");
    let (u2, b2) = (s.url(), f32_frame(&x));
    let second = tokio::spawn(async move { post(&u2, b2, &[]).await });
    // Admitted (there are two slots) but not computing: the one core is taken.
    assert!(
        wait_start(Duration::from_millis(500))
            .await
            .unwrap()
            .is_err(),
        "a second computation started alongside the first on one compute thread"
    );
    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    wait_start(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the second request got the core once the first let go");
    release_tx.send(()).unwrap();
    let second = second.await.unwrap();
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(decode_answer(&second.body), x);
    let m = scrape(&s).await;
    assert_eq!(requests(&m, "cloud", "ok"), 2.0);
    assert_eq!(requests(&m, "cloud", "overloaded"), 0.0);
}

#[tokio::test]
async fn ready_only_once_the_model_is_loaded() {
    let (load_tx, load_rx) = mpsc::channel::<()>();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_loading(
        cfg("cloud", None),
        move || {
            load_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(ChannelSum) as Arc<dyn ShardModel>)
        },
        l,
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(get(&url, "/healthz").await.status, StatusCode::OK);
    let r = get(&url, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json()["reason"].as_str().unwrap().contains("loading"));
    let x = f32_frame(&input(&[1, 2, 2, 2]));
    let early = post(&url, x.clone(), &[]).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(early.header("retry-after"), "1");

    load_tx.send(()).unwrap();
    // Poll instead of sleeping: loading finishes on a blocking thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&url, "/readyz").await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(post(&url, x, &[]).await.status, StatusCode::OK);
    // Graceful shutdown: serve returns.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn model_errors_are_500_and_counted() {
    let s = Server::start(cfg("edge", None), Failing);
    let ans = post(&s.url(), f32_frame(&input(&[1, 1, 1, 1])), &[]).await;
    assert_eq!(ans.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ans.json()["error"].as_str().unwrap().contains("layer 3"));
    assert_eq!(requests(&scrape(&s).await, "edge", "model_error"), 1.0);
}

#[tokio::test]
async fn a_panicking_model_is_a_500_and_the_tier_keeps_serving() {
    // One compute thread: the second request needs the thread that ran the panic.
    let s = Server::start(
        ShardConfig {
            compute_threads: 1,
            ..cfg("edge", None)
        },
        Panicking,
    );
    for _ in 0..2 {
        let ans = post(&s.url(), f32_frame(&input(&[1, 1, 1, 1])), &[]).await;
        assert_eq!(ans.status, StatusCode::INTERNAL_SERVER_ERROR);
        let error = ans.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("panicked: kernel assertion failed"),
            "{error}"
        );
    }
    assert_eq!(requests(&scrape(&s).await, "edge", "model_error"), 2.0);
}

#[tokio::test]
async fn forward_carries_request_id_tier_and_the_plans_encoding() {
    // A stand-in next tier that records what it was sent and answers a fixed frame.
    let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let rec = seen.clone();
    let reply = f32_frame(&input(&[1, 2]));
    let reply2 = reply.clone();
    let app = axum::Router::new().route(
        "/v1/infer",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            rec.lock().unwrap().push((headers, body));
            let r = reply2.clone();
            async move { r }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });

    let end = Server::start(
        ShardConfig {
            next: Some(format!("http://{stub}").parse().unwrap()),
            encoding: WireEncoding::Int4,
            ..cfg("end", None)
        },
        Affine(1.0, 0.0),
    );
    let x = input(&[1, 3, 2, 2]);
    let ans = post(&end.url(), f32_frame(&x), &[("x-request-id", "trace-me")]).await;
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(ans.body.as_ref(), reply.as_slice(), "answer relayed as is");
    // A request id that could forge log lines is replaced, not forwarded.
    let ans = post(&end.url(), f32_frame(&x), &[("x-request-id", "a b\tc")]).await;
    assert_eq!(ans.status, StatusCode::OK);
    let fresh = ans.header("x-request-id").to_string();
    assert_eq!(fresh.len(), 32);

    let seen = seen.lock().unwrap();
    let (h, body) = &seen[0];
    assert_eq!(h["x-request-id"], "trace-me");
    assert_eq!(h["x-cnnpc-from-tier"], "end");
    assert_eq!(h["content-type"], server::FRAME_CONTENT_TYPE);
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    let f = Frame::decode(body, &FrameLimits::default()).unwrap();
    assert_eq!(f.encoding(), WireEncoding::Int4);
    assert_eq!(f.shape(), x.shape.as_slice());
    assert_eq!(seen[1].0["x-request-id"], fresh.as_str());
}

#[tokio::test]
async fn link_and_compute_emulation_show_in_hop_and_compute_metrics() {
    let edge = Server::start(cfg("edge", None), ChannelSum);
    let link = LinkEmulation {
        mbps: Some(8.0),
        delay_ms: 40.0,
    };
    let end = Server::start(
        ShardConfig {
            link,
            compute: ComputeEmulation { slowdown: 3.0 },
            ..cfg("end", Some(&edge))
        },
        Slow(Duration::from_millis(20)),
    );
    // 25 600 f32 ≈ 100 KB on the wire: 102 ms at 8 Mbit/s, plus 40 ms.
    let x = input(&[1, 4, 80, 80]);
    let bytes = f32_frame(&x).len() as u64;
    let t0 = Instant::now();
    let ans = post(&end.url(), f32_frame(&x), &[]).await;
    let total = t0.elapsed();
    assert_eq!(ans.status, StatusCode::OK);
    let want_hop = link.transfer_time(bytes).as_secs_f64();
    let e = scrape(&edge).await;
    let hop = val(
        &e,
        "cnnpc_hop_seconds_sum",
        &[("from", "end"), ("to", "edge")],
    );
    println!(
        "link emulation: {bytes} B at 8 Mbit/s + 40 ms: expected {:.1} ms, receiver measured {:.1} ms ({:+.1}%)",
        want_hop * 1e3,
        hop * 1e3,
        (hop / want_hop - 1.0) * 100.0
    );
    // The receiver's clock starts when its handler runs, and paced sleeps overshoot under
    // load: a band, still far from the 40 ms a missing bandwidth limit would give.
    assert!(
        (0.8 * want_hop..1.5 * want_hop).contains(&hop),
        "hop {hop} s vs {want_hop} s"
    );
    let m = scrape(&end).await;
    let compute = val(
        &m,
        "cnnpc_shard_compute_seconds_sum",
        &[("tier", "end"), ("model", "end-model")],
    );
    assert!(
        (0.060..1.0).contains(&compute),
        "3× a 20 ms shard, got {compute} s"
    );
    assert!(total.as_secs_f64() >= want_hop + 0.060, "{total:?}");
}

#[tokio::test]
async fn per_hop_overhead_for_100kb_on_loopback() {
    let last = Server::start(cfg("cloud", None), Affine(1.0, 0.0));
    let first = Server::start(cfg("edge", Some(&last)), Affine(1.0, 0.0));
    let x = input(&[1, 4, 80, 80]);
    let frame = f32_frame(&x);
    let best = |url: String| {
        let frame = frame.clone();
        async move {
            let mut best = Duration::MAX;
            for _ in 0..15 {
                let t0 = Instant::now();
                let a = post(&url, frame.clone(), &[]).await;
                assert_eq!(a.status, StatusCode::OK);
                best = best.min(t0.elapsed());
            }
            best
        }
    };
    let one = best(last.url()).await;
    let two = best(first.url()).await;
    let hop = two.saturating_sub(one);
    println!(
        "loopback, {} B frame: one tier {:.2} ms, two tiers {:.2} ms, per-hop overhead {:.2} ms (min of 15)",
        frame.len(),
        one.as_secs_f64() * 1e3,
        two.as_secs_f64() * 1e3,
        hop.as_secs_f64() * 1e3
    );
    assert!(hop < Duration::from_millis(100), "{hop:?}");
}

// ---------------------------------------------------------------- root only: real tbf

fn skip_unless_netns(test: &str) -> bool {
    match netns::unavailable_reason() {
        None => false,
        Some(why) => {
            eprintln!("\n*** SKIPPED {test}: {why} ***\n");
            true
        }
    }
}

#[test]
fn tbf_link_between_namespaces_runs_at_its_rate() {
    if skip_unless_netns("tbf_link_between_namespaces_runs_at_its_rate") {
        return;
    }
    let chain = NetChain::new("tbf", &[Some(20.0)]).unwrap();
    let (a, b) = (&chain.namespaces[0], &chain.namespaces[1]);
    let dst = NetChain::addr(0, false);
    let (port_tx, port_rx) = mpsc::channel();
    let receiver = b.spawn(move || {
        let l = std::net::TcpListener::bind((dst, 0))?;
        port_tx.send(l.local_addr()?.port()).unwrap();
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut total, mut first) = (0usize, None);
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n;
        }
        Ok((total, first.map(|t| t.elapsed())))
    });
    let port = port_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    const BYTES: usize = 3_000_000; // 1.2 s at 20 Mbit/s
    let sender = a.spawn(move || {
        let mut s = std::net::TcpStream::connect((dst, port))?;
        s.write_all(&vec![0x5au8; BYTES])?;
        Ok(())
    });
    sender.join().unwrap().unwrap();
    let (got, took) = receiver.join().unwrap().unwrap();
    assert_eq!(got, BYTES);
    let mbps = got as f64 * 8.0 / took.unwrap().as_secs_f64() / 1e6;
    println!("tbf 20mbit between namespaces: {mbps:.2} Mbit/s measured");
    assert!((15.0..=25.0).contains(&mbps), "{mbps} Mbit/s");

    // The root namespace cannot reach them: traffic stays between the namespaces.
    assert!(std::net::TcpStream::connect_timeout(
        &SocketAddr::from((dst, port)),
        Duration::from_millis(300)
    )
    .is_err());
}

#[test]
fn shard_chain_across_namespaces_over_tbf() {
    if skip_unless_netns("shard_chain_across_namespaces_over_tbf") {
        return;
    }
    let chain = NetChain::new("chain", &[Some(20.0)]).unwrap();
    let (ns_end, ns_edge) = (&chain.namespaces[0], &chain.namespaces[1]);
    let edge_ip = NetChain::addr(0, false);
    let edge = Server::start_in(
        Some(ns_edge),
        SocketAddr::from((edge_ip, 0)),
        cfg("edge", None),
        ChannelSum,
    );
    let end = Server::start_in(
        Some(ns_end),
        "127.0.0.1:0".parse().unwrap(),
        cfg("end", Some(&edge)),
        Affine(2.0, 1.0),
    );
    let x = input(&[1, 8, 64, 64]); // 128 KiB cut: ~52 ms at 20 Mbit/s
    let cut = f32_frame(&x).len() as f64;
    let want = unsplit(&[&Affine(2.0, 1.0), &ChannelSum], x.clone());
    let (end_url, edge_url) = (end.url(), edge.url());
    // The client lives with the end tier; the edge's metrics are read from its namespace too.
    let client = ns_end.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(async {
            let ans = post(&end_url, f32_frame(&x), &[]).await;
            (ans.status, ans.body)
        }))
    });
    let (status, body) = client.join().unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decode_answer(&body), want);
    let scrape_edge = ns_edge.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(async { get(&edge_url, "/metrics").await.body }))
    });
    let text = String::from_utf8(scrape_edge.join().unwrap().unwrap().to_vec()).unwrap();
    let hop: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cnnpc_hop_seconds_sum{from=\"end\",to=\"edge\"} "))
        .unwrap()
        .parse()
        .unwrap();
    let ideal = cut * 8.0 / 20e6;
    println!(
        "{cut} B over tbf 20mbit: hop {:.1} ms (bytes/rate {:.1} ms)",
        hop * 1e3,
        ideal * 1e3
    );
    // The tbf burst lets the first ~25 KB through at once; the rest must wait for the rate.
    assert!(hop > 0.5 * ideal && hop < 3.0 * ideal, "{hop} s");
}

// ---------------------------------------------------------------- real tract shards

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tract_shards_served_in_a_chain_answer_like_the_unsplit_model() {
    use cnnpc::onnx::{list_cuts, split};
    use cnnpc::runtime::tract_model::TractShard;
    use cnnpc::testkit::models as testmodels;
    let model = testmodels::chain_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let sets = vec![cuts[0].tensor_names(), cuts[1].tensor_names()];
    let shards = split(&model, &sets).unwrap();
    let whole = TractShard::load("whole", &model).unwrap();
    let load = |k: usize| TractShard::load(&format!("shard-{k}"), &shards[k]).unwrap();
    let cloud = Server::start(cfg("cloud", None), load(2));
    let edge = Server::start(cfg("edge", Some(&cloud)), load(1));
    let end = Server::start(cfg("end", Some(&edge)), load(0));
    let x = input(whole.input_shape());
    let want = whole.run(x.clone()).unwrap();
    let a = post(&end.url(), f32_frame(&x), &[]).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
    let got = decode_answer(&a.body);
    assert_eq!(got.shape, want.shape);
    let diff = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-5, "chained tract shards differ by {diff}");
    // A wrong input shape is the client's error, not a crash.
    let bad = input(&[1, 3, 2, 2]);
    let a = post(&end.url(), f32_frame(&bad), &[]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("does not match"));
}

#[test]
fn a_shard_with_two_inputs_is_refused_with_a_reason() {
    use cnnpc::onnx::{list_cuts, split};
    use cnnpc::runtime::tract_model::TractShard;
    use cnnpc::testkit::models as testmodels;
    let model = testmodels::skip_model_bytes();
    let cuts = list_cuts(&model).unwrap();
    let two = cuts.iter().find(|c| c.tensors.len() == 2).unwrap();
    let shards = split(&model, &[two.tensor_names()]).unwrap();
    let err = TractShard::load("tail", &shards[1]).err().unwrap();
    assert!(err.contains("exactly one input"), "{err}");
}
