//! Replanning against a real Prometheus (Debian's `prometheus`) scraping real shard servers on
//! loopback: the end→edge link's emulated bandwidth drops while traffic flows, and the
//! controller's replanning logic (`planning::replan_on` over `observe::prometheus`)
//! must pick a different plan within two scrape intervals.
//!
//! The shards run a stand-in model that takes a fixed time per request and answers a tensor of
//! the plan's cut shape, so what Prometheus sees matches the profile the plan was made from and
//! only the link changes. Without the `prometheus` binary the test is skipped loudly, or fails
//! when `CNNPC_REQUIRE_PROMETHEUS=1` (as `make test` sets it).

use cnnpc::operator::crd::Assumptions;
use cnnpc::operator::crd::{CollaborativeInferenceSpec, PlanStatus};
use cnnpc::operator::decide::Observation;
use cnnpc::operator::observe;
use cnnpc::operator::planning::{self, PlanRequest, Replan};
use cnnpc::planner::accuracy::{Measurements, WireEncoding};
use cnnpc::planner::profile::{CutPoint, Device, Profile, TensorInfo, TensorSize};
use cnnpc::runtime::frame::Frame;
use cnnpc::runtime::link::{Link, LinkEmulation};
use cnnpc::runtime::server::{self, ShardConfig, ShardModel, Tensor};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCRAPE_S: f64 = 1.0;
const BEFORE_MBPS: f64 = 2.0;
const AFTER_MBPS: f64 = 0.1;

/// Takes `ms` per request and answers zeros of `shape`.
struct Fixed {
    ms: u64,
    shape: Vec<usize>,
}

impl ShardModel for Fixed {
    fn run(&self, _: Tensor) -> Result<Tensor, String> {
        std::thread::sleep(Duration::from_millis(self.ms));
        let n = self.shape.iter().product();
        Ok(Tensor {
            shape: self.shape.clone(),
            data: (0..n).map(|i| (i % 7) as f32 * 0.25).collect(),
        })
    }
    fn name(&self) -> &str {
        "fixed"
    }
}

/// The chain test model's first two cuts, with run times the stand-in shards reproduce: the
/// end device runs the first layer in 2 ms and the rest slowly, the edge runs the rest in 8 ms;
/// the input is large (as from a camera; the test client sends it to the end tier directly).
/// At 2 Mbit/s the best (uncompressed) plan is end-edge at relu1, 8 KiB a request; at
/// 0.1 Mbit/s end-only.
fn profile() -> Profile {
    let cut = |name: &str, channels: u32, shape: &[i64]| {
        let elements: i64 = shape.iter().product();
        CutPoint {
            name: name.into(),
            channels,
            elements: elements as u64,
            bytes: elements as f64 * 4.0,
            tensors: vec![TensorInfo {
                name: name.into(),
                shape: shape.to_vec(),
            }],
        }
    };
    Profile {
        model: "chain".into(),
        notes: String::new(),
        wire_encoding: WireEncoding::F32,
        input: TensorSize {
            elements: 7500,
            bytes: 30000.0,
            tensors: vec![],
        },
        cuts: vec![
            cut("relu1", 8, &[1, 8, 16, 16]),
            cut("relu2", 16, &[1, 16, 8, 8]),
        ],
        devices: BTreeMap::from([
            (
                "end".to_string(),
                Device {
                    tier: "end".into(),
                    run_ms: vec![2.0, 40.0, 40.0],
                },
            ),
            (
                "edge".to_string(),
                Device {
                    tier: "edge".into(),
                    run_ms: vec![1.0, 4.0, 4.0],
                },
            ),
            (
                "cloud".to_string(),
                Device {
                    tier: "cloud".into(),
                    run_ms: vec![0.1, 0.1, 0.1],
                },
            ),
        ]),
    }
}

fn spec() -> CollaborativeInferenceSpec {
    serde_json::from_value(json!({
        "model": {"path": "chain.onnx", "volume": {"name": "m", "emptyDir": {}}},
        "tiers": {"cloud": {"enabled": false}},
        "links": {"endEdgeMbps": BEFORE_MBPS},
        "replan": {"hysteresis": 0.1},
    }))
    .unwrap()
}

fn request(assumed: Assumptions) -> PlanRequest {
    PlanRequest {
        spec: spec(),
        model: Arc::new(cnnpc::testkit::models::chain_model_bytes()),
        profile: Some(profile()),
        lost: vec![],
        assumed,
        known_key: None,
        calibration: None,
        known: Measurements::default(),
        repeats: 1,
    }
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> Option<String> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_shard(cfg: ShardConfig, model: Fixed) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        cfg,
        Arc::new(model),
        listener,
        std::future::pending(),
    ));
    addr
}

/// The replanning decision on what Prometheus says now; `None` when it has nothing yet.
async fn decide(
    prom: &str,
    current: &PlanStatus,
    assumed: &Assumptions,
) -> Option<(Observation, Replan)> {
    let sel = observe::selector("test", "demo", &current.id);
    let obs = observe::prometheus(prom, &sel, "10s").await.ok()?;
    if !obs.hops.contains_key("end->edge") || !obs.compute_s.contains_key("end") {
        return None;
    }
    let (plan, req, o) = (current.clone(), request(assumed.clone()), obs.clone());
    let r = tokio::task::spawn_blocking(move || planning::replan_on(&plan, req, &o, 0.1))
        .await
        .unwrap()
        .unwrap();
    Some((obs, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slower_link_seen_in_prometheus_changes_the_plan_within_two_scrapes() {
    let Some(bin) = prometheus_binary() else {
        if std::env::var("CNNPC_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!(
                "CNNPC_REQUIRE_PROMETHEUS=1 but no prometheus binary (apt-get install prometheus)"
            );
        }
        eprintln!("\n#### SKIPPED: no prometheus binary; `apt-get install prometheus` to run this test ####\n");
        return;
    };

    // The plan for 2 Mbit/s.
    let first = planning::make_plan(request(Assumptions::default())).unwrap();
    let p1 = first.status.clone();
    assert_eq!(p1.deployment, "end-edge", "{p1:?}");
    assert_eq!(p1.cuts[0].tensors, ["relu1"]);
    assert_eq!(p1.encoding, cnnpc::planner::accuracy::WireEncoding::F32);

    // Real shard servers running it; the end's link to the edge is emulated.
    let link = Arc::new(Link::new(&LinkEmulation {
        mbps: Some(BEFORE_MBPS),
        delay_ms: 0.0,
    }));
    let edge = start_shard(
        ShardConfig {
            tier: "edge".into(),
            plan_id: p1.id.clone(),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 8,
            shape: vec![1, 4],
        },
    )
    .await;
    let end = start_shard(
        ShardConfig {
            tier: "end".into(),
            next: Some(format!("http://{edge}").parse().unwrap()),
            encoding: WireEncoding::F32,
            plan_id: p1.id.clone(),
            link_handle: Some(link.clone()),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 2,
            shape: vec![1, 8, 16, 16],
        },
    )
    .await;

    // Prometheus scraping both every second, with the labels Kubernetes discovery would add.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n\
         scrape_configs:\n  - job_name: shards\n    static_configs:\n      - targets: ['{end}', '{edge}']\n        \
         labels: {{namespace: test, name: demo, pod_plan_id: '{}'}}\n",
        p1.id
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let _prom = Prometheus(
        Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let prom = format!("http://127.0.0.1:{port}");

    // Traffic: one request at a time into the end tier, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            use http_body_util::{BodyExt, Full};
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<bytes::Bytes>>();
            let data: Vec<f32> = (0..768).map(|i| (i % 13) as f32 / 13.0).collect();
            let frame = Frame::from_tensor(&data, &[1, 3, 16, 16], 1, WireEncoding::F32, None)
                .unwrap()
                .encode();
            let started = Instant::now();
            let mut ok = 0u32;
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let req = hyper::Request::post(format!("http://{end}/v1/infer"))
                    .body(Full::new(bytes::Bytes::from(frame.clone())))
                    .unwrap();
                if let Ok(r) = client.request(req).await {
                    if r.status().is_success() && r.into_body().collect().await.is_ok() {
                        ok += 1;
                    }
                }
            }
            ok
        })
    };

    // Wait for observations (first samples come a few seconds after start): poll.
    let assumed = first.assumed.clone();
    let t0 = Instant::now();
    let mut steady = None;
    while t0.elapsed() < Duration::from_secs(45) {
        if let Some((obs, r)) = decide(&prom, &p1, &assumed).await {
            steady = Some((obs, r));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (obs, r) = steady.expect("Prometheus has the shards' metrics within 45 s");
    let (secs, bytes) = obs.hops["end->edge"];
    let mbps = bytes * 8.0 / secs / 1e6;
    eprintln!(
        "before: end->edge {mbps:.2} Mbit/s observed, compute {:?}",
        obs.compute_s
    );
    assert!(
        (mbps - BEFORE_MBPS).abs() / BEFORE_MBPS < 0.3,
        "observed {mbps} Mbit/s"
    );
    assert!(
        !matches!(r, Replan::RollOut { .. }),
        "no replan while nothing changed: {r:?}"
    );

    // The link slows down.
    link.set_mbps(AFTER_MBPS).unwrap();
    let changed = Instant::now();
    let mut rolled = None;
    while changed.elapsed() < Duration::from_secs(20) {
        if let Some((obs, Replan::RollOut { outcome, reason })) = decide(&prom, &p1, &assumed).await
        {
            rolled = Some((changed.elapsed(), obs, outcome, reason));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let served = traffic.await.unwrap();
    let (elapsed, obs, outcome, reason) = rolled.expect("a new plan within 20 s of the change");
    eprintln!(
        "after {:.2} s: {reason}; new plan {} ({}) {:.3} ms; {served} requests served; hop {:?}",
        elapsed.as_secs_f64(),
        outcome.status.summary,
        outcome.status.id,
        outcome.status.latency_ms,
        obs.hops
    );
    assert_ne!(outcome.status.id, p1.id);
    assert_eq!(outcome.status.deployment, "end-only");
    assert!(outcome.assumed.link_mbps["end->edge"] < 0.5 * BEFORE_MBPS);
    // Two scrape intervals, plus the one slow request that must finish before any sample can
    // show the change (8 KiB at 0.1 Mbit/s: 0.66 s) and the query/poll round trip.
    let slow_request_s = 8229.0 * 8.0 / (AFTER_MBPS * 1e6);
    let budget = 2.0 * SCRAPE_S + slow_request_s + 0.3;
    assert!(
        elapsed.as_secs_f64() <= budget,
        "took {:.2} s, budget {budget} s",
        elapsed.as_secs_f64()
    );
}

/// Without `prometheusUrl` the controller scrapes the shards' `/metrics` itself and takes the
/// difference between two scrapes: the same observation, from real servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scraping_real_shards_gives_the_link_and_compute_between_two_scrapes() {
    let link = Arc::new(Link::new(&LinkEmulation {
        mbps: Some(4.0),
        delay_ms: 0.0,
    }));
    let edge = start_shard(
        ShardConfig {
            tier: "edge".into(),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 5,
            shape: vec![1, 4],
        },
    )
    .await;
    let end = start_shard(
        ShardConfig {
            tier: "end".into(),
            next: Some(format!("http://{edge}").parse().unwrap()),
            link_handle: Some(link),
            ..ShardConfig::default()
        },
        Fixed {
            ms: 3,
            shape: vec![1, 8, 16, 16],
        },
    )
    .await;
    let urls = vec![
        format!("http://{end}/metrics"),
        format!("http://{edge}/metrics"),
    ];
    let before = observe::scrape(&urls).await.unwrap();
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let data = vec![0.5f32; 768];
    let frame = Frame::from_tensor(&data, &[1, 3, 16, 16], 1, WireEncoding::F32, None)
        .unwrap()
        .encode();
    for _ in 0..10 {
        let req = hyper::Request::post(format!("http://{end}/v1/infer"))
            .body(Full::new(bytes::Bytes::from(frame.clone())))
            .unwrap();
        let r = client.request(req).await.unwrap();
        assert!(r.status().is_success());
        r.into_body().collect().await.unwrap();
    }
    let after = observe::scrape(&urls).await.unwrap();
    let obs = observe::observation_between(&before, &after);
    let (secs, bytes) = obs.hops["end->edge"];
    let mbps = bytes * 8.0 / secs / 1e6;
    assert!(
        (mbps - 4.0).abs() < 0.8,
        "observed {mbps} Mbit/s on a 4 Mbit/s link"
    );
    assert!(
        bytes > 8192.0 && bytes < 8400.0,
        "an f32 [1,8,16,16] frame: {bytes}"
    );
    assert!(
        (obs.compute_s["end"] - 0.003).abs() < 0.002,
        "{:?}",
        obs.compute_s
    );
    assert!(
        (obs.compute_s["edge"] - 0.005).abs() < 0.002,
        "{:?}",
        obs.compute_s
    );
    assert!(obs.request_s.unwrap() > secs, "end to end includes the hop");
    // Unreachable shards are an error, not a panic.
    assert!(observe::scrape(&["http://127.0.0.1:1/metrics".into()])
        .await
        .is_err());
}
