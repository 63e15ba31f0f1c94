//! Controller scenarios against the fake API server ([`fixtures`](crate::operator::fixtures)):
//! create → children and status; unchanged → no writes; spec change → replan and old children
//! removed; bad spec → False condition and a Warning event, children kept; tier loss →
//! fallback plan and back; observations → replan.

use super::*;
use crate::operator::crd::{CollaborativeInferenceSpec, ModelSource, ProfileRef};
use crate::operator::evidence::Totals;
use crate::operator::fixtures::FakeApi;
use crate::operator::status;
use crate::planner::accuracy::WireEncoding;
use crate::planner::profile::{CutPoint, Device, TensorInfo, TensorSize};
use serde_json::{json, Value};

const NS: &str = "ns";
const NOW: i64 = 1_800_000_000;
const CI_PATH: &str = "/apis/cnnpc.io/v1alpha1/namespaces/ns/collaborativeinferences/demo";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ns/deployments";
const SERVICES: &str = "/api/v1/namespaces/ns/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/ns/configmaps";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// The chain test model's cuts (relu1 8ch, relu2 16ch, gap 16ch) with times that make the
/// best (uncompressed) plan end-cloud at relu1 on the default links: the input is large (as
/// from a camera), the end device runs the first layer fast and the rest slowly, the edge is
/// slow, the cloud fast.
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
    let device = |tier: &str, run_ms: [f64; 4]| Device {
        tier: tier.into(),
        run_ms: run_ms.to_vec(),
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
            cut("gap", 16, &[1, 16, 1, 1]),
        ],
        devices: BTreeMap::from([
            ("end".to_string(), device("end", [0.1, 50.0, 50.0, 50.0])),
            ("edge".to_string(), device("edge", [5.0, 5.0, 5.0, 5.0])),
            ("cloud".to_string(), device("cloud", [0.5, 0.5, 0.5, 0.5])),
        ]),
        wire: None,
    }
}

struct Env {
    fake: FakeApi,
    /// The controller's clock, in seconds (tests move it past grace and drain periods).
    now: Arc<std::sync::atomic::AtomicI64>,
    ctx: Arc<Context>,
    observation: Arc<Mutex<Window>>,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

fn spec() -> CollaborativeInferenceSpec {
    serde_json::from_value(json!({
        "model": {"path": "chain.onnx", "volume": {"name": "m", "persistentVolumeClaim": {"claimName": "models"}}},
        "profile": {"configMap": "chain-profile"},
    }))
    .unwrap()
}

fn setup(spec: CollaborativeInferenceSpec) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::testkit::models::chain_model_bytes();
    std::fs::write(dir.path().join("chain.onnx"), &model).unwrap();
    let fake = FakeApi::default();
    let (client, server) = fake.start();
    let observation = Arc::new(Mutex::new(Window::default()));
    let mut ctx = Context::new(
        client,
        Metrics::default(),
        BuildContext::new("cnnpc:test"),
        ModelStore {
            cache_dir: dir.path().join("cache"),
            model_dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(2),
        },
        Observer::Fixed(observation.clone()),
    );
    ctx.repeats = 1;
    let now = Arc::new(std::sync::atomic::AtomicI64::new(NOW));
    let clock = now.clone();
    ctx.clock = Arc::new(move || {
        Timestamp::from_second(clock.load(std::sync::atomic::Ordering::SeqCst)).unwrap()
    });
    fake.put(
        &format!("{CONFIGMAPS}/chain-profile"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "chain-profile", "namespace": NS},
               "data": {"profile.yaml": serde_yaml::to_string(&profile()).unwrap()}}),
    );
    let mut ci = CollaborativeInference::new("demo", spec);
    ci.metadata.namespace = Some(NS.into());
    ci.metadata.uid = Some("uid-demo".into());
    ci.metadata.generation = Some(1);
    fake.put(CI_PATH, serde_json::to_value(&ci).unwrap());
    Env {
        fake,
        now,
        ctx: Arc::new(ctx),
        observation,
        _dir: dir,
        _server: server,
    }
}

impl Env {
    /// The resource as the cluster has it now (what the watch would hand the reconciler).
    fn ci(&self) -> CollaborativeInference {
        serde_json::from_value(self.fake.get(CI_PATH).unwrap()).unwrap()
    }

    fn status(&self) -> CollaborativeInferenceStatus {
        self.ci().status.unwrap_or_default()
    }

    async fn reconcile(&self) -> Result<Action> {
        reconcile(Arc::new(self.ci()), self.ctx.clone()).await
    }

    /// A spec edit: new spec, generation + 1.
    fn edit(&self, f: impl FnOnce(&mut CollaborativeInferenceSpec)) {
        let mut ci = self.ci();
        f(&mut ci.spec);
        ci.metadata.generation = ci.metadata.generation.map(|g| g + 1);
        self.fake.put(CI_PATH, serde_json::to_value(&ci).unwrap());
    }

    fn deployments(&self) -> Vec<String> {
        self.fake.names(DEPLOYMENTS)
    }

    /// The newest plan decided: the one rolling out, else the one serving.
    fn newest(&self) -> PlanStatus {
        let s = self.status();
        s.rollout.map(|r| r.plan).or(s.plan).expect("a plan")
    }

    /// A tier's Deployment (or next-hop Service) name in the serving plan.
    fn tier(&self, tier: &str) -> String {
        format!("demo-{tier}-{}", self.status().plan.expect("a plan").id)
    }

    /// The plan the entry Service selects.
    fn entry_plan(&self) -> String {
        let e = self
            .fake
            .get(&format!("{SERVICES}/demo"))
            .expect("entry Service");
        e["spec"]["selector"][crate::operator::labels::PLAN_ID]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn advance(&self, seconds: i64) {
        self.now
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    /// Finish a rollout: the new plan's shards become ready (the entry switches), then the
    /// drain passes (the old plan goes).
    async fn roll_out(&self) {
        self.mark_all_ready();
        self.reconcile().await.unwrap();
        assert!(
            self.status().rollout.is_none(),
            "switched: {:?}",
            self.status().rollout
        );
        self.advance(31);
        self.reconcile().await.unwrap();
        assert!(self.status().retiring.is_none(), "retired");
    }

    fn events(&self) -> Vec<Value> {
        self.fake
            .names(EVENTS)
            .iter()
            .filter_map(|n| self.fake.get(&format!("{EVENTS}/{n}")))
            .collect()
    }

    /// Sets a Deployment's status as the cluster would.
    fn set_ready(&self, name: &str, ready: i32, unavailable_since: Option<i64>) {
        let path = format!("{DEPLOYMENTS}/{name}");
        let mut d = self.fake.get(&path).expect("deployment exists");
        let mut status = json!({"readyReplicas": ready, "replicas": 1});
        if let Some(t) = unavailable_since {
            status["conditions"] = json!([{
                "type": "Available", "status": "False",
                "lastTransitionTime": Timestamp::from_second(t).unwrap().to_string()
            }]);
        }
        d["status"] = status;
        self.fake.put(&path, d);
    }

    fn mark_all_ready(&self) {
        for d in self.deployments() {
            self.set_ready(&d, 1, None);
        }
    }

    /// One replan interval (30 s) passes: the next reconcile observes.
    fn feedback_due(&self) {
        self.advance(30);
    }

    /// What the shards counted over the window: `n` requests with an end→cloud hop of `secs`
    /// for 8 KiB (the chain plan's f32 relu1) and `latency_s` end to end.
    fn observe(&self, n: u32, hop_secs: f64, latency_s: f64) {
        *self.observation.lock().unwrap() = Window {
            seconds: 300.0,
            hops: BTreeMap::from([("end->cloud".into(), Totals::steady(n, hop_secs, 8192.0))]),
            request: Totals::steady(n, latency_s, 0.0),
            ..Window::default()
        };
    }
}

fn condition(s: &CollaborativeInferenceStatus, type_: &str) -> (String, String) {
    let c = status::get(&s.conditions, type_).expect("condition present");
    (c.status.clone(), c.reason.clone())
}

fn args(d: &Value) -> Vec<String> {
    serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap()
}

#[tokio::test]
async fn create_makes_children_and_status() {
    let env = setup(spec());
    env.reconcile().await.expect("reconcile");
    let s = env.status();
    let plan = s.plan.clone().expect("a plan");
    assert_eq!(plan.deployment, "end-cloud", "{plan:?}");
    assert_eq!(plan.cuts.len(), 1);
    assert_eq!(plan.cuts[0].tensors, ["relu1"]);
    assert_eq!(s.active_tiers, ["end", "cloud"]);
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.predicted_latency_ms, Some(plan.latency_ms));
    assert_eq!(
        condition(&s, status::PLANNED),
        ("True".into(), "Planned".into())
    );
    assert_eq!(
        condition(&s, status::READY),
        ("False".into(), "ShardsNotReady".into())
    );
    assert_eq!(condition(&s, status::DEGRADED).0, "False");
    assert_eq!(s.replan_count, 0);

    let id = plan.id.clone();
    // The first plan serves at once: nothing to protect, nothing rolling out.
    assert!(s.rollout.is_none() && s.retiring.is_none());
    assert_eq!(
        env.deployments(),
        [format!("demo-cloud-{id}"), format!("demo-end-{id}")]
    );
    // The entry, named after the resource, and the cloud's next-hop Service.
    assert_eq!(
        env.fake.names(SERVICES),
        ["demo".to_string(), format!("demo-cloud-{id}")]
    );
    assert_eq!(env.entry_plan(), id);
    assert_eq!(s.url.as_deref(), Some("http://demo.ns.svc:8080"));
    assert_eq!(
        s.address.as_ref().map(|a| a.url.as_str()),
        Some("http://demo.ns.svc.cluster.local:8080")
    );
    let cm = env
        .fake
        .get(&format!("{CONFIGMAPS}/demo-plan"))
        .expect("plan ConfigMap");
    let plan_json: Value = serde_json::from_str(cm["data"]["plan.json"].as_str().unwrap()).unwrap();
    assert_eq!(plan_json["deployment"], "end-cloud");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "uid-demo");

    let end = env
        .fake
        .get(&format!("{DEPLOYMENTS}/demo-end-{id}"))
        .unwrap();
    let a = args(&end);
    let at = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
    assert_eq!(at("--model"), "/models/chain.onnx");
    assert_eq!(at("--split-at"), "relu1");
    assert_eq!(at("--part"), "0");
    assert_eq!(at("--next"), format!("http://demo-cloud-{id}.ns.svc:8080"));
    assert_eq!(
        at("--model-name"),
        "demo",
        "clients call the model by the resource's name"
    );
    assert_eq!(at("--encoding"), "f32", "no calibration: uncompressed");
    assert_eq!(at("--slowdown"), "18");
    let cloud = env
        .fake
        .get(&format!("{DEPLOYMENTS}/demo-cloud-{id}"))
        .unwrap();
    assert!(!args(&cloud).contains(&"--next".to_string()));
    // Applied with our field manager, by server-side apply.
    let w = env.fake.writes();
    assert!(w
        .iter()
        .filter(|c| c.method == http::Method::PATCH)
        .all(
            |c| c.query.contains("fieldManager=cnnpc-controller") && c.query.contains("force=true")
        ));
    let ev = env.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["reason"], "Planned");
    assert_eq!(ev[0]["type"], "Normal");
    assert_eq!(
        env.ctx
            .metrics
            .replans
            .with_label_values(&["initial"])
            .get(),
        1
    );
}

#[tokio::test]
async fn second_reconcile_with_nothing_changed_writes_nothing() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    assert!(env.fake.writes().is_empty(), "{:?}", env.fake.writes());
    // Shards become ready: one status write (Ready), then quiet again.
    env.mark_all_ready();
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    let w = env.fake.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].path.ends_with("/demo/status"));
    assert_eq!(condition(&env.status(), status::READY).0, "True");
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    assert!(env.fake.writes().is_empty());
}

#[tokio::test]
async fn spec_change_rolls_the_new_plan_out_beside_the_old_and_retires_it_after_the_drain() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    env.mark_all_ready();
    env.reconcile().await.unwrap();
    let first = env.status().plan.unwrap();
    env.edit(|s| s.tiers.end.enabled = Some(false));
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    let s = env.status();
    // The new plan comes up beside the old one, which still serves.
    let rollout = s.rollout.clone().expect("a rollout");
    let new = rollout.plan.clone();
    assert_ne!(new.id, first.id);
    assert_eq!(new.deployment, "edge-cloud");
    assert_eq!(
        s.plan.as_ref().unwrap().id,
        first.id,
        "the old plan serves on"
    );
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.replan_count, 1);
    assert_eq!(s.last_replan_reason.as_deref(), Some("spec changed"));
    assert_eq!(
        condition(&s, status::PROGRESSING),
        ("True".into(), "RollingOut".into())
    );
    let (f, n) = (&first.id, &new.id);
    assert_eq!(env.deployments(), {
        let mut want = vec![
            format!("demo-cloud-{f}"),
            format!("demo-cloud-{n}"),
            format!("demo-edge-{n}"),
            format!("demo-end-{f}"),
        ];
        want.sort();
        want
    });
    assert_eq!(env.entry_plan(), *f, "the entry waits for the new plan");
    assert!(
        !env.fake
            .writes()
            .iter()
            .any(|c| c.method == http::Method::DELETE),
        "nothing is deleted while the new plan comes up"
    );
    // The old plan's shards were not rewritten.
    assert!(!env
        .fake
        .writes()
        .iter()
        .any(|c| c.path.ends_with(&format!("-{f}"))));
    let edge = env
        .fake
        .get(&format!("{DEPLOYMENTS}/demo-edge-{n}"))
        .unwrap();
    let a = args(&edge);
    assert!(
        a.contains(&format!("http://demo-cloud-{n}.ns.svc:8080")),
        "{a:?}"
    );
    // Half ready: still the old plan.
    env.set_ready(&format!("demo-edge-{n}"), 1, None);
    env.reconcile().await.unwrap();
    assert_eq!(env.entry_plan(), *f);
    // Every tier ready: the entry switches, and the old plan drains.
    env.set_ready(&format!("demo-cloud-{n}"), 1, None);
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    let s = env.status();
    assert_eq!(env.entry_plan(), *n);
    assert_eq!(s.plan.as_ref().unwrap().id, *n);
    assert!(s.rollout.is_none());
    assert_eq!(s.retiring.as_ref().unwrap().plan.id, *f);
    assert_eq!(
        condition(&s, status::PROGRESSING),
        ("True".into(), "Draining".into())
    );
    assert!(
        env.deployments().contains(&format!("demo-end-{f}")),
        "kept while draining"
    );
    // Within the drain, nothing goes; past it, the old plan's objects are deleted.
    env.advance(10);
    env.reconcile().await.unwrap();
    assert!(env.deployments().contains(&format!("demo-end-{f}")));
    env.advance(25);
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    let mut deletes: Vec<String> = env
        .fake
        .writes()
        .iter()
        .filter(|c| c.method == http::Method::DELETE)
        .map(|c| c.path.clone())
        .collect();
    deletes.sort();
    let mut want = vec![
        format!("{DEPLOYMENTS}/demo-cloud-{f}"),
        format!("{DEPLOYMENTS}/demo-end-{f}"),
        format!("{SERVICES}/demo-cloud-{f}"),
    ];
    want.sort();
    assert_eq!(deletes, want);
    let s = env.status();
    assert!(s.retiring.is_none());
    assert_eq!(
        condition(&s, status::PROGRESSING),
        ("False".into(), "Stable".into())
    );
    for step in ["Replanned", "Switched", "Retired"] {
        assert!(
            env.events().iter().any(|e| e["reason"] == step),
            "event {step}"
        );
    }
    assert_eq!(
        env.fake.names(SERVICES),
        ["demo".to_string(), format!("demo-cloud-{n}")]
    );
}

#[tokio::test]
async fn a_foreign_service_with_the_entrys_name_is_not_taken_over() {
    let env = setup(spec());
    env.fake.put(
        &format!("{SERVICES}/demo"),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "demo", "namespace": NS, "labels": {"app": "theirs"}},
               "spec": {"selector": {"app": "theirs"}}}),
    );
    let err = env.reconcile().await.unwrap_err();
    assert!(err.to_string().contains("Service demo exists"), "{err}");
    let e = env.fake.get(&format!("{SERVICES}/demo")).unwrap();
    assert_eq!(e["spec"]["selector"]["app"], "theirs", "left alone");
    assert!(
        env.deployments().is_empty(),
        "nothing deployed behind a foreign entry"
    );
    let s = env.status();
    assert!(s.url.is_none(), "{:?}", s.url);
    let planned = status::get(&s.conditions, status::PLANNED).unwrap();
    assert_eq!(
        (planned.status.as_str(), planned.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        planned.message.contains("rename one of them"),
        "{}",
        planned.message
    );
}

#[tokio::test]
async fn bad_specs_set_a_false_condition_and_an_event_and_keep_the_children() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    let working = env.status().plan.unwrap();
    let children = env.deployments();
    type Edit = Box<dyn Fn(&mut CollaborativeInferenceSpec)>;
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|s| s.model.path = Some("missing.onnx".into())),
            "ModelUnavailable",
            "model_unavailable",
        ),
        (
            Box::new(|s| s.model.sha256 = Some("0".repeat(64))),
            "ChecksumMismatch",
            "checksum_mismatch",
        ),
        (
            Box::new(|s| {
                s.objective = Some(crate::operator::crd::Objective {
                    min_accuracy: None,
                    max_latency_ms: Some(0.01),
                })
            }),
            "ImpossibleObjective",
            "impossible_objective",
        ),
        (
            Box::new(|s| {
                s.profile = Some(ProfileRef {
                    config_map: "bad-profile".into(),
                })
            }),
            "UnknownCut",
            "unknown_cut",
        ),
        (
            Box::new(|s| {
                s.model = ModelSource {
                    url: Some("http://127.0.0.1:1/model.onnx".into()),
                    sha256: Some("a".repeat(64)),
                    ..ModelSource::default()
                }
            }),
            "ModelUnavailable",
            "model_unavailable",
        ),
    ];
    let mut bad = profile();
    bad.cuts[0].tensors[0].name = "nope".into();
    env.fake.put(
        &format!("{CONFIGMAPS}/bad-profile"),
        json!({"metadata": {"name": "bad-profile", "namespace": NS},
               "data": {"profile.yaml": serde_yaml::to_string(&bad).unwrap()}}),
    );
    let good = env.ci().spec;
    for (edit, reason, label) in cases {
        env.edit(|s| {
            *s = good.clone();
            edit(s);
        });
        env.fake.clear_calls();
        let err = env.reconcile().await.expect_err(reason);
        assert_eq!(err.metric_label(), label, "{err}");
        let s = env.status();
        assert_eq!(
            condition(&s, status::PLANNED),
            ("False".into(), reason.into())
        );
        assert_eq!(
            s.plan.as_ref(),
            Some(&working),
            "the working plan stays in status"
        );
        assert_eq!(
            s.observed_generation,
            Some(1),
            "the bad generation is not marked done"
        );
        // One event written (created, or folded into a series when the reason repeats).
        let ev: Vec<Value> = env
            .fake
            .writes()
            .iter()
            .filter(|c| c.path.starts_with(EVENTS))
            .filter_map(|c| c.body.clone())
            .collect();
        assert_eq!(ev.len(), 1, "{reason}: {ev:?}");
        assert_eq!(ev[0]["reason"], reason);
        assert_eq!(ev[0]["type"], "Warning");
        assert!(
            env.fake
                .writes()
                .iter()
                .all(|c| c.method != http::Method::DELETE && !c.path.contains("/deployments")),
            "a bad edit touches no child: {:?}",
            env.fake.writes()
        );
        assert_eq!(env.deployments(), children);
        // The same error again: no new write, no new event (the status says it already).
        env.fake.clear_calls();
        env.reconcile().await.expect_err(reason);
        assert!(env.fake.writes().is_empty(), "{:?}", env.fake.writes());
        // error_policy backs off and counts the error by label.
        let before = env.ctx.metrics.errors.with_label_values(&[label]).get();
        let a = error_policy(Arc::new(env.ci()), &err, env.ctx.clone());
        assert_eq!(
            env.ctx.metrics.errors.with_label_values(&[label]).get(),
            before + 1
        );
        assert_ne!(a, Action::await_change());
    }
    // Fixing the spec recovers.
    env.edit(|s| *s = good.clone());
    env.reconcile().await.unwrap();
    assert_eq!(condition(&env.status(), status::PLANNED).0, "True");
}

#[test]
fn backoff_doubles_to_five_minutes() {
    let b: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(b, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

#[tokio::test]
async fn a_lost_tier_gets_a_fallback_plan_and_comes_back() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    env.mark_all_ready();
    env.reconcile().await.unwrap();
    assert_eq!(env.status().plan.unwrap().deployment, "end-cloud");
    // The cloud has had no ready replica for 30 s: within the 60 s grace, nothing changes.
    let cloud = env.tier("cloud");
    env.set_ready(&cloud, 0, Some(NOW - 30));
    env.reconcile().await.unwrap();
    assert_eq!(env.status().plan.unwrap().deployment, "end-cloud");
    assert!(env.status().lost_tiers.is_empty());
    // Past the grace period: plan without the cloud.
    env.set_ready(&cloud, 0, Some(NOW - 90));
    env.reconcile().await.unwrap();
    let s = env.status();
    let plan = env.newest();
    assert!(!plan.deployment.contains("cloud"), "{}", plan.deployment);
    assert_eq!(s.lost_tiers, ["cloud"]);
    let degraded = status::get(&s.conditions, status::DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "TierLost")
    );
    assert!(
        degraded.message.contains("tier cloud lost"),
        "{}",
        degraded.message
    );
    assert_eq!(s.last_replan_reason.as_deref(), Some("tier lost: cloud"));
    assert!(
        env.deployments().contains(&cloud),
        "the lost tier's Deployment is kept so its recovery is seen"
    );
    assert_eq!(
        env.ctx
            .metrics
            .replans
            .with_label_values(&["tier_lost"])
            .get(),
        1
    );
    // The cloud is back: the first plan again.
    env.set_ready(&cloud, 1, None);
    env.reconcile().await.unwrap();
    let s = env.status();
    assert_eq!(env.newest().deployment, "end-cloud");
    assert!(s.lost_tiers.is_empty());
    assert_eq!(condition(&s, status::DEGRADED).0, "False");
}

/// Seconds for the chain plan's 8 KiB cut at `mbps`.
fn secs(mbps: f64) -> f64 {
    8192.0 * 8.0 / (mbps * 1e6)
}

/// The end→cloud path the chain spec assumes: 1/(1/20 + 1/10) Mbit/s.
const ASSUMED_PATH: f64 = 1.0 / (1.0 / 20.0 + 1.0 / 10.0);

#[tokio::test]
async fn observations_replan_past_the_hysteresis_only() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    let first = env.status().plan.unwrap();
    assert_eq!(
        first.cuts[0].tensors,
        ["relu1"],
        "f32 relu1: 8 KiB a request"
    );
    // The path end→cloud is 10% slower than assumed: a new search, but the same plan.
    env.observe(200, secs(ASSUMED_PATH * 0.9), 0.004);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let s = env.status();
    assert_eq!(env.newest().id, first.id);
    assert_eq!(s.observed_latency_ms, Some(4.0));
    assert_eq!(s.replan_count, 0);
    assert_eq!(
        condition(&s, status::OBSERVED),
        ("True".into(), "Sufficient".into())
    );
    let good = s.last_good_observation.clone().expect("kept");
    assert_eq!(
        good.at,
        Timestamp::from_second(NOW + 30).unwrap().to_string()
    );
    assert_eq!(good.requests, 200);
    let l = &good.links["end->cloud"].mbps;
    assert!(l.low < l.value && l.value < l.high && (l.value - ASSUMED_PATH * 0.9).abs() < 0.01);
    // The path collapses to 0.05 Mbit/s: running everything on the end device is faster.
    env.observe(200, secs(0.05), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let s = env.status();
    let plan = env.newest();
    assert_ne!(plan.id, first.id);
    assert_eq!(s.replan_count, 1);
    let reason = s.last_replan_reason.clone().unwrap();
    assert!(
        reason.starts_with("observed ") && reason.contains("end->edge 0.15 Mbit/s"),
        "{reason}"
    );
    let assumed = s.assumed.unwrap();
    assert!(assumed.link_mbps["end->edge"] < 1.0, "{assumed:?}");
    assert_eq!(
        env.ctx
            .metrics
            .replans
            .with_label_values(&["observed"])
            .get(),
        1
    );
    // Rolled out, the observed plan serves and the entry selects it.
    env.roll_out().await;
    assert_eq!(env.entry_plan(), plan.id);
    assert_eq!(env.status().plan.unwrap().id, plan.id);
    assert_eq!(
        env.status().replan_count,
        1,
        "a rollout is not another replan"
    );
    // History: the first plan replaced (with what it was observed at), the new one serving.
    let h = env.status().history;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (h[0].plan.id.as_str(), h[0].outcome.as_str()),
        (plan.id.as_str(), "Serving")
    );
    assert_eq!(
        (h[1].plan.id.as_str(), h[1].outcome.as_str()),
        (first.id.as_str(), "Replaced")
    );
    assert_eq!(h[1].observed_latency_ms, Some(1300.0));
    assert!(h[1].ended.is_some() && h[0].ended.is_none());
}

/// The case seen on a real cluster: one small request between two scrapes read as a link of
/// thousands of Mbit/s. Too little evidence is said in status, and nothing is replanned; the
/// same reading with the evidence floor lowered to one request would have replanned.
#[tokio::test]
async fn too_little_evidence_replans_nothing_and_says_so() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    let first = env.status().plan.unwrap();
    // One request, 8 KiB end→cloud in 25 µs: "2621 Mbit/s".
    env.observe(1, 25e-6, 0.002);
    env.feedback_due();
    env.fake.clear_calls();
    env.reconcile().await.unwrap();
    let s = env.status();
    assert_eq!(env.newest().id, first.id, "no replan on one request");
    assert_eq!(s.replan_count, 0);
    assert!(s.rollout.is_none());
    let (st, reason) = condition(&s, status::OBSERVED);
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "InsufficientEvidence")
    );
    let msg = status::get(&s.conditions, status::OBSERVED)
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("end->cloud: 1 request, 8.0 KiB (needs 20, 1.0 MiB)"),
        "{msg}"
    );
    assert!(s.last_good_observation.is_none());
    // Only the status was written (no child).
    let writes = env.fake.writes();
    assert!(
        writes.iter().all(|c| c.path.ends_with("/status")),
        "{writes:?}"
    );
    // Within the interval, nothing is looked at again, and nothing written.
    env.fake.clear_calls();
    env.advance(10);
    env.reconcile().await.unwrap();
    assert!(env.fake.writes().is_empty(), "{:?}", env.fake.writes());
    // One slow outlier (8 KiB in 1.3 s, "0.05 Mbit/s"): too thin as well.
    env.observe(1, secs(0.05), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    assert_eq!(env.newest().id, first.id, "no replan on one slow request");
    // With the floor lowered to two requests, two such requests pass the floor, but their
    // interval is too wide for the gain to hold at 95%: kept, and said so.
    env.edit(|s| {
        s.replan.evidence =
            serde_json::from_value(json!({"minRequests": 2, "minBytes": 0})).unwrap()
    });
    env.reconcile().await.unwrap(); // the spec edit (same plan)
    env.observe(2, secs(0.05), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    assert_eq!(env.newest().id, first.id);
    let s = env.status();
    let planned = &status::get(&s.conditions, status::PLANNED).unwrap().message;
    assert!(
        planned.contains("at the evidence's confidence: kept"),
        "{planned}"
    );
    // At 50% confidence the same two requests replan: the floor and the interval are what
    // held it (the test can fail).
    env.edit(|s| s.replan.evidence.confidence = 0.5);
    env.reconcile().await.unwrap();
    env.feedback_due();
    env.reconcile().await.unwrap();
    assert_ne!(env.newest().id, first.id, "{:?}", env.status().conditions);
}

/// A plan that serves worse than the one it replaced is rolled back within the intervals,
/// and rejected: status keeps its figures, and it is not chosen again.
#[tokio::test]
async fn a_regression_rolls_back_and_the_rejected_plan_is_kept_in_status() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    let first = env.status().plan.unwrap();
    // Served at 40 ms; then the link collapses (as in the test above): a new plan.
    env.observe(200, secs(ASSUMED_PATH), 0.040);
    env.feedback_due();
    env.reconcile().await.unwrap();
    env.observe(200, secs(0.05), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let second = env.newest();
    assert_ne!(second.id, first.id);
    env.roll_out().await;
    assert_eq!(env.entry_plan(), second.id);
    // The new plan serves at 3 s, slower than the 1.3 s the old one was last seen at.
    env.observe(200, 0.0, 3.0);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let s = env.status();
    let r = s.rollout.as_ref().expect("rolling back");
    assert_eq!(r.plan.id, first.id, "back to the plan it replaced");
    assert!(r.reason.starts_with("rolled back: "), "{}", r.reason);
    let rej = &s.rejected_plans[0];
    assert_eq!(rej.id, second.id);
    assert_eq!(rej.baseline_plan.as_deref(), Some(first.id.as_str()));
    assert_eq!(rej.baseline_latency_ms, Some(1300.0));
    let seen = rej.observed_latency_ms.unwrap();
    assert!((seen.value - 3000.0).abs() < 1e-6);
    assert!(seen.low > 1300.0 * 1.1);
    let reasons: Vec<String> = env
        .events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons.contains(&"RollingBack".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"PlanRejected".to_string()), "{reasons:?}");
    assert_eq!(
        env.ctx
            .metrics
            .replans
            .with_label_values(&["rolled_back"])
            .get(),
        1
    );
    env.roll_out().await;
    assert_eq!(env.entry_plan(), first.id);
    let s = env.status();
    assert_eq!(s.history[0].plan.id, first.id);
    assert_eq!(s.history[1].outcome, "RolledBack");
    assert_eq!(s.rejected_plans.len(), 1, "kept after the rollback");
    // The link collapses a little further: the search finds the rejected plan again, and keeps.
    env.observe(200, secs(0.04), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    assert_eq!(
        env.newest().id,
        first.id,
        "a rejected plan is not chosen again"
    );
    let s = env.status();
    let planned = &status::get(&s.conditions, status::PLANNED).unwrap().message;
    assert!(planned.contains("rolled back before"), "{planned}");
}

/// A restart forgets the controller's memory; status keeps the rollout, the observations and
/// the rejected plans, so the new controller resumes the rollout and writes nothing more than
/// a normal reconcile would.
#[tokio::test]
async fn a_restart_mid_rollout_resumes_it_and_writes_nothing_new() {
    let env = setup(spec());
    env.reconcile().await.unwrap();
    let first = env.status().plan.unwrap();
    env.observe(200, secs(0.05), 1.3);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let second = env.newest();
    assert_ne!(second.id, first.id);
    let before = env.status();
    // A new controller: same API server, an empty memory.
    let mut fresh = Context::new(
        env.ctx.client.clone(),
        Metrics::default(),
        env.ctx.build.clone(),
        env.ctx.models.clone(),
        Observer::Fixed(env.observation.clone()),
    );
    fresh.clock = env.ctx.clock.clone();
    fresh.repeats = 1;
    let fresh = Arc::new(fresh);
    env.fake.clear_calls();
    reconcile(Arc::new(env.ci()), fresh.clone()).await.unwrap();
    assert!(
        env.fake.writes().is_empty(),
        "no write on restart: {:?}",
        env.fake.writes()
    );
    assert_eq!(env.status(), before, "status as it was");
    assert_eq!(
        fresh.metrics.replans.with_label_values(&["observed"]).get(),
        0,
        "no replan"
    );
    // The rollout resumes: ready shards switch the entry under the new controller.
    env.mark_all_ready();
    reconcile(Arc::new(env.ci()), fresh.clone()).await.unwrap();
    assert_eq!(env.entry_plan(), second.id);
    assert!(env.status().rollout.is_none());
}

#[tokio::test]
async fn autoscaled_tiers_get_an_hpa_that_follows_the_plan() {
    let env = setup(spec());
    env.edit(|s| {
        s.tiers.cloud.autoscaling = Some(
            serde_json::from_value(json!({"maxReplicas": 4, "targetCPUUtilizationPercentage": 60}))
                .unwrap(),
        );
    });
    env.reconcile().await.unwrap();
    let plan = env.status().plan.unwrap();
    const HPAS: &str = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers";
    let cloud = format!("demo-cloud-{}", plan.id);
    assert_eq!(env.fake.names(HPAS), std::slice::from_ref(&cloud));
    let h: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
        serde_json::from_value(env.fake.get(&format!("{HPAS}/{cloud}")).unwrap()).unwrap();
    let hs = h.spec.unwrap();
    assert_eq!(hs.scale_target_ref.name, cloud);
    assert_eq!(hs.scale_target_ref.kind, "Deployment");
    assert_eq!((hs.min_replicas, hs.max_replicas), (Some(1), 4));
    let m = &hs.metrics.unwrap()[0];
    assert_eq!(
        m.resource.as_ref().unwrap().target.average_utilization,
        Some(60)
    );
    let owner = &h.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CollaborativeInference", Some(true))
    );
    // The autoscaled Deployment leaves replicas to the HPA; the others keep theirs.
    let d = env.fake.get(&format!("{DEPLOYMENTS}/{cloud}")).unwrap();
    assert!(
        d["spec"].get("replicas").is_none_or(Value::is_null),
        "{}",
        d["spec"]["replicas"]
    );
    let end = env
        .fake
        .get(&format!("{DEPLOYMENTS}/demo-end-{}", plan.id))
        .unwrap();
    assert_eq!(end["spec"]["replicas"], 1);
    // Autoscaling off: pruned.
    env.edit(|s| s.tiers.cloud.autoscaling = None);
    env.reconcile().await.unwrap();
    assert!(
        env.fake.names(HPAS).is_empty(),
        "{:?}",
        env.fake.names(HPAS)
    );
}

#[tokio::test]
async fn a_recreated_resource_does_not_inherit_the_old_ones_memory() {
    let env = setup(spec());
    let old = env.ci();
    // Three failures in a row: the backoff has grown.
    for _ in 0..3 {
        error_policy(
            Arc::new(old.clone()),
            &Error::Task("boom".into()),
            env.ctx.clone(),
        );
    }
    assert_eq!(env.ctx.memo(&super::key(&old), |m| m.failures), 3);
    // Deleted and created again under the same name: a new UID, a fresh memory.
    let mut new = old.clone();
    new.metadata.uid = Some("uid-demo-2".into());
    assert_ne!(super::key(&new), super::key(&old));
    assert_eq!(env.ctx.memo(&super::key(&new), |m| m.failures), 0);
    let next = error_policy(Arc::new(new), &Error::Task("boom".into()), env.ctx.clone());
    assert_eq!(
        next,
        Action::requeue(backoff(1)),
        "the first failure's backoff"
    );
}

/// The user's own data: a `.npy` (and labels) on the model volume and the model's input shape.
/// The plan records what it was measured on, every shard pod is told the same files and their
/// digest, and bad data is a `CalibrationFailed`
/// condition and event that keeps the working plan.
#[tokio::test]
async fn the_users_calibration_data_is_measured_on_and_handed_to_every_shard() {
    use crate::dataset::{files, Calibration, Source};
    use crate::testkit::models::{input, SIZE};
    let s = SIZE as usize;
    let mut sp = spec();
    sp.input_shape = vec![1, 3, SIZE, SIZE];
    sp.objective = Some(crate::operator::crd::Objective {
        min_accuracy: Some(0.5),
        max_latency_ms: None,
    });
    sp.compression.encodings = vec![WireEncoding::Int8];
    sp.calibration = Some(
        serde_json::from_value(json!({
            "source": {"format": "npy", "data": {"path": "cal/x.npy"}, "labels": {"path": "cal/y.npy"}},
            "fit": 8, "eval": 24
        }))
        .unwrap(),
    );
    let env = setup(sp);
    let dir = env._dir.path().to_path_buf();
    std::fs::create_dir(dir.join("cal")).unwrap();
    let x = input(41, 40);
    let data: Vec<f32> = x.iter().copied().collect();
    files::write_npy(&dir.join("cal/x.npy"), &[40, 3, s, s], &data).unwrap();
    let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
    files::write_labels(&dir.join("cal/y.npy"), &labels).unwrap();
    let want = Calibration::open(
        &Source::Npy {
            data: dir.join("cal/x.npy"),
            labels: Some(dir.join("cal/y.npy")),
        },
        &[1, 3, s, s],
    )
    .unwrap()
    .digest();

    env.reconcile().await.expect("reconcile");
    let plan = env.status().plan.expect("a plan");
    let m = plan
        .measured_on
        .clone()
        .expect("a measured plan records its data");
    assert_eq!(m.data, want, "the data's content id");
    assert_eq!(m.shape, [1, 3, s, s]);
    assert_eq!((m.fit.count, m.eval.count), (8, 24));
    assert!(
        plan.cuts.iter().any(|c| c.kept < c.channels),
        "a pruning plan (the shards must refit): {plan:?}"
    );
    let cm = env.fake.get(&format!("{CONFIGMAPS}/demo-plan")).unwrap();
    assert!(
        cm["data"]["accuracy.key"].as_str().unwrap().contains(&want),
        "the kept measurements are keyed by the data"
    );

    // Every shard pod: the same files (on its /models mount), the digest and the shape.
    let told = |name: &str| {
        let d = env.fake.get(&format!("{DEPLOYMENTS}/{name}")).unwrap();
        let argv = args(&d);
        let at = |flag: &str| argv[argv.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(at("--calibration"), "/models/cal/x.npy");
        assert_eq!(at("--labels"), "/models/cal/y.npy");
        assert_eq!(at("--calibration-digest"), want);
        assert_eq!(at("--input-shape"), format!("1,3,{s},{s}"));
    };
    for name in env.deployments() {
        told(&name);
    }
    // (That the pods rebuild their pruned part from these args, and refuse other data, is
    // tests/args.rs: the args parsed with the binary's clap definition.)

    // Bad data: a False condition and a Warning event naming the file; the plan stays.
    let good = env.ci().spec;
    files::write_npy(
        &dir.join("cal/small.npy"),
        &[40, 3, 8, 8],
        &data[..40 * 3 * 64],
    )
    .unwrap();
    for (path, reason, says) in [
        (
            "cal/small.npy",
            "CalibrationFailed",
            "cal/small.npy has shape [40, 3, 8, 8]",
        ),
        ("cal/none.npy", "CalibrationFailed", "cal/none.npy"),
        ("cal/x.npy", "ChecksumMismatch", "expected sha256 0000"),
    ] {
        env.edit(|s| {
            *s = good.clone();
            let src = s.calibration.as_mut().unwrap().source.as_mut().unwrap();
            src.data.path = Some(path.into());
            if reason == "ChecksumMismatch" {
                src.data.sha256 = Some("0".repeat(64));
            }
        });
        env.fake.clear_calls();
        let err = env.reconcile().await.expect_err(path);
        let st = env.status();
        let (status, got) = condition(&st, status::PLANNED);
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", reason),
            "{path}: {err}"
        );
        let msg = &status::get(&st.conditions, status::PLANNED)
            .unwrap()
            .message;
        assert!(msg.contains(says), "{path}: {msg}");
        assert_eq!(st.plan.as_ref(), Some(&plan), "the working plan stays");
        let ev: Vec<Value> = env
            .fake
            .writes()
            .iter()
            .filter(|c| c.path.starts_with(EVENTS))
            .filter_map(|c| c.body.clone())
            .collect();
        assert_eq!(ev.len(), 1, "{path}: {ev:?}");
        assert_eq!(
            (ev[0]["type"].as_str(), ev[0]["reason"].as_str()),
            (Some("Warning"), Some(reason))
        );
    }
}

/// Shadow sampling: a shadow Deployment serves the unmodified model, the entry is told to
/// sample into it, and a live agreement below the floor at confidence turns the resource
/// Degraded, rejects the plan and searches again at a raised floor.
#[tokio::test]
async fn live_agreement_below_the_floor_degrades_and_searches_again() {
    let mut s = spec();
    s.objective = Some(serde_json::from_value(json!({"minAccuracy": 0.9})).unwrap());
    s.shadow = Some(serde_json::from_value(json!({"fraction": 0.05})).unwrap());
    let env = setup(s);
    env.reconcile().await.unwrap();
    let plan = env.status().plan.unwrap();
    let shadow = "demo-shadow-whole";
    assert!(
        env.deployments().contains(&shadow.to_string()),
        "{:?}",
        env.deployments()
    );
    let d = env.fake.get(&format!("{DEPLOYMENTS}/{shadow}")).unwrap();
    let a = args(&d);
    assert!(
        !a.contains(&"--split-at".to_string()),
        "the whole model: {a:?}"
    );
    assert!(!a.contains(&"--keep".to_string()));
    assert!(env.fake.get(&format!("{SERVICES}/{shadow}")).is_some());
    let entry = env
        .fake
        .get(&format!("{DEPLOYMENTS}/demo-end-{}", plan.id))
        .unwrap();
    let a = args(&entry);
    let at = a
        .iter()
        .position(|x| x == "--shadow-url")
        .expect("the entry samples");
    assert_eq!(a[at + 1], "http://demo-shadow-whole.ns.svc:8080");
    assert_eq!(
        a[at + 2..at + 4],
        ["--shadow-fraction".to_string(), "0.05".to_string()]
    );
    // 30 of 100 shadowed rows agree: far below 0.9 at 95%.
    env.observe(100, secs(ASSUMED_PATH), 0.013);
    env.observation.lock().unwrap().shadow = (30.0, 70.0);
    env.feedback_due();
    env.reconcile().await.unwrap();
    let s = env.status();
    let live = s
        .observation
        .as_ref()
        .unwrap()
        .live_agreement
        .clone()
        .unwrap();
    assert_eq!((live.samples, live.agreement.value), (100, 0.3));
    assert!(live.agreement.high < 0.9);
    let (st, reason) = condition(&s, status::DEGRADED);
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("True", "LiveAgreementBelowFloor")
    );
    assert_eq!(s.rejected_plans[0].id, plan.id);
    assert!(
        s.rejected_plans[0].reason.contains("live agreement 0.3000"),
        "{}",
        s.rejected_plans[0].reason
    );
    let planned = &status::get(&s.conditions, status::PLANNED).unwrap().message;
    assert!(planned.contains("searched again at floor"), "{planned}");
    // A few agreeing rows do not clear it; a spec change (a new search from scratch) does.
    env.edit(|s| s.objective = Some(serde_json::from_value(json!({"minAccuracy": 0.2})).unwrap()));
    env.reconcile().await.unwrap();
    assert_eq!(condition(&env.status(), status::DEGRADED).0, "False");
    // Shadow off: its Deployment and Service are pruned, the entry no longer samples.
    env.edit(|s| s.shadow = None);
    env.reconcile().await.unwrap();
    assert!(!env.deployments().contains(&shadow.to_string()));
    assert!(env.fake.get(&format!("{SERVICES}/{shadow}")).is_none());
}
