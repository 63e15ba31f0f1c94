//! The `CollaborativeInference` custom resource (`cnnpc.io/v1alpha1`): spec, status, and the
//! generated CRD. Field names are a contract (the Helm chart, the dashboards and users' YAML
//! rely on them): change them here, regenerate `crds/` with `cnnpc crd`, and update the docs.

use crate::dataset::Preprocess;
use crate::planner::accuracy::Metric;
use crate::planner::accuracy::WireEncoding;
use crate::planner::plan::MeasuredOn;
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration, Volume};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tiers in request order.
pub const TIERS: [&str; 3] = ["end", "edge", "cloud"];

/// A CNN served split across end device, edge and cloud: planned, deployed, observed, replanned.
#[derive(CustomResource, Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "cnnpc.io",
    version = "v1alpha1",
    kind = "CollaborativeInference",
    plural = "collaborativeinferences",
    namespaced,
    status = "CollaborativeInferenceStatus",
    shortname = "ci",
    shortname = "collab",
    category = "cnnpc",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".status.plan.summary"}"#,
    printcolumn = r#"{"name":"Predicted","type":"number","format":"float","jsonPath":".status.predictedLatencyMs","description":"Predicted latency, ms"}"#,
    printcolumn = r#"{"name":"Observed","type":"number","format":"float","jsonPath":".status.observedLatencyMs","description":"Observed latency, ms"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CollaborativeInferenceSpec {
    /// Where the ONNX model comes from.
    pub model: ModelSource,
    /// The model input's shape, batch included (e.g. `[1, 3, 224, 224]`): needed when the model
    /// declares symbolic dimensions, as most exported vision models do. Applied when profiling,
    /// planning and in every shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "integer", "format": "int64", "minimum": 1}))]
    pub input_shape: Vec<i64>,
    /// A precomputed profile (`model_profile/*.yaml` format) in a ConfigMap; without it the
    /// controller profiles the model itself and scales the times by each tier's `slowdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileRef>,
    #[serde(default)]
    pub tiers: Tiers,
    #[serde(default)]
    pub links: Links,
    /// What the plan must achieve: exactly one of `minAccuracy` and `maxLatencyMs`; without it
    /// (or without `calibration`) the best uncompressed split, which loses no accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<Objective>,
    #[serde(default)]
    pub compression: Compression,
    /// Calibration data for the live accuracy oracle: the user's own (`source`), or built in and
    /// chosen by the model's input (`pages`: rendered, rotated text pages for `[N,3,224,224]`,
    /// open-nsfw's images for `[N,224,224,3]`, text lines for `[N,3,48,192]`). Without it
    /// accuracy is not measured and nothing is compressed (no pruning, f32 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    #[serde(default)]
    pub replan: ReplanPolicy,
    /// Prometheus base URL (`http://prometheus:9090`); without it the controller scrapes the
    /// shards' `/metrics` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^https?://"))]
    pub prometheus_url: Option<String>,
    /// Online accuracy: a fraction of entry requests also runs, off the request path, through
    /// the unmodified model on a shadow Deployment (`<name>-shadow-whole`, placed like the cloud
    /// tier), and the agreement of the served top-1 with the full model's is measured live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Shard container image; default: the controller's `--shard-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
}

/// Exactly one of `url` (with `sha256`) and `path` (a file on `volume`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.url) != has(self.path)", "message": "give exactly one of model.url and model.path"},
    {"rule": "!has(self.url) || has(self.sha256)", "message": "model.url needs model.sha256"},
    {"rule": "!has(self.path) || has(self.volume)", "message": "model.path needs model.volume (the volume the file is on)"}
]))]
pub struct ModelSource {
    /// HTTP(S) URL of the `.onnx` file; fetched and checked against `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^https?://"))]
    pub url: Option<String>,
    /// Lower-case hex SHA-256 of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// Path of the `.onnx` file inside `volume` (relative, no `..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[^/].*$"), length(min = 1))]
    pub path: Option<String>,
    /// The volume holding `path`, mounted read-only into every shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Volume>,
    /// Class names, one per line by output index, in a file inside `volume`: the names in the
    /// entry's top-k answers to image uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[^/].*$"), length(min = 1))]
    pub class_names: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// The fraction of entry requests shadowed (e.g. 0.01).
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1))]
    pub fraction: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRef {
    /// ConfigMap in the same namespace; key `profile.yaml`.
    #[schemars(length(min = 1))]
    pub config_map: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tiers {
    #[serde(default)]
    pub end: TierSpec,
    #[serde(default)]
    pub edge: TierSpec,
    #[serde(default)]
    pub cloud: TierSpec,
}

impl Tiers {
    pub fn get(&self, tier: &str) -> Option<&TierSpec> {
        match tier {
            "end" => Some(&self.end),
            "edge" => Some(&self.edge),
            "cloud" => Some(&self.cloud),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Emulated slowdown of this tier vs the node it runs on (≥ 1; default end 18, edge 6,
    /// cloud 1): the shard sleeps (slowdown − 1) × its compute time, and a profile the
    /// controller measures is scaled by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub slowdown: Option<f64>,
    /// The profile device this tier uses (needed only when a given profile has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Whether this tier may run a shard (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Shard replicas of this tier (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,
    /// A HorizontalPodAutoscaler (autoscaling/v2) for this tier's Deployment; `replicas` is
    /// then only where it starts. Replicas add throughput, not speed: one request still runs
    /// on one replica per tier, so planning prices a tier's latency the same at any count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"}
]))]
pub struct Autoscaling {
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (of the pods' CPU requests) the autoscaler keeps (default 80).
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn one() -> i32 {
    1
}
fn default_cpu_target() -> i32 {
    80
}

impl TierSpec {
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// Default emulated slowdown of a tier (the reference topology's ratios).
pub fn default_slowdown(tier: &str) -> f64 {
    match tier {
        "end" => 18.0,
        "edge" => 6.0,
        _ => 1.0,
    }
}

fn default_end_edge() -> f64 {
    20.0
}
fn default_edge_cloud() -> f64 {
    10.0
}

/// Initial link bandwidth estimates, Mbit/s (10^6 bit/s); replanning replaces them with
/// observed throughput.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Links {
    #[serde(default = "default_end_edge")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true))]
    pub end_edge_mbps: f64,
    #[serde(default = "default_edge_cloud")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true))]
    pub edge_cloud_mbps: f64,
    /// Emulate these bandwidths in the shards (token bucket in the sender), for clusters whose
    /// real network is faster than the one being modelled (default false).
    #[serde(default)]
    pub emulate: bool,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            end_edge_mbps: default_end_edge(),
            edge_cloud_mbps: default_edge_cloud(),
            emulate: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.minAccuracy) != has(self.maxLatencyMs)", "message": "give exactly one of objective.minAccuracy and objective.maxLatencyMs"}
]))]
pub struct Objective {
    /// Fastest plan whose measured accuracy (top-1 agreement) is at least this, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1))]
    pub min_accuracy: Option<f64>,
    /// Most accurate plan within this latency budget, ms (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true))]
    pub max_latency_ms: Option<f64>,
}

fn default_encodings() -> Vec<WireEncoding> {
    vec![WireEncoding::Int8]
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    /// Encodings the plan may choose from when accuracy is measured (default `[int8]`).
    #[serde(default = "default_encodings")]
    #[schemars(length(min = 1))]
    pub encodings: Vec<WireEncoding>,
    /// Whether channels may be pruned at the cuts (default true; only with `calibration`).
    #[serde(default = "yes")]
    pub prune: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            encodings: default_encodings(),
            prune: true,
        }
    }
}

/// What accuracy is measured on: a built-in set (chosen by the model's input) or the user's own
/// data (`source`). Half of `pages` fit the pruning and half measure it; without `pages`, 32
/// fit and the floor sizes the rest (twice the fewest inputs that can meet it at 95%: 384 for
/// 0.99). A source's inputs are split into `eval` (first, in a fixed shuffled order) and `fit`
/// (next). Too few eval inputs for the floor fail planning with the number needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    /// Built-in calibration inputs: half fit the pruning, half measure it (8..=512). Leave it
    /// out to let the floor size the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 512))]
    pub pages: Option<u32>,
    /// The user's calibration data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CalibrationSource>,
    /// Inputs the pruning is fitted on (default: half of `pages`, or 64 of a source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub fit: Option<u32>,
    /// Inputs accuracy is measured on (default: half of `pages`; else what the floor needs, and
    /// at least 200 of a source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub eval: Option<u32>,
    /// What the floor is compared with (default `agreement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
}

/// A file: a path on the model volume, or an HTTP(S) URL with its SHA-256.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.url) != has(self.path)", "message": "give exactly one of path and url"},
    {"rule": "!has(self.url) || has(self.sha256)", "message": "a url needs its sha256"}
]))]
pub struct FileSource {
    /// Relative path on the model volume (no `..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[^/].*$"), length(min = 1))]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^https?://"))]
    pub url: Option<String>,
    /// Lower-case hex SHA-256 of the file (required with `url`, checked with `path` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// The user's calibration data: a `.npy` of preprocessed float32 inputs `[N, ...]` (with an
/// optional `.npy` of integer labels `[N]`), or a folder of PNG/JPEG images on the model volume
/// (labels from sub-folder names) with how they become the model's input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.format == 'npy' || !has(self.data.url)", "message": "an image folder is a path on the model volume, not a url"},
    {"rule": "self.format == 'npy' || !has(self.labels)", "message": "an image folder is labelled by its sub-folders, not a labels file"}
]))]
pub struct CalibrationSource {
    pub format: DataFormat,
    /// The `.npy` file, or the image folder.
    pub data: FileSource,
    /// Integer labels for a `.npy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<FileSource>,
    /// How images become the model's input (images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Preprocess>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Npy,
    Images,
}

fn default_interval() -> u32 {
    30
}
fn default_hysteresis() -> f64 {
    0.1
}
fn default_grace() -> u32 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplanPolicy {
    /// How often observations are read and a replan considered, s (default 30).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 86400))]
    pub interval_seconds: u32,
    /// Roll a new plan out only when it is predicted faster than the current one by more than
    /// this fraction of the current latency (default 0.1).
    #[serde(default = "default_hysteresis")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub hysteresis: f64,
    /// A tier with no ready replica for this long is lost: plan without it (default 60).
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 86400))]
    pub tier_loss_grace_seconds: u32,
    /// After the entry moves to a new plan, the old plan's shards keep running this long so
    /// requests in flight (and clients' open connections) finish on them (default 30).
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: u32,
    /// How much observation a replan needs (see [`Evidence`]).
    #[serde(default)]
    pub evidence: Evidence,
    /// After the entry moves to a new plan, for this many replan intervals its observed
    /// latency is compared with the plan it replaced; worse by more than the hysteresis (at the
    /// evidence's confidence) rolls back and rejects it (default 3; 0 never rolls back).
    #[serde(default = "default_rollback_intervals")]
    #[schemars(range(min = 0, max = 100))]
    pub rollback_intervals: u32,
}

fn default_rollback_intervals() -> u32 {
    3
}

/// An observation counts only with enough of it: per tier and per link, at least
/// `minRequests` requests and (links) `minBytes` bytes within the last `windowSeconds`.
/// Throughput is bytes over time summed over the window, so one small transfer that a
/// token bucket or a TCP window lets through at burst speed cannot stand for the link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 2, max = 1000000))]
    pub min_requests: u32,
    #[serde(default = "default_min_bytes")]
    #[schemars(range(min = 0))]
    pub min_bytes: u64,
    /// How far back observations are summed (default 300 s; at least two scrape intervals).
    #[serde(default = "default_window")]
    #[schemars(range(min = 10, max = 86400))]
    pub window_seconds: u32,
    /// Two-sided confidence of the intervals on compute time and throughput (default 0.95).
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.5, max = 0.999))]
    pub confidence: f64,
}

fn default_min_requests() -> u32 {
    20
}
fn default_min_bytes() -> u64 {
    1 << 20
}
fn default_window() -> u32 {
    300
}
fn default_confidence() -> f64 {
    0.95
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            min_requests: default_min_requests(),
            min_bytes: default_min_bytes(),
            window_seconds: default_window(),
            confidence: default_confidence(),
        }
    }
}

fn default_drain() -> u32 {
    30
}

impl Default for ReplanPolicy {
    fn default() -> Self {
        ReplanPolicy {
            interval_seconds: default_interval(),
            hysteresis: default_hysteresis(),
            tier_loss_grace_seconds: default_grace(),
            drain_seconds: default_drain(),
            evidence: Evidence::default(),
            rollback_intervals: default_rollback_intervals(),
        }
    }
}

/// What the controller observed and decided.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollaborativeInferenceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_latency_ms: Option<f64>,
    #[serde(default)]
    pub replan_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replan_reason: Option<String>,
    /// Tiers the current plan runs a shard on, in request order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_tiers: Vec<String>,
    /// Tiers planned around because they had no ready replica past the grace period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_tiers: Vec<String>,
    /// Link bandwidths and tier speed factors the current plan assumed (after feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assumed: Option<Assumptions>,
    /// Where to send requests (the entry Service, in the resource's namespace): the Open
    /// Inference Protocol at `{url}/v2/models/{name}/infer`, whatever plan runs behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The entry's cluster-local address, fully qualified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// A new plan coming up beside the serving one (`plan`); the entry moves to it once every
    /// one of its tiers is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The plan served before the last rollout, kept running until its drain ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<RetiringStatus>,
    /// The latest round of observations, sufficient or not (its `at` times the next round, so
    /// a restarted controller does not observe again early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<ObservationStatus>,
    /// The latest observation that had enough evidence; its `at` gives its age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_observation: Option<ObservationStatus>,
    /// The last few plans served, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Plans rolled back because they served worse than the plan they replaced; a replan does
    /// not choose them again until the spec changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_plans: Vec<RejectedPlan>,
}

/// A value with its confidence interval.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservationStatus {
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// The plan observed.
    pub plan: String,
    pub window_seconds: u32,
    /// Whether every series below had enough evidence to act on.
    pub sufficient: bool,
    /// Requests answered at the entry within the window.
    pub requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Estimate>,
    /// Per computing tier: mean compute ms per request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, TierObservation>,
    /// Per hop `from->to`: throughput in Mbit/s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, LinkObservation>,
    /// Shadow-sampled agreement of the served top-1 with the unmodified model's (`spec.shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_agreement: Option<LiveAgreement>,
    /// What was too thin to act on, e.g. `end->edge: 1 request, 3.1 KiB (needs 20, 1.0 MiB)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insufficient: Vec<String>,
}

/// An agreement with its Wilson interval at the evidence's confidence.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveAgreement {
    pub samples: u64,
    pub agreement: Estimate,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TierObservation {
    pub compute_ms: Estimate,
    /// Reading the input frame and framing the output, per request (shards that export
    /// `cnnpc_shard_codec_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_ms: Option<Estimate>,
    pub requests: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkObservation {
    pub mbps: Estimate,
    pub requests: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub plan: PlanStatus,
    pub predicted_latency_ms: f64,
    /// The latest observed mean latency while it served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_latency_ms: Option<f64>,
    /// When the entry moved to it.
    #[schemars(extend("format" = "date-time"))]
    pub started: String,
    /// When the entry moved away from it (none while it serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub ended: Option<String>,
    /// `Serving`, `Replaced` or `RolledBack`.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RejectedPlan {
    pub id: String,
    pub summary: String,
    /// Why, e.g. `rolled back: ... served 3000 ms against 1300 ms of ...`.
    pub reason: String,
    pub predicted_latency_ms: f64,
    /// What it was observed to serve at, and the plan it replaced before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_latency_ms: Option<Estimate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_latency_ms: Option<f64>,
    /// The live agreement that rejected it, when that was the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_agreement: Option<LiveAgreement>,
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
}

/// An address, as Knative and KServe write it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Addressable {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub plan: PlanStatus,
    /// Why it was searched for.
    pub reason: String,
    /// RFC 3339.
    #[schemars(extend("format" = "date-time"))]
    pub started: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetiringStatus {
    pub plan: PlanStatus,
    /// When the entry moved off it (RFC 3339); its shards are deleted `drainSeconds` later.
    #[schemars(extend("format" = "date-time"))]
    pub since: String,
}

/// A status condition (the Kubernetes convention).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Planned, Deployed, Ready or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339; changes only when `status` does.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The deployed plan, enough to rebuild every child object without searching again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Stable id of the plan's shape (deployment, cuts, kept channels, encoding).
    pub id: String,
    /// One line for `kubectl get`, e.g. `end-edge cut 3 32/64 int8`.
    pub summary: String,
    /// The tiers that compute, e.g. `end-edge-cloud`, `edge-only`.
    pub deployment: String,
    pub encoding: WireEncoding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<PlanCutStatus>,
    /// Per tier in request order: the segments it runs (`[first, last]`) or none.
    pub tiers: Vec<PlanTierStatus>,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// What `accuracy` rests on: the evaluation inputs it was measured on and its interval.
    /// The plan meets `minAccuracy` when `lower` ≥ `minAccuracy` − `tolerance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_interval: Option<crate::planner::accuracy::AccuracyEvidence>,
    /// What the accuracy was measured on; the shards rebuild the pruned model from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_on: Option<MeasuredOn>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanCutStatus {
    /// Cut point index in the profile.
    pub point: u32,
    /// Tensors crossing the cut (the shards split the model at them).
    pub tensors: Vec<String>,
    pub from: String,
    pub to: String,
    pub channels: u32,
    pub kept: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanTierStatus {
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<u32>>,
    pub compute_ms: f64,
    /// The predicted time this tier spends reading and writing frames, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Assumptions {
    /// Per link (`end->edge`), Mbit/s.
    #[serde(default)]
    pub link_mbps: BTreeMap<String, f64>,
    /// Per tier, the factor applied to the profiled compute times (1 = as profiled).
    #[serde(default)]
    pub compute_scale: BTreeMap<String, f64>,
    /// Per tier, the factor applied to the profiled codec costs on top of the compute factor
    /// (1 = the codec slows down as the tier's compute does).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codec_scale: BTreeMap<String, f64>,
}

/// The CRD as YAML (what `cnnpc crd` prints and `crds/` holds).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = CollaborativeInference::crd();
    format!(
        "# Generated by `cnnpc crd > crds/cnnpc.io_collaborativeinferences.yaml`; do not edit.\n{}",
        serde_yaml::to_string(&crd).unwrap_or_default()
    )
}
