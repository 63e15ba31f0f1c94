//! `cnnpc fetch`: a model over HTTP(S), checked against its SHA-256 (a shard's init container).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub sha256: String,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &FetchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let n = runtime.block_on(crate::operator::fetch::fetch_to_file(
        &a.url, &a.sha256, &a.out,
    ))?;
    eprintln!("wrote {} ({n} bytes, sha256 checked)", a.out.display());
    Ok(())
}
