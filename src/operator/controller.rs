//! The reconciler: read → decide → apply. It reads the children and the observations
//! ([`observe`](super::observe)), decides with pure functions ([`core`](super::core),
//! [`decide`](super::decide)), plans in a blocking task ([`planning`](super::planning)), and
//! applies children and status by server-side apply ([`apply`](super::apply), field manager
//! `cnnpc-controller`), skipping writes that change nothing.

use super::apply::{self, apply_and_prune};
use super::core::{self, Outcome, TierHealth, Trigger};
use super::crd::{
    Assumptions, CollaborativeInference, CollaborativeInferenceStatus, ObservationStatus,
    PlanStatus, RejectedPlan,
};
use super::decide;
use super::evidence::{self, Window};
use super::fetch::{FetchError, ModelStore};
use super::history;
use super::labels;
use super::metrics::Metrics;
use super::observe::{self, Counters};
use super::planning::{self, PlanError, PlanOutcome, PlanRequest, Replan};
use super::resources::{self, BuildContext, BuildError};
use super::rollout;
use crate::planner::accuracy::Measurements;
use crate::planner::profile::Profile;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager of every write, and the events' reporter.
pub const FIELD_MANAGER: &str = labels::MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("model: {0}")]
    Model(#[from] FetchError),
    /// The user's calibration files cannot be had (missing, unreachable, wrong checksum).
    #[error("{what}: {source}")]
    CalibrationData {
        what: &'static str,
        source: FetchError,
    },
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    #[error("child objects: {0}")]
    Build(#[from] BuildError),
    #[error("profile ConfigMap {name}: {why}")]
    Profile { name: String, why: String },
    #[error("planning task failed: {0}")]
    Task(String),
    #[error("the resource has no namespace")]
    NoNamespace,
}

impl Error {
    /// The `error` label of `cnnpc_controller_reconcile_errors_total` (bounded set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Model(e) => match e.reason() {
                "ChecksumMismatch" => "checksum_mismatch",
                "InvalidSpec" => "invalid_spec",
                _ => "model_unavailable",
            },
            Error::CalibrationData { source, .. } => match source.reason() {
                "ChecksumMismatch" => "checksum_mismatch",
                _ => "calibration",
            },
            Error::Plan(e) => match e {
                PlanError::ImpossibleObjective(_) => "impossible_objective",
                PlanError::UnknownCut(_) => "unknown_cut",
                PlanError::InvalidModel(_) => "invalid_model",
                PlanError::Calibration(_) => "calibration",
                _ => "invalid_spec",
            },
            Error::Build(_) => "invalid_spec",
            Error::Profile { .. } => "invalid_profile",
            Error::Task(_) => "task",
            Error::NoNamespace => "invalid_spec",
        }
    }

    /// The condition reason when this error is the spec's fault (shown in status, with an
    /// event); `None` for transient failures (API errors), which are only retried.
    pub fn spec_reason(&self) -> Option<&'static str> {
        match self {
            Error::Model(e) => Some(e.reason()),
            // Named as a calibration failure, whatever went wrong fetching it.
            Error::CalibrationData { source, .. } => Some(match source.reason() {
                "ChecksumMismatch" => "ChecksumMismatch",
                _ => "CalibrationFailed",
            }),
            Error::Plan(e) => Some(e.reason()),
            Error::Build(_) => Some("InvalidSpec"),
            Error::Profile { .. } => Some("InvalidProfile"),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where observations come from.
#[derive(Clone)]
pub enum Observer {
    /// `spec.prometheusUrl`, else the shards' `/metrics` through their Services.
    Live,
    /// A fixed window of observations (tests).
    Fixed(Arc<Mutex<Window>>),
}

/// Per-resource memory between reconciles, keyed by the resource's UID (a re-created resource of
/// the same name starts afresh). Nothing here is needed to decide correctly after a restart:
/// the rollout, the observations and the rejected plans live in status. Lost on restart: the
/// backoff, and (without Prometheus) the scrape that starts the current window.
#[derive(Debug, Default)]
struct Memo {
    failures: u32,
    /// The last round that observed nothing at all (its failure is not in status).
    last_attempt: Option<Timestamp>,
    /// Without Prometheus: the plan, the counters at the start of the window, and when they
    /// were read.
    counters: Option<(String, Timestamp, Counters)>,
}

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub build: BuildContext,
    pub models: ModelStore,
    pub observer: Observer,
    /// Profiling repeats per segment.
    pub repeats: usize,
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    memo: Mutex<HashMap<String, Memo>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        build: BuildContext,
        models: ModelStore,
        observer: Observer,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            metrics,
            recorder,
            build,
            models,
            observer,
            repeats: 5,
            clock: Arc::new(Timestamp::now),
            memo: Mutex::default(),
        }
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn memo<T>(&self, key: &str, f: impl FnOnce(&mut Memo) -> T) -> T {
        let mut m = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(key.to_string()).or_default())
    }
}

/// The memo key: the UID (namespace/name only for an object not stored yet, as in some tests).
fn key(ci: &CollaborativeInference) -> String {
    ci.uid()
        .unwrap_or_else(|| format!("{}/{}", ci.namespace().unwrap_or_default(), ci.name_any()))
}

/// How the resource is named in logs.
fn who(ci: &CollaborativeInference) -> String {
    format!("{}/{}", ci.namespace().unwrap_or_default(), ci.name_any())
}

/// What the controller reads before deciding.
#[derive(Debug, Default)]
struct Observed {
    config_map: Option<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    autoscalers: Vec<HorizontalPodAutoscaler>,
}

/// Reconcile one resource: decide the plan, apply it, report.
pub async fn reconcile(ci: Arc<CollaborativeInference>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let ns = ci.namespace().ok_or(Error::NoNamespace)?;
    let observed = read_children(&ctx.client, &ns, &ci.name_any()).await?;
    let step = match decide(&ci, &ctx, &observed).await {
        Ok(step) => step,
        Err(e) if e.spec_reason().is_some() => return Err(report_failure(&ci, &ctx, e).await),
        Err(e) => return Err(e),
    };
    let progressing = match apply(&ci, &ctx, &ns, &observed, &step).await {
        Ok(p) => p,
        Err(e) if e.spec_reason().is_some() => return Err(report_failure(&ci, &ctx, e).await),
        Err(e) => return Err(e),
    };
    ctx.memo(&key(&ci), |m| m.failures = 0);
    let interval = Duration::from_secs(u64::from(ci.spec.replan.interval_seconds.max(1)));
    // A rollout or a drain in progress is looked at again soon (readiness changes also wake
    // the controller, through the Deployments it owns; the drain's end does not).
    Ok(Action::requeue(if progressing {
        interval.min(PROGRESS_RECHECK)
    } else {
        interval
    }))
}

/// How soon a rollout or drain in progress is looked at again.
const PROGRESS_RECHECK: Duration = Duration::from_secs(5);

/// Backoff per resource: 5 s doubling to 5 min; the failure is counted by its label.
pub fn error_policy(ci: Arc<CollaborativeInference>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(resource = %who(&ci), error = %error, "reconcile failed");
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    let n = ctx.memo(&key(&ci), |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    Action::requeue(backoff(n))
}

pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.saturating_sub(1).min(6)).min(300))
}

async fn read_children(client: &Client, ns: &str, name: &str) -> Result<Observed> {
    let lp = ListParams::default().labels(&labels::children_selector(name));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let plan_cm = resources::plan_configmap_name(name);
    Ok(Observed {
        config_map: cms
            .list(&lp)
            .await?
            .items
            .into_iter()
            .find(|c| c.name_any() == plan_cm),
        deployments: deps.list(&lp).await?.items,
        services: svcs.list(&lp).await?.items,
        autoscalers: hpas.list(&lp).await?.items,
    })
}

/// What to run after this reconcile.
struct Step {
    plan: PlanStatus,
    data: BTreeMap<String, String>,
    assumed: Assumptions,
    lost: Vec<String>,
    replanned: Option<Trigger>,
    note: Option<String>,
    observed_latency_ms: Option<f64>,
    health: Vec<TierHealth>,
    /// This round's observations, judged.
    observation: Option<ObservationStatus>,
    /// The serving plan, rejected: it served worse than the plan it replaced.
    rejected: Option<RejectedPlan>,
}

async fn decide(ci: &CollaborativeInference, ctx: &Context, observed: &Observed) -> Result<Step> {
    let status = ci.status.clone().unwrap_or_default();
    let now = ctx.now();
    let health = serving_health(&status, observed);
    let lost = core::lost_tiers(&health, now, ci.spec.replan.tier_loss_grace_seconds);
    let data = observed
        .config_map
        .as_ref()
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    let has_cm = data.contains_key(resources::PLAN_KEY);
    if let Some(trigger) = core::trigger(ci.metadata.generation, &status, has_cm, &lost) {
        // A new spec starts from the spec's assumptions; a tier change keeps what was learnt.
        let adjust = match (&trigger, &status.assumed) {
            (Trigger::TierLost(_) | Trigger::TierRecovered(_), Some(a)) => a.clone(),
            _ => Assumptions::default(),
        };
        let reuse = !matches!(trigger, Trigger::Initial | Trigger::SpecChanged);
        let outcome = search(ci, ctx, &data, reuse, &lost, adjust).await?;
        ctx.memo(&key(ci), |m| m.counters = None);
        return Ok(Step {
            data: configmap_data(&outcome),
            plan: outcome.status,
            assumed: outcome.assumed,
            lost,
            replanned: Some(trigger),
            note: (!outcome.notes.is_empty()).then(|| outcome.notes.join("; ")),
            observed_latency_ms: None,
            health,
            observation: None,
            rejected: None,
        });
    }
    let current = status.plan.clone().ok_or(Error::Task("no plan".into()))?;
    let assumed = status.assumed.clone().unwrap_or_default();
    let mut step = Step {
        plan: current.clone(),
        data: data.clone(),
        assumed: assumed.clone(),
        lost: lost.clone(),
        replanned: None,
        note: None,
        observed_latency_ms: status.observed_latency_ms,
        health,
        observation: None,
        rejected: None,
    };
    // While a plan comes up or the old one drains, the shards' metrics mix two plans: judge
    // nothing until the rollout is over.
    if status.rollout.is_some() || status.retiring.is_some() {
        return Ok(step);
    }
    // One round per interval after the plan began serving, timed by what status recorded (so
    // a restarted controller does not observe, or write, early) or by the last round that
    // observed nothing.
    let interval = i64::from(ci.spec.replan.interval_seconds.max(1));
    let started = status
        .history
        .first()
        .filter(|h| h.plan.id == current.id)
        .and_then(|h| h.started.parse::<Timestamp>().ok());
    let last = status
        .observation
        .as_ref()
        .and_then(|o| o.at.parse::<Timestamp>().ok())
        .into_iter()
        .chain(started)
        .chain(ctx.memo(&key(ci), |m| m.last_attempt))
        .max();
    if last.is_some_and(|t| now.as_second() - t.as_second() < interval) {
        return Ok(step);
    }
    let window = match observe(ci, ctx, &current, now).await {
        Ok(w) => w,
        Err(why) => {
            ctx.memo(&key(ci), |m| m.last_attempt = Some(now));
            tracing::info!(resource = %who(ci), %why, "no observations this round");
            return Ok(step);
        }
    };
    let judged = evidence::judge(
        &window,
        &ci.spec.replan.evidence,
        &current.id,
        &now.to_string(),
    );
    if let Some(l) = &judged.status.latency_ms {
        step.observed_latency_ms = Some(l.value);
    }
    step.observation = Some(judged.status.clone());
    let obs = judged.obs;
    let latency = obs.request_s.map(|m| {
        let (low, high) = obs
            .interval
            .get(evidence::REQUEST)
            .copied()
            .unwrap_or((m, m));
        super::crd::Estimate {
            value: m * 1e3,
            low: low * 1e3,
            high: high * 1e3,
        }
    });
    let floor = ci.spec.objective.as_ref().and_then(|o| o.min_accuracy);
    let low_agreement = judged.status.live_agreement.as_ref().filter(|a| {
        a.samples >= u64::from(ci.spec.replan.evidence.min_requests)
            && floor.is_some_and(|f| a.agreement.high < f)
    });
    let already = status.rejected_plans.iter().any(|r| r.id == current.id);
    if let (Some(live), Some(floor), false) = (low_agreement, floor, already) {
        // Below the floor at confidence: this plan is rejected, and the search runs again
        // with the floor raised by how far calibration overrated it.
        let live = live.clone();
        let gap = (current.accuracy.unwrap_or(1.0) - live.agreement.high).max(0.0);
        let raised = (floor + gap).min(0.9999);
        let why = format!(
            "live agreement {:.4} [{:.4}, {:.4}] over {} shadowed rows is below the floor {floor}",
            live.agreement.value, live.agreement.low, live.agreement.high, live.samples
        );
        step.rejected = Some(RejectedPlan {
            id: current.id.clone(),
            summary: current.summary.clone(),
            reason: why.clone(),
            predicted_latency_ms: current.latency_ms,
            observed_latency_ms: None,
            baseline_plan: None,
            baseline_latency_ms: None,
            live_agreement: Some(live),
            at: now.to_string(),
        });
        let mut req = plan_request(ci, ctx, &data, true, &lost, assumed.clone()).await?;
        if let Some(o) = req.spec.objective.as_mut() {
            o.min_accuracy = Some(raised);
        }
        let outcome = tokio::task::spawn_blocking(move || planning::make_plan(req))
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        match outcome {
            Ok(o) if o.status.id != current.id => {
                step.data = configmap_data(&o);
                step.plan = o.status;
                step.assumed = o.assumed;
                step.replanned = Some(Trigger::LiveAgreement(format!(
                    "{why}: searched again at floor {raised:.4}"
                )));
            }
            Ok(_) => {
                step.note = Some(format!(
                    "{why}: searched again at floor {raised:.4}; no other plan meets it"
                ))
            }
            Err(e) => step.note = Some(format!("{why}: searched again at floor {raised:.4}: {e}")),
        }
        return Ok(step);
    }
    if let Some(rb) = history::rollback(
        &status.history,
        &current,
        latency,
        now,
        ci.spec.replan.hysteresis,
        ci.spec.replan.rollback_intervals,
        interval,
    ) {
        step.plan = rb.to.clone();
        step.replanned = Some(Trigger::RolledBack(rb.reason.clone()));
        step.rejected = Some(rb.rejected);
        return Ok(step);
    }
    if decide::adjust(&current, &assumed, &obs) == assumed {
        return Ok(step);
    }
    let mut req = plan_request(ci, ctx, &data, true, &lost, assumed).await?;
    // The profile the current plan was made with, whatever the spec says now.
    if req.profile.is_none() {
        return Ok(step);
    }
    req.repeats = ctx.repeats;
    let hysteresis = ci.spec.replan.hysteresis;
    let plan = current.clone();
    let rejected: Vec<String> = status.rejected_plans.iter().map(|r| r.id.clone()).collect();
    let replan = tokio::task::spawn_blocking(move || {
        planning::replan_on(&plan, req, &obs, hysteresis, &rejected)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    match replan {
        Replan::Unchanged => {}
        Replan::Kept { note, .. } => step.note = Some(note),
        Replan::RollOut { outcome, reason } => {
            step.data = configmap_data(&outcome);
            step.plan = outcome.status;
            step.assumed = outcome.assumed;
            step.replanned = Some(Trigger::Observed(reason));
        }
    }
    Ok(step)
}

/// Health of the serving plan's tiers (and of lost tiers' Deployments kept from older plans,
/// whose recovery is watched): a plan still coming up is not a lost tier.
fn serving_health(status: &CollaborativeInferenceStatus, observed: &Observed) -> Vec<TierHealth> {
    let serving = status.plan.as_ref().map(|p| p.id.as_str());
    let coming = status.rollout.as_ref().map(|r| r.plan.id.as_str());
    observed
        .deployments
        .iter()
        .filter(|d| {
            let plan = resources::plan_of(&d.metadata);
            plan == serving
                || (plan != coming
                    && core::tier_health(d).is_some_and(|h| status.lost_tiers.contains(&h.tier)))
        })
        .filter_map(core::tier_health)
        .collect()
}

/// Whether every tier of `plan` has all its replicas ready. Each shard is ready only when the
/// next tier is (its `/readyz` asks), so this is the whole chain.
fn plan_ready(ci: &CollaborativeInference, plan: &PlanStatus, observed: &Observed) -> bool {
    waiting_tiers(ci, plan, observed).is_empty()
}

/// The tiers of `plan` without all their replicas ready.
fn waiting_tiers(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
    observed: &Observed,
) -> Vec<String> {
    let name = ci.name_any();
    plan.tiers
        .iter()
        .filter(|t| t.segments.is_some())
        .filter(|t| {
            let want = resources::shard_name(&name, &t.tier, &plan.id);
            !observed.deployments.iter().any(|d| {
                d.name_any() == want
                    && core::tier_health(d).is_some_and(|h| h.ready >= h.wanted.max(1))
            })
        })
        .map(|t| t.tier.clone())
        .collect()
}

/// Resolves the model and profile, then plans in a blocking task.
async fn search(
    ci: &CollaborativeInference,
    ctx: &Context,
    data: &BTreeMap<String, String>,
    reuse_profile: bool,
    lost: &[String],
    adjust: Assumptions,
) -> Result<PlanOutcome> {
    let req = plan_request(ci, ctx, data, reuse_profile, lost, adjust).await?;
    let outcome = tokio::task::spawn_blocking(move || planning::make_plan(req))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    Ok(outcome)
}

/// The model (fetched or read), the profile (the spec's, or the stored one when `reuse_profile`)
/// and the stored accuracy measurements.
async fn plan_request(
    ci: &CollaborativeInference,
    ctx: &Context,
    data: &BTreeMap<String, String>,
    reuse_profile: bool,
    lost: &[String],
    adjust: Assumptions,
) -> Result<PlanRequest> {
    let model = Arc::new(ctx.models.resolve(&ci.spec.model).await?);
    let profile = match &ci.spec.profile {
        Some(p) => Some(read_profile(ctx, ci, &p.config_map).await?),
        None if reuse_profile => data
            .get(resources::PROFILE_KEY)
            .and_then(|t| Profile::parse(t).ok()),
        None => None,
    };
    let known = match (&profile, data.get(resources::ACCURACY_KEY)) {
        (Some(p), Some(csv)) if reuse_profile => {
            crate::planner::table::parse_csv(csv, p).unwrap_or_default()
        }
        _ => Measurements::default(),
    };
    let calibration = resolve_calibration(ctx, ci).await?;
    Ok(PlanRequest {
        spec: ci.spec.clone(),
        model,
        profile,
        lost: lost.to_vec(),
        assumed: adjust,
        known,
        known_key: data.get(resources::ACCURACY_KEY_KEY).cloned(),
        calibration,
        repeats: ctx.repeats,
    })
}

/// The user's calibration data as the controller reads it (its files under `--model-dir`, or
/// downloaded and checked); `None` for built-in data.
async fn resolve_calibration(
    ctx: &Context,
    ci: &CollaborativeInference,
) -> Result<Option<crate::dataset::Source>> {
    use super::crd::DataFormat;
    let Some(src) = ci.spec.calibration.as_ref().and_then(|c| c.source.as_ref()) else {
        return Ok(None);
    };
    let folder = src.format == DataFormat::Images;
    let fetch = |what: &'static str| move |source| Error::CalibrationData { what, source };
    let data = ctx
        .models
        .resolve_file(&src.data, "calibration.source.data", folder)
        .await
        .map_err(fetch("calibration.source.data"))?;
    let labels = match &src.labels {
        Some(l) => Some(
            ctx.models
                .resolve_file(l, "calibration.source.labels", false)
                .await
                .map_err(fetch("calibration.source.labels"))?,
        ),
        None => None,
    };
    Ok(Some(match src.format {
        DataFormat::Npy => crate::dataset::Source::Npy { data, labels },
        DataFormat::Images => crate::dataset::Source::Images {
            dir: data,
            preprocess: src.preprocess.clone().unwrap_or_default(),
        },
    }))
}

async fn read_profile(ctx: &Context, ci: &CollaborativeInference, name: &str) -> Result<Profile> {
    let ns = ci.namespace().ok_or(Error::NoNamespace)?;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let err = |why: String| Error::Profile {
        name: name.into(),
        why,
    };
    let cm = cms
        .get_opt(name)
        .await?
        .ok_or_else(|| err("not found".into()))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(resources::PROFILE_KEY))
        .ok_or_else(|| err(format!("has no key {}", resources::PROFILE_KEY)))?;
    Profile::parse(text).map_err(|e| err(e.to_string()))
}

fn configmap_data(o: &PlanOutcome) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (
            resources::PLAN_KEY.to_string(),
            serde_json::to_string_pretty(&o.plan).unwrap_or_default(),
        ),
        (
            resources::PROFILE_KEY.to_string(),
            serde_yaml::to_string(&o.profile).unwrap_or_default(),
        ),
        (
            resources::ACCURACY_KEY.to_string(),
            crate::planner::table::to_csv(&o.known),
        ),
    ]);
    if let Some(k) = &o.measurement_key {
        data.insert(resources::ACCURACY_KEY_KEY.to_string(), k.clone());
    }
    data
}

/// Reads the running plan's observations: from Prometheus over the replan interval when that
/// holds enough, else over the evidence window; without Prometheus, the shards' counters since
/// the window began (a new window starts once one was enough, or the window has passed).
async fn observe(
    ci: &CollaborativeInference,
    ctx: &Context,
    plan: &PlanStatus,
    now: Timestamp,
) -> std::result::Result<Window, String> {
    let policy = &ci.spec.replan.evidence;
    match &ctx.observer {
        Observer::Fixed(w) => Ok(w.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        Observer::Live => match &ci.spec.prometheus_url {
            Some(url) => {
                let ns = ci.namespace().unwrap_or_default();
                let sel = observe::selector(&ns, &ci.name_any(), &plan.id);
                let short = ci.spec.replan.interval_seconds.max(30);
                let w = observe::prometheus(url, &sel, short).await?;
                let enough = evidence::judge(&w, policy, &plan.id, "").status.sufficient;
                if enough || short >= policy.window_seconds {
                    return Ok(w);
                }
                observe::prometheus(url, &sel, policy.window_seconds).await
            }
            None => {
                let ns = ci.namespace().unwrap_or_default();
                // The first tier through the entry Service, the others through their own.
                let urls: Vec<String> = plan
                    .tiers
                    .iter()
                    .filter(|t| t.segments.is_some())
                    .enumerate()
                    .map(|(i, t)| {
                        let svc = if i == 0 {
                            resources::entry_name(&ci.name_any())
                        } else {
                            resources::shard_name(&ci.name_any(), &t.tier, &plan.id)
                        };
                        format!("http://{svc}.{ns}.svc:{}/metrics", resources::SHARD_PORT)
                    })
                    .collect();
                let counters = observe::scrape(&urls).await?;
                let before = ctx.memo(&key(ci), |m| m.counters.clone());
                let Some((_, since, base)) = before.filter(|b| b.0 == plan.id) else {
                    let start = Some((plan.id.clone(), now, counters));
                    ctx.memo(&key(ci), |m| m.counters = start);
                    return Err("first scrape of this plan: observations start next round".into());
                };
                let seconds = (now.as_second() - since.as_second()) as f64;
                let w = observe::window_between(&base, &counters, seconds);
                let enough = evidence::judge(&w, policy, &plan.id, "").status.sufficient;
                if enough || seconds >= f64::from(policy.window_seconds) {
                    let start = Some((plan.id.clone(), now, counters));
                    ctx.memo(&key(ci), |m| m.counters = start);
                }
                Ok(w)
            }
        },
    }
}

/// Applies the step: the rollout's next state ([`rollout::step`]), every living plan's
/// shards, the entry Service on the serving plan, the status and the events. Returns whether a
/// rollout or drain is still in progress.
async fn apply(
    ci: &CollaborativeInference,
    ctx: &Context,
    ns: &str,
    observed: &Observed,
    step: &Step,
) -> Result<bool> {
    let client = &ctx.client;
    let name = ci.name_any();
    let old = ci.status.clone().unwrap_or_default();
    let now = ctx.now();
    let reason = step.replanned.as_ref().map(Trigger::describe);
    let decided = reason.as_deref().map(|r| (&step.plan, r));
    let (versions, changes) = rollout::step(
        &rollout::Versions::of(&old),
        decided,
        &|p| plan_ready(ci, p, observed),
        now,
        ci.spec.replan.drain_seconds,
    );
    let serving = versions
        .serving
        .clone()
        .ok_or_else(|| Error::Task("no plan to serve".into()))?;
    let newest = versions
        .newest()
        .cloned()
        .unwrap_or_else(|| serving.clone());

    // The newest plan's shards are applied (a spec edit that keeps the plan updates them in
    // place); older living plans' shards are only re-created if missing, never re-rendered
    // with a spec they were not made for. Everything else is pruned, except a lost tier's
    // Deployment, whose recovery is watched.
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut autoscalers = Vec::new();
    for plan in versions.alive() {
        autoscalers.extend(resources::build_autoscalers(ci, plan)?);
        let (d, sv) = resources::build_shards(ci, plan, &ctx.build)?;
        if plan.id == newest.id {
            deployments.extend(d);
            services.extend(sv);
        } else {
            let live_d: Vec<String> = observed.deployments.iter().map(|x| x.name_any()).collect();
            let live_s: Vec<String> = observed.services.iter().map(|x| x.name_any()).collect();
            let keep_d = |x: &Deployment| live_d.contains(&x.name_any());
            let keep_s = |x: &Service| live_s.contains(&x.name_any());
            // A live one is wanted as it is: same object, same hash, no write.
            deployments.extend(d.into_iter().map(|x| {
                if keep_d(&x) {
                    observed
                        .deployments
                        .iter()
                        .find(|l| l.name_any() == x.name_any())
                        .cloned()
                        .unwrap_or(x)
                } else {
                    x
                }
            }));
            services.extend(sv.into_iter().map(|x| {
                if keep_s(&x) {
                    observed
                        .services
                        .iter()
                        .find(|l| l.name_any() == x.name_any())
                        .cloned()
                        .unwrap_or(x)
                } else {
                    x
                }
            }));
        }
    }
    if ci.spec.shadow.is_some() {
        // One tier, so no next-hop Service from build_shards: the entry calls this one.
        let (d, _) = resources::build_shards(ci, &resources::shadow_plan(), &ctx.build)?;
        deployments.extend(d);
        services.push(resources::build_service(
            ci,
            resources::SHADOW_TIER,
            resources::SHADOW_PLAN,
        )?);
    }
    let entry = resources::build_entry_service(ci, &serving.id)?;
    let entry_name = resources::entry_name(&name);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    if !observed.services.iter().any(|s| s.name_any() == entry_name)
        && svcs.get_opt(&entry_name).await?.is_some()
    {
        return Err(Error::Build(BuildError::Invalid(format!(
            "Service {entry_name} exists and is not this resource's: the entry Service is named \
             after the resource; rename one of them"
        ))));
    }
    services.push(entry);
    let keep: Vec<String> = observed
        .deployments
        .iter()
        .filter(|d| core::tier_health(d).is_some_and(|h| step.lost.contains(&h.tier)))
        .map(|d| d.name_any())
        .collect();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config_map = resources::build_plan_configmap(ci, &newest.id, step.data.clone())?;
    let live_cm: Vec<ConfigMap> = observed.config_map.iter().cloned().collect();
    apply_and_prune(&cms, std::slice::from_ref(&config_map), &live_cm, &[]).await?;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    apply_and_prune(&deps, &deployments, &observed.deployments, &keep).await?;
    apply_and_prune(&svcs, &services, &observed.services, &[]).await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    apply_and_prune(&hpas, &autoscalers, &observed.autoscalers, &[]).await?;

    // Status, written only when it changes.
    let waiting = versions
        .rollout
        .as_ref()
        .map(|r| (r, waiting_tiers(ci, &r.plan, observed)));
    let health = if serving.id == old.plan.as_ref().map_or("", |p| p.id.as_str()) {
        step.health.clone()
    } else {
        serving_health(
            &CollaborativeInferenceStatus {
                plan: Some(serving.clone()),
                ..old.clone()
            },
            observed,
        )
    };
    let fresh = matches!(
        step.replanned,
        Some(Trigger::Initial | Trigger::SpecChanged)
    );
    let mut rejected = if fresh {
        Vec::new()
    } else {
        old.rejected_plans.clone()
    };
    if let Some(r) = &step.rejected {
        rejected.retain(|x| x.id != r.id);
        rejected.insert(0, r.clone());
        rejected.truncate(history::KEEP);
    }
    let before = rollout::Versions::of(&old);
    let known: Vec<&PlanStatus> = versions.alive().into_iter().chain(before.alive()).collect();
    let min_requests = u64::from(ci.spec.replan.evidence.min_requests);
    let observed_ms = step
        .observation
        .as_ref()
        .filter(|o| o.requests >= min_requests)
        .and_then(|o| o.latency_ms.map(|l| l.value));
    let rejected_ids: Vec<String> = rejected.iter().map(|r| r.id.clone()).collect();
    let plan_history = history::record(
        &old.history,
        &changes,
        &|id| known.iter().find(|p| p.id == id).map(|p| (*p).clone()),
        &rejected_ids,
        observed_ms,
        &now.to_string(),
    );
    let outcome = Outcome {
        generation: ci.metadata.generation,
        plan: &serving,
        assumed: step.assumed.clone(),
        lost: step.lost.clone(),
        replanned: step.replanned.as_ref(),
        note: step.note.clone(),
        observed_latency_ms: step.observed_latency_ms,
        health: &health,
        rollout: waiting,
        retiring: versions.retiring.as_ref(),
        entry: Some((resources::entry_url(ci), resources::entry_address(ci))),
        observation: step.observation.as_ref(),
        history: plan_history,
        low_agreement: rejected
            .iter()
            .find(|r| r.id == serving.id && r.live_agreement.is_some())
            .map(|r| r.reason.clone()),
        rejected,
    };
    let new = core::desired_status(&old, &outcome, &now.to_string());
    if new != old {
        write_status(ctx, ci, ns, &new).await?;
    }
    let labels = [ns, name.as_str()];
    ctx.metrics
        .predicted
        .with_label_values(&labels)
        .set(serving.latency_ms / 1e3);
    if let Some(o) = new.observed_latency_ms {
        ctx.metrics.observed.with_label_values(&labels).set(o / 1e3);
    }
    ctx.metrics.export_state(
        ns,
        &name,
        &rollout::Versions::of(&old),
        &versions,
        &new,
        &health,
    );
    for change in &changes {
        let (reason, note) = match change {
            rollout::Change::Served { .. } => (
                "Planned",
                format!(
                    "{} ({}): {}, predicted {:.3} ms",
                    serving.summary,
                    serving.id,
                    reason.as_deref().unwrap_or("initial plan"),
                    serving.latency_ms
                ),
            ),
            rollout::Change::Started { plan, serving } => {
                if let Some(t) = &step.replanned {
                    ctx.metrics.replans.with_label_values(&[t.label()]).inc();
                }
                (
                    if matches!(step.replanned, Some(Trigger::RolledBack(_))) {
                        "RollingBack"
                    } else {
                        "Replanned"
                    },
                    format!(
                        "{} ({plan}): {}, predicted {:.3} ms; rolling out beside {serving}",
                        newest.summary,
                        reason.as_deref().unwrap_or("replanned"),
                        newest.latency_ms
                    ),
                )
            }
            rollout::Change::Switched { from, to } => (
                "Switched",
                format!(
                    "every tier of {to} is ready: the entry moved from {from} to {to}; {from} \
                     drains for {} s",
                    ci.spec.replan.drain_seconds
                ),
            ),
            rollout::Change::Retired { plan } => (
                "Retired",
                format!("plan {plan} drained: its shards are deleted"),
            ),
            rollout::Change::Abandoned { plan } => (
                "RolloutAbandoned",
                format!("plan {plan} was not rolled out: a newer decision replaced it"),
            ),
        };
        if matches!(change, rollout::Change::Served { .. }) {
            if let Some(t) = &step.replanned {
                ctx.metrics.replans.with_label_values(&[t.label()]).inc();
            }
        }
        publish(ctx, ci, EventType::Normal, reason, "Rollout", note).await;
    }
    if let Some(r) = &step.rejected {
        let note = format!("plan {} ({}) rejected: {}", r.id, r.summary, r.reason);
        publish(ctx, ci, EventType::Warning, "PlanRejected", "Rollout", note).await;
    }
    Ok(versions.rollout.is_some() || versions.retiring.is_some())
}

async fn write_status(
    ctx: &Context,
    ci: &CollaborativeInference,
    ns: &str,
    status: &CollaborativeInferenceStatus,
) -> Result<()> {
    let api: Api<CollaborativeInference> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": "cnnpc.io/v1alpha1",
        "kind": "CollaborativeInference",
        "status": status,
    });
    api.patch_status(&ci.name_any(), &apply::params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Events are best effort: a refused event is logged, never a reconcile failure.
async fn publish(
    ctx: &Context,
    ci: &CollaborativeInference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ci.object_ref(&())).await {
        tracing::warn!(resource = %who(ci), error = %e, "cannot publish event");
    }
}

/// A spec error: `Planned` False with reason and message, a Warning event when that is news;
/// the children (a working plan) are left alone.
async fn report_failure(ci: &CollaborativeInference, ctx: &Context, e: Error) -> Error {
    let reason = e.spec_reason().unwrap_or("Error");
    let message = e.to_string();
    let old = ci.status.clone().unwrap_or_default();
    let new = core::failed_status(
        &old,
        ci.metadata.generation,
        reason,
        &message,
        &ctx.now().to_string(),
    );
    if new != old {
        if let Some(ns) = ci.namespace() {
            if let Err(k) = write_status(ctx, ci, &ns, &new).await {
                tracing::warn!(resource = %who(ci), error = %k, "cannot write status");
            }
        }
        publish(ctx, ci, EventType::Warning, reason, "Plan", message).await;
    }
    e
}

/// Runs the controller until a shutdown signal: watches the resources (in `namespace`, or
/// all) and the children they own.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) -> Result<(), kube::Error> {
    use futures::StreamExt;
    use kube::runtime::{watcher, Controller};
    let client = ctx.client.clone();
    let (cis, deps, svcs, cms, hpas) = match &namespace {
        Some(ns) => (
            Api::<CollaborativeInference>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    cis.list(&ListParams::default().limit(1)).await?;
    let children = watcher::Config::default().labels(&labels::managed_selector());
    Controller::new(cis, watcher::Config::default())
        .owns(deps, children.clone())
        .owns(svcs, children.clone())
        .owns(cms, children.clone())
        .owns(hpas, children)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
