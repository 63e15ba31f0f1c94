//! One plan served for real on loopback: a shard server per tier (the same server `cnnpc shard`
//! runs), chained end → edge → cloud with the emulated links and slowdowns, and a client that
//! sends frames to the end tier and reads the bytes each link carried off the tiers' `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::onnx::frame::{Frame, FrameLimits};
use crate::onnx::profile::{median, HttpCosts};
use crate::planner::accuracy::WireEncoding;
use crate::runtime::link::{ComputeEmulation, LinkEmulation};
use crate::runtime::metrics::{sample_value, samples};
use crate::runtime::server::{self, Relay, ShardConfig, ShardModel, FRAME_CONTENT_TYPE};

/// What one tier of a pipeline runs and how it reaches the next.
pub struct TierSpec {
    pub name: String,
    /// `None`: a relay (the tier's link is crossed, nothing is computed).
    pub model: Option<Arc<dyn ShardModel>>,
    pub slowdown: f64,
    /// Bandwidth of the link to the next tier (ignored on the last tier).
    pub link_mbps: Option<f64>,
    /// Wire encoding of what this tier sends on.
    pub encoding: WireEncoding,
    pub zstd: Option<i32>,
    /// Requests this tier serves at once; the next is refused with 503.
    pub max_concurrency: usize,
}

impl TierSpec {
    /// A tier with no slowdown, f32 on the wire and the shard server's default concurrency.
    pub fn new(name: &str, model: Option<Arc<dyn ShardModel>>) -> TierSpec {
        TierSpec {
            name: name.to_string(),
            model,
            slowdown: 1.0,
            link_mbps: None,
            encoding: WireEncoding::F32,
            zstd: None,
            max_concurrency: ShardConfig::default().max_concurrency,
        }
    }
}

/// Servers of one plan, running until dropped.
pub struct Pipeline {
    /// `(tier, base URL without a trailing slash)` in pipeline order.
    tiers: Vec<(String, String)>,
    client: Client<HttpConnector, Full<Bytes>>,
    stops: Vec<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<Result<(), server::ServeError>>>,
}

/// Cumulative (seconds, requests) per tier's compute and codec and per link's receive.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub compute: BTreeMap<String, (f64, f64)>,
    pub codec: BTreeMap<String, (f64, f64)>,
    pub hops: BTreeMap<String, (f64, f64)>,
}

/// Ms per request of each measured term: per tier compute and codec, per link the hop.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Terms {
    pub compute: BTreeMap<String, f64>,
    pub codec: BTreeMap<String, f64>,
    pub hops: BTreeMap<String, f64>,
}

impl Terms {
    /// Every term's ms summed.
    pub fn total(&self) -> f64 {
        [&self.compute, &self.codec, &self.hops]
            .iter()
            .flat_map(|m| m.values())
            .sum()
    }

    /// Each term's median over `requests` (one `Terms` per request). A mean would let one slow
    /// request inflate a term, and the total it is set beside is a median too.
    pub fn median(requests: &[Terms]) -> Terms {
        let of = |pick: fn(&Terms) -> &BTreeMap<String, f64>| {
            let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in requests {
                for (k, v) in pick(r) {
                    per.entry(k.clone()).or_default().push(*v);
                }
            }
            per.into_iter()
                .map(|(k, mut v)| (k, median(&mut v)))
                .collect()
        };
        Terms {
            compute: of(|t| &t.compute),
            codec: of(|t| &t.codec),
            hops: of(|t| &t.hops),
        }
    }
}

impl Counters {
    /// Mean ms per request of each term between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Terms {
        let mean = |now: &BTreeMap<String, (f64, f64)>, then: &BTreeMap<String, (f64, f64)>| {
            now.iter()
                .filter_map(|(k, &(s, n))| {
                    let (s0, n0) = then.get(k).copied().unwrap_or((0.0, 0.0));
                    (n > n0).then(|| (k.clone(), (s - s0) / (n - n0) * 1e3))
                })
                .collect()
        };
        Terms {
            compute: mean(&self.compute, &before.compute),
            codec: mean(&self.codec, &before.codec),
            hops: mean(&self.hops, &before.hops),
        }
    }
}

/// A last tier that reads its input and answers one value, as a classifier's last tier answers
/// a few: the entry is timed with a reply of a served request's size, not its input echoed.
struct AnswersOne;

impl ShardModel for AnswersOne {
    fn run(&self, _input: server::Tensor) -> Result<server::Tensor, String> {
        Ok(server::Tensor {
            shape: vec![1, 1],
            data: vec![0.0],
        })
    }
    fn name(&self) -> &str {
        "answers-one"
    }
}

/// What a hop and the client's request into the first tier cost on this machine beyond their
/// codec and link time, timed through real shard servers, `rounds` times each and interleaved
/// so all see the machine in the same state; the medians. The entry carries an f32 input of
/// `input_elements` (its bytes cross loopback) to a tier that reads it and answers one value;
/// what the tier's own metrics count (reading the input, framing the answer: the plan's codec
/// terms) is taken out, as the demo takes the measured terms out of a served request, so the
/// entry is the request's HTTP cost alone. A hop is two relays against one, with a tiny frame
/// (a hop's bytes are the link's, timed by the receiver). The planner adds them to every plan
/// (`WireCosts`), so a prediction counts the HTTP round trips it will pay.
///
/// Each timed request follows an idle `pause`, as a served request follows the idle between
/// requests (the profile's `round_idle`): servers, sockets and caches that have idled answer
/// slower. Back to back (`pause` zero), the entry cost 0.4–0.5 ms on the demo's machine, where
/// the served plans' requests paid 0.8–1.3 ms beyond their terms.
pub async fn http_costs(
    rounds: usize,
    input_elements: usize,
    pause: Duration,
) -> Result<HttpCosts> {
    let relay = |name: &str| TierSpec::new(name, None);
    let one = Pipeline::start(vec![relay("end")], "http", "http-one").await?;
    let two = Pipeline::start(vec![relay("end"), relay("edge")], "http", "http-two").await?;
    let answers = Arc::new(AnswersOne) as Arc<dyn ShardModel>;
    let entry = Pipeline::start(
        vec![TierSpec::new("end", Some(answers))],
        "http",
        "http-entry",
    )
    .await?;
    let frame =
        Bytes::from(Frame::from_tensor(&[0.0; 4], &[1, 4], 1, WireEncoding::F32, None)?.encode());
    let n = input_elements.max(1);
    let input = Bytes::from(
        Frame::from_tensor(&vec![0.5; n], &[1, n], 1, WireEncoding::F32, None)?.encode(),
    );
    let ms = |p: Posted| -> Result<f64> {
        if p.status != StatusCode::OK {
            bail!("a relay answered {} while timing HTTP", p.status);
        }
        Ok(p.latency.as_secs_f64() * 1e3)
    };
    let (mut a, mut b, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds + 3 {
        // The first rounds open connections and warm the pools: not what a request pays, and
        // not worth a pause.
        let timed = i >= 3;
        let idle = if timed { pause } else { Duration::ZERO };
        // Alternate the order, so neither side always runs first.
        let (x, y) = if i % 2 == 0 {
            let x = ms(one.post_after(idle, frame.clone()).await?)?;
            (x, ms(two.post_after(idle, frame.clone()).await?)?)
        } else {
            let y = ms(two.post_after(idle, frame.clone()).await?)?;
            (ms(one.post_after(idle, frame.clone()).await?)?, y)
        };
        // Read before the pause, so the scrape is not what the request follows.
        let before = entry.counters().await?;
        let z = ms(entry.post_after(idle, input.clone()).await?)?;
        let z = z - entry.counters().await?.since(&before).total();
        if timed {
            a.push(x);
            b.push(y);
            e.push(z);
        }
    }
    one.stop().await?;
    two.stop().await?;
    entry.stop().await?;
    Ok(HttpCosts {
        entry_ms: median(&mut e),
        hop_ms: (median(&mut b) - median(&mut a)).max(0.0),
    })
}

/// What the entry tier answered to a posted frame.
#[derive(Debug)]
pub struct Posted {
    pub status: StatusCode,
    pub body: Bytes,
    /// From sending the request to the whole answer.
    pub latency: Duration,
    /// The `Retry-After` of a 503, in seconds.
    pub retry_after: Option<Duration>,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub output: Vec<f32>,
    pub latency: Duration,
}

impl Pipeline {
    /// Binds every tier on an ephemeral loopback port and starts it, last tier first so each
    /// knows where to forward.
    pub async fn start(tiers: Vec<TierSpec>, model_name: &str, plan_id: &str) -> Result<Self> {
        if tiers.is_empty() {
            bail!("a pipeline needs at least one tier");
        }
        let mut urls: Vec<(String, String)> = Vec::new();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        let mut next: Option<Uri> = None;
        let last = tiers.len() - 1;
        for (i, t) in tiers.into_iter().enumerate().rev() {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a loopback port")?;
            let addr = listener.local_addr()?;
            let config = ShardConfig {
                tier: t.name.clone(),
                model_name: model_name.to_string(),
                listen: addr,
                next: next.clone(),
                encoding: t.encoding,
                zstd: t.zstd,
                link: LinkEmulation {
                    mbps: if i == last { None } else { t.link_mbps },
                    delay_ms: 0.0,
                },
                compute: ComputeEmulation {
                    slowdown: t.slowdown,
                },
                plan_id: plan_id.to_string(),
                max_concurrency: t.max_concurrency,
                ..ShardConfig::default()
            };
            let model: Arc<dyn ShardModel> = t.model.unwrap_or_else(|| Arc::new(Relay));
            let (stop, stopped) = oneshot::channel::<()>();
            servers.push(tokio::spawn(server::serve(
                config,
                model,
                listener,
                async move {
                    let _ = stopped.await;
                },
            )));
            stops.push(stop);
            next = Some(format!("http://{addr}").parse()?);
            urls.push((t.name, format!("http://{addr}")));
        }
        urls.reverse();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let p = Pipeline {
            tiers: urls,
            client,
            stops,
            servers,
        };
        p.wait_ready().await?;
        Ok(p)
    }

    /// Polls the entry tier's `/readyz` (ready only when the whole chain is).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(0, "/readyz").await?;
            if status == StatusCode::OK {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the pipeline did not become ready in 30 s ({status}): {body}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, tier: usize, path: &str) -> Result<(StatusCode, String)> {
        let url: Uri = format!("{}{path}", self.tiers[tier].1).parse()?;
        let resp = self
            .client
            .get(url)
            .await
            .with_context(|| format!("GET {path} on tier {}", self.tiers[tier].0))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// [`Self::post`] after idling `idle` (none when zero).
    pub async fn post_after(&self, idle: Duration, frame: Bytes) -> Result<Posted> {
        if !idle.is_zero() {
            tokio::time::sleep(idle).await;
        }
        self.post(frame).await
    }

    /// Posts an encoded frame to the entry tier. Transport failures are errors; any status is
    /// an answer.
    pub async fn post(&self, frame: Bytes) -> Result<Posted> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v1/infer", self.tiers[0].1))
            .header(hyper::header::CONTENT_TYPE, FRAME_CONTENT_TYPE)
            .body(Full::new(frame))?;
        let started = Instant::now();
        let resp = self.client.request(req).await.context("POST /v1/infer")?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Posted {
            status,
            body,
            latency: started.elapsed(),
            retry_after,
        })
    }

    /// Sends one input (f32 frame, as a camera on the end device would hand it over) to the
    /// entry tier and waits for the answer.
    pub async fn infer(&self, data: &[f32], shape: &[usize]) -> Result<Answer> {
        let frame = Frame::from_tensor(data, shape, 1, WireEncoding::F32, None)?.encode();
        let Posted {
            status,
            body,
            latency,
            ..
        } = self.post(Bytes::from(frame)).await?;
        if status != StatusCode::OK {
            bail!(
                "the pipeline answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let answer = Frame::decode(&body, &FrameLimits::default())?;
        Ok(Answer {
            output: answer.to_f32()?,
            latency,
        })
    }

    /// Bytes each link has carried so far (`from->to` → bytes), read off the receivers'
    /// `/metrics` as Prometheus would.
    pub async fn link_bytes(&self) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for i in 1..self.tiers.len() {
            let (from, to) = (&self.tiers[i - 1].0, &self.tiers[i].0);
            let (_, text) = self.get(i, "/metrics").await?;
            let bytes = sample_value(
                &text,
                "cnnpc_hop_bytes_total",
                &[("from", from.as_str()), ("to", to.as_str())],
            )
            .unwrap_or(0.0);
            out.insert(format!("{from}->{to}"), bytes);
        }
        Ok(out)
    }

    /// The tiers' own counters so far: per tier, compute seconds and requests
    /// (`cnnpc_shard_compute_seconds`); per link, receive seconds, requests and bytes
    /// (`cnnpc_hop_seconds`, `cnnpc_hop_bytes_total`). Two snapshots' difference over the
    /// requests between them gives the measured cost of each term of the latency model.
    pub async fn counters(&self) -> Result<Counters> {
        let mut out = Counters::default();
        for i in 0..self.tiers.len() {
            let (_, text) = self.get(i, "/metrics").await?;
            let tier = self.tiers[i].0.as_str();
            let sum = |name: &str, want: &[(&str, &str)]| -> f64 {
                samples(&text)
                    .filter(|s| s.name == name && want.iter().all(|l| s.labels.contains(l)))
                    .map(|s| s.value)
                    .sum()
            };
            let me = [("tier", tier)];
            out.compute.insert(
                tier.to_string(),
                (
                    sum("cnnpc_shard_compute_seconds_sum", &me),
                    sum("cnnpc_shard_compute_seconds_count", &me),
                ),
            );
            out.codec.insert(
                tier.to_string(),
                (
                    sum("cnnpc_shard_codec_seconds_sum", &me),
                    sum("cnnpc_shard_codec_seconds_count", &me),
                ),
            );
            if i > 0 {
                let from = self.tiers[i - 1].0.as_str();
                let hop = [("from", from), ("to", tier)];
                out.hops.insert(
                    format!("{from}->{tier}"),
                    (
                        sum("cnnpc_hop_seconds_sum", &hop),
                        sum("cnnpc_hop_seconds_count", &hop),
                    ),
                );
            }
        }
        Ok(out)
    }

    /// Stops every server and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for h in self.servers.drain(..) {
            h.await
                .map_err(|e| anyhow!("a shard server task failed: {e}"))??;
        }
        Ok(())
    }
}
