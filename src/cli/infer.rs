//! `cnnpc infer`: call an entry with the Open Inference Protocol, once per input or as a
//! bounded load check.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;

use super::Output;
use crate::output;
use crate::runtime::client::{self, Answer, Client, LoadReport, Payload};

#[derive(Args, Debug)]
pub struct InferArgs {
    /// The entry: http://host:port (`status.url`, or a `kubectl port-forward` of it), or
    /// http://host:port/v2/models/NAME.
    #[arg(long)]
    pub url: String,
    /// The model's name (default: the one the entry serves).
    #[arg(long)]
    pub model: Option<String>,
    /// PNG or JPEG files, preprocessed by the entry as the resource declares.
    #[arg(long, num_args = 1.., required_unless_present = "npy", conflicts_with = "npy")]
    pub image: Vec<PathBuf>,
    /// Preprocessed float32 inputs [N, ...] (.npy), sent as binary tensors.
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Classes shown per answer.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// A load check: send this many requests (cycling through the inputs).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Requests in flight at once during a load check.
    #[arg(long, default_value_t = 1, requires = "requests")]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(a: &InferArgs) -> Result<()> {
    if !(1..=1000).contains(&a.top_k) {
        bail!("--top-k must be 1..=1000");
    }
    if a.requests == Some(0) || a.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    super::runtime()?.block_on(async {
        let client = Client::connect(&a.url, a.model.as_deref()).await?;
        let (names, payloads) = payloads(a, &client).await?;
        match a.requests {
            None => {
                let mut answers = Vec::new();
                for (name, p) in names.iter().zip(&payloads) {
                    let answer = client
                        .infer(p, a.top_k)
                        .await
                        .with_context(|| name.clone())?;
                    answers.push((name.clone(), answer));
                }
                print_answers(a.output, client.model(), &answers)
            }
            Some(n) => {
                let bar = indicatif::ProgressBar::new(n as u64).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {pos}/{len} requests [{bar:30}] {per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let b = bar.clone();
                let report =
                    client::load(&client, &payloads, n, a.concurrency, a.top_k, move |_| {
                        b.inc(1)
                    })
                    .await?;
                bar.finish_and_clear();
                print_load(a.output, client.model(), &report)?;
                if report.ok == 0 {
                    bail!("no request was answered");
                }
                Ok(())
            }
        }
    })
}

async fn payloads(a: &InferArgs, client: &Client) -> Result<(Vec<String>, Vec<Payload>)> {
    if let Some(npy) = &a.npy {
        let meta = client.metadata().await?;
        let shape: Vec<usize> = meta["inputs"][0]["shape"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|v| v.as_i64().unwrap_or(-1).max(1) as usize)
                    .collect()
            })
            .unwrap_or_default();
        if shape.is_empty() {
            bail!("the model's metadata gives no input shape");
        }
        let loaded = crate::dataset::files::load_npy(npy, None, &shape)?;
        let item: usize = shape[1..].iter().product();
        let mut one = shape.clone();
        one[0] = 1;
        let n = loaded.items.shape[0];
        let names = (0..n).map(|i| format!("{}[{i}]", npy.display())).collect();
        let payloads = loaded
            .items
            .data
            .chunks_exact(item)
            .map(|c| Payload::Tensor {
                shape: one.clone(),
                data: c.into(),
            })
            .collect();
        return Ok((names, payloads));
    }
    let mut names = Vec::new();
    let mut payloads = Vec::new();
    for path in &a.image {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let content_type = match image::guess_format(&bytes) {
            Ok(image::ImageFormat::Png) => "image/png",
            Ok(image::ImageFormat::Jpeg) => "image/jpeg",
            _ => bail!("{} is not a PNG or JPEG file", path.display()),
        };
        names.push(path.display().to_string());
        payloads.push(Payload::Image {
            bytes: Bytes::from(bytes),
            content_type: content_type.into(),
        });
    }
    Ok((names, payloads))
}

fn class_text(c: &client::Class) -> String {
    match &c.label {
        Some(l) => format!("{} {l} ({:.3})", c.index, c.score),
        None => format!("{} ({:.3})", c.index, c.score),
    }
}

fn print_answers(out: Output, model: &str, answers: &[(String, Answer)]) -> Result<()> {
    match out {
        Output::Json => {
            let rows: Vec<serde_json::Value> = answers
                .iter()
                .map(|(input, a)| {
                    serde_json::json!({
                        "input": input,
                        "top_k": a.top_k,
                        "latency_ms": a.latency_ms,
                        "plan_id": a.plan_id,
                        "compute_ms": a.compute_ms.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    })
                })
                .collect();
            output::println(&serde_json::to_string_pretty(
                &serde_json::json!({ "model": model, "answers": rows }),
            )?)
        }
        Output::Table => {
            let mut s = format!(
                "{:<32} {:<28} {:>10}  {:<14} top-k\n",
                "input", "top-1", "latency", "plan"
            );
            for (input, a) in answers {
                let top1 = a.top_k.first().map(class_text).unwrap_or_default();
                let rest: Vec<String> = a.top_k.iter().skip(1).map(class_text).collect();
                s += &format!(
                    "{:<32} {:<28} {:>7.1} ms  {:<14} {}\n",
                    input,
                    top1,
                    a.latency_ms,
                    a.plan_id,
                    rest.join(", ")
                );
            }
            output::print(&s)
        }
    }
}

fn print_load(out: Output, model: &str, r: &LoadReport) -> Result<()> {
    match out {
        Output::Json => output::println(&serde_json::to_string_pretty(
            &serde_json::json!({ "model": model, "load": r }),
        )?),
        Output::Table => {
            let mut s = format!(
                "{} requests to {model} at concurrency {}: {} answered, {} errors in {:.1} s ({:.1}/s)\n\
                 latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, mean {:.1} ms\n",
                r.requests,
                r.concurrency,
                r.ok,
                r.errors,
                r.wall_s,
                r.ok as f64 / r.wall_s.max(1e-9),
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.mean_ms
            );
            for (plan, n) in &r.plans {
                s += &format!("plan {plan}: {n} answers\n");
            }
            for (e, n) in &r.error_kinds {
                s += &format!("error ({n}x): {e}\n");
            }
            output::print(&s)
        }
    }
}
