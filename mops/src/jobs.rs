//! `mops jobs`: submit, inspect, list, watch, cancel and update jobs in the registry.

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::Utc;
use modelops_core::job::JobStatus;
use modelops_core::pyjson::{self, PyValue};
use modelops_core::time::parse_iso;
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use modelops_registry::service::{status_from_proto, status_to_proto};
use modelops_runtime::config::ClientConfig;

use crate::client::{self, AuthedChannel, status_error};
use crate::output::{self, Format, FormatArg, Table};

/// `mops jobs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Register a job from a Calabaria study.json (needs --bundle-ref) or a SimJob spec.
    Submit {
        /// The study or job spec file.
        file: PathBuf,
        /// Bundle to bind a study to (`sha256:<64 hex>` or `repo@sha256:<64 hex>`).
        #[arg(long, env = "MOPS_BUNDLE_REF")]
        bundle_ref: Option<String>,
        /// Job id (default: the spec's, or `job-` + 8 hex characters).
        #[arg(long)]
        job_id: Option<String>,
        /// Kubernetes namespace to record.
        #[arg(long)]
        namespace: Option<String>,
        /// Output.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show one job: status, progress, times, Kubernetes names, error, results.
    Status {
        /// The job id.
        job_id: String,
        /// Output (json: upstream's state.json, on one line).
        #[command(flatten)]
        format: FormatArg,
    },
    /// List recent jobs, newest first.
    List {
        /// Only these statuses (repeatable).
        #[arg(long = "status", short = 's', value_parser = status_values())]
        statuses: Vec<String>,
        /// Only jobs created in the last H hours.
        #[arg(long, short = 'H', default_value_t = 24.0)]
        hours: f64,
        /// At most N jobs.
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: u32,
        /// Output (json: one upstream state.json per line).
        #[command(flatten)]
        format: FormatArg,
    },
    /// Follow one job with a progress bar until it ends, or every job's changes.
    Watch {
        /// The job to follow (all jobs when omitted).
        job_id: Option<String>,
        /// Output (json or csv: each change as a line, no progress bar).
        #[command(flatten)]
        format: FormatArg,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        job_id: String,
        /// Why (stored as "Cancelled: {reason}").
        #[arg(long)]
        reason: Option<String>,
        /// Output.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change a job's status or counters (for operators and scripts).
    Update {
        /// The job id.
        job_id: String,
        /// New status (one step of upstream's lifecycle from the current one).
        #[arg(long, value_parser = status_values())]
        status: Option<String>,
        /// Tasks completed (absolute).
        #[arg(long)]
        completed: Option<i64>,
        /// Tasks in total (absolute).
        #[arg(long)]
        total: Option<i64>,
        /// Error message to record with the status.
        #[arg(long)]
        error: Option<String>,
        /// Results path to record with the status.
        #[arg(long)]
        results_path: Option<String>,
        /// Output.
        #[command(flatten)]
        format: FormatArg,
    },
}

/// The statuses `--status` takes, listed by `--help` and by a refusal.
fn status_values() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(JobStatus::ALL.map(JobStatus::as_str))
}

fn parse_status(text: &str) -> anyhow::Result<pb::JobStatus> {
    let status: JobStatus = text.parse()?;
    Ok(status_to_proto(status))
}

fn status_name(value: i32) -> &'static str {
    status_from_proto(value).map_or("unknown", JobStatus::as_str)
}

fn job_of<T>(job: Option<T>) -> anyhow::Result<T> {
    job.context("the server sent no job")
}

/// Prints one job: upstream's state.json on one line (json), a CSV row with its header (csv), or
/// `table`, the command's text for people.
fn print_job(job: &pb::JobState, format: Format, table: impl FnOnce(&pb::JobState)) {
    match format {
        Format::Table => table(job),
        Format::Json => println!("{}", state_line(job)),
        Format::Csv => println!("{}\n{}", output::csv_record(&JOB_CSV_HEADER), output::csv_record(&job_csv_row(job))),
    }
}

/// A job's upstream state.json, compact on one line.
fn state_line(job: &pb::JobState) -> String {
    pyjson::parse(job.state_json.as_bytes()).map_or_else(|_| job.state_json.replace('\n', " "), |state| pyjson::to_canonical(&state))
}

/// The columns of a job in CSV.
const JOB_CSV_HEADER: [&str; 9] = ["job_id", "status", "tasks_completed", "tasks_total", "created_at", "updated_at", "index_state", "results_path", "error_message"];

fn job_csv_row(job: &pb::JobState) -> Vec<String> {
    let index = pb::IndexState::try_from(job.index_state).map_or_else(|_| String::new(), |i| i.as_str_name().trim_start_matches("INDEX_STATE_").to_lowercase());
    vec![
        job.job_id.clone(),
        status_name(job.status).to_owned(),
        job.tasks_completed.to_string(),
        job.tasks_total.to_string(),
        job.created_at.clone(),
        job.updated_at.clone(),
        index,
        job.results_path.clone().unwrap_or_default(),
        job.error_message.clone().unwrap_or_default(),
    ]
}

fn progress(job: &pb::JobState) -> String {
    match job.progress_percent {
        Some(percent) => format!("{}/{} ({percent:.1}%)", job.tasks_completed, job.tasks_total),
        None => "-".to_owned(),
    }
}

fn when(text: &str) -> String {
    parse_iso(text).map_or_else(|| text.to_owned(), |at| output::relative_time(at, Utc::now()))
}

/// The status lines of upstream's `mops jobs status`.
fn print_status(job: &pb::JobState) {
    let status = status_name(job.status);
    println!("Job:        {}", job.job_id);
    println!("Status:     {status}");
    println!("Created:    {} ({})", job.created_at, when(&job.created_at));
    println!("Updated:    {} ({})", job.updated_at, when(&job.updated_at));
    if matches!(status, "running" | "succeeded" | "failed" | "partial")
        && let (Some(created), Some(updated)) = (parse_iso(&job.created_at), parse_iso(&job.updated_at))
    {
        println!("Duration:   {}", output::duration((updated - created).num_seconds()));
    }
    if let Some(name) = &job.k8s_name {
        println!("K8s Job:    {name}");
    }
    if let Some(namespace) = &job.k8s_namespace {
        println!("Namespace:  {namespace}");
    }
    if job.tasks_total > 0 {
        println!("Progress:   {}", progress(job));
    }
    if let Some(path) = &job.results_path {
        println!("Results:    {path}");
    }
    if let Some(error) = &job.error_message {
        println!("Error:      {error}");
    }
    if let Some(code) = &job.error_code {
        println!("Error Code: {code}");
    }
    let index = pb::IndexState::try_from(job.index_state).unwrap_or(pb::IndexState::Unspecified);
    if !matches!(index, pb::IndexState::None | pb::IndexState::Unspecified) {
        println!("Index:      {}", index.as_str_name().trim_start_matches("INDEX_STATE_").to_lowercase());
    }
    if let Ok(PyValue::Object(metadata)) = pyjson::parse(job.metadata_json.as_bytes())
        && !metadata.is_empty()
    {
        println!("Metadata:");
        for (key, value) in metadata.iter() {
            let shown = value.as_str().map_or_else(|| pyjson::to_canonical(value), str::to_owned);
            println!("  {key}: {shown}");
        }
    }
}

/// Runs a `mops jobs` command.
pub async fn run(command: JobsCommand, config: &ClientConfig) -> anyhow::Result<()> {
    let mut client = client::registry(client::connect(config).await?);
    match command {
        JobsCommand::Submit {
            file,
            bundle_ref,
            job_id,
            namespace,
            format,
        } => submit(&mut client, file, bundle_ref, job_id, namespace, format.get()).await,
        JobsCommand::Status { job_id, format } => {
            let job = job_of(client.get_job(pb::GetJobRequest { job_id }).await.map_err(status_error)?.into_inner().job)?;
            print_job(&job, format.get(), print_status);
            Ok(())
        }
        JobsCommand::List {
            statuses,
            hours,
            limit,
            format,
        } => list(&mut client, statuses, hours, limit, format.get()).await,
        JobsCommand::Watch { job_id, format } => watch(&mut client, job_id, format.get()).await,
        JobsCommand::Cancel { job_id, reason, format } => {
            let job = job_of(client.cancel_job(pb::CancelJobRequest { job_id, reason }).await.map_err(status_error)?.into_inner().job)?;
            print_job(&job, format.get(), |job| println!("{} cancelled", job.job_id));
            Ok(())
        }
        JobsCommand::Update {
            job_id,
            status,
            completed,
            total,
            error,
            results_path,
            format,
        } => {
            if status.is_none() && completed.is_none() && total.is_none() {
                anyhow::bail!("nothing to update: give --status, --completed or --total");
            }
            let job = match status {
                Some(status) => {
                    let request = pb::UpdateStatusRequest {
                        job_id: job_id.clone(),
                        status: parse_status(&status)?.into(),
                        error_message: error,
                        results_path,
                        tasks_completed: completed,
                        tasks_total: total,
                        ..Default::default()
                    };
                    match client.update_status(request).await {
                        Ok(response) => response.into_inner().job,
                        Err(refused) if refused.code() == tonic::Code::FailedPrecondition => {
                            return Err(transition_error(&mut client, &job_id, refused).await);
                        }
                        Err(other) => return Err(status_error(other)),
                    }
                }
                None => {
                    let request = pb::SetProgressRequest {
                        job_id,
                        tasks_completed: completed,
                        tasks_total: total,
                    };
                    client.set_progress(request).await.map_err(status_error)?.into_inner().job
                }
            };
            let job = job_of(job)?;
            print_job(&job, format.get(), print_status);
            Ok(())
        }
    }
}

/// A refused status change, with the statuses the job could move to (upstream's transition
/// table, from its current status).
async fn transition_error(client: &mut JobRegistryClient<AuthedChannel>, job_id: &str, refused: tonic::Status) -> anyhow::Error {
    let current = client
        .get_job(pb::GetJobRequest { job_id: job_id.to_owned() })
        .await
        .ok()
        .and_then(|response| response.into_inner().job)
        .and_then(|job| status_from_proto(job.status));
    let Some(current) = current else { return status_error(refused) };
    let next: Vec<&str> = current.allowed_next().iter().map(|s| s.as_str()).collect();
    let hint = if next.is_empty() {
        format!("{job_id} is {current}, a final status: it cannot change")
    } else {
        format!("{job_id} is {current}; it can move to: {}", next.join(", "))
    };
    status_error(refused).context(hint)
}

async fn submit(
    client: &mut JobRegistryClient<AuthedChannel>,
    file: PathBuf,
    bundle_ref: Option<String>,
    job_id: Option<String>,
    namespace: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed = pyjson::parse(text.as_bytes()).with_context(|| format!("{} is not JSON", file.display()))?;
    let object = parsed.as_object().with_context(|| format!("{} must hold a JSON object", file.display()))?;
    let spec = if object.contains_key("job_type") {
        pb::register_job_request::Spec::JobSpecJson(text)
    } else if object.contains_key("parameter_sets") {
        let bundle_ref = bundle_ref.context("a study needs --bundle-ref (or MOPS_BUNDLE_REF) to bind it to a bundle")?;
        pb::register_job_request::Spec::Study(pb::StudySpec { study_json: text, bundle_ref })
    } else {
        anyhow::bail!("{} is neither a study (parameter_sets) nor a job spec (job_type)", file.display());
    };
    let request = pb::RegisterJobRequest {
        job_id: job_id.unwrap_or_default(),
        k8s_namespace: namespace,
        spec: Some(spec),
        ..Default::default()
    };
    let response = client.register_job(request).await.map_err(status_error)?.into_inner();
    let job = job_of(response.job)?;
    print_job(&job, format, |job| {
        println!("Registered {} ({} tasks)", job.job_id, job.tasks_total);
        if let Some(key) = &response.spec_key {
            println!("Spec stored at {key}");
        }
    });
    Ok(())
}

/// The largest page `ListJobs` serves.
const LIST_PAGE: u32 = 1000;

/// One `mops jobs list`: the newest jobs, how many match in all, how many are in flight.
#[derive(Debug)]
struct Listing {
    /// The newest `limit` matching jobs, newest first.
    jobs: Vec<pb::JobState>,
    /// Every job matching the filters.
    matching: usize,
    /// Every active (not terminal) job in the registry.
    active: u64,
}

async fn fetch_listing(client: &mut JobRegistryClient<AuthedChannel>, statuses: Vec<i32>, since: prost_types::Timestamp, limit: u32) -> anyhow::Result<Listing> {
    let mut jobs = Vec::new();
    let mut matching = 0;
    let mut page_token = String::new();
    loop {
        let request = pb::ListJobsRequest {
            statuses: statuses.clone(),
            since: Some(since),
            limit: LIST_PAGE,
            page_token,
        };
        let page = client.list_jobs(request).await.map_err(status_error)?.into_inner();
        matching += page.jobs.len();
        let room = (limit as usize).saturating_sub(jobs.len());
        jobs.extend(page.jobs.into_iter().take(room));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let counts = client.count_jobs_by_status(pb::CountJobsByStatusRequest {}).await.map_err(status_error)?.into_inner().counts;
    let active = counts
        .iter()
        .filter(|c| status_from_proto(c.status).is_some_and(JobStatus::is_active))
        .map(|c| c.count)
        .sum();
    Ok(Listing { jobs, matching, active })
}

/// The footer of `mops jobs list`.
fn footer(listing: &Listing) -> String {
    format!("Showing {} of {} matching jobs, newest first. Active jobs: {}", listing.jobs.len(), listing.matching, listing.active)
}

async fn list(client: &mut JobRegistryClient<AuthedChannel>, statuses: Vec<String>, hours: f64, limit: u32, format: Format) -> anyhow::Result<()> {
    let statuses = statuses.iter().map(|s| parse_status(s).map(i32::from)).collect::<anyhow::Result<Vec<_>>>()?;
    let since = Utc::now() - chrono::Duration::milliseconds((hours * 3_600_000.0) as i64);
    let since = prost_types::Timestamp {
        seconds: since.timestamp(),
        nanos: 0,
    };
    if format != Format::Table {
        let request = pb::ListJobsRequest {
            statuses,
            since: Some(since),
            limit,
            page_token: String::new(),
        };
        let jobs = client.list_jobs(request).await.map_err(status_error)?.into_inner().jobs;
        if format == Format::Csv {
            println!("{}", output::csv_record(&JOB_CSV_HEADER));
        }
        for job in &jobs {
            match format {
                Format::Csv => println!("{}", output::csv_record(&job_csv_row(job))),
                _ => println!("{}", state_line(job)),
            }
        }
        return Ok(());
    }
    let listing = fetch_listing(client, statuses, since, limit).await?;
    let now = Utc::now();
    let mut table = Table::new(["Job ID", "Status", "Progress", "Created", "Updated"]);
    for job in &listing.jobs {
        let at = |t: &str| parse_iso(t).map_or_else(|| t.to_owned(), |at| output::relative_time(at, now));
        let progress = if job.tasks_total > 0 { format!("{}/{}", job.tasks_completed, job.tasks_total) } else { "-".into() };
        table.row(vec![job.job_id.clone(), status_name(job.status).into(), progress, at(&job.created_at), at(&job.updated_at)]);
    }
    println!("Recent Jobs (last {hours} hours, {})", chrono::Local::now().format("%Z"));
    if table.is_empty() {
        println!("No jobs.");
    } else {
        println!("{}", table.render());
    }
    println!("{}", footer(&listing));
    Ok(())
}

/// Shows `job` on the bar of `mops jobs watch`: its status, and a bar only once its task count
/// is known (an empty bar of 0 tasks would be drawn full).
fn show_progress(bar: &indicatif::ProgressBar, job: &pb::JobState) {
    let template = if job.tasks_total > 0 { "{prefix} [{bar:40}] {pos}/{len} {msg}" } else { "{prefix} {msg}" };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    if job.tasks_total > 0 {
        bar.set_length(u64::try_from(job.tasks_total).unwrap_or(0));
    }
    bar.set_position(u64::try_from(job.tasks_completed).unwrap_or(0));
    bar.set_message(status_name(job.status).to_owned());
}

async fn watch(client: &mut JobRegistryClient<AuthedChannel>, job_id: Option<String>, format: Format) -> anyhow::Result<()> {
    let lines = format != Format::Table;
    let request = pb::WatchJobsRequest {
        job_ids: job_id.iter().cloned().collect(),
        replay_current: true,
        ..Default::default()
    };
    let mut stream = client.watch_jobs(request).await.map_err(status_error)?.into_inner();
    let bar = (!lines && job_id.is_some()).then(indicatif::ProgressBar::no_length);
    if format == Format::Csv {
        println!("{}", output::csv_record(&JOB_CSV_HEADER));
    }
    if let Some(id) = &job_id
        && let Some(bar) = &bar
    {
        bar.set_prefix(id.clone());
    }
    let mut seen_any = false;
    while let Some(message) = stream.message().await.map_err(status_error)? {
        let Some(job) = message.job else { continue };
        seen_any = true;
        let status = status_from_proto(job.status);
        if format == Format::Json {
            println!("{}", state_line(&job));
        } else if format == Format::Csv {
            println!("{}", output::csv_record(&job_csv_row(&job)));
        } else if let Some(bar) = &bar {
            show_progress(bar, &job);
        } else {
            println!("{}  {:<10}  {}", job.job_id, status_name(job.status), progress(&job));
        }
        if job_id.is_some() && status.is_some_and(JobStatus::is_terminal) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            if !lines {
                print_status(&job);
            }
            return Ok(());
        }
    }
    if job_id.is_some() && !seen_any {
        anyhow::bail!("no such job");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_draws_no_bar_before_the_task_count_is_known() {
        let screen = crate::output::testing::Screen::default();
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone())));
        bar.set_prefix("job-1");
        let job = |status: pb::JobStatus, completed: i64, total: i64| pb::JobState {
            job_id: "job-1".into(),
            status: status.into(),
            tasks_completed: completed,
            tasks_total: total,
            ..Default::default()
        };
        show_progress(&bar, &job(pb::JobStatus::Pending, 0, 0));
        bar.tick();
        let drawn = screen.take();
        assert!(drawn.contains("job-1 pending"), "{drawn:?}");
        assert!(!drawn.contains('[') && !drawn.contains('='), "no bar at 0/0: {drawn:?}");
        show_progress(&bar, &job(pb::JobStatus::Running, 5, 10));
        bar.finish();
        let drawn = screen.take();
        assert!(drawn.contains("5/10 running") && drawn.contains(&format!("[{}>", "=".repeat(20))), "{drawn:?}");
    }

    #[test]
    fn status_flags_list_every_status() {
        use clap::{CommandFactory as _, Parser as _};
        for command in [&["mops", "jobs", "list", "--status", "done"][..], &["mops", "jobs", "update", "job-1", "--status", "done"][..]] {
            let error = crate::Cli::try_parse_from(command).expect_err("done is no status");
            assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
            assert!(error.to_string().contains("pending, submitting, scheduled, running, validating, succeeded, partial, failed, cancelled"), "{error}");
        }
        let mut cli = crate::Cli::command();
        let help = cli.find_subcommand_mut("jobs").unwrap().find_subcommand_mut("list").unwrap().render_long_help().to_string();
        assert!(help.contains("cancelled"), "{help}");
    }

    /// A `mops serve` in this process over a fresh home, and that home (removed by the caller).
    async fn local_server(name: &str) -> (crate::serve::LocalServer, PathBuf) {
        let home = std::env::temp_dir().join(format!("mops-jobs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let args = crate::serve_args(&["--home", home.to_str().expect("utf-8 temp dir")]).expect("serve args");
        (crate::serve::LocalServer::start(&args).await.expect("server starts"), home)
    }

    /// Submits a one-set study as `job`.
    async fn submit_small(config: &ClientConfig, home: &std::path::Path, job: &str) {
        let file = home.join(format!("{job}.json"));
        let study = r#"{"model": "m.M", "scenario": "baseline", "parameter_sets": [{"params": {"beta": 1}}], "n_replicates": 1, "targets": ["t:t"]}"#;
        std::fs::write(&file, study).unwrap();
        let submit = JobsCommand::Submit {
            file,
            bundle_ref: Some(format!("sha256:{}", "0123456789abcdef".repeat(4))),
            job_id: Some(job.into()),
            namespace: None,
            format: FormatArg::default(),
        };
        run(submit, config).await.expect("submit");
    }

    #[tokio::test]
    async fn the_list_footer_counts_every_matching_job_and_every_active_one() {
        let (server, home) = local_server("list").await;
        let config = ClientConfig {
            endpoint: server.endpoint(),
            auth_token_file: None,
        };
        for n in 0..5 {
            submit_small(&config, &home, &format!("job-list-{n}")).await;
        }
        let mut registry = client::registry(client::connect(&config).await.unwrap());
        for job in ["job-list-0", "job-list-1"] {
            registry
                .cancel_job(pb::CancelJobRequest {
                    job_id: job.into(),
                    reason: None,
                })
                .await
                .unwrap();
        }
        let since = prost_types::Timestamp { seconds: 0, nanos: 0 };
        let listing = fetch_listing(&mut registry, Vec::new(), since, 3).await.unwrap();
        assert_eq!(listing.jobs.len(), 3);
        assert_eq!(footer(&listing), "Showing 3 of 5 matching jobs, newest first. Active jobs: 3");
        let pending = vec![i32::from(pb::JobStatus::Pending)];
        let listing = fetch_listing(&mut registry, pending, since, 50).await.unwrap();
        assert_eq!(footer(&listing), "Showing 3 of 3 matching jobs, newest first. Active jobs: 3");
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn a_refused_status_change_names_the_allowed_next_statuses() {
        let (server, home) = local_server("update").await;
        let config = ClientConfig {
            endpoint: server.endpoint(),
            auth_token_file: None,
        };
        submit_small(&config, &home, "job-update").await;
        let update = |status: &str| JobsCommand::Update {
            job_id: "job-update".into(),
            status: Some(status.into()),
            completed: None,
            total: None,
            error: None,
            results_path: None,
            format: FormatArg::default(),
        };
        let error = run(update("running"), &config).await.expect_err("pending → running is no transition");
        assert!(format!("{error:#}").contains("job-update is pending; it can move to: submitting, cancelled"), "{error:#}");
        run(update("cancelled"), &config).await.expect("pending → cancelled");
        let error = run(update("running"), &config).await.expect_err("cancelled is final");
        assert!(format!("{error:#}").contains("job-update is cancelled, a final status"), "{error:#}");
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(home);
    }

    #[tokio::test]
    async fn a_job_spec_over_four_mib_is_read_back_by_the_cli_client() {
        let (server, home) = local_server("big").await;
        let sets: Vec<String> = (0..3000).map(|i| format!(r#"{{"params": {{"beta": {i}, "gamma": 0.5, "sigma": 0.25}}}}"#)).collect();
        let study = format!(
            r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 5, "targets": ["targets.prev:prevalence_target"]}}"#,
            sets.join(", ")
        );
        let file = home.join("study.json");
        std::fs::write(&file, study).unwrap();
        let config = ClientConfig {
            endpoint: server.endpoint(),
            auth_token_file: None,
        };
        let submit = JobsCommand::Submit {
            file,
            bundle_ref: Some(format!("sha256:{}", "0123456789abcdef".repeat(4))),
            job_id: Some("job-big".into()),
            namespace: None,
            format: FormatArg::default(),
        };
        run(submit, &config).await.expect("submit");
        run(JobsCommand::Status { job_id: "job-big".into(), format: FormatArg::default() }, &config).await.expect("status");
        // The spec the demo reads back is over tonic's default 4 MiB decode limit.
        let mut registry = client::registry(client::connect(&config).await.unwrap());
        let spec = registry.get_job_spec(pb::GetJobSpecRequest { job_id: "job-big".into() }).await.expect("a spec over 4 MiB is decoded");
        assert!(spec.into_inner().job_spec_json.len() > 4 * 1024 * 1024);
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(home);
    }
}
