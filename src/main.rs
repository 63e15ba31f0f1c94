use clap::Parser;
use cnnpc::cli::{self, Cli, Command};

fn main() {
    let args = Cli::parse();
    let result = match &args.command {
        Command::Plan(a) => cli::plan(a),
        Command::Bench(b) => cli::bench(b),
        Command::Cuts { model, output } => cli::cuts(model, *output),
        Command::Split { model, cuts, out } => cli::split(model, cuts, out),
    };
    if let Err(e) = result {
        // One line, the whole chain of causes: "cannot read profile x.yaml: No such file".
        eprintln!("cnnpc: error: {e:#}");
        std::process::exit(2);
    }
}
