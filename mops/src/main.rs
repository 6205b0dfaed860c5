//! `mops`: the ModelOps result services and their client. See `mops --help`.

#![allow(unused_crate_dependencies, reason = "the dependencies are the library's")]

use clap::Parser;

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
