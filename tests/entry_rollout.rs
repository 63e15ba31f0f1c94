//! A client that keeps calling the entry through a replan sees no error. Real shard servers on
//! loopback for two plans (end → cloud, then cloud only), the entry Service and the shard pods
//! exactly as the operator builds them, and a small TCP proxy standing in for kube-proxy: each
//! new connection goes to a pod the entry Service's selector matches. The controller's switch
//! is the selector change; the old plan's pods then get SIGTERM's lame duck (not ready,
//! `Connection: close`) and stop.

mod common;

use cnnpc::planner::accuracy::WireEncoding as Encoding;
use cnnpc::runtime::client::{self, Client, Payload};
use cnnpc::runtime::server::{self, OipModel, ShardConfig, ShardModel, Tensor};
use common::plans::{self, plan};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// `x·a + b`: end (2x) then cloud (x + 1) computes what cloud-only (2x + 1) does.
struct Affine(f32, f32);
impl ShardModel for Affine {
    fn run(&self, x: Tensor) -> Result<Tensor, String> {
        Ok(Tensor {
            data: x.data.iter().map(|v| v * self.0 + self.1).collect(),
            shape: x.shape,
        })
    }
    fn name(&self) -> &str {
        "affine"
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(tier: &str, plan_id: &str, model: Affine, next: Option<SocketAddr>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ShardConfig {
        tier: tier.into(),
        model_name: "demo".into(),
        next: next.map(|a| format!("http://{a}").parse().unwrap()),
        plan_id: plan_id.into(),
        oip: OipModel {
            name: "demo".into(),
            ..OipModel::default()
        },
        drain: Duration::from_millis(600),
        forward_timeout: Duration::from_secs(5),
        ..ShardConfig::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::serve(cfg, Arc::new(model), listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// A pod: the labels its Deployment's template gives it, and where it listens.
struct Endpoint {
    labels: BTreeMap<String, String>,
    addr: SocketAddr,
}

/// kube-proxy in miniature: a new connection goes to the first endpoint the selector matches.
async fn proxy(
    selector: Arc<Mutex<BTreeMap<String, String>>>,
    endpoints: Arc<Vec<Endpoint>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let sel = selector.lock().unwrap().clone();
            let target = endpoints
                .iter()
                .find(|e| sel.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                .map(|e| e.addr);
            tokio::spawn(async move {
                let Some(target) = target else { return };
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_calling_the_entry_through_a_replan_sees_no_error() {
    let ci = plans::demo();
    let (old, new) = (
        plan("end-cloud", 16, Encoding::F32),
        plan("cloud-only", 16, Encoding::F32),
    );
    let old_children = plans::children(&ci, &old);
    let new_children = plans::children(&ci, &new);
    // The entry keeps its name; only the plan it selects changes.
    assert_eq!(
        old_children.entry.metadata.name,
        new_children.entry.metadata.name
    );
    let selector_of =
        |c: &cnnpc::operator::resources::Children| c.entry.spec.clone().unwrap().selector.unwrap();

    let old_cloud = start("cloud", &old.id, Affine(1.0, 1.0), None).await;
    let old_end = start("end", &old.id, Affine(2.0, 0.0), Some(old_cloud.addr)).await;
    let new_cloud = start("cloud", &new.id, Affine(2.0, 1.0), None).await;
    let addr_of = |name: &str| -> SocketAddr {
        match name {
            n if n == format!("demo-end-{}", old.id) => old_end.addr,
            n if n == format!("demo-cloud-{}", old.id) => old_cloud.addr,
            n if n == format!("demo-cloud-{}", new.id) => new_cloud.addr,
            n => panic!("no server for {n}"),
        }
    };
    let endpoints: Vec<Endpoint> = [&old_children, &new_children]
        .iter()
        .flat_map(|c| c.deployments.iter())
        .map(|d| Endpoint {
            labels: d
                .spec
                .clone()
                .unwrap()
                .template
                .metadata
                .unwrap()
                .labels
                .unwrap(),
            addr: addr_of(d.metadata.name.as_deref().unwrap()),
        })
        .collect();
    // Only the first tier of a plan is an entry endpoint.
    let entry_pods = |c: &cnnpc::operator::resources::Children| {
        let sel = selector_of(c);
        endpoints
            .iter()
            .filter(|e| sel.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .map(|e| e.addr)
            .collect::<Vec<_>>()
    };
    assert_eq!(entry_pods(&old_children), [old_end.addr]);
    assert_eq!(entry_pods(&new_children), [new_cloud.addr]);

    let selector = Arc::new(Mutex::new(selector_of(&old_children)));
    let entry = proxy(selector.clone(), Arc::new(endpoints)).await;
    let client = Client::connect(&format!("http://{entry}"), None)
        .await
        .unwrap();
    assert_eq!(client.model(), "demo");
    let payload = Payload::Tensor {
        shape: vec![1, 8],
        data: (0..8).map(|i| i as f32).collect::<Vec<_>>().into(),
    };
    let requests = 600;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = done.clone();
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            client::load(&client, &[payload], requests, 3, 2, move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
            .unwrap()
        })
    };
    // Beside the load, a client at a steady rate (one request every 10 ms), timed, so the
    // latency during the switch can be told apart from before it.
    let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (client, stop) = (client.clone(), stop_probe.clone());
        tokio::spawn(async move {
            let payload = Payload::Tensor {
                shape: vec![1, 8],
                data: vec![0.5f32; 8].into(),
            };
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut seen: Vec<(Instant, f64, bool)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                let t = Instant::now();
                let ok = client.infer(&payload, 2).await.is_ok();
                seen.push((t, t.elapsed().as_secs_f64() * 1e3, ok));
            }
            seen
        })
    };
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(std::sync::atomic::Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // A third of the way in: the new plan is ready, so the controller moves the entry.
    wait_for(requests / 3).await;
    let switched_at = Instant::now();
    *selector.lock().unwrap() = selector_of(&new_children);
    // Then it deletes the old plan's Deployments: their pods get SIGTERM and drain.
    wait_for(requests / 2).await;
    let mut stopped = Vec::new();
    for mut s in [old_end, old_cloud] {
        let _ = s.stop.take().unwrap().send(());
        stopped.push(s.task);
    }
    for t in stopped {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the old plan's shards stop after their drain")
            .unwrap();
    }
    let retired_at = Instant::now();
    let report = load.await.unwrap();
    stop_probe.store(true, std::sync::atomic::Ordering::SeqCst);
    let probe = probe.await.unwrap();
    let failed = probe.iter().filter(|p| !p.2).count();
    let during: Vec<f64> = probe
        .iter()
        .filter(|p| p.0 >= switched_at && p.0 <= retired_at)
        .map(|p| p.1)
        .collect();
    let before: Vec<f64> = probe
        .iter()
        .filter(|p| p.0 < switched_at)
        .map(|p| p.1)
        .collect();
    let stats = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (
            v.len(),
            client::quantile(&v, 0.5),
            client::quantile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    eprintln!(
        "steady client: {} requests, {failed} failed; before the switch (n, p50, p99, max ms) {:?}; \
         from the switch to the old plan's end {:?}; load: {} ok, {} errors",
        probe.len(),
        stats(&before),
        stats(&during),
        report.ok,
        report.errors
    );
    assert_eq!(
        failed, 0,
        "the steady client saw failures through the switch"
    );
    assert!(
        !during.is_empty(),
        "the steady client ran through the switch"
    );
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.ok, requests);
    // Both plans answered: the switch happened under load.
    assert!(
        report.plans.get(&old.id).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    assert!(
        report.plans.get(&new.id).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    // And after it, only the new plan answers.
    let after = client
        .infer(
            &Payload::Tensor {
                shape: vec![1, 2],
                data: vec![1.0, 3.0].into(),
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(after.plan_id, new.id);
    assert_eq!(
        after.compute_ms.len(),
        1,
        "cloud only: {:?}",
        after.compute_ms
    );
    drop(new_cloud);
}
