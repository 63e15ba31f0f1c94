//! The shard server: one tier of the chain. It loads one shard once and serves
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/infer`, body a tensor frame ([`crate::onnx::frame`]) | last tier: 200 and an f32 frame of the output; otherwise the output is framed in the plan's wire encoding, sent to `{next}/v1/infer`, and that answer relayed |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when the model is loaded and the next tier's `/readyz` answers 200; else 503 |
//! | `GET /metrics` | Prometheus text ([`crate::runtime::metrics`]) |
//! | `/v2/...` | the Open Inference Protocol, for clients of the entry ([`entry`]) |
//!
//! Errors are JSON `{"error": "...", "request_id": "..."}`: 400 malformed frame or header, 408
//! body not received in time, 413 frame over the limits (refused from its first bytes or from
//! `Content-Length`, before the body is read), 500 model failure, 502 next tier unreachable or
//! failing, 503 + `Retry-After: 1` no free slot (or model still loading, or the next tier's 503
//! relayed), 504 next tier did not answer within the forward timeout.
//!
//! Headers: `x-request-id` is taken from the request (or made up), sent to the next tier,
//! logged in the request's tracing span and returned; `x-cnnpc-from-tier` names the sending tier
//! on a forward, so the receiver labels its hop metrics — a request without it came from a client,
//! and this tier is the entry tier that observes `cnnpc_request_seconds`.
//!
//! Concurrency: at most `max_concurrency` requests are in flight in a tier (from reading the
//! body to relaying the answer), which also bounds buffered bodies to `max_concurrency` frames;
//! the next is refused at once with 503, never queued. Decoding, the model and encoding run on
//! a [`ComputePool`] of `compute_threads` threads (default: the cores), never on the async
//! threads: admitted requests beyond that wait in its queue with their body already read, so the
//! cores never idle while a request is in transit and are never oversubscribed.

use crate::onnx::frame::{self, Frame, FrameError, FrameLimits};
use crate::planner::accuracy::WireEncoding;
use crate::runtime::compute_pool::{ComputePool, PoolError};
use crate::runtime::link::{ComputeEmulation, Link, LinkEmulation, PacedBody};
use crate::runtime::metrics::{Metrics, Outcome};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, info_span, warn, Instrument};

mod entry;
pub mod shadow;
pub use entry::{parse_timing, ranked, OipModel};

/// Request id header, carried on every hop.
pub const REQUEST_ID: &str = "x-request-id";
/// The tier that sent a forwarded request.
pub const FROM_TIER: &str = "x-cnnpc-from-tier";
/// The tier that answered (set on every `/v1/infer` answer).
pub const TIER: &str = "x-cnnpc-tier";
/// Seconds a shard keeps answering after SIGTERM (not ready, `Connection: close` on every
/// answer) so clients and Services move off it before it stops.
pub const DRAIN_SECONDS: u32 = 5;
/// Per-tier compute times on every answer (`end;dur=3.1, cloud;dur=20.4`, milliseconds), as
/// the W3C Server-Timing header; each tier prepends its own to the next tier's.
pub const SERVER_TIMING: &str = "server-timing";
/// Content type of tensor frames.
pub const FRAME_CONTENT_TYPE: &str = "application/x-cnnpc-frame";

/// A tensor as the model sees it: row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One shard of the model. Runs on a blocking thread; may be called concurrently.
pub trait ShardModel: Send + Sync + 'static {
    fn run(&self, input: Tensor) -> Result<Tensor, String>;
    fn name(&self) -> &str;
    /// The one input shape the model accepts, if fixed: any other is the client's error (400),
    /// refused before the model runs.
    fn input_shape(&self) -> Option<&[usize]> {
        None
    }

    /// A relay computes nothing: a frame already in the encoding it sends goes on as it came.
    fn is_relay(&self) -> bool {
        false
    }
}

/// A tier that computes nothing and forwards what it receives: as it came when the frame is
/// already in its wire encoding (the edge of an end→cloud plan), re-encoded otherwise (the end
/// device of a cloud-only plan, which frames the client's f32 input in the plan's encoding).
pub struct Relay;

impl ShardModel for Relay {
    fn run(&self, input: Tensor) -> Result<Tensor, String> {
        Ok(input)
    }
    fn name(&self) -> &str {
        "relay"
    }
    fn is_relay(&self) -> bool {
        true
    }
}

/// Everything a shard server needs besides its model; the `cnnpc shard` flags map onto it.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This tier's name (`end`, `edge`, `cloud`): the `tier`/`from`/`to` labels.
    pub tier: String,
    /// The `model` label of the compute histogram.
    pub model_name: String,
    /// Where [`run`] listens ([`serve`] takes a bound listener instead).
    pub listen: SocketAddr,
    /// Base URL of the next tier (`http://host:port`); `None` on the last tier.
    pub next: Option<Uri>,
    /// Wire encoding of the cut tensor sent to the next tier (the plan's choice).
    pub encoding: WireEncoding,
    /// zstd level for the forwarded payload (kept only if it shrinks it).
    pub zstd: Option<i32>,
    /// Channel axis of the cut tensor for per-channel quantisation (1 for NCHW), clamped to the
    /// tensor's last axis.
    pub channel_axis: usize,
    pub max_concurrency: usize,
    /// Requests decoded/run/encoded at once; more only time-share the same cores.
    pub compute_threads: usize,
    /// Whole forward call: sending the body (emulated link included), the answer's head and body.
    pub forward_timeout: Duration,
    /// Receiving a request body; a client that trickles its body is cut off with 408.
    pub read_timeout: Duration,
    /// Emulated link to the next tier.
    pub link: LinkEmulation,
    pub compute: ComputeEmulation,
    /// What this tier accepts, in requests and in the next tier's answers.
    pub limits: FrameLimits,
    pub plan_id: String,
    /// The plan's cut points, as the `cuts` label of `cnnpc_plan_info` (e.g. "3,7").
    pub cuts: String,
    /// A link to use instead of one built from `link` (a handle the caller keeps, e.g. to
    /// change its bandwidth while the server runs).
    pub link_handle: Option<Arc<Link>>,
    /// The whole model as the Open Inference Protocol shows it (meaningful on the entry tier).
    pub oip: OipModel,
    /// After shutdown is asked for, how long the shard stays a lame duck before it stops:
    /// `/readyz` answers 503 and every answer carries `Connection: close`, so Services and
    /// clients move off it while it still answers ([`DRAIN_SECONDS`] in a pod, 0 in tests).
    pub drain: Duration,
    /// Shadow sampling at the entry: the whole unmodified model's shard, and the fraction of
    /// requests that also run through it ([`shadow`]).
    pub shadow: Option<(Uri, f64)>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            tier: "cloud".into(),
            model_name: "model".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            next: None,
            encoding: WireEncoding::F32,
            zstd: None,
            channel_axis: 1,
            max_concurrency: 4,
            compute_threads: default_compute_threads(),
            forward_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            link: LinkEmulation::default(),
            compute: ComputeEmulation::default(),
            limits: FrameLimits::default(),
            plan_id: "none".into(),
            cuts: String::new(),
            link_handle: None,
            oip: OipModel::default(),
            drain: Duration::ZERO,
            shadow: None,
        }
    }
}

impl ShardConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !valid_token(&self.tier, 63) {
            return Err(format!(
                "tier name {:?} must be 1–63 characters of [A-Za-z0-9._:-]",
                self.tier
            ));
        }
        if self.max_concurrency == 0 {
            return Err("max concurrency must be at least 1".into());
        }
        if self.compute_threads == 0 {
            return Err("compute threads must be at least 1".into());
        }
        if self.forward_timeout.is_zero() || self.read_timeout.is_zero() {
            return Err("timeouts must be positive".into());
        }
        if let Some(next) = &self.next {
            next_url(next, "/v1/infer")?;
        }
        if let Some((url, f)) = &self.shadow {
            next_url(url, "/v1/infer")?;
            if !(0.0..=1.0).contains(f) {
                return Err(format!("shadow fraction {f} must be in [0, 1]"));
            }
        }
        self.link.validate()?;
        self.compute.validate()
    }
}

/// The cores this process may run on.
pub fn default_compute_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid shard configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `{base}{path}`, for an `http://host:port[/prefix]` base (no TLS: tiers talk inside a cluster).
fn next_url(base: &Uri, path: &str) -> Result<Uri, String> {
    if base.scheme_str() != Some("http") || base.authority().is_none() {
        return Err(format!(
            "next tier URL {base} must be http://host:port (https is not supported)"
        ));
    }
    let prefix = base.path().trim_end_matches('/');
    format!(
        "http://{}{prefix}{path}",
        base.authority().map_or("", |a| a.as_str())
    )
    .parse()
    .map_err(|e| format!("next tier URL {base}{path}: {e}"))
}

/// Header values we log and forward: short, printable, no separators that could forge log fields.
fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random-enough bits in hex; uniqueness, not secrecy, is what a request id needs.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Each RandomState carries fresh keys seeded from the OS.
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n ^ salt);
        h.write_u128(t);
        h.finish()
    };
    format!("{:016x}{:016x}", half(0), half(u64::MAX))
}

enum ModelSlot {
    Ready(Arc<dyn ShardModel>),
    Failed(String),
}

type ForwardClient = Client<HttpConnector, PacedBody>;

struct Shard {
    cfg: ShardConfig,
    model: OnceLock<ModelSlot>,
    metrics: Metrics,
    slots: Arc<Semaphore>,
    /// Decode/run/encode threads (`compute_threads`).
    compute: ComputePool,
    client: ForwardClient,
    link: Option<Arc<Link>>,
    /// Precomputed `{next}/v1/infer` and `{next}/readyz`.
    next_infer: Option<Uri>,
    next_ready: Option<Uri>,
    /// Set once shutdown is asked for: the lame-duck period of [`ShardConfig::drain`].
    draining: std::sync::atomic::AtomicBool,
    /// The entry's shadow (`{shadow}/v1/infer`), if sampling.
    shadow: Option<shadow::Shadow>,
}

/// Serves `model` on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve<F>(
    config: ShardConfig,
    model: Arc<dyn ShardModel>,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let shard = Arc::new(Shard::new(config)?);
    let _ = shard.model.set(ModelSlot::Ready(model));
    serve_shard(shard, listener, shutdown).await
}

/// [`serve`], loading the model on a blocking thread while already answering `/healthz`
/// (and 503 on `/readyz` and `/v1/infer` until it is loaded; for good if loading fails).
pub async fn serve_loading<L, F>(
    config: ShardConfig,
    load: L,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Arc<dyn ShardModel>, String> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let shard = Arc::new(Shard::new(config)?);
    let loading = shard.clone();
    tokio::task::spawn_blocking(move || {
        let slot = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
            Ok(Ok(m)) => {
                info!(tier = %loading.cfg.tier, model = m.name(), "model loaded");
                ModelSlot::Ready(m)
            }
            Ok(Err(e)) => {
                warn!(tier = %loading.cfg.tier, error = %e, "model failed to load");
                ModelSlot::Failed(e)
            }
            Err(_) => ModelSlot::Failed("model loader panicked".into()),
        };
        let _ = loading.model.set(slot);
    });
    serve_shard(shard, listener, shutdown).await
}

async fn serve_shard<F>(
    shard: Arc<Shard>,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    info!(
        tier = %shard.cfg.tier,
        addr = ?listener.local_addr().ok(),
        next = ?shard.cfg.next.as_ref().map(|u| u.to_string()),
        "shard serving"
    );
    use axum::serve::ListenerExt;
    // Answers are written whole; no reason to let Nagle hold their tail back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let lame_duck = shard.clone();
    let shutdown = async move {
        shutdown.await;
        let drain = lame_duck.cfg.drain;
        if !drain.is_zero() {
            lame_duck
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            info!(
                seconds = drain.as_secs_f64(),
                "draining: not ready, closing connections"
            );
            tokio::time::sleep(drain).await;
        }
    };
    axum::serve(listener, router(shard))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// For the CLI: binds `config.listen` and serves until SIGINT or SIGTERM.
pub async fn run(config: ShardConfig, model: Arc<dyn ShardModel>) -> Result<(), ServeError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve(config, model, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    info!("shutting down");
}

fn router(shard: Arc<Shard>) -> Router {
    let routes = Router::new()
        .route("/v1/infer", post(infer))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    entry::routes(routes)
        .layer(axum::middleware::map_response_with_state(
            shard.clone(),
            close_while_draining,
        ))
        .with_state(shard)
}

/// A lame duck tells every client to reconnect (to a pod that is staying).
async fn close_while_draining(State(shard): State<Arc<Shard>>, mut resp: Response) -> Response {
    if shard.draining.load(std::sync::atomic::Ordering::SeqCst) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

impl Shard {
    fn new(cfg: ShardConfig) -> Result<Shard, ServeError> {
        cfg.validate().map_err(ServeError::Config)?;
        let next = |path| {
            cfg.next
                .as_ref()
                .map(|b| next_url(b, path))
                .transpose()
                .map_err(ServeError::Config)
        };
        let (next_infer, next_ready) = (next("/v1/infer")?, next("/readyz")?);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.forward_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let metrics = Metrics::new(&cfg.tier, &cfg.plan_id, &cfg.cuts);
        // Every series this shard can observe exists from the start, at 0: Prometheus'
        // `increase` then counts the first request too (a series born at 1 loses it).
        for h in [&metrics.shard_compute_seconds, &metrics.shard_codec_seconds] {
            h.with_label_values(&[cfg.tier.as_str(), cfg.model_name.as_str()]);
        }
        // Request order: a tier receives only from the tiers before it.
        let tiers = ["end", "edge", "cloud"];
        for from in tiers.iter().take_while(|t| **t != cfg.tier) {
            if tiers.contains(&cfg.tier.as_str()) {
                let labels = [*from, cfg.tier.as_str()];
                metrics.hop_seconds.with_label_values(&labels);
                metrics.hop_bytes_total.with_label_values(&labels);
            }
        }
        Ok(Shard {
            metrics,
            slots: Arc::new(Semaphore::new(cfg.max_concurrency)),
            compute: ComputePool::new(&format!("cnnpc-{}", cfg.tier), cfg.compute_threads)?,
            link: cfg
                .link_handle
                .clone()
                .or_else(|| (!cfg.link.is_noop()).then(|| Arc::new(Link::new(&cfg.link)))),
            model: OnceLock::new(),
            client,
            next_infer,
            next_ready,
            draining: std::sync::atomic::AtomicBool::new(false),
            shadow: match &cfg.shadow {
                Some((url, f)) if *f > 0.0 => Some(shadow::Shadow::new(
                    next_url(url, "/v1/infer").map_err(ServeError::Config)?,
                    *f,
                )),
                _ => None,
            },
            cfg,
        })
    }

    fn model(&self) -> Result<Arc<dyn ShardModel>, String> {
        match self.model.get() {
            Some(ModelSlot::Ready(m)) => Ok(m.clone()),
            Some(ModelSlot::Failed(e)) => Err(format!("model failed to load: {e}")),
            None => Err("model is still loading".into()),
        }
    }
}

/// A request's failure: its status, outcome label and message.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, outcome: Outcome, message: impl Into<String>) -> Failure {
        Failure {
            status,
            outcome,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, Outcome::BadRequest, message)
    }

    /// A refused frame: 413 when it is over a limit, 400 when it is malformed.
    fn frame(e: FrameError) -> Failure {
        let status = match e {
            FrameError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure::new(status, Outcome::BadRequest, format!("invalid frame: {e}"))
    }

    fn into_response(self, request_id: &str) -> Response {
        let body = serde_json::json!({ "error": self.message, "request_id": request_id });
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

async fn infer(State(shard): State<Arc<Shard>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = entry::request_id_of(req.headers());
    // Outer None: no header (a client's request); inner None: a header we refuse.
    let from: Option<Option<String>> = req.headers().get(FROM_TIER).map(|v| {
        v.to_str()
            .ok()
            .filter(|s| valid_token(s, 63))
            .map(str::to_owned)
    });
    let from_name = from.as_ref().and_then(|f| f.as_deref());
    let span = info_span!(
        "infer",
        request_id = %request_id,
        tier = %shard.cfg.tier,
        from = from_name.unwrap_or("client"),
    );
    async {
        let result = match from {
            Some(None) => Err(Failure::bad_request(format!(
                "{FROM_TIER} must be 1–63 characters of [A-Za-z0-9._:-]"
            ))),
            _ => handle(&shard, &request_id, from_name, started, req).await,
        };
        let outcome = result.as_ref().map_or_else(|f| f.outcome, |_| Outcome::Ok);
        shard.metrics.count(&shard.cfg.tier, outcome);
        let elapsed = started.elapsed();
        let mut resp = match result {
            Ok(resp) => {
                if from.is_none() {
                    shard.metrics.request_seconds.observe(elapsed.as_secs_f64());
                }
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
                f.into_response(&request_id)
            }
        };
        let headers = resp.headers_mut();
        // Both values were validated (or generated) above, so they are valid header values.
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

async fn handle(
    shard: &Arc<Shard>,
    request_id: &str,
    from: Option<&str>,
    started: Instant,
    req: Request,
) -> Result<Response, Failure> {
    // Refuse at once rather than queue: a queue in front of a slow tier only adds latency.
    let Ok(_permit) = shard.slots.clone().try_acquire_owned() else {
        let limits = shard.cfg.limits;
        discard_body(req, &limits).await;
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Overloaded,
            format!(
                "tier {} is at its limit of {} concurrent requests",
                shard.cfg.tier, shard.cfg.max_concurrency
            ),
        ));
    };
    let model = match shard.model() {
        Ok(m) => m,
        Err(e) => {
            discard_body(req, &shard.cfg.limits).await;
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::ModelError,
                e,
            ));
        }
    };
    let body = tokio::time::timeout(
        shard.cfg.read_timeout,
        read_frame(req.into_parts(), &shard.cfg.limits),
    )
    .await
    .map_err(|_| {
        Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            Outcome::BadRequest,
            format!(
                "request body not received within {:?}",
                shard.cfg.read_timeout
            ),
        )
    })??;
    if let Some(from) = from {
        let labels = [from, shard.cfg.tier.as_str()];
        shard
            .metrics
            .hop_bytes_total
            .with_label_values(&labels)
            .inc_by(body.len() as u64);
        shard
            .metrics
            .hop_seconds
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    Ok(run_chain(shard, request_id, model, Input::Frame(body))
        .await?
        .into_response())
}

/// What a tier computes on: a frame as received, or a tensor the entry decoded (OIP).
enum Input {
    Frame(Vec<u8>),
    Tensor(Tensor),
}

/// The answer of this tier and those after it.
struct Answer {
    status: StatusCode,
    content_type: HeaderValue,
    /// The last tier's output frame (f32), or a relayed answer.
    body: Bytes,
    /// `Server-Timing` entries, one per tier: `{tier};dur={compute ms}`, in chain order.
    timing: String,
}

impl Answer {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&self.timing) {
            resp.headers_mut().insert(SERVER_TIMING, v);
        }
        resp
    }
}

/// Compute this tier's part, then forward to the next tier (if any) and relay its answer.
async fn run_chain(
    shard: &Arc<Shard>,
    request_id: &str,
    model: Arc<dyn ShardModel>,
    input: Input,
) -> Result<Answer, Failure> {
    let (encoding, zstd) = match shard.next_infer {
        Some(_) => (shard.cfg.encoding, shard.cfg.zstd),
        // The answer to the client is exact.
        None => (WireEncoding::F32, None),
    };
    let axis = shard.cfg.channel_axis;
    // A sampled request keeps its input as a frame for the shadow (only then is it copied).
    let shadow_input = match &shard.shadow {
        Some(s) if s.sampled() => match &input {
            Input::Frame(body) => Some(body.clone()),
            Input::Tensor(t) => {
                Frame::from_tensor(&t.data, &t.shape, axis, WireEncoding::F32, None)
                    .ok()
                    .map(|f| f.encode())
            }
        },
        _ => None,
    };
    let answer = compute_and_forward(shard, request_id, model, input, encoding, zstd).await?;
    if let Some(frame) = shadow_input {
        if answer.status == StatusCode::OK {
            shadow::compare(shard, request_id, frame, answer.body.clone());
        }
    }
    Ok(answer)
}

/// [`run_chain`] without the shadow: this tier's part, then the next tier's answer.
async fn compute_and_forward(
    shard: &Arc<Shard>,
    request_id: &str,
    model: Arc<dyn ShardModel>,
    input: Input,
    encoding: WireEncoding,
    zstd: Option<i32>,
) -> Result<Answer, Failure> {
    let (limits, axis) = (shard.cfg.limits, shard.cfg.channel_axis);
    let computed = shard
        .compute
        .run(move || compute(&*model, input, &limits, encoding, zstd, axis))
        .await
        .map_err(|e| match e {
            PoolError::Panicked(why) => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::ModelError,
                format!("model panicked: {why}"),
            ),
            PoolError::Stopped => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Overloaded,
                "the server is shutting down",
            ),
        })??;
    // The emulated device is slower at everything it does: the model and the codec.
    let (extra, extra_codec) = (
        shard.cfg.compute.extra(computed.compute),
        shard.cfg.compute.extra(computed.codec),
    );
    if !(extra + extra_codec).is_zero() {
        crate::runtime::link::sleep_precisely(extra + extra_codec).await;
    }
    let compute_s = (computed.compute + extra).as_secs_f64();
    let labels = [shard.cfg.tier.as_str(), shard.cfg.model_name.as_str()];
    shard
        .metrics
        .shard_compute_seconds
        .with_label_values(&labels)
        .observe(compute_s);
    shard
        .metrics
        .shard_codec_seconds
        .with_label_values(&labels)
        .observe((computed.codec + extra_codec).as_secs_f64());
    let own = format!("{};dur={:.3}", shard.cfg.tier, compute_s * 1e3);
    match &shard.next_infer {
        None => Ok(Answer {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static(FRAME_CONTENT_TYPE),
            body: Bytes::from(computed.frame),
            timing: own,
        }),
        Some(url) => {
            let mut answer = forward(shard, url, request_id, computed.frame).await?;
            answer.timing = if answer.timing.is_empty() {
                own
            } else {
                format!("{own}, {}", answer.timing)
            };
            Ok(answer)
        }
    }
}

/// How long a refused request's body is read and thrown away.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a refused request's body and throws it away — what nginx calls a lingering close —
/// so the client, still sending, gets to read the 503 instead of a reset connection, and the
/// connection stays usable. Nothing is kept; a body over the frame limits, or one still
/// arriving after [`DISCARD_TIMEOUT`], is given up on (the connection then closes).
async fn discard_body(req: Request, limits: &FrameLimits) {
    let max = max_frame_len(limits);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return;
    }
    let mut body = req.into_body();
    let drained = tokio::time::timeout(DISCARD_TIMEOUT, async {
        let mut seen = 0u64;
        loop {
            match body.frame().await {
                None => return Ok(seen),
                Some(Err(e)) => return Err(format!("after {seen} B: {e}")),
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
            }
            if seen > max {
                return Err(format!("over {max} B"));
            }
        }
    })
    .await;
    match drained {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "gave up discarding a refused request's body"),
        Err(_) => warn!("a refused request's body was still arriving after {DISCARD_TIMEOUT:?}"),
    }
}

/// The largest frame `limits` could accept: a cheap bound for `Content-Length`.
fn max_frame_len(limits: &FrameLimits) -> u64 {
    (frame::header_len(limits.max_rank.min(255), 0) as u64)
        .saturating_add(limits.max_elements.saturating_mul(8))
        .saturating_add(limits.max_payload_bytes)
}

/// Reads a frame body, refusing it as soon as its first bytes (or `Content-Length`) show it is
/// over the limits or malformed, and never holding more than the declared length plus a chunk.
async fn read_frame(
    (parts, mut body): (axum::http::request::Parts, Body),
    limits: &FrameLimits,
) -> Result<Vec<u8>, Failure> {
    let headers = &parts.headers;
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Failure::bad_request("invalid Content-Length"))?,
        ),
    };
    if let Some(cl) = content_length {
        let max = max_frame_len(limits);
        if cl > max {
            return Err(Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Outcome::BadRequest,
                format!("Content-Length {cl} exceeds the largest acceptable frame, {max} bytes"),
            ));
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut declared: Option<u64> = None;
    let mut header_checked = false;
    while let Some(chunk) = body.frame().await {
        let chunk = chunk.map_err(|e| Failure::bad_request(format!("reading body: {e}")))?;
        let Ok(data) = chunk.into_data() else {
            continue; // trailers carry nothing for us
        };
        buf.extend_from_slice(&data);
        if !header_checked {
            // Until the dims are in, re-check the prefix: it refuses on the preamble, then on
            // the element count and decoded size the dims imply.
            if let Some(total) = limits.check_prefix(&buf).map_err(Failure::frame)? {
                if declared.is_none() {
                    if let Some(cl) = content_length.filter(|&cl| cl != total) {
                        return Err(Failure::bad_request(format!(
                            "Content-Length {cl} disagrees with the frame's declared length {total}"
                        )));
                    }
                    declared = Some(total);
                }
                header_checked = buf.len() >= frame::header_len(usize::from(buf[7]), 0);
                if header_checked {
                    // The dims passed too, so the declared size is one the limits allow for
                    // this shape: reserve it (not before: a bare preamble may claim the maximum).
                    buf.reserve(
                        usize::try_from(total)
                            .unwrap_or(0)
                            .saturating_sub(buf.len()),
                    );
                }
            }
        }
        if let Some(total) = declared.filter(|&t| buf.len() as u64 > t) {
            return Err(Failure::frame(FrameError::TrailingBytes {
                declared: total,
                got: buf.len() as u64,
            }));
        }
    }
    Ok(buf)
}

struct Computed {
    frame: Vec<u8>,
    /// The model's run.
    compute: Duration,
    /// Reading the input frame and framing the output.
    codec: Duration,
}

/// Decode → run → encode, on a compute thread.
fn compute(
    model: &dyn ShardModel,
    input: Input,
    limits: &FrameLimits,
    encoding: WireEncoding,
    zstd: Option<i32>,
    axis: usize,
) -> Result<Computed, Failure> {
    let started = Instant::now();
    let tensor = match input {
        Input::Tensor(t) => t,
        Input::Frame(body) => {
            // Parsed once: a relay that re-encodes reads the frame it has just checked, rather
            // than parse (and copy) the whole payload a second time.
            let input = Frame::decode(&body, limits).map_err(Failure::frame)?;
            if model.is_relay() && input.encoding() == encoding && input.channel_axis() == axis {
                return Ok(Computed {
                    frame: body,
                    compute: Duration::ZERO,
                    codec: started.elapsed(),
                });
            }
            Tensor {
                data: input.to_f32().map_err(Failure::frame)?,
                shape: input.shape().to_vec(),
            }
        }
    };
    if let Some(want) = model
        .input_shape()
        .filter(|&w| w != tensor.shape.as_slice())
    {
        return Err(Failure::bad_request(format!(
            "input shape {:?} does not match the shard's {want:?}",
            tensor.shape
        )));
    }
    let t0 = Instant::now();
    let decoded = t0 - started;
    let out = model.run(tensor).map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::ModelError,
            format!("model {}: {e}", model.name()),
        )
    })?;
    let compute = t0.elapsed();
    let axis = axis.min(out.shape.len().saturating_sub(1));
    let frame = Frame::from_tensor(&out.data, &out.shape, axis, encoding, zstd)
        .map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::ModelError,
                format!("cannot frame the output of model {}: {e}", model.name()),
            )
        })?
        .encode();
    Ok(Computed {
        frame,
        compute,
        codec: decoded + (t0.elapsed() - compute),
    })
}

/// Sends the cut tensor on and relays the answer. Every failure is bounded by the timeout.
async fn forward(
    shard: &Shard,
    url: &Uri,
    request_id: &str,
    frame: Vec<u8>,
) -> Result<Answer, Failure> {
    let len = frame.len();
    let req = hyper::Request::post(url.clone())
        .header(header::CONTENT_TYPE, FRAME_CONTENT_TYPE)
        .header(REQUEST_ID, request_id)
        .header(FROM_TIER, &shard.cfg.tier)
        .body(PacedBody::new(Bytes::from(frame), shard.link.clone()))
        .map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Outcome::UpstreamError,
                format!("building the forward request: {e}"),
            )
        })?;
    let call = send(shard, req);
    let timeout = shard.cfg.forward_timeout;
    let (parts, body) = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            return Err(Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                Outcome::UpstreamTimeout,
                format!("next tier {url} did not answer within {timeout:?} ({len} bytes sent)"),
            ))
        }
        Ok(Err(e)) => {
            return Err(Failure::new(
                StatusCode::BAD_GATEWAY,
                Outcome::UpstreamError,
                format!("next tier {url} failed: {e}"),
            ))
        }
        Ok(Ok(answer)) => answer,
    };
    if parts.status.is_success() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static(FRAME_CONTENT_TYPE));
        let timing = parts
            .headers
            .get(SERVER_TIMING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        return Ok(Answer {
            status: parts.status,
            content_type,
            body,
            timing,
        });
    }
    // Relay the next tier's own message, trimmed: it names the real cause.
    let detail = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let status = if parts.status == StatusCode::SERVICE_UNAVAILABLE {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    Err(Failure::new(
        status,
        Outcome::UpstreamError,
        format!("next tier {url} answered {}: {detail}", parts.status),
    ))
}

/// Sends `req` on the shard's client and reads the answer, at most the frame limit.
async fn send(
    shard: &Shard,
    req: hyper::Request<PacedBody>,
) -> Result<(axum::http::response::Parts, Bytes), String> {
    let max_answer = usize::try_from(max_frame_len(&shard.cfg.limits)).unwrap_or(usize::MAX);
    let resp = shard
        .client
        .request(req)
        .await
        .map_err(|e| format!("{e}: {}", error_chain(&e)))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, max_answer)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((parts, body))
}

/// Posts `frame` to `url` (a shard's `/v1/infer`) as the shadow does: no emulated link, the
/// forward timeout, and the answer's frame or why there is none.
async fn forward_plain(
    shard: &Shard,
    url: &Uri,
    request_id: &str,
    frame: Vec<u8>,
) -> Result<Bytes, String> {
    let req = hyper::Request::post(url.clone())
        .header(header::CONTENT_TYPE, FRAME_CONTENT_TYPE)
        .header(REQUEST_ID, request_id)
        .body(PacedBody::new(Bytes::from(frame), None))
        .map_err(|e| e.to_string())?;
    let call = async {
        let (parts, body) = send(shard, req).await?;
        if !parts.status.is_success() {
            return Err(format!(
                "{url} answered {}: {}",
                parts.status,
                String::from_utf8_lossy(&body[..body.len().min(256)])
            ));
        }
        Ok(body)
    };
    tokio::time::timeout(shard.cfg.forward_timeout, call)
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer within {:?}",
                shard.cfg.forward_timeout
            )
        })?
}

/// The causes of a client error ("connection refused" hides under "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}

/// Whether the whole chain from this tier to the last can answer; why not, if not.
async fn chain_ready(shard: &Shard) -> Result<(), String> {
    if shard.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("draining: this shard is shutting down".into());
    }
    shard.model()?;
    if let Some(url) = &shard.next_ready {
        // The next tier's readiness covers the rest of the chain.
        let probe = hyper::Request::get(url.clone())
            .body(PacedBody::empty())
            .map_err(|_| format!("cannot build a probe for {url}"))?;
        let timeout = shard.cfg.forward_timeout.min(Duration::from_secs(2));
        match tokio::time::timeout(timeout, shard.client.request(probe)).await {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => return Err(format!("next tier {url} answered {}", r.status())),
            Ok(Err(e)) => return Err(format!("next tier {url}: {e}: {}", error_chain(&e))),
            Err(_) => return Err(format!("next tier {url} did not answer in {timeout:?}")),
        }
    }
    Ok(())
}

async fn readyz(State(shard): State<Arc<Shard>>) -> Response {
    let (status, body) = match chain_ready(&shard).await {
        Ok(()) => (StatusCode::OK, serde_json::json!({ "ready": true })),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ready": false, "reason": reason }),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(shard): State<Arc<Shard>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shard.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_forwards_a_frame_in_its_encoding_as_it_came_and_reencodes_any_other() {
        let values: Vec<f32> = (0..2 * 3 * 8)
            .map(|i| (i % 11) as f32 * 0.3 - 1.0)
            .collect();
        let shape = [1, 6, 2, 4];
        let limits = FrameLimits::default();
        let int8 = Frame::from_tensor(&values, &shape, 1, WireEncoding::Int8, Some(3))
            .unwrap()
            .encode();
        let relayed = |frame: &[u8], enc| {
            compute(
                &Relay,
                Input::Frame(frame.to_vec()),
                &limits,
                enc,
                Some(3),
                1,
            )
            .unwrap()
        };
        // Same encoding: the very bytes, nothing computed.
        let same = relayed(&int8, WireEncoding::Int8);
        assert_eq!(same.frame, int8);
        assert_eq!(same.compute, Duration::ZERO);
        // The first tier of a cloud-only plan: the client's f32 goes on in the plan's int8.
        let f32_frame = Frame::from_tensor(&values, &shape, 1, WireEncoding::F32, None)
            .unwrap()
            .encode();
        let framed = relayed(&f32_frame, WireEncoding::Int8);
        let back = Frame::decode(&framed.frame, &limits).unwrap();
        assert_eq!(back.encoding(), WireEncoding::Int8);
        assert_eq!(back.shape(), &shape);
        // A malformed frame is still refused, not forwarded.
        assert!(compute(
            &Relay,
            Input::Frame(b"CNPCjunk".to_vec()),
            &limits,
            WireEncoding::Int8,
            None,
            1
        )
        .is_err());
    }

    #[test]
    fn next_urls_join_paths() {
        let base: Uri = "http://edge:8080".parse().unwrap();
        assert_eq!(
            next_url(&base, "/v1/infer").unwrap().to_string(),
            "http://edge:8080/v1/infer"
        );
        let base: Uri = "http://10.0.0.1:80/prefix/".parse().unwrap();
        assert_eq!(
            next_url(&base, "/readyz").unwrap().to_string(),
            "http://10.0.0.1:80/prefix/readyz"
        );
        assert!(next_url(&"https://x:1".parse().unwrap(), "/a").is_err());
    }

    #[test]
    fn request_ids_are_unique_and_valid() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(valid_token(&a, 128));
        assert!(!valid_token("a b", 128));
        assert!(!valid_token("x\ny", 128));
        assert!(!valid_token("", 128));
    }

    #[test]
    fn config_is_validated() {
        let ok = ShardConfig::default();
        assert!(ok.validate().is_ok());
        let bad = ShardConfig {
            max_concurrency: 0,
            ..ShardConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ShardConfig {
            compute_threads: 0,
            ..ShardConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("compute threads"));
        let bad = ShardConfig {
            tier: "a b".into(),
            ..ShardConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
