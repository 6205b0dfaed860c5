//! `mops results`: building a job's loss table (`index`), and reading tables through the query
//! service (`losses`, `best`, `query`, `compare`, `sql`, `jobs`).

use modelops_core::loss_table::LOSSES_FILE;
use modelops_proto::indexer::v1 as pb;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_runtime::config::ClientConfig;

use modelops_query::command::Command;

use crate::client::{self, status_error};
use crate::query::{self, OutputArgs, QueryArgs, Question};

/// `mops results` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ResultsCommand {
    /// Build (or rebuild) a job's loss table: results/{job_id}/losses.parquet.
    Index {
        /// The job id.
        job_id: String,
        /// Rebuild even if the inputs are unchanged, and index jobs that have not finished.
        #[arg(long)]
        force: bool,
        /// Wait for the table, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// A job's whole loss table.
    Losses {
        /// The job id.
        job_id: String,
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The best parameter sets of a target across every indexed job.
    Best {
        /// The target (entrypoint, or the name after its last `:`).
        #[arg(long)]
        target: String,
        /// How many.
        #[arg(short = 'n', long = "n-best", default_value_t = 10)]
        n: usize,
        /// Only jobs of this bundle (full ref, digest hex, or ≥ 12 hex digits of it).
        #[arg(long, value_parser = query::parse_bundle)]
        bundle: Option<String>,
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Rows of many jobs' tables, filtered by job, bundle, target, status, loss and time.
    Query {
        /// Filters.
        #[command(flatten)]
        filters: QueryArgs,
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Two jobs' losses for the parameter sets they share (loss_a, loss_b, delta).
    Compare {
        /// The first job.
        job_a: String,
        /// The second job.
        job_b: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// SQL over the tables `losses` (every indexed job) and `jobs`.
    Sql {
        /// The query, e.g. "SELECT target, min(loss) FROM losses GROUP BY target".
        query: String,
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Every indexed job: bundle, targets, row counts, loss range.
    Jobs {
        /// Output.
        #[command(flatten)]
        output: OutputArgs,
    },
}

fn phase(status: &pb::IndexStatus) -> &'static str {
    match pb::IndexPhase::try_from(status.phase) {
        Ok(pb::IndexPhase::NotIndexed) => "not indexed",
        Ok(pb::IndexPhase::Queued) => "queued",
        Ok(pb::IndexPhase::Running) => "running",
        Ok(pb::IndexPhase::Done) => "done",
        Ok(pb::IndexPhase::Failed) => "failed",
        _ => "unknown",
    }
}

fn print(status: &pb::IndexStatus) {
    let counts = status.counts.unwrap_or_default();
    println!("Job:      {}", status.job_id);
    println!("Index:    {}{}", phase(status), if status.unchanged { " (inputs unchanged, table kept)" } else { "" });
    println!("Rows:     {} ({} ok, {} missing, {} failed)", counts.total, counts.ok, counts.missing, counts.failed);
    println!("Table:    {}{LOSSES_FILE}", status.results_path);
    if let Some(error) = &status.error {
        println!("Error:    {error}");
    }
}

/// Runs a `mops results` command.
pub async fn run(command: ResultsCommand, config: &ClientConfig) -> anyhow::Result<()> {
    let channel = client::connect(config).await?;
    let (question, output) = match command {
        ResultsCommand::Index { job_id, force, wait } => return index(client::indexer(channel), job_id, force, wait).await,
        ResultsCommand::Losses { job_id, output } => (query::losses_of(&job_id), output),
        ResultsCommand::Best { target, n, bundle, output } => (
            Question::Command(Command::BestParameters {
                target,
                n,
                bundle_digest: bundle,
            }),
            output,
        ),
        ResultsCommand::Query { filters, output } => (query::query_of(&filters), output),
        ResultsCommand::Compare { job_a, job_b, target, output } => (Question::Command(Command::Compare { job_a, job_b, target }), output),
        ResultsCommand::Sql { query, output } => (Question::Command(Command::Sql { query }), output),
        ResultsCommand::Jobs { output } => (Question::Command(Command::Jobs), output),
    };
    query::answer(channel, question, &output).await
}

async fn index(mut client: IndexerClient<client::AuthedChannel>, job_id: String, force: bool, wait: bool) -> anyhow::Result<()> {
    {
        {
            let queued = client
                .index_job(pb::IndexJobRequest {
                    job_id: job_id.clone(),
                    force,
                    wait: false,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .status
                .unwrap_or_default();
            if !wait {
                print(&queued);
                return Ok(());
            }
            // The request marked the job queued, so the watch starts from this run, not an older one.
            let mut updates = client
                .watch_index_status(pb::GetIndexStatusRequest { job_id: job_id.clone() })
                .await
                .map_err(status_error)?
                .into_inner();
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} rows {msg}").expect("valid template"));
            bar.set_prefix(job_id);
            while let Some(update) = updates.message().await.map_err(status_error)? {
                let Some(status) = update.status else { continue };
                bar.set_length(status.expected);
                bar.set_position(status.processed);
                bar.set_message(phase(&status));
                if matches!(pb::IndexPhase::try_from(status.phase), Ok(pb::IndexPhase::Done | pb::IndexPhase::Failed)) {
                    bar.finish_and_clear();
                    print(&status);
                    if status.phase == i32::from(pb::IndexPhase::Failed) {
                        anyhow::bail!("indexing failed");
                    }
                    return Ok(());
                }
            }
            anyhow::bail!("the server closed the status stream")
        }
    }
}
