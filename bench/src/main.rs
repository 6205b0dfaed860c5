//! `mops-bench`: runs the benchmarks of TARGETS.md and rewrites their section of BENCHMARKS.md.
//! Run it through `scripts/bench`, which starts the backends and builds in release mode.

#![allow(unused_crate_dependencies, reason = "the dependencies are the library's")]

use clap::Parser;

/// mimalloc reuses freed memory for the next large buffer instead of mapping and zeroing fresh
/// pages each time, which glibc's malloc does for every multi-megabyte Flight message.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = modelops_bench::Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(modelops_bench::run(args))
}
