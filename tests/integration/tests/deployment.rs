//! The services as deployed (`deploy/k8s`): separate `mops serve registry|indexer|query`
//! processes, with two registry and two indexer replicas, on the test etcd and shared file
//! stores. Concurrent clients drive jobs through both registry replicas (some finished
//! milliseconds after registration), while indexer replicas are killed with SIGKILL at moments
//! chosen by a seeded generator and restarted, and so are registry replicas (between batches of
//! requests, so no request is in flight; a watcher moves to the other replica). At the end every terminal job must have exactly
//! one table with the right rows (read through the query process), and a watcher on one
//! registry replica must have seen every job's final state and its table done.
//!
//! It runs twice: with job state in etcd, and with job state and specs in Azurite (the Azure
//! container the Python ModelOps writes), where some jobs are written straight into the stores
//! as the Python ModelOps would, already succeeded.
//!
//! The seed comes from `MOPS_DEPLOY_SEED` (random otherwise) and is printed with the number of
//! jobs, kills and operations, so a failing run can be replayed. `MOPS_DEPLOY_JOBS` sets how
//! many jobs (CI runs a short version).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use futures::StreamExt as _;
use modelops_core::store::Store;
use modelops_integration_tests::{MopsProcess, azurite_container, channel, etcd_url, register_study, unique, write_results};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Mutex;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TARGETS: usize = 2;

fn study(sets: usize, salt: u64) -> String {
    let sets: Vec<String> = (0..sets).map(|i| format!(r#"{{"beta": {}, "gamma": {salt}}}"#, 0.1 + i as f64 / 10.0)).collect();
    format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 2,
            "targets": ["targets.prev:prevalence_target", "targets.deaths/deaths_target"]}}"#,
        sets.join(", ")
    )
}

/// One planned job: how many sets, which are missing, and whether it is finalized at once.
#[derive(Debug, Clone)]
struct Plan {
    job: String,
    sets: usize,
    missing: Vec<usize>,
    replica: usize,
    /// Written straight into the stores as the Python ModelOps does, not through a server.
    direct: bool,
    /// Makes the job's parameter sets its own: the synthetic writer rewrites shared records
    /// with new timestamps, which would change another job's inputs (upstream never rewrites).
    salt: u64,
}

/// The processes of the deployment, with what is needed to restart one.
struct Deployment {
    shared: tempfile::TempDir,
    common: Vec<String>,
    registries: Vec<MopsProcess>,
    indexers: Vec<MopsProcess>,
    query: MopsProcess,
}

impl Deployment {
    /// Starts the processes with job state in `registry_store` and job specs in `jobs_store`
    /// (`None`: a shared directory), the provenance and results stores in a shared directory.
    fn start(registry_store: String, jobs_store: Option<String>) -> Self {
        let shared = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("file://{}/{name}", shared.path().display());
        let common = vec![
            "--registry-store".to_owned(),
            registry_store,
            "--jobs-store".to_owned(),
            jobs_store.unwrap_or_else(|| url("jobs")),
            "--provenance".to_owned(),
            url("provenance"),
            "--results".to_owned(),
            url("results"),
            // A killed indexer's claim is taken over after this.
            "--index-claim-ttl-seconds".to_owned(),
            "3".to_owned(),
            "--catalog-refresh-ms".to_owned(),
            "200".to_owned(),
        ];
        let spawn = |service: &str, n: usize| Self::spawn(shared.path(), &common, service, n);
        let registries = (0..2).map(|n| spawn("registry", n)).collect();
        let indexers = (0..2).map(|n| spawn("indexer", n)).collect();
        let query = spawn("query", 0);
        Self {
            shared,
            common,
            registries,
            indexers,
            query,
        }
    }

    fn spawn(shared: &Path, common: &[String], service: &str, n: usize) -> MopsProcess {
        let home = shared.join(format!("home-{service}-{n}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut args: Vec<&str> = vec![service];
        args.extend(common.iter().map(String::as_str));
        MopsProcess::serve(&home, &args)
    }

    fn endpoint(process: &MopsProcess) -> String {
        format!("http://127.0.0.1:{}", process.port)
    }

    /// SIGKILLs indexer `n` and starts a new one in its place.
    fn kill_and_restart_indexer(&mut self, n: usize) {
        let killed = &mut self.indexers[n].child;
        killed.kill().unwrap();
        killed.wait().unwrap();
        self.indexers[n] = Self::spawn(self.shared.path(), &self.common, "indexer", n);
    }

    /// SIGKILLs registry replica `n` and starts a new one in its place (on a new port); returns
    /// its endpoint.
    fn kill_and_restart_registry(&mut self, n: usize) -> String {
        let killed = &mut self.registries[n].child;
        killed.kill().unwrap();
        killed.wait().unwrap();
        self.registries[n] = Self::spawn(self.shared.path(), &self.common, "registry", n);
        Self::endpoint(&self.registries[n])
    }
}

/// Runs one job through registry replica `plan.replica`: register, write its results, walk it to
/// succeeded or partial (counting RPCs in `ops`).
async fn drive(plan: &Plan, endpoint: &str, provenance: &Store, ops: &AtomicU64) {
    let channel = channel(endpoint).await;
    let spec = register_study(&channel, &plan.job, &study(plan.sets, plan.salt), BUNDLE).await;
    ops.fetch_add(2, Ordering::Relaxed);
    let written: Vec<usize> = (0..plan.sets).filter(|i| !plan.missing.contains(i)).collect();
    write_results(provenance, &spec, &written).await;
    let mut client = JobRegistryClient::new(channel);
    for status in [pb::JobStatus::Submitting, pb::JobStatus::Scheduled, pb::JobStatus::Running, pb::JobStatus::Validating] {
        client
            .update_status(pb::UpdateStatusRequest {
                job_id: plan.job.clone(),
                status: status.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{} → {status:?}: {e}", plan.job));
        ops.fetch_add(1, Ordering::Relaxed);
    }
    let last = if plan.missing.is_empty() { pb::JobStatus::Succeeded } else { pb::JobStatus::Partial };
    client
        .finalize_job(pb::FinalizeJobRequest {
            job_id: plan.job.clone(),
            status: last.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("finalize {}: {e}", plan.job));
    ops.fetch_add(1, Ordering::Relaxed);
}

/// Writes a finished job as the Python ModelOps does, straight into the stores: its spec blob,
/// its results, and its `state.json` already succeeded, so no server ever sees it pending.
async fn write_directly(plan: &Plan, registry_store: &str, jobs: &Store, provenance: &Store) {
    use modelops_core::job::{JobId, JobState, JobStatus};
    use modelops_core::study::{JobSpec, SimulationStudy};
    use object_store::ObjectStoreExt as _;
    let id = JobId::new(&plan.job).unwrap();
    let spec = SimulationStudy::from_json(study(plan.sets, plan.salt).as_bytes()).unwrap().to_sim_job(BUNDLE, Some(id.clone())).unwrap();
    let key = modelops_core::paths::job_spec_key("simulation", &id);
    let blob = JobSpec::Simulation(spec.clone()).to_json();
    jobs.object_store.put(&object_store::path::Path::from(key.as_str()), blob.into()).await.unwrap();
    write_results(provenance, &spec, &(0..plan.sets).collect::<Vec<_>>()).await;
    let timestamp = modelops_core::time::now_iso();
    let mut metadata = modelops_core::pyjson::PyObject::new();
    metadata.insert("type", "SimJob".into());
    metadata.insert("blob_key", key.as_str().into());
    let mut state = JobState::registered(id.clone(), &timestamp, None, None, metadata);
    state.set_status(JobStatus::Succeeded);
    state.set("tasks_total", (spec.tasks.len() as i64).into());
    state.set("tasks_completed", (spec.tasks.len() as i64).into());
    let store = modelops_registry::store::open(registry_store).await.unwrap();
    let created = store.create_if_absent(&modelops_core::paths::job_state_key(&id), state.to_json().into()).await.unwrap();
    assert!(created.is_some(), "{} written once", plan.job);
}

/// The final state each job reached, as one watcher saw it, until every job in `jobs` is seen
/// terminal with its table done. When its replica dies, the watcher moves to another one and
/// replays the current states (a position is only good on the replica that gave it).
async fn watch_until_indexed(endpoints: Arc<std::sync::Mutex<Vec<String>>>, jobs: BTreeSet<String>, seen: Arc<Mutex<BTreeMap<String, pb::JobState>>>, reconnects: Arc<AtomicU64>) {
    let done = |s: &pb::JobState| s.index_state == i32::from(pb::IndexState::Done);
    for attempt in 0usize.. {
        let endpoint = {
            let endpoints = endpoints.lock().unwrap();
            endpoints[attempt % endpoints.len()].clone()
        };
        let Ok(transport) = tonic::transport::Channel::from_shared(endpoint).unwrap().connect().await else {
            reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let request = pb::WatchJobsRequest {
            replay_current: true,
            ..Default::default()
        };
        let Ok(stream) = JobRegistryClient::new(transport).watch_jobs(request).await else {
            reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut stream = stream.into_inner();
        while let Some(Ok(change)) = stream.next().await {
            let state = change.job.unwrap();
            if !jobs.contains(&state.job_id) {
                continue;
            }
            let mut seen = seen.lock().await;
            seen.insert(state.job_id.clone(), state);
            if seen.len() == jobs.len() && seen.values().all(done) {
                return;
            }
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

async fn table_rows(endpoint: &str, job: &str) -> usize {
    let mut flight = FlightServiceClient::new(channel(endpoint).await);
    let ticket = arrow_flight::Ticket::new(format!(r#"{{"type": "losses", "job_ids": ["{job}"]}}"#));
    let stream = flight.do_get(ticket).await.unwrap_or_else(|e| panic!("DoGet {job}: {e}")).into_inner();
    let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream.map(|r| r.map_err(Into::into)));
    batches.map(|b| b.unwrap().num_rows()).collect::<Vec<_>>().await.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_replicas_index_every_job_once_on_etcd() {
    let prefix = unique("deploy");
    run_deployment("etcd", etcd_url(&prefix), None, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_replicas_index_every_job_once_on_azurite() {
    // The registry and the job specs in the Azure container the Python ModelOps writes, whose
    // change feed is a poll: jobs written straight in as succeeded are first seen finished.
    let prefix = unique("deploy-az");
    let container = azurite_container(&prefix).await;
    run_deployment("azurite", format!("{container}/registry"), Some(format!("{container}/jobs")), &prefix).await;
}

async fn run_deployment(backend: &str, registry_store: String, jobs_store: Option<String>, prefix: &str) {
    let seed: u64 = std::env::var("MOPS_DEPLOY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let jobs: usize = std::env::var("MOPS_DEPLOY_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut deployment = Deployment::start(registry_store.clone(), jobs_store.clone());
    let jobs_specs = Store::open(jobs_store.as_deref().unwrap_or(&format!("file://{}/jobs", deployment.shared.path().display()))).unwrap();
    let registries = Arc::new(std::sync::Mutex::new(deployment.registries.iter().map(Deployment::endpoint).collect::<Vec<_>>()));
    let replicas = deployment.registries.len();
    let provenance = Store::open(&format!("file://{}/provenance", deployment.shared.path().display())).unwrap();

    let plans: Vec<Plan> = (0..jobs)
        .map(|i| {
            let sets = rng.random_range(2..=4);
            // The last batch is written straight in, after the last kill, so only the live
            // indexers' handling of what they first see finished can index it (no restart's
            // catch-up).
            let direct = i + 4 >= jobs || rng.random_bool(0.1);
            let missing = if !direct && rng.random_bool(0.25) { vec![rng.random_range(0..sets)] } else { Vec::new() };
            Plan {
                direct,
                job: format!("{prefix}-{i}"),
                sets,
                missing,
                replica: rng.random_range(0..replicas),
                salt: i as u64 + 1,
            }
        })
        .collect();
    // After these many jobs were driven, a process is killed: an indexer or a registry replica.
    let kill_after: BTreeSet<usize> = (0..4).map(|_| rng.random_range(1..jobs.saturating_sub(4).max(2))).collect();

    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let reconnects = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(watch_until_indexed(
        Arc::clone(&registries),
        plans.iter().map(|p| p.job.clone()).collect(),
        Arc::clone(&seen),
        Arc::clone(&reconnects),
    ));

    let ops = Arc::new(AtomicU64::new(0));
    let (mut indexer_kills, mut registry_kills) = (0, 0);
    // Four clients at a time; between batches (no request in flight), the planned kills, while
    // the indexers work on what the batch finished.
    for (start, batch) in plans.chunks(4).enumerate().map(|(i, b)| (i * 4, b)) {
        let runs = batch.iter().map(|plan| {
            let endpoint = registries.lock().unwrap()[plan.replica].clone();
            let (provenance, ops, jobs_specs, registry_store) = (provenance.clone(), Arc::clone(&ops), jobs_specs.clone(), registry_store.clone());
            async move {
                if plan.direct {
                    write_directly(plan, &registry_store, &jobs_specs, &provenance).await;
                } else {
                    drive(plan, &endpoint, &provenance, &ops).await;
                }
            }
        });
        futures::future::join_all(runs).await;
        for _ in kill_after.range(start + 1..=start + batch.len()) {
            if rng.random_bool(0.5) {
                deployment.kill_and_restart_indexer(rng.random_range(0..deployment.indexers.len()));
                indexer_kills += 1;
            } else {
                let victim = rng.random_range(0..replicas);
                let endpoint = deployment.kill_and_restart_registry(victim);
                registries.lock().unwrap()[victim] = endpoint;
                registry_kills += 1;
            }
        }
    }

    // Bounded, not a synchronisation: the watcher returns on the events it waits for.
    let watched = tokio::time::timeout(Duration::from_secs(std::env::var("MOPS_DEPLOY_WAIT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(120)), watcher).await;
    let seen = seen.lock().await.clone();
    let not_done: Vec<(&String, i32, i32)> = seen
        .iter()
        .filter(|(_, s)| s.index_state != i32::from(pb::IndexState::Done))
        .map(|(job, s)| (job, s.status, s.index_state))
        .collect();
    assert!(watched.is_ok(), "seed {seed}: not every job was seen indexed in time; seen {} of {jobs}, not done: {not_done:?}", seen.len());

    let query = Deployment::endpoint(&deployment.query);
    for plan in &plans {
        let state = &seen[&plan.job];
        let expected_status = if plan.missing.is_empty() { pb::JobStatus::Succeeded } else { pb::JobStatus::Partial };
        assert_eq!(state.status, i32::from(expected_status), "seed {seed}: {}", plan.job);
        // Exactly one table version, with one row per set × target.
        let tables = deployment.shared.path().join(format!("results/results/{}/tables", plan.job));
        let versions: Vec<String> = std::fs::read_dir(&tables)
            .unwrap_or_else(|e| panic!("seed {seed}: {}: {e}", tables.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("losses-"))
            .collect();
        assert_eq!(versions.len(), 1, "seed {seed}: {}: {versions:?}", plan.job);
        assert_eq!(table_rows(&query, &plan.job).await, plan.sets * TARGETS, "seed {seed}: {}", plan.job);
    }
    println!(
        "deployment on {backend}: seed {seed}, {jobs} jobs ({} written straight into the stores), {indexer_kills} indexer and {registry_kills} registry replica kills (SIGKILL), {} registry operations, {} watcher reconnects, 2 registry / 2 indexer / 1 query processes",
        plans.iter().filter(|p| p.direct).count(),
        ops.load(Ordering::Relaxed),
        reconnects.load(Ordering::Relaxed)
    );
}
