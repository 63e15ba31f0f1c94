//! `cnnpc cuts`: a model's candidate cuts.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::{read_model, Output};
use crate::output;

#[derive(Args, Debug)]
pub struct CutsArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub shape: super::data::ShapeArgs,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(a: &CutsArgs) -> Result<()> {
    let bytes = a.shape.apply(&read_model(&a.model)?)?;
    let cuts =
        crate::onnx::list_cuts(&bytes).with_context(|| format!("in {}", a.model.display()))?;
    if cuts.is_empty() {
        anyhow::bail!(
            "{} has no candidate cut: no 4-D activation with known channels crosses between its input and output (is it a CNN?)",
            a.model.display()
        );
    }
    match a.output {
        Output::Json => output::println(&serde_json::to_string_pretty(&cuts)?),
        Output::Table => {
            let mut s = format!("{:>5} {:>9}  tensors\n", "index", "channels");
            for c in &cuts {
                let tensors: Vec<String> = c
                    .tensors
                    .iter()
                    .map(|t| {
                        format!(
                            "{} {}",
                            t.name,
                            serde_json::to_string(&t.shape).unwrap_or_default()
                        )
                    })
                    .collect();
                s.push_str(&format!(
                    "{:>5} {:>9}  {}\n",
                    c.index,
                    c.channels,
                    tensors.join(" + ")
                ));
            }
            output::print(&s)
        }
    }
}
