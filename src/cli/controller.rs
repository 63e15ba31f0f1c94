//! `cnnpc controller`: the operator.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::output::LogFormat;

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Shard image when a resource names none.
    #[arg(long, default_value = "ghcr.io/cnnpc/cnnpc:latest")]
    pub shard_image: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Leader-election Lease name ("" = no leader election, for a single replica).
    #[arg(long, default_value = "cnnpc-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Where `model.path` files are read (the controller's mount of the model volume).
    #[arg(long, default_value = "/models")]
    pub model_dir: PathBuf,
    /// Cache of downloaded models (by SHA-256).
    #[arg(long, default_value = "/tmp/cnnpc-models")]
    pub cache_dir: PathBuf,
    /// Runs per segment when the controller profiles a model.
    #[arg(long, default_value_t = 5)]
    pub profile_repeats: usize,
    /// Log lines as text or JSON; the shard pods it creates log the same way.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn run(a: &ControllerArgs) -> Result<()> {
    crate::operator::run::controller(&crate::operator::run::ControllerConfig {
        namespace: a.namespace.clone(),
        shard_image: a.shard_image.clone(),
        listen: a.listen,
        lease_name: a.lease_name.clone(),
        lease_namespace: a.lease_namespace.clone(),
        model_dir: a.model_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        profile_repeats: a.profile_repeats,
        log_format: a.log_format.name().to_string(),
    })
}
