//! Writes `manifests/` — the plain-YAML install for `kubectl apply -f manifests/` — from
//! charts/cnnpc with default values (release `cnnpc` in namespace `cnnpc-system`), with the
//! chart's CRDs. `tests/manifests.rs` fails when the committed files differ from this output.
//!
//!   cargo run --example render_chart            # write manifests/
//!   cargo run --example render_chart -- --check # exit 1 if manifests/ is stale
use anyhow::{bail, Result};
use std::path::Path;

fn main() -> Result<()> {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = cnnpc::chart::Chart::load(root.join("charts/cnnpc"))?;
    let files = cnnpc::chart::plain_manifests(&chart)?;
    let dir = root.join("manifests");
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
            if !check {
                std::fs::write(&path, text)?;
                println!("wrote {}", path.display());
            }
        }
    }
    // Generated files the chart no longer produces.
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") && !files.iter().any(|(n, _)| *n == name) {
            stale.push(name.clone());
            if !check {
                std::fs::remove_file(dir.join(&name))?;
                println!("removed {name}");
            }
        }
    }
    if check && !stale.is_empty() {
        bail!(
            "manifests/ is stale ({}): run `make manifests`",
            stale.join(", ")
        );
    }
    if stale.is_empty() {
        println!("manifests/ is up to date");
    }
    Ok(())
}
