//! `mops demo`: the whole flow in one command. It samples a study over the SEIR parameters
//! (Sobol or Latin hypercube), runs it with the small stochastic SEIR model of `modelops-seir`,
//! writes real provenance records in the upstream layout (reusing any result already in the
//! store, as upstream's cache does), reports progress and edges to the services, aggregates the
//! replicates and scores them against a synthetic prevalence target, finalizes the job, waits for
//! its loss table and prints the best parameters. `--overlap` runs a second study sharing half
//! the parameter sets, so cache hits show in `mops attribution show`.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use modelops_core::ids;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::pyjson::{PyObject, PyValue};
use modelops_core::records::{self, AggRecord, SimInputs, SimOutput, SimRecord};
use modelops_core::store::Store;
use modelops_core::study::{JobSpec, ParamGroup, SimJobSpec};
use modelops_core::time::now_iso;
use modelops_proto::attribution::v1 as attribution_pb;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;
use modelops_proto::indexer::v1 as indexer_pb;
use modelops_proto::indexer::v1::indexer_client::IndexerClient;
use modelops_proto::registry::v1 as registry_pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use modelops_runtime::config::{ClientConfig, StoreConfig};
use modelops_seir::sampling::{ParamRange, latin_hypercube, sobol};
use modelops_seir::{SeirParams, SeirSetup};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;

use crate::client::{self, AuthedChannel, status_error};
use crate::query::{self, Format, OutputArgs, Question};

/// The demo model's entrypoint, as a Calabaria study names a model.
const MODEL: &str = "modelops_demo.seir.StochasticSEIR";
/// The demo's one target.
const TARGET: &str = "modelops_demo.targets:prevalence_target";
/// The demo bundle's digest: fixed, so every demo run shares the provenance cache.
const BUNDLE: &str = "sha256:5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5e1f0c0de5";
/// The outputs every simulation writes.
const OUTPUTS: [&str; 2] = ["metadata", "prevalence"];

/// How parameter sets are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampler {
    /// A Sobol low-discrepancy sequence.
    Sobol,
    /// Latin hypercube sampling.
    Lhs,
}

/// Arguments of `mops demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Use the server at this endpoint instead of starting one in this process. The demo writes
    /// its records to the server's provenance store (asked of the server), or to `--provenance`
    /// when given.
    #[arg(long = "endpoint", env = "MOPS_DEMO_ENDPOINT")]
    pub endpoint: Option<String>,
    /// File with the bearer token of `--endpoint`.
    #[arg(long = "auth-token-file", env = "MOPS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// The stores (as `mops serve`).
    #[command(flatten)]
    pub stores: StoreConfig,
    /// Parameter sets to sample (at least 1).
    #[arg(long, env = "MOPS_DEMO_SAMPLES", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub n_samples: usize,
    /// Stochastic replicates per parameter set (at least 1).
    #[arg(long, env = "MOPS_DEMO_REPLICATES", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub n_replicates: u64,
    /// How to sample.
    #[arg(long, value_enum, default_value = "sobol")]
    pub sampler: Sampler,
    /// Run a second study sharing half of the first one's parameter sets (cache hits).
    #[arg(long)]
    pub overlap: bool,
    /// Seed of the sampler (LHS) and of the synthetic target's replicates.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Best parameter sets to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Wait this long after each parameter set, so a job runs long enough to watch its
    /// provisional landscape grow on the dashboard (e.g. 100 for ten sets a second).
    #[arg(long, env = "MOPS_DEMO_SET_DELAY_MS", default_value_t = 0)]
    pub set_delay_ms: u64,
}

/// What one study's run did.
#[derive(Debug, Default, Clone, Copy)]
struct RunCounts {
    sims_computed: usize,
    sims_cached: usize,
    aggs_computed: usize,
    aggs_cached: usize,
}

/// The clients of one server.
#[derive(Debug, Clone)]
struct Clients {
    registry: JobRegistryClient<AuthedChannel>,
    attribution: AttributionClient<AuthedChannel>,
    indexer: IndexerClient<AuthedChannel>,
    channel: AuthedChannel,
}

/// Runs `mops demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let home = args.stores.home.display().to_string();
    let (server, endpoint) = match &args.endpoint {
        Some(endpoint) => (None, endpoint.clone()),
        None => {
            let mut serve = vec!["--home".to_owned(), home.clone()];
            for (flag, value) in [
                ("--registry-store", &args.stores.registry_store),
                ("--jobs-store", &args.stores.jobs_store),
                ("--provenance", &args.stores.provenance),
                ("--results", &args.stores.results),
            ] {
                if let Some(value) = value {
                    serve.extend([flag.to_owned(), value.clone()]);
                }
            }
            let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
            let server = crate::serve::LocalServer::start(&crate::serve_args(&serve)?).await.with_context(|| {
                format!(
                    "cannot start the result services on --home {home}; if a `mops serve --home {home}` is running, \
                     run the demo against it with `mops demo --endpoint http://127.0.0.1:50051` (its --listen address), \
                     or give the demo another --home"
                )
            })?;
            let endpoint = server.endpoint();
            eprintln!("Started the result services in this process on {endpoint} (home {home}).");
            (Some(server), endpoint)
        }
    };
    let config = ClientConfig {
        endpoint: endpoint.clone(),
        auth_token_file: args.auth_token_file.clone(),
    };
    let channel = client::connect(&config).await?;
    let clients = Clients {
        registry: client::registry(channel.clone()),
        attribution: client::attribution(channel.clone()),
        indexer: client::indexer(channel.clone()),
        channel,
    };
    // With --endpoint, the records go where that server reads them, unless told otherwise.
    let provenance_url = match (&args.endpoint, &args.stores.provenance) {
        (Some(_), None) => {
            let stores = clients.registry.clone().get_stores(registry_pb::GetStoresRequest {}).await.map_err(client::status_error)?.into_inner();
            eprintln!("Writing the demo's records where the server reads them: {}", stores.provenance_url);
            stores.provenance_url
        }
        _ => args.stores.provenance_url(),
    };
    let provenance = Store::open(&provenance_url).with_context(|| format!("opening the provenance store {provenance_url}"))?;
    let setup = modelops_seir::DEFAULT_SETUP;
    let observed = modelops_seir::target::synthetic_target(&modelops_seir::DEFAULT_TRUTH, &setup, args.seed);
    let ranges = modelops_seir::default_ranges();
    let samples = sample(&ranges, args.sampler, args.n_samples, 0, args.seed);

    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f");
    let first = format!("demo-{stamp}");
    let mut jobs = vec![(first.clone(), samples.clone())];
    if args.overlap {
        // Half of the first study's sets, and as many new ones further along the sequence.
        let half = args.n_samples / 2;
        let mut second: Vec<Vec<f64>> = samples[..half].to_vec();
        second.extend(sample(&ranges, args.sampler, args.n_samples - half, args.n_samples, args.seed.wrapping_add(1)));
        jobs.push((format!("demo-{stamp}-overlap"), second));
    }
    for (job_id, sets) in &jobs {
        let pace = Duration::from_millis(args.set_delay_ms);
        let counts = run_study(&clients, &provenance, job_id, &ranges, sets, args.n_replicates, &setup, &observed, pace)
            .await
            .with_context(|| {
                format!(
                    "the demo wrote its results to {provenance_url}; with --endpoint, give the server's provenance \
                     store (--provenance URL), or leave --provenance out to use the one the server names"
                )
            })?;
        let attribution = clients
            .attribution
            .clone()
            .get_job_attribution(attribution_pb::GetJobAttributionRequest {
                job_id: job_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .counts
            .unwrap_or_default();
        println!(
            "{job_id}: {} simulations ({} computed, {} from the cache), {} aggregations ({} computed, {} from the cache); attribution: {} computed, {} cache hits",
            counts.sims_computed + counts.sims_cached,
            counts.sims_computed,
            counts.sims_cached,
            counts.aggs_computed + counts.aggs_cached,
            counts.aggs_computed,
            counts.aggs_cached,
            attribution.computed,
            attribution.cache_hits,
        );
    }

    let short = BUNDLE.trim_start_matches("sha256:").get(..12).unwrap_or(BUNDLE);
    println!("\nThe demo's bundle: {BUNDLE} (its jobs: `mops results query --bundle {short}`)");
    println!("\nBest parameter sets for {TARGET} (true values: beta {}, sigma {}, gamma {}):", modelops_seir::DEFAULT_TRUTH.beta, modelops_seir::DEFAULT_TRUTH.sigma, modelops_seir::DEFAULT_TRUTH.gamma);
    let best = Question::Command(modelops_query::Command::BestParameters {
        target: TARGET.into(),
        n: args.top,
        bundle_digest: Some(BUNDLE.into()),
    });
    let output = OutputArgs {
        format: Format::Table,
        output: None,
        max_rows: args.top,
    };
    query::answer(clients.channel.clone(), best, &output).await?;
    if let Some(server) = server {
        server.stop().await?;
    }
    let python_endpoint = if args.endpoint.is_some() { endpoint } else { "http://127.0.0.1:50051".to_owned() };
    println!("\nDone in {:.1} s. The table in Python (with `mops serve --home {home}` running, and `pip install ./clients/python`):\n", started.elapsed().as_secs_f64());
    println!("    from modelops_results import ResultClient");
    println!("    client = ResultClient(\"{python_endpoint}\")");
    println!("    df = client.get_losses(\"{first}\")");
    if args.overlap {
        println!("\nCache hits of the second study: mops attribution show {}", jobs[1].0);
    }
    if args.endpoint.is_some() {
        println!("\nIts loss landscape: /jobs/{first} on the dashboard of the server at {python_endpoint} (its --metrics-listen address).");
    } else {
        println!("\nIts loss landscape in the dashboard, once `mops serve --home {home}` runs: http://127.0.0.1:9464/jobs/{first}");
    }
    Ok(())
}

fn sample(ranges: &[ParamRange], sampler: Sampler, n: usize, skip: usize, seed: u64) -> Vec<Vec<f64>> {
    match sampler {
        // The sequence's first point is the corner of the box; start after it.
        Sampler::Sobol => sobol(ranges, n, skip + 1),
        Sampler::Lhs => latin_hypercube(ranges, n, seed.wrapping_add(skip as u64)),
    }
}

/// The study JSON for `sets` (values rounded to 6 significant digits, as a person would write).
fn study_json(ranges: &[ParamRange], sets: &[Vec<f64>], replicates: u64) -> String {
    let sets: Vec<String> = sets
        .iter()
        .map(|values| {
            let params: Vec<String> = ranges.iter().zip(values).map(|(r, v)| format!("\"{}\": {}", r.name, round6(*v))).collect();
            format!("{{\"params\": {{{}}}}}", params.join(", "))
        })
        .collect();
    format!(
        "{{\"model\": \"{MODEL}\", \"scenario\": \"baseline\", \"parameter_sets\": [{}], \"n_replicates\": {replicates}, \"targets\": [\"{TARGET}\"], \"sampling_method\": \"demo\"}}",
        sets.join(", ")
    )
}

fn round6(value: f64) -> f64 {
    format!("{value:.6}").parse().unwrap_or(value)
}

fn params_of(values: &PyObject) -> anyhow::Result<SeirParams> {
    let get = |name: &str| values.get(name).and_then(PyValue::as_f64).with_context(|| format!("parameter {name} missing"));
    Ok(SeirParams {
        beta: get("beta")?,
        sigma: get("sigma")?,
        gamma: get("gamma")?,
    })
}

#[expect(clippy::too_many_arguments, reason = "one study's run, spelled out")]
async fn run_study(
    clients: &Clients,
    provenance: &Store,
    job_id: &str,
    ranges: &[ParamRange],
    sets: &[Vec<f64>],
    replicates: u64,
    setup: &SeirSetup,
    observed: &[f64],
    pace: Duration,
) -> anyhow::Result<RunCounts> {
    let mut registry = clients.registry.clone();
    registry
        .register_job(registry_pb::RegisterJobRequest {
            job_id: job_id.into(),
            spec: Some(registry_pb::register_job_request::Spec::Study(registry_pb::StudySpec {
                study_json: study_json(ranges, sets, replicates),
                bundle_ref: BUNDLE.into(),
            })),
            ..Default::default()
        })
        .await
        .map_err(status_error)?;
    let spec_json = registry
        .get_job_spec(registry_pb::GetJobSpecRequest { job_id: job_id.into() })
        .await
        .map_err(status_error)?
        .into_inner()
        .job_spec_json;
    let JobSpec::Simulation(spec) = JobSpec::from_json(spec_json.as_bytes())? else {
        anyhow::bail!("the registry stored a non-simulation spec for {job_id}");
    };
    for status in [registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running] {
        registry
            .update_status(registry_pb::UpdateStatusRequest {
                job_id: job_id.into(),
                status: status.into(),
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
    }
    let bar = indicatif::ProgressBar::new(spec.tasks.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} simulations").expect("valid template"));
    bar.set_prefix(job_id.to_owned());
    let spec = Arc::new(spec);
    let groups = spec.task_groups().len();
    let mut runs = futures::stream::iter(0..groups)
        .map(|index| {
            let spec = Arc::clone(&spec);
            let store = Arc::clone(&provenance.object_store);
            let observed = observed.to_vec();
            let setup = *setup;
            async move {
                let group = &spec.task_groups()[index];
                run_group(store.as_ref(), &spec, group, &setup, &observed).await
            }
        })
        .buffer_unordered(8);
    let mut counts = RunCounts::default();
    // Edges are reported as the sets finish, as a runner reports them: at most every half second
    // or every 1,000 edges, so the dashboard sees the job's results while it runs.
    let mut attribution = clients.attribution.clone();
    let mut edges = Vec::new();
    let mut reported = Instant::now();
    while let Some(done) = runs.next().await {
        let (group_edges, group_counts) = done?;
        counts.sims_computed += group_counts.sims_computed;
        counts.sims_cached += group_counts.sims_cached;
        counts.aggs_computed += group_counts.aggs_computed;
        counts.aggs_cached += group_counts.aggs_cached;
        let tasks = (group_counts.sims_computed + group_counts.sims_cached) as i64;
        edges.extend(group_edges);
        if edges.len() >= 1000 || reported.elapsed() >= Duration::from_millis(500) {
            record_edges(&mut attribution, job_id, std::mem::take(&mut edges)).await?;
            reported = Instant::now();
        }
        registry
            .add_progress(registry_pb::AddProgressRequest {
                job_id: job_id.into(),
                completed_delta: tasks,
                // Acknowledged once queued: the registry coalesces progress and writes it
                // within one flush interval; waiting for each write would pace the run.
                ack_when_queued: true,
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
        bar.inc(tasks as u64);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    bar.finish_and_clear();
    record_edges(&mut attribution, job_id, edges).await?;
    attribution
        .seal_job(attribution_pb::SealJobRequest {
            job_id: job_id.into(),
            derive_missing: false,
        })
        .await
        .map_err(status_error)?;
    registry
        .update_status(registry_pb::UpdateStatusRequest {
            job_id: job_id.into(),
            status: registry_pb::JobStatus::Validating.into(),
            ..Default::default()
        })
        .await
        .map_err(status_error)?;
    registry
        .finalize_job(registry_pb::FinalizeJobRequest {
            job_id: job_id.into(),
            status: registry_pb::JobStatus::Succeeded.into(),
            ..Default::default()
        })
        .await
        .map_err(status_error)?;
    let table = wait_for_index(clients, job_id).await?;
    if table.missing > 0 {
        // The demo wrote every aggregation: a server that finds some missing reads another store.
        anyhow::bail!(
            "the server found {} of {job_id}'s {} results missing: it does not read the provenance store the demo wrote to",
            table.missing,
            table.total
        );
    }
    Ok(counts)
}

/// Records `edges` of `job_id` as one batch (nothing when empty).
async fn record_edges(attribution: &mut AttributionClient<AuthedChannel>, job_id: &str, edges: Vec<attribution_pb::Edge>) -> anyhow::Result<()> {
    if edges.is_empty() {
        return Ok(());
    }
    let batch = attribution_pb::RecordEdgesRequest {
        job_id: job_id.into(),
        batch_id: String::new(),
        edges,
    };
    attribution.record_edges(futures::stream::iter([batch])).await.map_err(status_error)?;
    Ok(())
}

/// Waits until the indexer has committed the job's table, and returns its row counts.
async fn wait_for_index(clients: &Clients, job_id: &str) -> anyhow::Result<indexer_pb::IndexCounts> {
    let mut indexer = clients.indexer.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = indexer
            .get_index_status(indexer_pb::GetIndexStatusRequest { job_id: job_id.into() })
            .await
            .map_err(status_error)?
            .into_inner()
            .status
            .unwrap_or_default();
        match indexer_pb::IndexPhase::try_from(status.phase) {
            Ok(indexer_pb::IndexPhase::Done) => return Ok(status.counts.unwrap_or_default()),
            Ok(indexer_pb::IndexPhase::Failed) => anyhow::bail!("indexing {job_id} failed: {}", status.error.unwrap_or_default()),
            _ if Instant::now() > deadline => anyhow::bail!("{job_id} was not indexed within two minutes"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn exists(store: &dyn object_store::ObjectStore, dir: &str) -> anyhow::Result<bool> {
    match store.head(&Path::from(format!("{dir}/{}", records::RESULT_FILE))).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn edge(job_id: &str, kind: attribution_pb::ResultKind, path: &str, param_id: &str, cached: bool) -> attribution_pb::Edge {
    attribution_pb::Edge {
        job_id: job_id.into(),
        kind: kind.into(),
        path: path.into(),
        param_id: param_id.into(),
        role: if cached { attribution_pb::Role::CacheHit } else { attribution_pb::Role::Computed }.into(),
        ..Default::default()
    }
}

/// Runs (or finds in the store) one parameter set's replicates and aggregation.
async fn run_group(
    store: &dyn object_store::ObjectStore,
    spec: &SimJobSpec,
    group: &ParamGroup<'_>,
    setup: &SeirSetup,
    observed: &[f64],
) -> anyhow::Result<(Vec<attribution_pb::Edge>, RunCounts)> {
    let params = params_of(group.values)?;
    let job_id = spec.job_id.as_str();
    let mut counts = RunCounts::default();
    let mut edges = Vec::new();
    let mut task_ids = Vec::new();
    let mut series = Vec::new();
    for task in &group.tasks {
        // The model is deterministic for a seed: a cached run's prevalence is recomputed, not read.
        let trajectory = modelops_seir::simulate(&params, setup, task.seed);
        let prevalence = trajectory.prevalence();
        let task_id = ids::runner_task_id(&task.param_id, task.seed, OUTPUTS);
        let dir = modelops_core::paths::sim_dir(ProvenanceSchema::Token, &task.bundle_ref, &task.param_id, task.seed);
        let cached = exists(store, &dir).await?;
        if cached {
            counts.sims_cached += 1;
        } else {
            let record = SimRecord {
                inputs: SimInputs::from(*task),
                task_id: task_id.clone(),
                outputs: vec![
                    SimOutput::new("metadata", format!("{{\"model\": \"{MODEL}\", \"seed\": {}, \"days\": {}}}", task.seed, setup.days)),
                    SimOutput::new("prevalence", trajectory_ipc(&trajectory)?),
                ],
                error: None,
                error_details: None,
                timestamp: now_iso(),
            };
            records::write_sim(store, ProvenanceSchema::Token, &record).await?;
            counts.sims_computed += 1;
        }
        let mut sim_edge = edge(job_id, attribution_pb::ResultKind::Sim, &dir, &task.param_id, cached);
        sim_edge.seed = Some(task.seed);
        edges.push(sim_edge);
        task_ids.push(task_id);
        series.push(prevalence);
    }
    let mean = modelops_seir::target::mean_trajectory(&series);
    let mut diagnostics = PyObject::new();
    diagnostics.insert("target_name", "prevalence_target".into());
    diagnostics.insert("n_sim_returns", (task_ids.len() as u64).into());
    // Each replicate's own loss against the target, as upstream's evaluators report it.
    let per_replicate = series.iter().map(|replicate| PyValue::Float(modelops_seir::target::loss(replicate, observed))).collect();
    diagnostics.insert("per_replicate_losses", PyValue::List(per_replicate));
    let record = AggRecord {
        bundle_ref: spec.bundle_ref.clone(),
        target_entrypoint: TARGET.into(),
        input_task_ids: task_ids,
        loss: modelops_seir::target::loss(&mean, observed),
        diagnostics,
        n_replicates: group.tasks.len() as i64,
        timestamp: now_iso(),
    };
    let dir = record.dir(ProvenanceSchema::Token);
    let cached = exists(store, &dir).await?;
    if cached {
        counts.aggs_cached += 1;
    } else {
        records::write_agg(store, ProvenanceSchema::Token, &record).await?;
        counts.aggs_computed += 1;
    }
    let mut agg_edge = edge(job_id, attribution_pb::ResultKind::Agg, &dir, group.param_id, cached);
    agg_edge.target = Some(TARGET.into());
    agg_edge.aggregation_id = Some(record.aggregation_id());
    edges.push(agg_edge);
    Ok((edges, counts))
}

/// A trajectory as an Arrow IPC file: day, the four compartments, incidence and prevalence.
fn trajectory_ipc(trajectory: &modelops_seir::Trajectory) -> anyhow::Result<Vec<u8>> {
    let days = trajectory.susceptible.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("day", DataType::Int32, false),
        Field::new("susceptible", DataType::Int64, false),
        Field::new("exposed", DataType::Int64, false),
        Field::new("infectious", DataType::Int64, false),
        Field::new("recovered", DataType::Int64, false),
        Field::new("incidence", DataType::Int64, false),
        Field::new("prevalence", DataType::Float64, false),
    ]));
    let counts = |values: &[u64]| Arc::new(values.iter().map(|v| *v as i64).collect::<Int64Array>());
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new((0..days as i32).collect::<Int32Array>()),
            counts(&trajectory.susceptible),
            counts(&trajectory.exposed),
            counts(&trajectory.infectious),
            counts(&trajectory.recovered),
            counts(&trajectory.incidence),
            Arc::new(trajectory.prevalence().into_iter().collect::<Float64Array>()),
        ],
    )?;
    let mut bytes = Cursor::new(Vec::new());
    let mut writer = arrow::ipc::writer::FileWriter::try_new(&mut bytes, &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelops_core::job::JobId;

    #[tokio::test]
    async fn a_demo_on_a_home_a_server_holds_suggests_its_endpoint() {
        use clap::Parser as _;
        let home = std::env::temp_dir().join(format!("mops-demo-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let home_arg = home.to_str().expect("utf-8 temp dir");
        let server = crate::serve::LocalServer::start(&crate::serve_args(&["--home", home_arg]).unwrap()).await.unwrap();
        let crate::Command::Demo(args) = crate::Cli::try_parse_from(["mops", "demo", "--home", home_arg, "--n-samples", "1"]).unwrap().command else {
            unreachable!("a demo command line")
        };
        let error = run(args).await.expect_err("the home is held by the server");
        let message = format!("{error:#}");
        assert!(message.contains("--endpoint"), "{message}");
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(home);
    }

    #[test]
    fn a_demo_without_samples_or_replicates_is_refused_naming_the_range() {
        use clap::Parser as _;
        for flag in ["--n-samples", "--n-replicates"] {
            let error = crate::Cli::try_parse_from(["mops", "demo", flag, "0"]).expect_err(flag);
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert!(error.to_string().contains("1.."), "{flag}: {error}");
        }
        let args = crate::Cli::try_parse_from(["mops", "demo", "--n-samples", "1", "--n-replicates", "1"]).expect("one of each");
        assert!(matches!(args.command, crate::Command::Demo(DemoArgs { n_samples: 1, n_replicates: 1, .. })));
    }

    #[test]
    fn studies_are_valid_upstream_studies() {
        let ranges = modelops_seir::default_ranges();
        let sets = sample(&ranges, Sampler::Sobol, 4, 0, 1);
        let study = modelops_core::study::SimulationStudy::from_json(study_json(&ranges, &sets, 2).as_bytes()).unwrap();
        let job = study.to_sim_job(BUNDLE, Some(JobId::new("demo-test").unwrap())).unwrap();
        assert_eq!(job.tasks.len(), 8);
        assert_eq!(job.target_entrypoints(), [TARGET]);
        let params = params_of(job.task_groups()[0].values).unwrap();
        assert!(ranges[0].low <= params.beta && params.beta <= ranges[0].high);
    }

    #[test]
    fn trajectories_encode_as_arrow_ipc_files() {
        let trajectory = modelops_seir::simulate(&modelops_seir::DEFAULT_TRUTH, &modelops_seir::DEFAULT_SETUP, 1);
        let bytes = trajectory_ipc(&trajectory).unwrap();
        let reader = arrow::ipc::reader::FileReader::try_new(Cursor::new(bytes), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches[0].num_rows(), trajectory.susceptible.len());
    }
}
