//! `cnnpc controller`: the metrics/health server, leader election, then the controller.

use super::controller::{self, Context, Observer};
use super::fetch::ModelStore;
use super::metrics::{self, Health, Metrics};
use super::resources::BuildContext;
use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What `cnnpc controller` was asked to do (see its `--help`).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub namespace: Option<String>,
    pub shard_image: String,
    pub listen: std::net::SocketAddr,
    /// Empty: no leader election.
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub model_dir: std::path::PathBuf,
    pub cache_dir: std::path::PathBuf,
    pub profile_repeats: usize,
    /// `text` or `json`, passed on to the shards.
    pub log_format: String,
}

pub fn controller(a: &ControllerConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(a))
}

async fn run(a: &ControllerConfig) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let metrics = Metrics::default();
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let app = metrics::router(metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    let mut ctx = Context::new(
        client.clone(),
        metrics.clone(),
        BuildContext {
            shard_image: a.shard_image.clone(),
            log_format: a.log_format.clone(),
        },
        ModelStore {
            cache_dir: a.cache_dir.clone(),
            model_dir: a.model_dir.clone(),
            timeout: Duration::from_secs(300),
        },
        Observer::Live,
    );
    ctx.repeats = a.profile_repeats.max(1);
    let ctx = Arc::new(ctx);
    health.ready.store(true, Ordering::Relaxed);

    if a.lease_name.is_empty() {
        tracing::info!("no leader election (--lease-name \"\")");
        return Ok(controller::run(ctx, a.namespace.clone()).await?);
    }
    let lease_ns = a
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let me = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("cnnpc-controller-{}", std::process::id()));
    let leader = Arc::new(AtomicBool::new(false));
    let leases: Api<Lease> = Api::namespaced(client, &lease_ns);
    let mut lost = tokio::spawn(super::lease::hold(
        leases,
        a.lease_name.clone(),
        me.clone(),
        15,
        leader.clone(),
    ));
    tracing::info!(lease = %a.lease_name, namespace = %lease_ns, identity = %me, "waiting for the leader lease");
    while !leader.load(Ordering::SeqCst) {
        tokio::select! {
            r = &mut lost => anyhow::bail!("leader election stopped: {}", r.unwrap_or_else(|e| e.to_string())),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    metrics.leader.set(1);
    tracing::info!("leader: reconciling");
    tokio::select! {
        r = controller::run(ctx, a.namespace.clone()) => Ok(r?),
        r = &mut lost => {
            metrics.leader.set(0);
            anyhow::bail!("{}", r.unwrap_or_else(|e| e.to_string()))
        }
    }
}
