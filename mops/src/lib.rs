//! The `mops` binary as a library: its command line ([`Cli`]) and what each command does.
//!
//! `mops serve` runs the result services (all of them on one port by default, or one of them as
//! in Kubernetes); `mops demo` runs a study through them end to end; the other commands are
//! clients of a running server.

// The binary's global allocator; declared in `main.rs`, a dependency of the package.
use mimalloc as _;

pub mod attribution;
pub mod client;
pub mod demo;
pub mod jobs;
pub mod limits;
pub mod output;
pub mod query;
pub mod results;
pub mod serve;
pub mod stores;

use clap::{Parser, Subcommand};
use modelops_runtime::config::{ClientConfig, LoggingConfig};

/// ModelOps result services: job registry, attribution, indexing and queries over simulation
/// results, and their command-line client.
#[derive(Debug, Parser)]
#[command(name = "mops", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Logging and tracing.
    #[command(flatten)]
    pub logging: LoggingConfig,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `mops`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the result services (all on one port, or one of them).
    Serve(Box<serve::ServeArgs>),
    /// Which results a job computed or reused, and who owns a result.
    Attribution {
        /// The server to talk to.
        #[command(flatten)]
        client: ClientConfig,
        /// What to do.
        #[command(subcommand)]
        command: attribution::AttributionCommand,
    },
    /// A job's loss table.
    Results {
        /// The server to talk to.
        #[command(flatten)]
        client: ClientConfig,
        /// What to do.
        #[command(subcommand)]
        command: results::ResultsCommand,
    },
    /// Run a small stochastic SEIR calibration study through the services, end to end.
    Demo(demo::DemoArgs),
    /// Where the server keeps job specs, provenance records and loss tables (no credentials).
    Stores {
        /// The server to talk to.
        #[command(flatten)]
        client: ClientConfig,
        /// Output: a table (table), one JSON object (json) or CSV with a header (csv).
        #[arg(long, value_enum, default_value_t = output::Format::Table)]
        format: output::Format,
    },
    /// Submit, inspect, list, watch, cancel and update jobs.
    Jobs {
        /// The server to talk to.
        #[command(flatten)]
        client: ClientConfig,
        /// What to do.
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
}

/// Parses `mops serve` arguments as the command line would (for tests, benchmarks and the demo).
pub fn serve_args(extra: &[&str]) -> anyhow::Result<serve::ServeArgs> {
    use clap::Parser as _;
    let argv = ["mops", "serve"].into_iter().chain(extra.iter().copied());
    match Cli::try_parse_from(argv)?.command {
        Command::Serve(args) => Ok(*args),
        _ => unreachable!("argv starts with `serve`"),
    }
}

/// Runs a parsed command line. Telemetry is set up first; errors come back for `main` to print.
pub async fn run(mut cli: Cli) -> anyhow::Result<()> {
    // The demo prints its own story; the in-process services only speak up about problems.
    if matches!(cli.command, Command::Demo(_)) && cli.logging.log_filter.is_none() && std::env::var_os("RUST_LOG").is_none() {
        cli.logging.log_filter = Some("warn".to_owned());
    }
    let _telemetry = modelops_runtime::telemetry::init(&cli.logging)?;
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Jobs { client, command } => jobs::run(command, &client).await,
        Command::Attribution { client, command } => attribution::run(command, &client).await,
        Command::Results { client, command } => results::run(command, &client).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Stores { client, format } => stores::run(&client, format).await,
    }
}
