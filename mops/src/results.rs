//! `mops results`: a job's loss table.

use modelops_proto::indexer::v1 as pb;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_runtime::config::ClientConfig;

use crate::client::{self, status_error};

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
    println!("Table:    {}losses.parquet", status.results_path);
    if let Some(error) = &status.error {
        println!("Error:    {error}");
    }
}

/// Runs a `mops results` command.
pub async fn run(command: ResultsCommand, config: &ClientConfig) -> anyhow::Result<()> {
    let mut client = IndexerClient::new(client::connect(config).await?);
    match command {
        ResultsCommand::Index { job_id, force, wait } => {
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
