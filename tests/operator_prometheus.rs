//! Replanning against a real Prometheus (Debian's `prometheus`) scraping real shard servers on
//! loopback, through the controller's own reading and judging (`observe::prometheus`,
//! `evidence::judge`, `planning::replan_on`):
//! - one request over a slow link is too little evidence: no replan (and with the evidence
//!   floor at one request, the same reading would have replanned);
//! - under steady traffic nothing changes: no replan;
//! - a sustained drop of the end→edge link's emulated bandwidth replans within two windows.
//!
//! The shards run a stand-in model that takes a fixed time per request and answers a tensor of
//! the plan's cut shape, so what Prometheus sees matches the profile the plan was made from and
//! only the link changes. Without the `prometheus` binary the test is skipped loudly, or fails
//! when `CNNPC_REQUIRE_PROMETHEUS=1` (as `make test` sets it).

mod common;

use cnnpc::onnx::frame::Frame;
use cnnpc::operator::crd::Assumptions;
use cnnpc::operator::crd::{CollaborativeInferenceSpec, Evidence, PlanStatus};
use cnnpc::operator::evidence::{self, Judged};
use cnnpc::operator::observe;
use cnnpc::operator::planning::{self, PlanRequest, Replan};
use cnnpc::planner::accuracy::{Measurements, WireEncoding};
use cnnpc::planner::profile::{CutPoint, Device, Profile, TensorInfo, TensorSize};
use cnnpc::runtime::link::{Link, LinkEmulation};
use cnnpc::runtime::server::{self, ShardConfig, ShardModel, Tensor};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
            sliced_share: 0.0,
            frame_bytes: Default::default(),
            codec: Default::default(),
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
            frame_bytes: Default::default(),
            codec: Default::default(),
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
        wire: None,
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

/// The window the test judges over, and its evidence floor: 5 s (five scrapes), at least 5
/// requests and 32 KiB (four 8 KiB cut tensors) per link.
const WINDOW_S: u32 = 5;

fn policy() -> Evidence {
    serde_json::from_value(json!({"minRequests": 5, "minBytes": 32768, "windowSeconds": WINDOW_S}))
        .unwrap()
}

/// The replanning decision on what Prometheus says over the last window; `None` until it has
/// seen a request.
async fn decide(
    prom: &str,
    current: &PlanStatus,
    assumed: &Assumptions,
    policy: &Evidence,
) -> Option<(Judged, Replan)> {
    let sel = observe::selector("test", "demo", &current.id);
    let w = observe::prometheus(prom, &sel, WINDOW_S).await.ok()?;
    let j = evidence::judge(&w, policy, &current.id, "now");
    j.status.latency_ms?;
    let (plan, req, o) = (current.clone(), request(assumed.clone()), j.obs.clone());
    let r = tokio::task::spawn_blocking(move || planning::replan_on(&plan, req, &o, 0.1, &[]))
        .await
        .unwrap()
        .unwrap();
    Some((j, r))
}

/// Whether Prometheus has scraped both shards (`up` is 1 for both).
async fn scraped(prom: &str) -> bool {
    let url = format!("{prom}/api/v1/query?query=sum(up)");
    let Ok(body) = cnnpc::operator::fetch::get(&url, 1 << 20, Duration::from_secs(5)).await else {
        return false;
    };
    observe::parse_vector(&body).is_ok_and(|v| v.first().is_some_and(|(_, x)| *x >= 2.0))
}

async fn infer(end: SocketAddr) -> bool {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let data: Vec<f32> = (0..768).map(|i| (i % 13) as f32 / 13.0).collect();
    let frame = Frame::from_tensor(&data, &[1, 3, 16, 16], 1, WireEncoding::F32, None)
        .unwrap()
        .encode();
    let req = hyper::Request::post(format!("http://{end}/v1/infer"))
        .body(Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    match client.request(req).await {
        Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_does_not_replan_and_a_slower_link_does_within_two_windows() {
    let Some(bin) = common::prom::binary() else {
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
        mbps: Some(AFTER_MBPS),
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
    let config = format!(
        "global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n\
         scrape_configs:\n  - job_name: shards\n    static_configs:\n      - targets: ['{end}', '{edge}']\n        \
         labels: {{namespace: test, name: demo, pod_plan_id: '{}'}}\n",
        p1.id
    );
    let prometheus = common::prom::start(&bin, &config);
    let prom = prometheus.url.clone();

    let assumed = first.assumed.clone();
    // One request over the slow link, and nothing else: Prometheus sees it (the shards'
    // series exist from the start, so `increase` counts it), the evidence is too thin.
    let t0 = Instant::now();
    while !scraped(&prom).await {
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "Prometheus scrapes both shards within 45 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Two more scrapes of the series at 0, so the window holds a sample before the request.
    tokio::time::sleep(Duration::from_secs_f64(2.0 * SCRAPE_S)).await;
    assert!(infer(end).await);
    let t0 = Instant::now();
    let mut one = None;
    while t0.elapsed() < Duration::from_secs(45) && one.is_none() {
        // Both shards' scrapes of it: the end's latency and the edge's hop.
        one = decide(&prom, &p1, &assumed, &policy())
            .await
            .filter(|(j, _)| j.status.links.contains_key("end->edge"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (j, r) = one.expect("Prometheus has the one request within 45 s");
    eprintln!("one request: {:?}", j.status);
    assert!(!j.status.sufficient, "{:?}", j.status);
    assert!(
        j.status
            .insufficient
            .iter()
            .any(|m| m.starts_with("end->edge: 1 request")),
        "{:?}",
        j.status.insufficient
    );
    assert!(
        !matches!(r, Replan::RollOut { .. }),
        "one request must not replan: {r:?}"
    );
    // The same reading with the floor at one request would have replanned: the floor held it.
    let naive: Evidence =
        serde_json::from_value(json!({"minRequests": 2, "minBytes": 0, "confidence": 0.5}))
            .unwrap();
    let naive = Evidence {
        min_requests: 1,
        ..naive
    };
    let (_, r) = decide(&prom, &p1, &assumed, &naive)
        .await
        .expect("still in the window");
    assert!(
        matches!(r, Replan::RollOut { .. }),
        "the test can fail: {r:?}"
    );

    // The link is fast again; let the slow request leave the window.
    link.set_mbps(BEFORE_MBPS).unwrap();
    tokio::time::sleep(Duration::from_secs(u64::from(WINDOW_S) + 1)).await;

    // Traffic: one request at a time into the end tier, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ok = 0u32;
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                if infer(end).await {
                    ok += 1;
                }
            }
            ok
        })
    };

    // Steady traffic at the planned bandwidth: enough evidence, and no replan.
    let t0 = Instant::now();
    let mut steady = None;
    while t0.elapsed() < Duration::from_secs(30) {
        if let Some((j, r)) = decide(&prom, &p1, &assumed, &policy()).await {
            if j.status.sufficient
                && j.obs.hops.contains_key("end->edge")
                && j.obs.compute_s.contains_key("end")
            {
                steady = Some((j, r));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (j, r) = steady.expect("enough evidence under steady traffic within 30 s");
    let (secs, bytes) = j.obs.hops["end->edge"];
    let mbps = bytes * 8.0 / secs / 1e6;
    eprintln!(
        "steady: end->edge {mbps:.2} Mbit/s observed ({:?}), compute {:?}",
        j.status.links["end->edge"], j.obs.compute_s
    );
    assert!(
        (mbps - BEFORE_MBPS).abs() / BEFORE_MBPS < 0.45,
        "observed {mbps} Mbit/s"
    );
    // The codec arrives through Prometheus as a term of its own (the feedback corrects it
    // apart from compute).
    let codec = j.obs.codec_s.get("end").copied().unwrap_or(0.0);
    assert!(
        codec > 0.0 && j.status.tiers["end"].codec_ms.is_some(),
        "the end's codec observed through Prometheus: {:?}",
        j.status.tiers
    );
    assert!(
        !matches!(r, Replan::RollOut { .. }),
        "no replan while nothing changed: {r:?}"
    );

    // The link slows down, for good.
    link.set_mbps(AFTER_MBPS).unwrap();
    let changed = Instant::now();
    // Two windows (one for the old requests to leave it, one for enough slow ones), plus the
    // two scrapes Prometheus needs before the window's edge shows them.
    let budget = 2.0 * f64::from(WINDOW_S) + 2.0 * SCRAPE_S;
    let mut rolled = None;
    while changed.elapsed().as_secs_f64() < budget + 5.0 {
        if let Some((j, Replan::RollOut { outcome, reason })) =
            decide(&prom, &p1, &assumed, &policy()).await
        {
            rolled = Some((changed.elapsed(), j, outcome, reason));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let served = traffic.await.unwrap();
    let (elapsed, j, outcome, reason) = rolled.expect("a new plan after the sustained change");
    eprintln!(
        "after {:.2} s: {reason}; new plan {} ({}) {:.3} ms; {served} requests served; links {:?}",
        elapsed.as_secs_f64(),
        outcome.status.summary,
        outcome.status.id,
        outcome.status.latency_ms,
        j.status.links
    );
    assert_ne!(outcome.status.id, p1.id);
    assert_eq!(outcome.status.deployment, "end-only");
    assert!(outcome.assumed.link_mbps["end->edge"] < 0.5 * BEFORE_MBPS);
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
    let w = observe::window_between(&before, &after, 1.0);
    let obs = evidence::judge(
        &w,
        &Evidence {
            min_requests: 10,
            min_bytes: 0,
            ..Evidence::default()
        },
        "p",
        "now",
    )
    .obs;
    let (secs, bytes) = obs.hops["end->edge"];
    let mbps = bytes * 8.0 / secs / 1e6;
    // Each 8 KiB transfer is ~16 ms, so a few ms of scheduling on a loaded machine move it by
    // tens of percent; 2.4–5.6 still tells a 4 Mbit/s link from 2 or 8.
    assert!(
        (mbps - 4.0).abs() < 1.6,
        "observed {mbps} Mbit/s on a 4 Mbit/s link"
    );
    assert!(
        bytes > 8192.0 && bytes < 8400.0,
        "an f32 [1,8,16,16] frame: {bytes}"
    );
    // A sleep is never shorter than asked but may overshoot under load; below the ~16 ms hop,
    // so the compute is the shard's own, not the link's.
    assert!(
        (0.003..0.012).contains(&obs.compute_s["end"]),
        "{:?}",
        obs.compute_s
    );
    assert!(
        (0.005..0.014).contains(&obs.compute_s["edge"]),
        "{:?}",
        obs.compute_s
    );
    assert!(obs.request_s.unwrap() > secs, "end to end includes the hop");
    // Framing an 8 KiB frame takes microseconds, timed apart from the 3 ms of compute.
    assert!(
        obs.codec_s["end"] > 0.0 && obs.codec_s["end"] < 0.003,
        "{:?}",
        obs.codec_s
    );
    // Unreachable shards are an error, not a panic.
    assert!(observe::scrape(&["http://127.0.0.1:1/metrics".into()])
        .await
        .is_err());
}
