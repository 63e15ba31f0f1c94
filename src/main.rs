use clap::Parser;
use cnnpc::cli::Cli;
use cnnpc::output;

// Frames of a few MB come and go on every request; glibc's malloc maps and unmaps each one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Cli::parse();
    let (level, format) = args.command.logging();
    output::init_logging(level, format);
    if let Err(e) = args.command.run() {
        // `cnnpc plan | head`: the reader has all it wanted.
        if output::is_stdout_closed(&e) {
            return;
        }
        // One line, the whole chain of causes: "cannot read profile x.yaml: No such file".
        eprintln!("cnnpc: error: {e:#}");
        std::process::exit(2);
    }
}
