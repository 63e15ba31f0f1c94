use clap::Parser;
use cnnpc::cli::{self, Cli, Command};
use cnnpc::output::{self, LogFormat};

// Frames of a few MB come and go on every request; glibc's malloc maps and unmaps each one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Cli::parse();
    // Logs go to stderr; RUST_LOG overrides the default level. The demo runs its shard servers
    // in-process: their per-request lines would bury its progress and table. The benchmarks
    // too, and their load test provokes 503s on purpose.
    let (level, format) = match &args.command {
        Command::Demo(_) => ("warn", LogFormat::Text),
        Command::Bench(_) => ("error", LogFormat::Text),
        Command::Controller(a) => ("info", a.log_format),
        Command::Shard(a) => ("info", a.log_format),
        _ => ("info", LogFormat::Text),
    };
    output::init_logging(level, format);
    let result = match &args.command {
        Command::Plan(a) => cli::plan(a),
        Command::Bench(b) => cli::bench(b),
        Command::Demo(a) => cli::demo(a),
        Command::Shard(a) => cli::shard(a),
        Command::Crd { reference } => cli::crd(*reference),
        Command::Fetch { url, sha256, out } => cli::fetch(url, sha256, out),
        Command::Controller(a) => cli::controller(a),
        Command::Cuts { model, output } => cli::cuts(model, *output),
        Command::Split {
            model,
            cuts,
            plan,
            fit_images,
            out,
        } => match plan {
            Some(plan) => cli::split_plan(model, plan, *fit_images, out),
            None => cli::split(model, cuts, out),
        },
        Command::Profile {
            model,
            out,
            name,
            cuts,
            repeats,
            end_slowdown,
            edge_slowdown,
            cloud_slowdown,
        } => cli::profile(cli::ProfileArgs {
            model,
            out,
            name: name.as_deref(),
            cuts,
            repeats: *repeats,
            slowdowns: [*end_slowdown, *edge_slowdown, *cloud_slowdown],
        }),
    };
    if let Err(e) = result {
        // `cnnpc plan | head`: the reader has all it wanted.
        if output::is_stdout_closed(&e) {
            return;
        }
        // One line, the whole chain of causes: "cannot read profile x.yaml: No such file".
        eprintln!("cnnpc: error: {e:#}");
        std::process::exit(2);
    }
}
