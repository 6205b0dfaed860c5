//! `mops attribution`: which results a job computed or reused, who owns a result, and deriving
//! edges for jobs that ran before attribution existed.

use modelops_proto::attribution::v1 as pb;
use modelops_proto::registry::v1 as registry_pb;
use modelops_runtime::config::ClientConfig;

use crate::client::{self, AuthedChannel, status_error};
use crate::output::{self, Format, FormatArg, Table};

/// `mops attribution` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AttributionCommand {
    /// Counts (computed, cache hits, missing) and a sample of a job's results.
    Show {
        /// The job id.
        job_id: String,
        /// How many edges to show (0 to 100).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=MAX_SAMPLE))]
        sample: u32,
        /// Output (json: one object with the counts and the sample; csv: the sampled edges).
        #[command(flatten)]
        format: FormatArg,
    },
    /// The jobs that own a result directory (relative to the provenance root).
    Owners {
        /// The directory (a trailing `/`, as shells complete it, is ignored), e.g. `token/v1/aggs/0123456789ab/target_targets.prev:prevalence_target/agg_4efec569a17ca9ef`.
        path: String,
    },
    /// Derive edges from job specs and the provenance store, for jobs without reported edges.
    Backfill {
        /// The job to derive (or --all).
        job_id: Option<String>,
        /// Every job in the registry.
        #[arg(long, conflicts_with = "job_id")]
        all: bool,
        /// Layout to look in: token, bundle or any.
        #[arg(long, default_value = "any")]
        schema: String,
        /// Seal each job afterwards.
        #[arg(long)]
        seal: bool,
    },
}

/// The most edges the attribution service samples for one job.
const MAX_SAMPLE: i64 = 100;

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Computed) => "computed",
        Ok(pb::Role::CacheHit) => "cache_hit",
        _ => "unknown",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::ResultKind::try_from(kind) {
        Ok(pb::ResultKind::Sim) => "sim",
        Ok(pb::ResultKind::Agg) => "agg",
        _ => "?",
    }
}

/// `mops attribution show --format json`: one object, its names those of the text.
fn show_json(job_id: &str, response: &pb::GetJobAttributionResponse, sample: u32) -> String {
    use modelops_core::pyjson::{PyObject, PyValue};
    let counts = response.counts.unwrap_or_default();
    let mut object = PyObject::new();
    object.insert("job_id", job_id.into());
    object.insert("sealed", PyValue::Bool(response.sealed));
    for (name, value) in [
        ("sims", counts.sims),
        ("sims_computed", counts.sims_computed),
        ("sims_cache_hits", counts.sims_cache_hits),
        ("aggs", counts.aggs),
        ("aggs_computed", counts.aggs_computed),
        ("aggs_cache_hits", counts.aggs_cache_hits),
        ("computed", counts.computed),
        ("cache_hits", counts.cache_hits),
        ("unknown", counts.unknown),
        ("missing", counts.expected_missing),
    ] {
        object.insert(name, value.into());
    }
    let edges = response
        .sample
        .iter()
        .take(sample as usize)
        .map(|edge| {
            let mut object = PyObject::new();
            object.insert("kind", kind_name(edge.kind).into());
            object.insert("role", role_name(edge.role).into());
            object.insert("path", edge.path.as_str().into());
            PyValue::Object(object)
        })
        .collect();
    object.insert("sample", PyValue::List(edges));
    object.insert("missing_paths", PyValue::List(response.missing_paths.iter().map(|p| p.as_str().into()).collect()));
    modelops_core::pyjson::to_canonical(&PyValue::Object(object))
}

/// The text of `mops attribution show`: counts, at most `sample` edges, the first missing paths.
fn show_text(job_id: &str, response: &pb::GetJobAttributionResponse, sample: u32) -> String {
    let counts = response.counts.unwrap_or_default();
    let mut text = format!("Job:          {job_id}{}\n", if response.sealed { " (sealed)" } else { "" });
    text += &format!("Simulations:  {} ({} computed, {} cache hits)\n", counts.sims, counts.sims_computed, counts.sims_cache_hits);
    text += &format!("Aggregations: {} ({} computed, {} cache hits)\n", counts.aggs, counts.aggs_computed, counts.aggs_cache_hits);
    if counts.unknown > 0 {
        text += &format!("Unknown role: {}\n", counts.unknown);
    }
    text += &format!("Missing:      {}\n", counts.expected_missing);
    if sample > 0 && !response.sample.is_empty() {
        let mut table = Table::new(["Kind", "Role", "Path"]);
        for edge in response.sample.iter().take(sample as usize) {
            table.row(vec![kind_name(edge.kind).into(), role_name(edge.role).into(), edge.path.clone()]);
        }
        text += &format!("\n{}\n", table.render());
    }
    for path in response.missing_paths.iter().take(5) {
        text += &format!("missing: {path}\n");
    }
    text
}

/// Runs a `mops attribution` command.
pub async fn run(command: AttributionCommand, config: &ClientConfig) -> anyhow::Result<()> {
    let channel = client::connect(config).await?;
    let mut client = client::attribution(channel.clone());
    match command {
        AttributionCommand::Show { job_id, sample, format } => {
            let response = client
                .get_job_attribution(pb::GetJobAttributionRequest {
                    job_id: job_id.clone(),
                    // The service reads 0 as "its default"; ask for one and show none.
                    sample_size: sample.max(1),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            match format.get() {
                Format::Table => print!("{}", show_text(&job_id, &response, sample)),
                Format::Json => println!("{}", show_json(&job_id, &response, sample)),
                Format::Csv => {
                    println!("{}", output::csv_record(&["kind", "role", "path"]));
                    for edge in response.sample.iter().take(sample as usize) {
                        println!("{}", output::csv_record(&[kind_name(edge.kind), role_name(edge.role), edge.path.as_str()]));
                    }
                }
            }
            Ok(())
        }
        AttributionCommand::Owners { path } => {
            let owners = client
                .get_result_owners(pb::GetResultOwnersRequest {
                    path: path.trim_end_matches('/').to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .owners;
            if owners.is_empty() {
                println!("No job owns this result.");
            }
            let mut table = Table::new(["Job ID", "Role"]);
            for owner in owners {
                table.row(vec![owner.job_id, role_name(owner.role).into()]);
            }
            if !table.is_empty() {
                println!("{}", table.render());
            }
            Ok(())
        }
        AttributionCommand::Backfill { job_id, all, schema, seal } => {
            let jobs = match (job_id, all) {
                (Some(job), _) => vec![job],
                (None, true) => all_jobs(channel).await?,
                (None, false) => anyhow::bail!("name a job or pass --all"),
            };
            eprintln!("Deriving the edges of {} job(s) from the provenance store ({schema} layout)…", jobs.len());
            let bar = indicatif::ProgressBar::no_length();
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            for job in jobs {
                bar.set_prefix(job.clone());
                show_derivation(&bar, None);
                let mut stream = client
                    .derive_edges(pb::DeriveEdgesRequest {
                        job_id: job.clone(),
                        schema: schema.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                while let Some(message) = stream.message().await.map_err(status_error)? {
                    if message.done {
                        let counts = message.counts.unwrap_or_default();
                        // Printed past the bar, so the line shows when the bar is hidden too.
                        bar.suspend(|| {
                            println!(
                                "{job}: {} sims, {} aggs ({} computed, {} cache hits), {} missing",
                                counts.sims, counts.aggs, counts.computed, counts.cache_hits, counts.expected_missing
                            );
                        });
                    } else {
                        show_derivation(&bar, Some(&message));
                    }
                }
                if seal {
                    client
                        .seal_job(pb::SealJobRequest {
                            job_id: job,
                            derive_missing: false,
                        })
                        .await
                        .map_err(status_error)?;
                }
            }
            bar.finish_and_clear();
            Ok(())
        }
    }
}

/// Shows one job's derivation on the bar of `mops attribution backfill`: a spinner while the
/// service lists the job's results, a bar of parameter sets once their number is known.
fn show_derivation(bar: &indicatif::ProgressBar, progress: Option<&pb::DeriveEdgesResponse>) {
    match progress.filter(|p| p.param_sets_total > 0) {
        None => {
            bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {prefix} listing its results…").expect("valid template"));
            bar.set_position(0);
        }
        Some(progress) => {
            bar.set_style(indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} parameter sets").expect("valid template"));
            bar.set_length(progress.param_sets_total);
            bar.set_position(progress.param_sets_done);
        }
    }
}

async fn all_jobs(channel: AuthedChannel) -> anyhow::Result<Vec<String>> {
    let mut registry = client::registry(channel);
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = registry
            .list_jobs(registry_pb::ListJobsRequest {
                limit: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        jobs.extend(page.jobs.into_iter().map(|j| j.job_id));
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn samples_outside_zero_to_a_hundred_are_refused_naming_the_range() {
        for bad in ["101", "300"] {
            let error = crate::Cli::try_parse_from(["mops", "attribution", "show", "job-1", "--sample", bad]).expect_err(bad);
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{bad}: {error}");
            assert!(error.to_string().contains("0..=100"), "{bad}: {error}");
        }
        for good in ["0", "100"] {
            assert!(crate::Cli::try_parse_from(["mops", "attribution", "show", "job-1", "--sample", good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn show_prints_as_many_sample_edges_as_asked_and_none_for_zero() {
        let edge = |n: usize| pb::Edge {
            kind: pb::ResultKind::Sim.into(),
            role: pb::Role::Computed.into(),
            path: format!("token/v1/sims/0123456789ab/sim_{n}"),
            ..Default::default()
        };
        // The service sends at least one edge even when asked for none.
        let response = pb::GetJobAttributionResponse {
            sample: (0..3).map(edge).collect(),
            ..Default::default()
        };
        let edges = |text: &str| text.lines().filter(|l| l.starts_with("sim ")).count();
        assert_eq!(edges(&show_text("job-1", &response, 0)), 0);
        assert_eq!(edges(&show_text("job-1", &response, 2)), 2);
        assert_eq!(edges(&show_text("job-1", &response, 100)), 3);
    }

    #[test]
    fn backfill_shows_a_job_before_its_first_progress_and_a_bar_after() {
        let screen = crate::output::testing::Screen::default();
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone())));
        bar.set_prefix("job-1");
        show_derivation(&bar, None);
        bar.tick();
        let drawn = screen.take();
        assert!(drawn.contains("job-1 listing its results…"), "{drawn:?}");
        let progress = pb::DeriveEdgesResponse {
            param_sets_done: 3,
            param_sets_total: 12,
            ..Default::default()
        };
        show_derivation(&bar, Some(&progress));
        bar.finish();
        let drawn = screen.take();
        assert!(drawn.contains("3/12 parameter sets"), "{drawn:?}");
    }

    #[tokio::test]
    async fn owners_accepts_a_directory_with_a_trailing_slash() {
        let home = std::env::temp_dir().join(format!("mops-attribution-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let args = crate::serve_args(&["--home", home.to_str().expect("utf-8 temp dir")]).expect("serve args");
        let server = crate::serve::LocalServer::start(&args).await.expect("server starts");
        let config = ClientConfig {
            endpoint: server.endpoint(),
            auth_token_file: None,
        };
        let path = "token/v1/aggs/0123456789ab/targets.prev:prevalence_target/agg_4efec569a17ca9ef/";
        run(AttributionCommand::Owners { path: path.into() }, &config).await.expect("a trailing slash is accepted");
        run(AttributionCommand::Owners { path: "token/v1/nonsense".into() }, &config).await.expect_err("still checked by the service");
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(home);
    }
}
