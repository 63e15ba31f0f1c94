//! Pure builders of the child objects of a `CollaborativeInference`: the plan ConfigMap and,
//! per tier that runs a shard, a Deployment and a Service. No client here: the controller
//! applies what these return (server-side apply), and tests check them directly.
//!
//! Every child carries the annotation [`SPEC_HASH`], a hash of the object as built; the
//! controller skips the apply when the live object carries the same hash, so a reconcile with
//! nothing changed writes nothing.

use super::crd::{default_slowdown, CollaborativeInference, FileSource, PlanStatus, TIERS};
use super::labels;
use crate::planner::plan::MeasuredOn;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const SHARD_PORT: i32 = 8080;
/// The container port's name; the chart's NetworkPolicies and PodMonitor refer to it by name.
pub const SHARD_PORT_NAME: &str = "http";
pub const SPEC_HASH: &str = "cnnpc.io/spec-hash";
/// Annotation on every child: the plan it was built for.
pub const PLAN_ID: &str = "cnnpc.io/plan-id";
/// Where the model file is inside a shard pod.
pub const MODEL_DIR: &str = "/models";
/// Keys of the plan ConfigMap.
pub const PLAN_KEY: &str = "plan.json";
pub const PROFILE_KEY: &str = "profile.yaml";
pub const ACCURACY_KEY: &str = "accuracy.csv";
/// What the points in `accuracy.csv` were measured on (the session's measurement key): they
/// are reused only for the same model, data, metric and sizes.
pub const ACCURACY_KEY_KEY: &str = "accuracy.key";

pub fn plan_configmap_name(ci: &str) -> String {
    format!("{ci}-plan")
}

/// A tier's Deployment and next-hop Service of one plan: plans roll out beside each other.
pub fn shard_name(ci: &str, tier: &str, plan_id: &str) -> String {
    format!("{ci}-{tier}-{plan_id}")
}

/// The shadow (`spec.shadow`): a one-tier "plan" serving the whole unmodified model, named
/// `<name>-shadow-whole`, placed by `spec.tiers.cloud`.
pub const SHADOW_TIER: &str = "shadow";
pub const SHADOW_PLAN: &str = "whole";

pub fn shadow_plan() -> PlanStatus {
    PlanStatus {
        id: SHADOW_PLAN.into(),
        summary: "the unmodified model (shadow)".into(),
        deployment: "shadow".into(),
        encoding: crate::planner::accuracy::WireEncoding::F32,
        cuts: vec![],
        tiers: vec![super::crd::PlanTierStatus {
            tier: SHADOW_TIER.into(),
            segments: Some(vec![0, 0]),
            compute_ms: 0.0,
            codec_ms: None,
        }],
        latency_ms: 0.0,
        accuracy: None,
        accuracy_interval: None,
        measured_on: None,
    }
}

/// The spec of `tier` (the shadow runs where, and as, the cloud tier does).
fn tier_spec(ci: &CollaborativeInference, tier: &str) -> super::crd::TierSpec {
    let placed = if tier == SHADOW_TIER { "cloud" } else { tier };
    ci.spec.tiers.get(placed).cloned().unwrap_or_default()
}

/// The entry Service: named after the resource, it outlives every plan.
pub fn entry_name(ci: &str) -> String {
    ci.to_string()
}

/// The longest resource name whose children's names fit a DNS label (63): `-cloud-` and a
/// 10-digit plan id are added.
pub const MAX_RESOURCE_NAME: usize = 63 - "-cloud-".len() - 10;

/// FNV-1a 64 of `bytes` as 16 hex digits: stable across runs and builds (unlike `DefaultHasher`).
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("the resource has no {0} (is it stored in the cluster?)")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// What the builders need besides the resource and its plan.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildContext {
    /// Image of the shard container when the spec names none.
    pub shard_image: String,
    /// `cnnpc shard --log-format` (`text` or `json`): the shards log as the controller does.
    pub log_format: String,
}

impl BuildContext {
    pub fn new(shard_image: impl Into<String>) -> BuildContext {
        BuildContext {
            shard_image: shard_image.into(),
            log_format: "text".into(),
        }
    }
}

/// The children of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub deployments: Vec<Deployment>,
    /// The next-hop Service of every tier but the first.
    pub services: Vec<Service>,
    /// The stable entry Service, selecting this plan's first tier.
    pub entry: Service,
}

fn owner(ci: &CollaborativeInference) -> Result<OwnerReference, BuildError> {
    use kube::Resource;
    ci.controller_owner_ref(&())
        .ok_or(BuildError::Missing("metadata.uid"))
}

fn meta(
    ci: &CollaborativeInference,
    name: String,
    component: &str,
    plan_id: &str,
) -> Result<ObjectMeta, BuildError> {
    use kube::ResourceExt;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: ci.namespace(),
        labels: Some(labels::child(&ci.name_any(), component)),
        annotations: Some(BTreeMap::from([(PLAN_ID.to_string(), plan_id.to_string())])),
        owner_references: Some(vec![owner(ci)?]),
        ..ObjectMeta::default()
    })
}

/// Hash of an object as built (before [`stamp`]).
fn hash_of<T: serde::Serialize>(obj: &T) -> String {
    fnv_hex(&serde_json::to_vec(obj).unwrap_or_default())
}

/// Stamps [`SPEC_HASH`] into `meta`.
fn stamp(meta: &mut ObjectMeta, hash: String) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH.into(), hash);
}

/// The plan ConfigMap: the full plan JSON (the planner's contract), the profile the plan was
/// made from and the accuracy measurements so far (so a replan reuses them).
pub fn build_plan_configmap(
    ci: &CollaborativeInference,
    plan_id: &str,
    data: BTreeMap<String, String>,
) -> Result<ConfigMap, BuildError> {
    use kube::ResourceExt;
    let mut cm = ConfigMap {
        metadata: meta(
            ci,
            plan_configmap_name(&ci.name_any()),
            labels::PLAN_COMPONENT,
            plan_id,
        )?,
        data: Some(data),
        ..ConfigMap::default()
    };
    let h = hash_of(&cm);
    stamp(&mut cm.metadata, h);
    Ok(cm)
}

/// A file on the model volume as a shard pod sees it.
fn volume_path(ci: &CollaborativeInference, p: &str, field: &str) -> Result<String, BuildError> {
    if ci.spec.model.volume.is_none() {
        return Err(BuildError::Invalid(format!(
            "{field} is a path on model.volume; the resource has no model.volume"
        )));
    }
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|s| s == "..") {
        return Err(BuildError::Invalid(format!(
            "{field} {p:?} must be relative to the volume, without `..`"
        )));
    }
    Ok(format!("{MODEL_DIR}/{p}"))
}

/// The model file as a shard pod sees it.
pub fn model_file(ci: &CollaborativeInference) -> Result<String, BuildError> {
    let m = &ci.spec.model;
    match (&m.url, &m.path) {
        (Some(_), None) => Ok(format!("{MODEL_DIR}/model.onnx")),
        (None, Some(p)) => {
            if p.starts_with('/') || p.split('/').any(|s| s == "..") {
                return Err(BuildError::Invalid(format!(
                    "model.path {p:?} must be relative to the volume, without `..`"
                )));
            }
            Ok(format!("{MODEL_DIR}/{p}"))
        }
        _ => Err(BuildError::Invalid(
            "give exactly one of model.url and model.path".into(),
        )),
    }
}

/// Deployments and Services for every tier the plan runs a shard on, in request order, and
/// the plan ConfigMap.
pub fn build_children(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
    configmap_data: BTreeMap<String, String>,
    ctx: &BuildContext,
) -> Result<Children, BuildError> {
    let config_map = build_plan_configmap(ci, &plan.id, configmap_data)?;
    let (deployments, services) = build_shards(ci, plan, ctx)?;
    Ok(Children {
        config_map,
        deployments,
        services,
        entry: build_entry_service(ci, &plan.id)?,
    })
}

/// One plan's Deployments (every tier it computes on) and next-hop Services (every tier but
/// the first: requests enter through the entry Service).
pub fn build_shards(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
    ctx: &BuildContext,
) -> Result<(Vec<Deployment>, Vec<Service>), BuildError> {
    use kube::ResourceExt;
    let name = ci.name_any();
    if name.len() > MAX_RESOURCE_NAME {
        return Err(BuildError::Invalid(format!(
            "metadata.name {name:?} is {} characters; at most {MAX_RESOURCE_NAME} leave room for \
             its shards' names (<name>-<tier>-<plan id>)",
            name.len()
        )));
    }
    let active: Vec<&str> = plan
        .tiers
        .iter()
        .filter(|t| t.segments.is_some())
        .map(|t| t.tier.as_str())
        .collect();
    if active.len() != plan.cuts.len() + 1 {
        return Err(BuildError::Invalid(format!(
            "plan {} runs {} tiers but has {} cuts",
            plan.id,
            active.len(),
            plan.cuts.len()
        )));
    }
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    for (part, tier) in active.iter().enumerate() {
        deployments.push(build_deployment(ci, plan, &active, part, ctx)?);
        if part > 0 {
            services.push(build_service(ci, tier, &plan.id)?);
        }
    }
    Ok((deployments, services))
}

fn service_url(ci: &CollaborativeInference, tier: &str, plan_id: &str) -> String {
    use kube::ResourceExt;
    let ns = ci.namespace().unwrap_or_else(|| "default".into());
    format!(
        "http://{}.{ns}.svc:{SHARD_PORT}",
        shard_name(&ci.name_any(), tier, plan_id)
    )
}

/// The entry's cluster-local base URL (`status.url`).
pub fn entry_url(ci: &CollaborativeInference) -> String {
    use kube::ResourceExt;
    let ns = ci.namespace().unwrap_or_else(|| "default".into());
    format!(
        "http://{}.{ns}.svc:{SHARD_PORT}",
        entry_name(&ci.name_any())
    )
}

/// The entry's fully qualified address (`status.address.url`).
pub fn entry_address(ci: &CollaborativeInference) -> String {
    use kube::ResourceExt;
    let ns = ci.namespace().unwrap_or_else(|| "default".into());
    format!(
        "http://{}.{ns}.svc.cluster.local:{SHARD_PORT}",
        entry_name(&ci.name_any())
    )
}

/// Arguments of `cnnpc shard` for part `part` of the plan, run by tier `active[part]`.
pub fn shard_args(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
    active: &[&str],
    part: usize,
    ctx: &BuildContext,
) -> Result<Vec<String>, BuildError> {
    let tier = active[part];
    let spec = tier_spec(ci, tier);
    let mut args: Vec<String> = vec![
        "shard".into(),
        "--model".into(),
        model_file(ci)?,
        "--tier".into(),
        tier.into(),
        "--listen".into(),
        format!("0.0.0.0:{SHARD_PORT}"),
        "--plan-id".into(),
        plan.id.clone(),
        // Clients name the model by the resource (the Open Inference Protocol's model name).
        "--model-name".into(),
        kube::ResourceExt::name_any(ci),
        "--cuts".into(),
        plan.cuts
            .iter()
            .map(|c| c.point.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ];
    for c in &plan.cuts {
        if let Some(bad) = c.tensors.iter().find(|t| t.contains(',') || t.is_empty()) {
            return Err(BuildError::Invalid(format!(
                "cut {} has a tensor name {bad:?} that cannot be passed on (empty or with a comma)",
                c.point
            )));
        }
        args.push("--split-at".into());
        args.push(c.tensors.join(","));
    }
    if !plan.cuts.is_empty() {
        args.extend(["--part".into(), part.to_string()]);
    }
    if plan.cuts.iter().any(|c| c.kept < c.channels) {
        // The pruned model is rebuilt in the pod from what the plan was measured on: the same
        // model (checked by its hash), the same fit inputs, so it is the model measured.
        let m = plan.measured_on.as_ref().ok_or_else(|| {
            BuildError::Invalid(format!(
                "plan {} prunes but records no calibration it was measured on",
                plan.id
            ))
        })?;
        args.extend([
            "--keep".into(),
            plan.cuts
                .iter()
                .map(|c| c.kept.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ]);
        args.extend(calibration_args(ci, m)?);
        args.extend([
            "--calibration-digest".into(),
            m.data.clone(),
            "--fit-first".into(),
            m.fit.first.to_string(),
            "--fit-images".into(),
            m.fit.count.to_string(),
            "--model-sha256".into(),
            m.model.clone(),
        ]);
    }
    if let Some(next) = active.get(part + 1) {
        args.extend([
            "--next".into(),
            service_url(ci, next, &plan.id),
            "--encoding".into(),
            serde_json::to_value(plan.encoding)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "f32".into()),
        ]);
        // As the demo and the planner's measured frame sizes assume: a compressed encoding's
        // payload also goes through zstd (kept only where it shrinks it).
        if plan.encoding != crate::planner::accuracy::WireEncoding::F32 {
            args.extend(["--zstd".into(), crate::onnx::frame::ZSTD_LEVEL.to_string()]);
        }
        if ci.spec.links.emulate {
            args.extend([
                "--link-mbps".into(),
                format!("{}", path_mbps(ci, tier, next)),
            ]);
        }
    }
    if !ci.spec.input_shape.is_empty() {
        args.extend([
            "--input-shape".into(),
            ci.spec
                .input_shape
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    if part == 0 {
        // The entry preprocesses uploaded images as the calibration images were.
        let declared = ci
            .spec
            .calibration
            .as_ref()
            .and_then(|c| c.source.as_ref())
            .and_then(|s| s.preprocess.as_ref());
        if let (Some(p), false) = (declared, args.iter().any(|a| a == "--layout")) {
            args.extend(preprocess_args(p));
        }
        if let Some(names) = &ci.spec.model.class_names {
            args.extend([
                "--class-names".into(),
                volume_path(ci, names, "model.classNames")?,
            ]);
        }
        if let (Some(sh), false) = (&ci.spec.shadow, plan.id == SHADOW_PLAN) {
            args.extend([
                "--shadow-url".into(),
                service_url(ci, SHADOW_TIER, SHADOW_PLAN),
                "--shadow-fraction".into(),
                format!("{}", sh.fraction),
            ]);
        }
    }
    let slowdown = spec.slowdown.unwrap_or_else(|| default_slowdown(tier));
    args.extend(["--slowdown".into(), format!("{slowdown}")]);
    args.extend(["--log-format".into(), ctx.log_format.clone()]);
    Ok(args)
}

/// Where a shard pod finds the user's calibration files: paths on the model volume at
/// [`MODEL_DIR`], downloads in the [`CALIBRATION_DIR`] emptyDir the init container fills.
pub const CALIBRATION_DIR: &str = "/calibration";

fn pod_path(f: &FileSource, name: &str) -> Result<String, BuildError> {
    match (&f.path, &f.url) {
        (Some(p), None) => {
            if p.starts_with('/') || p.split('/').any(|s| s == "..") {
                return Err(BuildError::Invalid(format!(
                    "calibration path {p:?} must be relative to the model volume, without `..`"
                )));
            }
            Ok(format!("{MODEL_DIR}/{p}"))
        }
        (None, Some(_)) => Ok(format!("{CALIBRATION_DIR}/{name}")),
        _ => Err(BuildError::Invalid(
            "a calibration file needs exactly one of path and url".into(),
        )),
    }
}

/// The shard's `--calibration …` flags: the data the plan was measured on, as the pod sees it.
fn calibration_args(
    ci: &CollaborativeInference,
    m: &MeasuredOn,
) -> Result<Vec<String>, BuildError> {
    let cal = ci.spec.calibration.as_ref();
    let Some(src) = cal.and_then(|c| c.source.as_ref()) else {
        // A built-in set: its name is what the record says.
        return Ok(vec!["--calibration".into(), m.calibration.clone()]);
    };
    let mut out = vec!["--calibration".into(), pod_path(&src.data, "data.npy")?];
    if let Some(l) = &src.labels {
        out.extend(["--labels".into(), pod_path(l, "labels.npy")?]);
    }
    if let Some(p) = &src.preprocess {
        out.extend(preprocess_args(p));
    }
    out.extend(["--metric".into(), m.metric.name().to_string()]);
    Ok(out)
}

/// The image preprocessing flags of `cnnpc shard` (for refitting on images, and for the
/// entry's image uploads).
fn preprocess_args(p: &crate::dataset::files::Preprocess) -> Vec<String> {
    let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    vec![
        "--layout".into(),
        name(serde_json::to_value(p.layout)),
        "--channel-order".into(),
        name(serde_json::to_value(p.channel_order)),
        format!("--scale={}", p.scale),
        format!("--mean={}", list(&p.mean)),
        format!("--std={}", list(&p.std)),
    ]
}

/// Init containers that download the user's calibration files given by URL (only a pruning
/// plan's shards need them: they refit the pruning on the fit inputs).
fn calibration_fetches(ci: &CollaborativeInference, image: &str) -> Vec<Container> {
    let Some(src) = ci.spec.calibration.as_ref().and_then(|c| c.source.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (f, name) in [(Some(&src.data), "data"), (src.labels.as_ref(), "labels")] {
        let Some(FileSource {
            url: Some(url),
            sha256,
            ..
        }) = f
        else {
            continue;
        };
        out.push(Container {
            name: format!("fetch-calibration-{name}"),
            image: Some(image.to_string()),
            args: Some(vec![
                "fetch".into(),
                "--url".into(),
                url.clone(),
                "--sha256".into(),
                sha256.clone().unwrap_or_default(),
                "--out".into(),
                format!("{CALIBRATION_DIR}/{name}.npy"),
            ]),
            volume_mounts: Some(vec![VolumeMount {
                name: "calibration".into(),
                mount_path: CALIBRATION_DIR.into(),
                ..VolumeMount::default()
            }]),
            security_context: Some(restricted()),
            ..Container::default()
        });
    }
    out
}

/// Bandwidth of the network path from `from` to `to` (store and forward over each link).
pub fn path_mbps(ci: &CollaborativeInference, from: &str, to: &str) -> f64 {
    let l = &ci.spec.links;
    let idx = |t: &str| TIERS.iter().position(|x| *x == t).unwrap_or(0);
    let per_link = [l.end_edge_mbps, l.edge_cloud_mbps];
    let secs_per_bit: f64 = (idx(from)..idx(to)).map(|i| 1.0 / per_link[i]).sum();
    if secs_per_bit > 0.0 {
        1.0 / secs_per_bit
    } else {
        f64::INFINITY
    }
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(SHARD_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..SecurityContext::default()
    }
}

pub fn build_deployment(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
    active: &[&str],
    part: usize,
    ctx: &BuildContext,
) -> Result<Deployment, BuildError> {
    use kube::ResourceExt;
    let name = ci.name_any();
    let tier = active[part];
    let spec = tier_spec(ci, tier);
    let image = ci
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.shard_image.clone());
    let mount = VolumeMount {
        name: "model".into(),
        mount_path: MODEL_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let (volume, init) = match (&ci.spec.model.url, &ci.spec.model.volume) {
        (Some(url), _) => (
            Volume {
                name: "model".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Some(Container {
                name: "fetch-model".into(),
                image: Some(image.clone()),
                args: Some(vec![
                    "fetch".into(),
                    "--url".into(),
                    url.clone(),
                    "--sha256".into(),
                    ci.spec.model.sha256.clone().unwrap_or_default(),
                    "--out".into(),
                    format!("{MODEL_DIR}/model.onnx"),
                ]),
                volume_mounts: Some(vec![VolumeMount {
                    read_only: Some(false),
                    ..mount.clone()
                }]),
                security_context: Some(restricted()),
                ..Container::default()
            }),
        ),
        (None, Some(v)) => (
            Volume {
                name: "model".into(),
                ..v.clone()
            },
            None,
        ),
        (None, None) => return Err(BuildError::Invalid("model.path needs model.volume".into())),
    };
    let mut inits: Vec<Container> = init.into_iter().collect();
    let mut volumes = vec![volume];
    let mut mounts = vec![mount];
    let prunes = plan.cuts.iter().any(|c| c.kept < c.channels);
    let fetches = if prunes {
        calibration_fetches(ci, &image)
    } else {
        Vec::new()
    };
    if !fetches.is_empty() {
        volumes.push(Volume {
            name: "calibration".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "calibration".into(),
            mount_path: CALIBRATION_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        inits.extend(fetches);
    }
    let pod_labels = labels::shard_pod(&name, tier, &plan.id, part == 0);
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".into(), SHARD_PORT.to_string()),
        ("prometheus.io/path".into(), "/metrics".into()),
    ]);
    let container = Container {
        name: "shard".into(),
        image: Some(image),
        args: Some(shard_args(ci, plan, active, part, ctx)?),
        ports: Some(vec![ContainerPort {
            name: Some(SHARD_PORT_NAME.into()),
            container_port: SHARD_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: spec.resources.clone(),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut d = Deployment {
        metadata: shard_meta(ci, shard_name(&name, tier, &plan.id), tier, &plan.id)?,
        spec: Some(DeploymentSpec {
            // An autoscaled tier's replicas are the HorizontalPodAutoscaler's to set: left out
            // of what we apply, so server-side apply never takes the field back.
            replicas: match spec.autoscaling {
                Some(_) => None,
                None => Some(spec.replicas.unwrap_or(1)),
            },
            selector: LabelSelector {
                match_labels: Some(labels::tier_selector(&name, tier, &plan.id)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: (!inits.is_empty()).then_some(inits),
                    volumes: Some(volumes),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    automount_service_account_token: Some(false),
                    // The shard drains for DRAIN_SECONDS after SIGTERM (not ready, answers
                    // with `Connection: close`), then finishes what is in flight.
                    termination_grace_period_seconds: Some(
                        i64::from(crate::runtime::server::DRAIN_SECONDS) + 25,
                    ),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let h = hash_of(&d);
    stamp(&mut d.metadata, h);
    Ok(d)
}

pub fn build_service(
    ci: &CollaborativeInference,
    tier: &str,
    plan_id: &str,
) -> Result<Service, BuildError> {
    use kube::ResourceExt;
    let name = ci.name_any();
    let mut s = Service {
        metadata: shard_meta(ci, shard_name(&name, tier, plan_id), tier, plan_id)?,
        spec: Some(ServiceSpec {
            selector: Some(labels::tier_selector(&name, tier, plan_id)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SHARD_PORT,
                target_port: Some(IntOrString::String(SHARD_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let h = hash_of(&s);
    stamp(&mut s.metadata, h);
    Ok(s)
}

/// A HorizontalPodAutoscaler (autoscaling/v2) on CPU for each tier of `plan` whose spec asks
/// for one, named like the tier's Deployment it scales.
pub fn build_autoscalers(
    ci: &CollaborativeInference,
    plan: &PlanStatus,
) -> Result<Vec<HorizontalPodAutoscaler>, BuildError> {
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
        ResourceMetricSource,
    };
    use kube::ResourceExt;
    let name = ci.name_any();
    let mut out = Vec::new();
    for t in plan.tiers.iter().filter(|t| t.segments.is_some()) {
        let Some(a) = ci
            .spec
            .tiers
            .get(&t.tier)
            .and_then(|s| s.autoscaling.as_ref())
        else {
            continue;
        };
        if a.min_replicas > a.max_replicas {
            return Err(BuildError::Invalid(format!(
                "tiers.{}.autoscaling: minReplicas {} exceeds maxReplicas {}",
                t.tier, a.min_replicas, a.max_replicas
            )));
        }
        let target = shard_name(&name, &t.tier, &plan.id);
        let mut h = HorizontalPodAutoscaler {
            metadata: shard_meta(ci, target.clone(), &t.tier, &plan.id)?,
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: target,
                },
                min_replicas: Some(a.min_replicas),
                max_replicas: a.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(a.target_cpu_utilization_percentage),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        };
        let hash = hash_of(&h);
        stamp(&mut h.metadata, hash);
        out.push(h);
    }
    Ok(out)
}

/// The entry Service: named after the resource, selecting the first tier of `plan_id` (the
/// serving plan). A rollout changes its selector, never its name.
pub fn build_entry_service(
    ci: &CollaborativeInference,
    plan_id: &str,
) -> Result<Service, BuildError> {
    use kube::ResourceExt;
    let name = ci.name_any();
    let mut s = Service {
        metadata: meta(ci, entry_name(&name), labels::ENTRY_COMPONENT, plan_id)?,
        spec: Some(ServiceSpec {
            selector: Some(labels::entry_selector(&name, plan_id)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SHARD_PORT,
                target_port: Some(IntOrString::String(SHARD_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let h = hash_of(&s);
    stamp(&mut s.metadata, h);
    Ok(s)
}

/// [`meta`] of a plan's shard objects: the plan id is a label too, to list one plan's objects.
fn shard_meta(
    ci: &CollaborativeInference,
    name: String,
    tier: &str,
    plan_id: &str,
) -> Result<ObjectMeta, BuildError> {
    let mut m = meta(ci, name, tier, plan_id)?;
    if let Some(l) = m.labels.as_mut() {
        l.insert(labels::PLAN_ID.into(), plan_id.into());
    }
    Ok(m)
}

/// The plan an object belongs to (its `cnnpc.io/plan-id` label).
pub fn plan_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(labels::PLAN_ID)
        .map(String::as_str)
}

/// The hash [`stamp`] put on an object, if any.
pub fn spec_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(SPEC_HASH)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{CollaborativeInferenceSpec, PlanCutStatus, PlanTierStatus};
    use crate::planner::accuracy::WireEncoding;
    use serde_json::json;

    fn ci(spec: serde_json::Value) -> CollaborativeInference {
        let spec: CollaborativeInferenceSpec = serde_json::from_value(spec).unwrap();
        let mut ci = CollaborativeInference::new("demo", spec);
        ci.metadata.namespace = Some("ns".into());
        ci.metadata.uid = Some("u1".into());
        ci
    }

    fn plan() -> PlanStatus {
        let tier = |t: &str, seg: Option<[u32; 2]>| PlanTierStatus {
            tier: t.into(),
            segments: seg.map(|s| s.to_vec()),
            compute_ms: 1.0,
            codec_ms: None,
        };
        PlanStatus {
            id: "abc".into(),
            summary: "end-cloud cut 0 4/8 int8".into(),
            deployment: "end-cloud".into(),
            encoding: WireEncoding::Int8,
            cuts: vec![PlanCutStatus {
                point: 0,
                tensors: vec!["relu1".into()],
                from: "end".into(),
                to: "cloud".into(),
                channels: 8,
                kept: 4,
            }],
            tiers: vec![
                tier("end", Some([0, 0])),
                tier("edge", None),
                tier("cloud", Some([1, 3])),
            ],
            latency_ms: 5.0,
            accuracy: Some(0.99),
            accuracy_interval: None,
            measured_on: Some(crate::planner::plan::MeasuredOn {
                model: "ab".repeat(32),
                shape: vec![],
                calibration: "rotated-pages".into(),
                data: "builtin:rotated-pages:v1".into(),
                metric: Default::default(),
                fit: crate::planner::plan::Items {
                    first: 100_000,
                    count: 16,
                },
                eval: crate::planner::plan::Items {
                    first: 0,
                    count: 16,
                },
                pruning: "greedy+lsq".into(),
            }),
        }
    }

    fn ctx() -> BuildContext {
        BuildContext::new("img:1")
    }

    #[test]
    fn children_per_active_tier_with_labels_owner_probes_and_security() {
        let c = ci(json!({
            "model": {"path": "m/model.onnx", "volume": {"name": "x", "persistentVolumeClaim": {"claimName": "pvc"}}},
            "tiers": {"end": {"nodeSelector": {"zone": "device"}, "tolerations": [{"key": "k", "operator": "Exists"}],
                              "resources": {"limits": {"cpu": "1"}}, "replicas": 2}},
            "links": {"endEdgeMbps": 20, "edgeCloudMbps": 5, "emulate": true},
            "calibration": {"pages": 32}
        }));
        let ch = build_children(&c, &plan(), BTreeMap::new(), &ctx()).unwrap();
        let names: Vec<String> = ch
            .deployments
            .iter()
            .map(|d| d.metadata.name.clone().unwrap())
            .collect();
        // The plan id is in the names: a new plan's Deployments start beside the old ones.
        assert_eq!(names, ["demo-end-abc", "demo-cloud-abc"]);
        // A next-hop Service for the cloud tier only; the end tier is reached by the entry.
        assert_eq!(ch.services.len(), 1);
        assert_eq!(
            ch.services[0].metadata.name.as_deref(),
            Some("demo-cloud-abc")
        );
        assert_eq!(ch.entry.metadata.name.as_deref(), Some("demo"));
        let entry_sel = ch.entry.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(entry_sel, labels::entry_selector("demo", "abc"));
        assert_eq!(ch.config_map.metadata.name.as_deref(), Some("demo-plan"));
        let end = &ch.deployments[0];
        let labels = end.metadata.labels.as_ref().unwrap();
        for k in ["name", "instance", "component", "managed-by", "part-of"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{k}")),
                "{k}"
            );
        }
        assert_eq!(labels["app.kubernetes.io/component"], "end");
        let owner = &end.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u1", Some(true)));
        let spec = end.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["zone"], "device");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        assert_eq!(pod.volumes.as_ref().unwrap()[0].name, "model");
        assert!(pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .is_some());
        assert!(
            pod.init_containers.is_none(),
            "a volume model needs no fetch"
        );
        let ann = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "8080");
        assert_eq!(ann["prometheus.io/path"], "/metrics");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[labels::PLAN_ID], "abc");
        assert_eq!(
            pod_labels[labels::ENTRY],
            "true",
            "the first tier is the entry"
        );
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("img:1"));
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(container.resources.as_ref().unwrap().limits.is_some());
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
        let args = container.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("shard --model /models/m/model.onnx --tier end"),
            "{args}"
        );
        assert!(args.contains("--split-at relu1 --part 0"), "{args}");
        assert!(
            args.contains("--keep 4 --calibration rotated-pages --calibration-digest builtin:rotated-pages:v1 --fit-first 100000 --fit-images 16 --model-sha256 abab"),
            "{args}"
        );
        assert!(
            args.contains(&format!(
                "--next http://demo-cloud-abc.ns.svc:8080 --encoding int8 --zstd {}",
                crate::onnx::frame::ZSTD_LEVEL
            )),
            "{args}"
        );
        // The emulated end→cloud path: 1 / (1/20 + 1/5) = 4 Mbit/s.
        assert!(args.contains("--link-mbps 4 "), "{args}");
        assert!(args.ends_with("--slowdown 18 --log-format text"), "{args}");
        let cloud_args = ch.deployments[1]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ");
        assert!(
            cloud_args.contains("--part 1") && !cloud_args.contains("--next"),
            "{cloud_args}"
        );
        let svc = ch.services[0].spec.as_ref().unwrap();
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(
            svc.selector.as_ref().unwrap()["app.kubernetes.io/component"],
            "cloud"
        );
    }

    #[test]
    fn url_models_are_fetched_by_an_init_container() {
        let sha = "ab".repeat(32);
        let c = ci(
            json!({"model": {"url": "https://example.org/m.onnx", "sha256": sha}, "image": "mine:2"}),
        );
        let ch = build_children(&c, &plan(), BTreeMap::new(), &ctx()).unwrap();
        let pod = ch.deployments[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        let init = &pod.init_containers.unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("mine:2"));
        assert_eq!(
            init.args.clone().unwrap(),
            [
                "fetch",
                "--url",
                "https://example.org/m.onnx",
                "--sha256",
                sha.as_str(),
                "--out",
                "/models/model.onnx"
            ]
        );
        assert!(pod.volumes.unwrap()[0].empty_dir.is_some());
        assert_eq!(pod.containers[0].image.as_deref(), Some("mine:2"));
    }

    #[test]
    fn hashes_are_stable_and_follow_the_content() {
        let c = ci(json!({"model": {"path": "m.onnx", "volume": {"name": "v", "emptyDir": {}}}}));
        let a = build_children(&c, &plan(), BTreeMap::new(), &ctx()).unwrap();
        let b = build_children(&c, &plan(), BTreeMap::new(), &ctx()).unwrap();
        assert_eq!(a, b);
        let h = |ch: &Children| spec_hash(&ch.deployments[0].metadata).unwrap().to_string();
        let mut p = plan();
        p.encoding = WireEncoding::Int4;
        p.id = "other".into();
        let c2 = build_children(&c, &p, BTreeMap::new(), &ctx()).unwrap();
        assert_ne!(h(&a), h(&c2));
        // The entry keeps its name across plans; only the plan it selects changes.
        assert_eq!(a.entry.metadata.name, c2.entry.metadata.name);
        assert_ne!(spec_hash(&a.entry.metadata), spec_hash(&c2.entry.metadata));
    }

    #[test]
    fn bad_paths_and_tensor_names_are_refused() {
        let c = ci(json!({"model": {"path": "../etc/x", "volume": {"name": "v", "emptyDir": {}}}}));
        assert!(matches!(
            build_children(&c, &plan(), BTreeMap::new(), &ctx()),
            Err(BuildError::Invalid(_))
        ));
        let c = ci(json!({"model": {"path": "m.onnx", "volume": {"name": "v", "emptyDir": {}}}}));
        let mut p = plan();
        p.cuts[0].tensors = vec!["a,b".into()];
        assert!(build_children(&c, &p, BTreeMap::new(), &ctx()).is_err());
        let mut no_uid = c.clone();
        no_uid.metadata.uid = None;
        assert_eq!(
            build_children(&no_uid, &plan(), BTreeMap::new(), &ctx()),
            Err(BuildError::Missing("metadata.uid"))
        );
    }
}
