use clap::Parser;
use cnnpc::cli::Cli;
use cnnpc::output;

// Frames of a few MB come and go on every request; glibc's malloc maps and unmaps each one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v3 `mimalloc.h`; the sys crate names
/// no constant for it): ms before freed memory is returned to the OS (1000 in the mimalloc
/// this builds, as `mi_option_get` reports).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // A shard idles between requests (an emulated slow device sleeps for most of each, and the
    // demo's plans take turns), and with a 1 s delay every request then faulted its frame
    // buffers back in (~0.5 ms per MB, seen in the demo's codec times). Keep freed memory for
    // 10 s: a serving process keeps its working set, an idle one still returns it.
    // SAFETY: sets a plain integer option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
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
