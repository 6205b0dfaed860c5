//! `mops`: the ModelOps result services and their client. See `mops --help`.

#![allow(unused_crate_dependencies, reason = "the dependencies are the library's")]

use clap::Parser;

/// mimalloc reuses freed memory for the next large buffer instead of mapping and zeroing fresh
/// pages each time, which glibc's malloc does for every multi-megabyte Flight message.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = mops::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mops::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
