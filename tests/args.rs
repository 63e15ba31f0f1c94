//! The args the operator's child builders give every container parse with the binary's own
//! clap definition, and mean what the plan says: a typo, a float or a missing flag fails here,
//! not in a pod in someone's cluster. (The controller's own args, rendered by the real helm, are
//! parsed in tests/chart.rs.)

mod common;

use clap::Parser;
use cnnpc::cli::{Cli, Command, FetchArgs};
use cnnpc::operator::resources::{build_children, BuildContext};
use cnnpc::planner::accuracy::WireEncoding as Encoding;
use common::plans::{self, SHAPES};
use serde_json::json;
use std::collections::BTreeMap;

fn parse(args: &[String]) -> Command {
    Cli::try_parse_from(std::iter::once("cnnpc".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("`cnnpc {}` does not parse: {e}", args.join(" ")))
        .command
}

#[test]
fn shard_args_of_every_plan_shape_parse_and_follow_the_plan() {
    let specs = [
        json!({}),
        json!({"links": {"emulate": true, "endEdgeMbps": 5, "edgeCloudMbps": 2.5},
               "calibration": {"pages": 64},
               "tiers": {"end": {"slowdown": 12.5}}}),
        json!({"model": {"url": "https://models.example/m.onnx", "sha256": "ab".repeat(32)}}),
    ];
    let mut checked = 0;
    for spec in &specs {
        let ci = plans::resource("demo", "ml", spec.clone());
        for shape in SHAPES {
            for (kept, encoding) in [(16, Encoding::F32), (4, Encoding::Int4)] {
                let plan = plans::plan(shape, kept, encoding);
                for log_format in ["text", "json"] {
                    let ctx = BuildContext {
                        shard_image: "cnnpc:test".into(),
                        log_format: log_format.into(),
                    };
                    let ch = build_children(&ci, &plan, BTreeMap::new(), &ctx).unwrap();
                    let computing: Vec<&str> = plan
                        .tiers
                        .iter()
                        .filter(|t| t.segments.is_some())
                        .map(|t| t.tier.as_str())
                        .collect();
                    for (part, d) in ch.deployments.iter().enumerate() {
                        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                        let Command::Shard(a) = parse(pod.containers[0].args.as_ref().unwrap())
                        else {
                            panic!("{shape}: the shard container does not run `cnnpc shard`");
                        };
                        assert_eq!(a.tier, computing[part], "{shape}");
                        assert_eq!(a.plan_id, plan.id);
                        assert_eq!(a.log_format.name(), log_format);
                        assert_eq!(a.listen.port(), 8080);
                        assert_eq!(a.split_at.len(), plan.cuts.len(), "{shape}");
                        assert_eq!(a.part, part);
                        if kept < 16 && !plan.cuts.is_empty() {
                            assert_eq!(a.keep, vec![kept as usize; plan.cuts.len()]);
                            // Rebuilt from what the plan was measured on.
                            let m = plan.measured_on.as_ref().unwrap();
                            assert_eq!(a.data.calibration.as_deref(), Some(m.calibration.as_str()));
                            assert_eq!(a.calibration_digest.as_deref(), Some(m.data.as_str()));
                            assert_eq!((a.fit_first, a.fit_images), (m.fit.first, m.fit.count));
                            assert_eq!(a.model_sha256.as_deref(), Some(m.model.as_str()));
                        } else {
                            assert!(a.keep.is_empty() && a.data.calibration.is_none());
                        }
                        match computing.get(part + 1) {
                            Some(next) => {
                                assert_eq!(
                                    a.next.as_deref(),
                                    Some(
                                        format!("http://demo-{next}-{}.ml.svc:8080", plan.id)
                                            .as_str()
                                    )
                                );
                                assert_eq!(
                                    a.encoding.name(),
                                    serde_json::to_value(encoding).unwrap()
                                );
                                assert_eq!(a.link_mbps.is_some(), ci.spec.links.emulate);
                            }
                            None => assert!(a.next.is_none(), "{shape}: the last tier forwards"),
                        }
                        assert!(a.slowdown >= 1.0);
                        assert!(a.model.starts_with("/models/"));
                        for init in pod.init_containers.iter().flatten() {
                            let Command::Fetch(FetchArgs { url, sha256, out }) =
                                parse(init.args.as_ref().unwrap())
                            else {
                                panic!("the init container does not run `cnnpc fetch`");
                            };
                            assert_eq!(Some(url), ci.spec.model.url.clone());
                            assert_eq!(Some(sha256), ci.spec.model.sha256.clone());
                            assert_eq!(out, a.model);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        checked,
        3 * 2 * 2 * 12,
        "every tier of every shape, spec, compression and log format"
    );
}

#[test]
fn the_emulated_path_of_a_skipped_tier_is_the_two_links_in_series() {
    let ci = plans::resource(
        "demo",
        "ml",
        json!({"links": {"emulate": true, "endEdgeMbps": 20, "edgeCloudMbps": 5}}),
    );
    let ch = plans::children(&ci, &plans::plan("end-cloud", 16, Encoding::Int8));
    let args = ch.deployments[0]
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
        .unwrap();
    let Command::Shard(a) = parse(&args) else {
        panic!()
    };
    assert_eq!(a.link_mbps, Some(4.0), "1 / (1/20 + 1/5)");
}

/// The user's own data, end to end through the seams a cluster uses: the operator plans on a
/// `.npy` and labels (`make_plan`, as the controller calls it), builds the children, and every
/// shard pod's args — parsed by the binary's clap definition, `/models` mapped to the files —
/// rebuild that tier's pruned part exactly as the plan measured it; the same args with other
/// data under the same file name are refused.
#[test]
fn shard_pods_rebuild_their_pruned_part_from_the_users_data() {
    use cnnpc::dataset::{files, Source};
    use cnnpc::operator::planning::{make_plan, PlanRequest};
    use cnnpc::testkit::models::{chain_model_bytes, input, SIZE};
    let s = SIZE as usize;
    let dir = tempfile::tempdir().unwrap();
    let model = chain_model_bytes();
    std::fs::write(dir.path().join("m.onnx"), &model).unwrap();
    std::fs::create_dir(dir.path().join("cal")).unwrap();
    let data: Vec<f32> = input(41, 40).iter().copied().collect();
    let (x, y) = (dir.path().join("cal/x.npy"), dir.path().join("cal/y.npy"));
    files::write_npy(&x, &[40, 3, s, s], &data).unwrap();
    files::write_labels(&y, &(0..40).map(|i| i % 2).collect::<Vec<_>>()).unwrap();
    let ci = plans::resource(
        "demo",
        "ml",
        json!({
            "inputShape": [1, 3, SIZE, SIZE],
            "objective": {"minAccuracy": 0.5},
            "compression": {"encodings": ["int8"], "prune": true},
            "calibration": {"source": {"format": "npy", "data": {"path": "cal/x.npy"},
                                        "labels": {"path": "cal/y.npy"}}, "fit": 8, "eval": 24},
        }),
    );
    let request = |profile| PlanRequest {
        spec: ci.spec.clone(),
        model: std::sync::Arc::new(model.clone()),
        profile,
        lost: vec![],
        assumed: Default::default(),
        known: Default::default(),
        known_key: None,
        calibration: Some(Source::Npy {
            data: x.clone(),
            labels: Some(y.clone()),
        }),
        repeats: 1,
    };
    // The controller's own profile of the model (real cuts and bytes), with times fixed so
    // the best plan splits end → cloud and prunes: measured times on a loaded machine made
    // this cloud-only on CI. A large input (a camera's) makes shipping it whole slow; the end
    // device runs the first segment fast and the rest slowly; the cloud is fast.
    let mut profile = make_plan(request(None)).unwrap().profile;
    profile.input.bytes = 4e6;
    let segments = profile.cuts.len() + 1;
    for (tier, d) in profile.devices.iter_mut() {
        d.run_ms = (0..segments)
            .map(|i| match (tier.as_str(), i) {
                ("end", 0) => 0.1,
                ("end", _) => 50.0,
                ("cloud", _) => 0.5,
                _ => 20.0,
            })
            .collect();
    }
    let out = make_plan(request(Some(profile))).unwrap();
    let plan = out.status;
    assert!(
        plan.cuts.iter().any(|c| c.kept < c.channels),
        "a pruning plan: {plan:?}"
    );
    let ch = plans::children(&ci, &plan);
    assert!(!ch.deployments.is_empty());
    let local = dir.path().to_str().unwrap();
    let shard_args = |d: &k8s_openapi::api::apps::v1::Deployment| {
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let argv: Vec<String> = pod.containers[0]
            .args
            .clone()
            .unwrap()
            .into_iter()
            .map(|a| a.replace("/models/", &format!("{local}/")))
            .collect();
        let Command::Shard(a) = parse(&argv) else {
            panic!("not `cnnpc shard`")
        };
        a
    };
    // What the operator's own planning measured, split as the plan says: the reference.
    let mut parts = Vec::new();
    for d in &ch.deployments {
        let a = shard_args(d);
        assert_eq!(a.data.calibration.as_deref(), Some(x.to_str().unwrap()));
        parts.push(cnnpc::cli::shard_model(&a).unwrap_or_else(|e| panic!("{e:#}")));
    }
    // The reference: the model a live oracle on the same data prunes for this plan (the one
    // the planner measured), split at the plan's cuts.
    let shaped = cnnpc::session::shaped(&model, Some(&[1, 3, s, s])).unwrap();
    let source = Source::Npy {
        data: x.clone(),
        labels: Some(y.clone()),
    };
    let cal = cnnpc::session::open_calibration(&shaped, &source).unwrap();
    let m = plan.measured_on.as_ref().unwrap();
    let sizes = cnnpc::dataset::Sizes {
        fit: m.fit.count as usize,
        eval: m.eval.count as usize,
    };
    let mut oracle =
        cnnpc::session::live_oracle(&shaped, None, &out.profile, &cal, sizes, m.metric).unwrap();
    let points: Vec<usize> = plan.cuts.iter().map(|c| c.point as usize).collect();
    let kept: Vec<u32> = plan.cuts.iter().map(|c| c.kept).collect();
    let channels: Vec<u32> = plan.cuts.iter().map(|c| c.channels).collect();
    let point =
        cnnpc::planner::accuracy::CompressionPoint::new(&points, &kept, &channels, plan.encoding);
    let measured = oracle.pruned_model(&point).unwrap();
    let names: Vec<Vec<String>> = plan.cuts.iter().map(|c| c.tensors.clone()).collect();
    let want = cnnpc::onnx::split(&measured, &names).unwrap();
    assert_eq!(parts.len(), want.len());
    for (k, (got, want)) in parts.iter().zip(&want).enumerate() {
        assert!(got == want, "part {k} is not the model the plan measured");
    }
    // Other data under the same name: the digest no longer matches.
    let other: Vec<f32> = input(42, 40).iter().copied().collect();
    files::write_npy(&x, &[40, 3, s, s], &other).unwrap();
    let e = cnnpc::cli::shard_model(&shard_args(&ch.deployments[0])).unwrap_err();
    assert!(
        format!("{e:#}").contains("but the plan was measured on"),
        "{e:#}"
    );
}

#[test]
fn the_profile_and_the_demo_idle_before_each_round_unless_told_not_to() {
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    let default_ms = cnnpc::onnx::profile::ROUND_IDLE.as_millis() as u64;
    assert!(default_ms > 0);
    match parse(&words("profile --model m.onnx --out p.yaml")) {
        Command::Profile(a) => assert_eq!(a.idle.round_idle_ms, default_ms),
        other => panic!("{other:?}"),
    }
    match parse(&words(
        "profile --model m.onnx --out p.yaml --round-idle-ms 0",
    )) {
        Command::Profile(a) => assert_eq!(a.idle.round_idle_ms, 0),
        other => panic!("{other:?}"),
    }
    match parse(&words("demo --round-idle-ms 40")) {
        Command::Demo(a) => assert_eq!(a.idle.round_idle_ms, 40),
        other => panic!("{other:?}"),
    }
    match parse(&words("demo")) {
        Command::Demo(a) => assert_eq!(a.idle.round_idle_ms, default_ms),
        other => panic!("{other:?}"),
    }
    let bad = Cli::try_parse_from(["cnnpc", "demo", "--round-idle-ms", "-5"]);
    assert!(bad.is_err(), "a negative pause must not parse");
}

#[test]
fn the_demo_profile_window_defaults_to_the_demo_s_own_and_a_bad_one_is_refused_at_once() {
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    match parse(&words("demo")) {
        Command::Demo(a) => assert_eq!(a.window_seconds, cnnpc::demo::PROFILE_WINDOW_SECONDS),
        other => panic!("{other:?}"),
    }
    match parse(&words("demo --window-seconds 12")) {
        Command::Demo(a) => assert_eq!(a.window_seconds, 12.0),
        other => panic!("{other:?}"),
    }
    // Refused before anything is read or measured: the model path does not exist either.
    let opts = cnnpc::demo::DemoOptions {
        model: "no/such/model.onnx".into(),
        window_seconds: f64::NAN,
        ..Default::default()
    };
    let err = cnnpc::demo::run(&opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--window-seconds must be"), "{err}");
}

#[test]
fn every_bench_subcommand_says_what_it_measures_in_its_own_words() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let bench = cli.find_subcommand("bench").expect("cnnpc bench");
    let about = |name: &str| -> String {
        let sub = bench
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("cnnpc bench {name}"));
        sub.get_about().map(|a| a.to_string()).unwrap_or_default()
    };
    for name in ["plan", "runtime", "oip", "compress"] {
        assert!(
            !about(name).is_empty(),
            "`cnnpc bench {name}` has no help line"
        );
    }
    // Once the compress sweep's description sat on `oip`, and `compress` had none.
    assert!(
        about("compress").starts_with("Bytes on the wire"),
        "{}",
        about("compress")
    );
    assert!(
        about("oip").starts_with("The Open Inference Protocol"),
        "{}",
        about("oip")
    );
}
