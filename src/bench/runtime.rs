//! `cnnpc bench runtime`: what the shard runtime itself costs, on loopback, no emulation.
//!
//! Three measurements, each side by side in one run so the ratios survive a noisy machine:
//!
//! - **Per-hop overhead vs tensor size.** A one-tier chain (client → relay) against a two-tier
//!   chain (client → relay → relay), samples interleaved; the difference of the medians is one
//!   more hop: encode the frame, send it over HTTP, decode it, and relay the answer (same size)
//!   back. The in-process frame encode + decode time is reported next to it.
//! - **Shard server vs direct tract.** The whole model behind one shard server against
//!   [`TractShard::run`] called directly, in alternating rounds; requests per second of each and
//!   their ratio. One caller each (latency-bound), one per core each, and saturated: direct
//!   tract with a caller per core (more only time-share the cores) against the server with two
//!   per core (its admitted requests queue for a compute thread, so no core idles while a
//!   request is in transit). The target is on the saturated row: what each can serve at most.
//! - **Load test.** The model split in three (f32 on the wire, so every answer must equal the
//!   unsplit model's), 64 clients sharing a fixed number of requests under a deadline. Once with
//!   every tier sized for the clients (`max_concurrency` = clients: any error is a defect), once
//!   at the shard's default concurrency: the excess is shed with 503 and the clients retry after
//!   its `Retry-After`, so every request must still be answered, correctly, with no error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use crate::demo::{Pipeline, Posted, TierSpec};
use crate::onnx::frame::{Frame, FrameLimits};
use crate::onnx::{list_cuts, split};
use crate::planner::accuracy::WireEncoding;
use crate::runtime::server::{Relay, ShardConfig, ShardModel, Tensor};
use crate::runtime::tract_model::TractShard;

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct RuntimeBenchOptions {
    /// Sizes of the f32 tensor crossing the hop, in bytes.
    pub hop_sizes: Vec<usize>,
    /// Samples per chain per size.
    pub hop_samples: usize,
    /// Requests per throughput round (shared by the concurrent callers).
    pub throughput_requests: usize,
    /// Alternating rounds per mode; the median round counts.
    pub throughput_rounds: usize,
    pub load_clients: usize,
    pub load_requests: usize,
    /// The load test stops issuing requests after this long (the count is then not reached,
    /// which the report says).
    pub load_deadline: Duration,
}

impl Default for RuntimeBenchOptions {
    fn default() -> Self {
        RuntimeBenchOptions {
            hop_sizes: vec![1_000, 10_000, 100_000, 1_000_000, 4_000_000],
            hop_samples: 60,
            // Many short paired rounds: this machine's speed wanders by ±20% over seconds, and
            // a median of 21 paired ratios holds still where one of 7 did not.
            throughput_requests: 48,
            throughput_rounds: 21,
            load_clients: 64,
            load_requests: 640,
            load_deadline: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HopRow {
    pub tensor_bytes: usize,
    pub frame_bytes: usize,
    /// Frame encode + decode in process (median), the codec's share of a hop.
    pub codec_ms: f64,
    pub one_tier_p50_ms: f64,
    pub two_tier_p50_ms: f64,
    /// `two_tier_p50_ms − one_tier_p50_ms`.
    pub hop_overhead_ms: f64,
    /// The same from the fastest sample of each chain (the noise floor).
    pub hop_overhead_min_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// Threads calling tract directly.
    pub direct_callers: usize,
    /// Clients posting to the server (each waits for its answer before the next request).
    pub server_callers: usize,
    pub direct_rps: f64,
    pub server_rps: f64,
    /// Median over rounds of the round's `server req/s / direct req/s` (both measured back to
    /// back in the round), so it is not quite `server_rps / direct_rps`.
    pub ratio: f64,
    /// The spread of the per-round ratios: how much the machine's noise moves one measurement.
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// CPU time of the whole process (every thread, client included) per request.
    pub direct_cpu_ms: f64,
    pub server_cpu_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    /// `sized` (tiers admit every client) or `default-concurrency` (the excess is shed).
    pub scenario: String,
    pub clients: usize,
    pub tier_max_concurrency: usize,
    pub requests: usize,
    /// Requests answered 200 with the unsplit model's output.
    pub ok: usize,
    /// 503 answers: load shed by a full tier. The client retries after `Retry-After`.
    pub shed: usize,
    /// Requests still shed when their retry would have passed the deadline.
    pub gave_up: usize,
    /// Everything else: transport failures, other statuses, undecodable answers.
    pub errors: usize,
    /// What the errors were: the HTTP status and the answer's error message, or the failure.
    pub error_kinds: std::collections::BTreeMap<String, usize>,
    /// 200 answers that differ from the unsplit model's.
    pub wrong_answers: usize,
    /// Requests not sent because the deadline passed.
    pub not_sent: usize,
    pub seconds: f64,
    pub ok_per_second: f64,
    /// Latency of the 200 answers, from a request's first attempt.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    /// Per-hop overhead at 100 KB < 1 ms.
    pub hop_overhead_100kb_under_1ms: Option<bool>,
    /// Saturated server throughput ≥ 90% of saturated direct tract throughput.
    pub server_within_10_percent_of_tract: bool,
    /// The sized load test: every request answered 200, correctly, before the deadline.
    pub load_test_zero_errors: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeBench {
    pub model: String,
    pub model_ms_per_image: f64,
    pub cores: usize,
    pub hop: Vec<HopRow>,
    pub throughput: Vec<ThroughputRow>,
    pub load: Vec<LoadRow>,
    pub targets: Targets,
}

/// Runs every measurement on `model` (an ONNX CNN with one fixed-shape input). `progress` is
/// told what is being measured.
pub async fn run(
    model_name: &str,
    model: &[u8],
    opts: &RuntimeBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<RuntimeBench> {
    if opts.hop_samples == 0 || opts.throughput_requests == 0 || opts.throughput_rounds == 0 {
        bail!("samples, requests and rounds must be at least 1");
    }
    if opts.load_clients == 0 || opts.load_requests == 0 {
        bail!("the load test needs at least one client and one request");
    }
    let whole = Arc::new(TractShard::load(model_name, model).map_err(anyhow::Error::msg)?);
    let shape = whole.input_shape().to_vec();
    let input = test_input(&shape);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut hop = Vec::new();
    for &size in &opts.hop_sizes {
        progress(&format!("per-hop overhead, {size} B tensor"));
        hop.push(hop_row(size, opts.hop_samples).await?);
    }

    let mut callers = vec![(1, 1)];
    if cores > 1 {
        callers.push((cores, cores));
    }
    callers.push((cores, 2 * cores));
    let mut throughput = Vec::new();
    for (direct, served) in callers {
        progress(&format!(
            "server vs direct tract, {direct} direct callers, {served} server clients"
        ));
        throughput.push(throughput_row(whole.clone(), &input, &shape, direct, served, opts).await?);
    }
    let model_ms = 1e3 / throughput[0].direct_rps;

    let shards = three_shards(model)?;
    let want = whole.run(Tensor {
        shape: shape.clone(),
        data: input.clone(),
    });
    let want = want.map_err(anyhow::Error::msg)?.data;
    let mut load = Vec::new();
    for (scenario, limit) in [
        ("sized", opts.load_clients),
        (
            "default-concurrency",
            ShardConfig::default().max_concurrency,
        ),
    ] {
        progress(&format!(
            "load test: {} clients, {} requests, tiers admit {limit}",
            opts.load_clients, opts.load_requests
        ));
        load.push(load_row(scenario, &shards, limit, &input, &shape, &want, opts).await?);
    }

    let targets = Targets {
        hop_overhead_100kb_under_1ms: hop
            .iter()
            .find(|r| r.tensor_bytes == 100_000)
            .map(|r| r.hop_overhead_ms < 1.0),
        server_within_10_percent_of_tract: throughput.last().is_some_and(|r| r.ratio >= 0.9),
        load_test_zero_errors: load.first().is_some_and(|l| {
            l.ok == l.requests && l.errors == 0 && l.shed == 0 && l.wrong_answers == 0
        }),
    };
    Ok(RuntimeBench {
        model: model_name.to_string(),
        model_ms_per_image: model_ms,
        cores,
        hop,
        throughput,
        load,
        targets,
    })
}

/// Deterministic, varied values (no all-zero tensor that compresses or computes specially).
fn test_input(shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
        .collect()
}

fn f32_frame(data: &[f32], shape: &[usize]) -> Result<Bytes> {
    Ok(Bytes::from(
        Frame::from_tensor(data, shape, 1, WireEncoding::F32, None)?.encode(),
    ))
}

fn relay() -> Option<Arc<dyn ShardModel>> {
    Some(Arc::new(Relay))
}

async fn hop_row(tensor_bytes: usize, samples: usize) -> Result<HopRow> {
    let shape = [1, 4, tensor_bytes.div_ceil(16).max(1)];
    let data = test_input(&shape);
    let frame = f32_frame(&data, &shape)?;
    let limits = FrameLimits::default();
    let codec_ms = median(
        (0..samples.clamp(1, 20))
            .map(|_| {
                let t = Instant::now();
                let encoded = Frame::from_tensor(&data, &shape, 1, WireEncoding::F32, None)
                    .map(|f| f.encode());
                let ok = encoded
                    .ok()
                    .and_then(|e| Frame::decode(&e, &limits).ok())
                    .and_then(|f| f.to_f32().ok())
                    .is_some_and(|v| v.len() == data.len());
                (ok, t.elapsed().as_secs_f64() * 1e3)
            })
            .map(|(ok, ms)| if ok { ms } else { f64::NAN })
            .collect(),
    );
    if codec_ms.is_nan() {
        bail!("the frame codec failed on a {tensor_bytes} B tensor");
    }
    let one = Pipeline::start(vec![TierSpec::new("cloud", relay())], "relay", "bench").await?;
    let two = Pipeline::start(
        vec![
            TierSpec::new("edge", relay()),
            TierSpec::new("cloud", relay()),
        ],
        "relay",
        "bench",
    )
    .await?;
    // Warm both connections and allocators before timing.
    for p in [&one, &two] {
        expect_ok(p.post(frame.clone()).await?)?;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        a.push(expect_ok(one.post(frame.clone()).await?)?);
        b.push(expect_ok(two.post(frame.clone()).await?)?);
    }
    one.stop().await?;
    two.stop().await?;
    let (one_p50, two_p50) = (median(a.clone()), median(b.clone()));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(HopRow {
        tensor_bytes: data.len() * 4,
        frame_bytes: frame.len(),
        codec_ms,
        one_tier_p50_ms: one_p50,
        two_tier_p50_ms: two_p50,
        hop_overhead_ms: two_p50 - one_p50,
        hop_overhead_min_ms: min(&b) - min(&a),
    })
}

/// The latency of a 200 answer in ms, or an error naming what came back.
fn expect_ok(p: Posted) -> Result<f64> {
    if p.status != StatusCode::OK {
        bail!("{}: {}", p.status, String::from_utf8_lossy(&p.body));
    }
    Ok(p.latency.as_secs_f64() * 1e3)
}

async fn throughput_row(
    model: Arc<TractShard>,
    input: &[f32],
    shape: &[usize],
    direct_callers: usize,
    server_callers: usize,
    opts: &RuntimeBenchOptions,
) -> Result<ThroughputRow> {
    let tier = TierSpec {
        max_concurrency: server_callers,
        ..TierSpec::new("cloud", Some(model.clone()))
    };
    let server = Arc::new(Pipeline::start(vec![tier], "bench", "bench").await?);
    let frame = f32_frame(input, shape)?;
    let total = opts.throughput_requests;
    expect_ok(server.post(frame.clone()).await?)?;
    let (mut direct, mut served, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_cpu, mut served_cpu) = (Vec::new(), Vec::new());
    for round in 0..opts.throughput_rounds {
        // Each round measures both modes back to back, in alternating order, so a drift in the
        // machine's speed (a noisy VM) falls on both sides of the round's ratio alike.
        let direct_half = direct_round(&model, input, shape, direct_callers, total);
        let served_half = served_round(&server, &frame, server_callers, total);
        let ((d_rps, d_cpu), (s_rps, s_cpu)) = if round % 2 == 0 {
            let d = direct_half.await?;
            (d, served_half.await?)
        } else {
            let s = served_half.await?;
            (direct_half.await?, s)
        };
        ratios.push(s_rps / d_rps);
        direct.push(d_rps);
        direct_cpu.push(d_cpu);
        served.push(s_rps);
        served_cpu.push(s_cpu);
    }
    if let Ok(p) = Arc::try_unwrap(server) {
        p.stop().await?;
    }
    Ok(ThroughputRow {
        direct_callers,
        server_callers,
        direct_rps: median(direct),
        server_rps: median(served),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ratio: median(ratios),
        direct_cpu_ms: median(direct_cpu),
        server_cpu_ms: median(served_cpu),
    })
}

/// `total` requests through tract on `callers` threads: (requests/s, process CPU ms/request).
async fn direct_round(
    model: &Arc<TractShard>,
    input: &[f32],
    shape: &[usize],
    callers: usize,
    total: usize,
) -> Result<(f64, f64)> {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let tickets = Arc::new(AtomicUsize::new(total));
    let mut running = Vec::new();
    for _ in 0..callers {
        let (m, x, s, t) = (
            model.clone(),
            input.to_vec(),
            shape.to_vec(),
            tickets.clone(),
        );
        running.push(tokio::task::spawn_blocking(move || {
            while take(&t) {
                let out = m.run(Tensor {
                    shape: s.clone(),
                    data: x.clone(),
                });
                std::hint::black_box(out.map_err(anyhow::Error::msg)?);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for c in running {
        c.await??;
    }
    Ok(rate(total, t, cpu))
}

/// `total` requests through the server from `clients` concurrent clients, each waiting for its
/// answer (and decoding it) before the next: (requests/s, process CPU ms/request).
async fn served_round(
    server: &Arc<Pipeline>,
    frame: &Bytes,
    clients: usize,
    total: usize,
) -> Result<(f64, f64)> {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let tickets = Arc::new(AtomicUsize::new(total));
    let mut running = Vec::new();
    for _ in 0..clients {
        let (p, f, t) = (server.clone(), frame.clone(), tickets.clone());
        running.push(tokio::spawn(async move {
            while take(&t) {
                let posted = p.post(f.clone()).await?;
                let answer = Frame::decode(&posted.body, &FrameLimits::default());
                expect_ok(posted)?;
                std::hint::black_box(answer?.to_f32()?);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for c in running {
        c.await??;
    }
    Ok(rate(total, t, cpu))
}

fn rate(total: usize, since: Instant, cpu_since: f64) -> (f64, f64) {
    (
        total as f64 / since.elapsed().as_secs_f64(),
        (cpu_seconds() - cpu_since) * 1e3 / total as f64,
    )
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Takes one of the remaining requests; false when none is left.
fn take(tickets: &AtomicUsize) -> bool {
    tickets
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The model cut at the single-tensor cut points nearest a third and two thirds of the way.
fn three_shards(model: &[u8]) -> Result<Vec<Vec<u8>>> {
    let cuts: Vec<_> = list_cuts(model)?
        .into_iter()
        .filter(|c| c.tensors.len() == 1)
        .collect();
    if cuts.len() < 2 {
        bail!(
            "the load test splits the model in three and needs two single-tensor cut points; it has {}",
            cuts.len()
        );
    }
    let (a, b) = (cuts.len() / 3, (2 * cuts.len() / 3).max(cuts.len() / 3 + 1));
    let names = [
        cuts[a].tensor_names(),
        cuts[b.min(cuts.len() - 1)].tensor_names(),
    ];
    Ok(split(model, &names)?)
}

async fn load_row(
    scenario: &str,
    shards: &[Vec<u8>],
    limit: usize,
    input: &[f32],
    shape: &[usize],
    want: &[f32],
    opts: &RuntimeBenchOptions,
) -> Result<LoadRow> {
    let mut tiers = Vec::new();
    for (name, bytes) in ["end", "edge", "cloud"].iter().zip(shards) {
        let m = TractShard::load(&format!("bench-{name}"), bytes).map_err(anyhow::Error::msg)?;
        tiers.push(TierSpec {
            max_concurrency: limit,
            ..TierSpec::new(name, Some(Arc::new(m)))
        });
    }
    let pipeline = Arc::new(Pipeline::start(tiers, "bench", "bench-load").await?);
    let frame = f32_frame(input, shape)?;
    let want = Arc::new(want.to_vec());
    let tickets = Arc::new(AtomicUsize::new(opts.load_requests));
    let started = Instant::now();
    let deadline = started + opts.load_deadline;
    let mut clients = Vec::new();
    for _ in 0..opts.load_clients {
        let (p, f, w, t) = (
            pipeline.clone(),
            frame.clone(),
            want.clone(),
            tickets.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline && take(&t) {
                // A shed request is retried after its Retry-After, as a polite client would;
                // its latency runs from the first attempt.
                let first = Instant::now();
                loop {
                    match p.post(f.clone()).await {
                        Ok(posted) if posted.status == StatusCode::SERVICE_UNAVAILABLE => {
                            tally.shed += 1;
                            let wait = posted.retry_after.unwrap_or(Duration::from_secs(1));
                            if Instant::now() + wait >= deadline {
                                tally.gave_up += 1;
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                        answer => {
                            tally.record(answer, first.elapsed(), &w);
                            break;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for c in clients {
        all.merge(c.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(p) = Arc::try_unwrap(pipeline) {
        p.stop().await?;
    }
    let mut lat = all.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let ok = lat.len();
    Ok(LoadRow {
        scenario: scenario.to_string(),
        clients: opts.load_clients,
        tier_max_concurrency: limit,
        requests: opts.load_requests,
        ok,
        shed: all.shed,
        gave_up: all.gave_up,
        errors: all.errors,
        error_kinds: all.kinds,
        wrong_answers: all.wrong,
        not_sent: tickets.load(Ordering::SeqCst),
        seconds,
        ok_per_second: ok as f64 / seconds,
        p50_ms: crate::demo::percentile(&lat, 0.5),
        p99_ms: crate::demo::percentile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    })
}

#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    shed: usize,
    gave_up: usize,
    errors: usize,
    kinds: std::collections::BTreeMap<String, usize>,
    wrong: usize,
}

impl Tally {
    fn record(&mut self, answer: Result<Posted>, took: Duration, want: &[f32]) {
        match answer {
            Ok(Posted {
                status: StatusCode::OK,
                body,
                ..
            }) => {
                let got = Frame::decode(&body, &FrameLimits::default())
                    .ok()
                    .and_then(|f| f.to_f32().ok());
                match got {
                    None => self.error("200 with an undecodable frame".into()),
                    Some(v) => {
                        self.latencies_ms.push(took.as_secs_f64() * 1e3);
                        if !same_output(&v, want) {
                            self.wrong += 1;
                        }
                    }
                }
            }
            Ok(Posted { status, body, .. }) => {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.error(format!("{status} {message}"));
            }
            Err(e) => self.error(format!("{e:#}")),
        }
    }

    fn error(&mut self, kind: String) {
        self.errors += 1;
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, o: Tally) {
        self.latencies_ms.extend(o.latencies_ms);
        self.shed += o.shed;
        self.gave_up += o.gave_up;
        self.errors += o.errors;
        for (k, n) in o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        self.wrong += o.wrong;
    }
}

/// Equal up to float reassociation: the split model runs the same ops in the same order, but
/// tract may fuse them differently per shard.
fn same_output(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::demo::percentile(&v, 0.5)
}

/// A Markdown table of the report, for the README and the closing note.
pub fn markdown(r: &RuntimeBench) -> String {
    let mut s = format!(
        "Model `{}` ({:.2} ms per image direct, {} cores), loopback, no emulation.\n\n",
        r.model, r.model_ms_per_image, r.cores
    );
    s += "| tensor | frame B | codec ms | 1 tier p50 ms | 2 tiers p50 ms | per-hop ms (p50) | per-hop ms (min) |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    for h in &r.hop {
        s += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            human_bytes(h.tensor_bytes),
            h.frame_bytes,
            h.codec_ms,
            h.one_tier_p50_ms,
            h.two_tier_p50_ms,
            h.hop_overhead_ms,
            h.hop_overhead_min_ms
        );
    }
    s += "\n| direct callers | direct req/s | direct CPU ms/req | server clients | server req/s | server CPU ms/req | server / direct (median round) | per-round range |\n|---:|---:|---:|---:|---:|---:|---:|---|\n";
    for t in &r.throughput {
        s += &format!(
            "| {} | {:.1} | {:.2} | {} | {:.1} | {:.2} | {:.3} | {:.3}–{:.3} |\n",
            t.direct_callers,
            t.direct_rps,
            t.direct_cpu_ms,
            t.server_callers,
            t.server_rps,
            t.server_cpu_ms,
            t.ratio,
            t.ratio_min,
            t.ratio_max
        );
    }
    s += "\n| load test | clients | tier limit | requests | ok | 503s (retried) | errors | wrong | p50 ms | p99 ms | ok/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for l in &r.load {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            l.scenario,
            l.clients,
            l.tier_max_concurrency,
            l.requests,
            l.ok,
            l.shed,
            l.errors,
            l.wrong_answers,
            l.p50_ms,
            l.p99_ms,
            l.ok_per_second
        );
    }
    s
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}
