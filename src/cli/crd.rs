//! `cnnpc crd`: the CRD YAML (`crds/`) or its field reference (`docs/crd-reference.md`).

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Print the field reference (Markdown, `docs/crd-reference.md`) instead.
    #[arg(long)]
    pub reference: bool,
}

pub fn run(a: &CrdArgs) -> Result<()> {
    crate::output::print(&if a.reference {
        crate::operator::crd_reference::document()
    } else {
        crate::operator::crd::crd_yaml()
    })
}
