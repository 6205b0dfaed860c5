//! The services as deployed (`deploy/k8s`): separate `mops serve registry|attribution|indexer|query`
//! processes meeting only over gRPC (`--registry-endpoint`), two replicas of each but attribution, on etcd (the test's own) or Azurite and shared file stores. Concurrent clients drive jobs through both registry replicas (some finished
//! milliseconds after registration), while indexer replicas are killed with SIGKILL at moments
//! chosen by a seeded generator and restarted, and so are registry replicas and attribution,
//! each while clients' requests are in flight (a call left unanswered is made again; a watcher
//! moves to the other replica, and the services following a killed replica reconnect to it once
//! it is back on its address). At the end every terminal job must have exactly
//! one table with the right rows (read through the query process), and a watcher on one
//! registry replica must have seen every job's final state and its table done.
//!
//! The registry's store is also taken down for up to three seconds, twice, while clients'
//! requests are in flight: on etcd the test's own etcd is SIGKILLed and restarted; on Azurite the
//! registry replicas reach it through a TCP gate that is cut (connections refused, open ones
//! dropped) while the direct writer keeps writing. A call left unanswered is made again, and must
//! then find its first attempt applied or apply it (no acknowledged update lost, none applied
//! twice). A watcher moving between replicas resumes from its position (positions come from the
//! store): it never has to replay every job.
//!
//! It runs twice: with job state in etcd, and with job state and specs in Azurite (the Azure
//! container the Python ModelOps writes), where some jobs are written straight into the stores
//! as the Python ModelOps would, already succeeded.
//!
//! Last, four clients race random status changes and reads on each of a few jobs through both
//! registry replicas, and each job's history must be linearizable against upstream's job state
//! machine (`linearizability`, a Wing & Gong search).
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
use modelops_integration_tests::{MopsProcess, TcpGate, azurite_container, channel, free_port, required_env, start_private_etcd, unique, write_results};
use modelops_proto::attribution::v1 as attribution_pb;
use modelops_proto::attribution::v1::attribution_client::AttributionClient;
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Mutex;

mod linearizability;

use linearizability::{Answer, Call, Operation};

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

/// The processes of the deployment, with what is needed to restart one. As in `deploy/k8s`, only
/// the registry opens the job state and spec stores, and only attribution its edges; the other
/// services reach them through their gRPC APIs (`--registry-endpoint`, `--attribution-endpoint`),
/// replica `n` of each through registry replica `n` (attribution through replica 0), at addresses
/// that survive a restart (a Kubernetes Service's).
struct Deployment {
    shared: tempfile::TempDir,
    /// The registry's stores.
    registry_args: Vec<String>,
    /// The registry's extra environment (how it reaches Azurite).
    registry_env: Vec<(String, String)>,
    /// The shared data stores and the indexers' timings.
    common: Vec<String>,
    /// Each registry replica's (gRPC, HTTP) ports.
    registry_ports: Vec<(u16, u16)>,
    /// Attribution's (gRPC, HTTP) ports.
    attribution_ports: (u16, u16),
    registries: Vec<MopsProcess>,
    attribution: MopsProcess,
    indexers: Vec<MopsProcess>,
    queries: Vec<MopsProcess>,
}

impl Deployment {
    /// Starts the processes with job state in `registry_store` and job specs in `jobs_store`
    /// (`None`: a shared directory), the provenance and results stores in a shared directory.
    fn start(registry_store: String, jobs_store: Option<String>, registry_env: Vec<(String, String)>) -> Self {
        let shared = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("file://{}/{name}", shared.path().display());
        let registry_args = vec!["--registry-store".to_owned(), registry_store, "--jobs-store".to_owned(), jobs_store.unwrap_or_else(|| url("jobs"))];
        let mut common = vec![
            "--provenance".to_owned(),
            url("provenance"),
            "--results".to_owned(),
            url("results"),
            // A killed indexer's claim is taken over after this.
            "--index-claim-ttl-seconds".to_owned(),
            "3".to_owned(),
            "--index-resync-seconds".to_owned(),
            "2".to_owned(),
            "--catalog-refresh-ms".to_owned(),
            "200".to_owned(),
        ];
        let registry_ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
        let attribution_ports = (free_port(), free_port());
        common.extend(["--attribution-endpoint".to_owned(), format!("http://127.0.0.1:{}", attribution_ports.0)]);
        let mut deployment = Self {
            registries: Vec::new(),
            attribution: Self::spawn_attribution(shared.path(), &common, &registry_ports, attribution_ports),
            indexers: Vec::new(),
            queries: Vec::new(),
            shared,
            registry_args,
            registry_env,
            common,
            registry_ports,
            attribution_ports,
        };
        for n in 0..2 {
            let registry = deployment.spawn_registry(n);
            deployment.registries.push(registry);
        }
        for n in 0..2 {
            let indexer = Self::spawn(deployment.shared.path(), &deployment.common, &deployment.registry_ports, "indexer", n);
            deployment.indexers.push(indexer);
            let query = Self::spawn(deployment.shared.path(), &deployment.common, &deployment.registry_ports, "query", n);
            deployment.queries.push(query);
        }
        deployment
    }

    fn home(shared: &Path, service: &str, n: usize) -> std::path::PathBuf {
        let home = shared.join(format!("home-{service}-{n}"));
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    /// Starts replica `n` of a service that reaches the registry through replica `n`'s address.
    /// It may start before that replica listens: its calls fail UNAVAILABLE until then.
    fn spawn(shared: &Path, common: &[String], registry_ports: &[(u16, u16)], service: &str, n: usize) -> MopsProcess {
        let endpoint = format!("http://127.0.0.1:{}", registry_ports[n].0);
        let mut args: Vec<&str> = vec![service, "--registry-endpoint", &endpoint];
        args.extend(common.iter().map(String::as_str));
        MopsProcess::serve(&Self::home(shared, service, n), &args)
    }

    /// Starts attribution on its ports, reaching the registry through replica 0.
    fn spawn_attribution(shared: &Path, common: &[String], registry_ports: &[(u16, u16)], (port, http_port): (u16, u16)) -> MopsProcess {
        let endpoint = format!("http://127.0.0.1:{}", registry_ports[0].0);
        let mut args: Vec<&str> = vec!["attribution", "--registry-endpoint", &endpoint];
        args.extend(common.iter().map(String::as_str));
        MopsProcess::serve_on(&Self::home(shared, "attribution", 0), port, http_port, &args)
    }

    /// Starts registry replica `n` on its ports.
    fn spawn_registry(&self, n: usize) -> MopsProcess {
        let mut args: Vec<&str> = vec!["registry"];
        args.extend(self.registry_args.iter().map(String::as_str));
        args.extend(self.common.iter().map(String::as_str));
        let (port, http_port) = self.registry_ports[n];
        MopsProcess::serve_on_with_env(&Self::home(self.shared.path(), "registry", n), port, http_port, &args, &self.registry_env)
    }

    fn endpoint(process: &MopsProcess) -> String {
        format!("http://127.0.0.1:{}", process.port)
    }

    /// SIGKILLs indexer `n` and starts a new one in its place.
    fn kill_and_restart_indexer(&mut self, n: usize) {
        let killed = &mut self.indexers[n].child;
        killed.kill().unwrap();
        killed.wait().unwrap();
        self.indexers[n] = Self::spawn(self.shared.path(), &self.common, &self.registry_ports, "indexer", n);
    }

    /// SIGKILLs registry replica `n` and starts a new one in its place, at the same address.
    fn kill_and_restart_registry(&mut self, n: usize) {
        let killed = &mut self.registries[n].child;
        killed.kill().unwrap();
        killed.wait().unwrap();
        self.registries[n] = self.spawn_registry(n);
    }

    /// SIGKILLs the attribution process and starts a new one in its place.
    fn kill_and_restart_attribution(&mut self) {
        let killed = &mut self.attribution.child;
        killed.kill().unwrap();
        killed.wait().unwrap();
        self.attribution = Self::spawn_attribution(self.shared.path(), &self.common, &self.registry_ports, self.attribution_ports);
    }
}

/// A process the chaos kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// Indexer replica `n`.
    Indexer(usize),
    /// The attribution process.
    Attribution,
    /// Registry replica `n`.
    Registry(usize),
}

/// Whether a call failed because the registry could not answer (its store down, a connection
/// cut): such a call was not acknowledged, and is made again.
fn unanswered(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Aborted
    )
}

/// Makes `call` until it is answered (bounded: about a minute). Returns the answer and whether
/// an earlier attempt went unanswered, in which case it may have been applied.
async fn answered<T, Fut: std::future::Future<Output = Result<T, tonic::Status>>>(what: &str, mut call: impl FnMut() -> Fut) -> (Result<T, tonic::Status>, bool) {
    let mut retried = false;
    for _ in 0..600 {
        match call().await {
            Err(status) if unanswered(&status) => {
                retried = true;
                // A client's backoff while the store is down, not a test's synchronisation.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return (answer, retried),
        }
    }
    panic!("{what}: no answer for a minute");
}

/// Runs one job through registry replica `plan.replica`: register, write its results, walk it to
/// succeeded or partial (counting RPCs in `ops`). Calls left unanswered by an outage are made
/// again, and a refusal of a repeated call whose first attempt had been applied (the job already
/// registered, already in the status asked for) counts as its acknowledgement.
async fn drive(plan: &Plan, endpoint: &str, provenance: &Store, ops: &AtomicU64) {
    use modelops_core::study::JobSpec;
    let client = JobRegistryClient::new(channel(endpoint).await);
    let job = plan.job.clone();
    let request = pb::RegisterJobRequest {
        job_id: job.clone(),
        spec: Some(pb::register_job_request::Spec::Study(pb::StudySpec {
            study_json: study(plan.sets, plan.salt),
            bundle_ref: BUNDLE.into(),
        })),
        ..Default::default()
    };
    match answered("register", || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.register_job(request).await }
    }).await {
        (Ok(_), _) => {}
        (Err(status), true) if status.code() == tonic::Code::AlreadyExists => {}
        (Err(status), _) => panic!("register {job}: {status}"),
    }
    let (spec, _) = answered("spec", || {
        let (mut client, job_id) = (client.clone(), job.clone());
        async move { client.get_job_spec(pb::GetJobSpecRequest { job_id }).await }
    }).await;
    let JobSpec::Simulation(spec) = JobSpec::from_json(spec.unwrap().into_inner().job_spec_json.as_bytes()).unwrap() else { panic!("a SimJob") };
    ops.fetch_add(2, Ordering::Relaxed);
    let written: Vec<usize> = (0..plan.sets).filter(|i| !plan.missing.contains(i)).collect();
    write_results(provenance, &spec, &written).await;
    let last = if plan.missing.is_empty() { pb::JobStatus::Succeeded } else { pb::JobStatus::Partial };
    for status in [pb::JobStatus::Submitting, pb::JobStatus::Scheduled, pb::JobStatus::Running, pb::JobStatus::Validating, last] {
        let update = pb::UpdateStatusRequest {
            job_id: job.clone(),
            status: status.into(),
            ..Default::default()
        };
        match answered("update", || {
            let (mut client, update) = (client.clone(), update.clone());
            async move { client.update_status(update).await }
        }).await {
            (Ok(_), _) => {}
            (Err(refused), true) if refused.code() == tonic::Code::FailedPrecondition => {
                let (now, _) = answered("get", || {
                    let (mut client, job_id) = (client.clone(), job.clone());
                    async move { client.get_job(pb::GetJobRequest { job_id }).await }
                }).await;
                let now = now.unwrap().into_inner().job.unwrap();
                assert_eq!(now.status, i32::from(status), "{job}: {refused}");
            }
            (Err(refused), _) => panic!("{job} → {status:?}: {refused}"),
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
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
    let key = modelops_core::paths::job_state_key(&id);
    for attempt in 0.. {
        let written = match modelops_registry::store::open(registry_store).await {
            Ok(store) => store.create_if_absent(&key, state.to_json().into()).await.map(|created| (store, created)),
            Err(e) => Err(e),
        };
        match written {
            Ok((_, Some(_))) => break,
            // Written by an attempt whose answer the outage cut off.
            Ok((store, None)) => {
                assert_eq!(store.get(&key).await.unwrap().unwrap().value, state.to_json().as_bytes(), "{} written once", plan.job);
                break;
            }
            Err(e) => {
                assert!(attempt < 600, "{}: the registry store did not come back: {e}", plan.job);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How a watcher got back after losing its stream.
#[derive(Debug, Default)]
struct Reconnects {
    /// Resumed from its last position (on another replica, or the same one restarted).
    resumed: AtomicU64,
    /// Re-listed every job's state: the replica could not resume that position.
    replayed: AtomicU64,
    /// Could not reach a replica, or lost the stream before its first message.
    failed: AtomicU64,
    /// Left a replica on its own (every [`MOVE_AFTER_EVENTS`] changes).
    moved: AtomicU64,
}

/// The final state each job reached, as one watcher saw it, until every job in `jobs` is seen
/// terminal with its table done. When its replica dies, the watcher moves to another one and
/// resumes from its last position there, or replays the current states when that replica
/// cannot resume it.
async fn watch_until_indexed(endpoints: Arc<std::sync::Mutex<Vec<String>>>, jobs: BTreeSet<String>, seen: Arc<Mutex<BTreeMap<String, pb::JobState>>>, reconnects: Arc<Reconnects>) {
    let done = |s: &pb::JobState| s.index_state == i32::from(pb::IndexState::Done);
    // The last position seen (0 before any: the first watch replays every job).
    let mut position = 0;
    for attempt in 0usize.. {
        if attempt > 0 {
            // A watcher's backoff between reconnects (a replica restarting, the store down).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let endpoint = {
            let endpoints = endpoints.lock().unwrap();
            endpoints[attempt % endpoints.len()].clone()
        };
        let Ok(transport) = tonic::transport::Channel::from_shared(endpoint).unwrap().connect().await else {
            reconnects.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut client = JobRegistryClient::new(transport);
        let resume = pb::WatchJobsRequest {
            after_revision: position,
            replay_current: position == 0,
            ..Default::default()
        };
        let stream = match client.watch_jobs(resume).await {
            Ok(stream) => {
                if attempt > 0 {
                    reconnects.resumed.fetch_add(1, Ordering::Relaxed);
                }
                stream
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let replay = pb::WatchJobsRequest {
                    replay_current: true,
                    ..Default::default()
                };
                let Ok(stream) = client.watch_jobs(replay).await else {
                    reconnects.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                reconnects.replayed.fetch_add(1, Ordering::Relaxed);
                stream
            }
            Err(_) => {
                reconnects.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let mut stream = stream.into_inner();
        let (mut received, resumed_from) = (0, position);
        while let Some(Ok(change)) = stream.next().await {
            position = change.watch_revision;
            // A replay is taken whole: its states carry where live changes continue from.
            received += usize::from(!change.replayed);
            let state = change.job.unwrap();
            if !jobs.contains(&state.job_id) {
                continue;
            }
            let mut seen = seen.lock().await;
            seen.insert(state.job_id.clone(), state);
            if seen.len() == jobs.len() && seen.values().all(done) {
                return;
            }
            // Every so often the watcher moves to the next replica on its own, and resumes there
            // (once its position moved on: a resume may first send what it already had).
            if received >= MOVE_AFTER_EVENTS && position != resumed_from {
                reconnects.moved.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// How many changes a watcher takes from one replica before it moves to the next.
const MOVE_AFTER_EVENTS: usize = 10;

async fn table_rows(endpoint: &str, job: &str) -> usize {
    let mut flight = FlightServiceClient::new(channel(endpoint).await);
    let ticket = arrow_flight::Ticket::new(format!(r#"{{"type": "losses", "job_ids": ["{job}"]}}"#));
    let stream = flight.do_get(ticket).await.unwrap_or_else(|e| panic!("DoGet {job}: {e}")).into_inner();
    let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream.map(|r| r.map_err(Into::into)));
    batches.map(|b| b.unwrap().num_rows()).collect::<Vec<_>>().await.iter().sum()
}

/// Several clients, through both registry replicas at once, race random status changes and
/// reads on one job; returns the history, each operation timed from its call to its answer.
async fn contend(job: &str, endpoints: &[String], clients: usize, calls: usize, seed: u64) -> Vec<Operation> {
    use modelops_core::job::JobStatus;
    let mut register = JobRegistryClient::new(channel(&endpoints[0]).await);
    register
        .register_job(pb::RegisterJobRequest {
            job_id: job.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("register {job}: {e}"));
    let runs = (0..clients).map(|c| {
        let endpoint = endpoints[c % endpoints.len()].clone();
        let job = job.to_owned();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c as u64 + 1));
            let mut client = JobRegistryClient::new(channel(&endpoint).await);
            let mut history = Vec::with_capacity(calls);
            for _ in 0..calls {
                let call = if rng.random_bool(0.3) { Call::Read } else { Call::Update(JobStatus::ALL[rng.random_range(0..JobStatus::ALL.len())]) };
                let invoked = std::time::Instant::now();
                let answer = match call {
                    Call::Read => client.get_job(pb::GetJobRequest { job_id: job.clone() }).await.map(|r| r.into_inner().job),
                    Call::Update(to) => client
                        .update_status(pb::UpdateStatusRequest {
                            job_id: job.clone(),
                            status: modelops_registry::service::status_to_proto(to).into(),
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().job),
                };
                let returned = std::time::Instant::now();
                let answer = match answer {
                    Ok(state) => Answer::Status(modelops_registry::service::status_from_proto(state.unwrap().status).unwrap()),
                    Err(status) if status.code() == tonic::Code::FailedPrecondition => Answer::Refused,
                    Err(status) if unanswered(&status) => Answer::Unknown,
                    Err(status) => panic!("{job}: {call:?}: {status}"),
                };
                let returned = (answer != Answer::Unknown).then_some(returned);
                history.push(Operation { call, answer, invoked, returned });
            }
            history
        }
    });
    futures::future::join_all(runs).await.into_iter().flatten().collect()
}

/// A private etcd the test kills (SIGKILL) and restarts on the same ports and data.
struct PrivateEtcd {
    dir: tempfile::TempDir,
    ports: (u16, u16),
    process: std::process::Child,
}

impl PrivateEtcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = (free_port(), free_port());
        let process = start_private_etcd(dir.path(), ports.0, ports.1);
        Self { dir, ports, process }
    }

    fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.ports.0)
    }

    fn kill(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    fn restart(&mut self) {
        self.process = start_private_etcd(self.dir.path(), self.ports.0, self.ports.1);
    }
}

/// The registry's store, which the test takes down and brings back.
enum Backend {
    /// A private etcd, SIGKILLed and restarted.
    Etcd(PrivateEtcd),
    /// Azurite behind a gate the registry replicas connect through, cut and restored.
    Gated(TcpGate),
}

impl Backend {
    fn take_down(&mut self) {
        match self {
            Self::Etcd(etcd) => etcd.kill(),
            Self::Gated(gate) => gate.cut(),
        }
    }

    fn bring_back(&mut self) {
        match self {
            Self::Etcd(etcd) => etcd.restart(),
            Self::Gated(gate) => gate.restore(),
        }
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_replicas_index_every_job_once_on_etcd() {
    // Its own etcd, which is also killed while requests are in flight.
    let prefix = unique("deploy");
    let etcd = PrivateEtcd::start();
    let url = etcd.url(&prefix);
    run_deployment("etcd", url, None, Vec::new(), &prefix, Backend::Etcd(etcd)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_replicas_index_every_job_once_on_azurite() {
    // The registry and the job specs in the Azure container the Python ModelOps writes, whose
    // change feed is a poll: jobs written straight in as succeeded are first seen finished.
    let prefix = unique("deploy-az");
    let container = azurite_container(&prefix).await;
    // The registry replicas reach Azurite through the gate; the direct writer does not.
    let blob = required_env("MOPS_TEST_AZURITE_BLOB");
    let azurite: std::net::SocketAddr = blob.trim_start_matches("http://").split('/').next().unwrap().parse().unwrap();
    let gate = TcpGate::start(azurite);
    let gated = format!("http://127.0.0.1:{}/devstoreaccount1", gate.port());
    let connection = required_env("AZURE_STORAGE_CONNECTION_STRING").replace(&blob, &gated);
    assert!(connection.contains(&gated), "the connection string names {blob}");
    let env = vec![("AZURE_STORAGE_CONNECTION_STRING".to_owned(), connection)];
    run_deployment("azurite", format!("{container}/registry"), Some(format!("{container}/jobs")), env, &prefix, Backend::Gated(gate)).await;
}

async fn run_deployment(backend: &str, registry_store: String, jobs_store: Option<String>, registry_env: Vec<(String, String)>, prefix: &str, mut store: Backend) {
    let seed: u64 = std::env::var("MOPS_DEPLOY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let jobs: usize = std::env::var("MOPS_DEPLOY_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut deployment = Deployment::start(registry_store.clone(), jobs_store.clone(), registry_env);
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
    let reconnects = Arc::new(Reconnects::default());
    let watcher = tokio::spawn(watch_until_indexed(
        Arc::clone(&registries),
        plans.iter().map(|p| p.job.clone()).collect(),
        Arc::clone(&seen),
        Arc::clone(&reconnects),
    ));

    let ops = Arc::new(AtomicU64::new(0));
    let (mut indexer_kills, mut registry_kills, mut attribution_kills) = (0, 0, 0);
    // Four clients at a time; during a batch, the planned kills of processes (and of etcd), with
    // requests in flight, while the indexers work on what earlier batches finished.
    // Batches during which the registry's store is down, for a while, with requests in flight.
    let outage_batches: BTreeSet<usize> = (0..2).map(|_| rng.random_range(0..(jobs / 4).saturating_sub(1).max(1))).collect();
    let mut longest_outage = Duration::ZERO;
    for (start, batch) in plans.chunks(4).enumerate().map(|(i, b)| (i * 4, b)) {
        let outage = outage_batches.contains(&(start / 4)).then(|| (Duration::from_millis(rng.random_range(20..200)), Duration::from_millis(rng.random_range(500..3000))));
        let store_ref = &mut store;
        let outage = async move {
            if let Some((after, down)) = outage {
                // Chaos timing, not synchronisation: when to pull the plug and for how long.
                tokio::time::sleep(after).await;
                let began = std::time::Instant::now();
                store_ref.take_down();
                tokio::time::sleep(down).await;
                store_ref.bring_back();
                return began.elapsed();
            }
            Duration::ZERO
        };
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
        // The planned kills of this batch, each at a random moment while its requests are in
        // flight: a registry replica killed mid-request leaves calls unanswered, which the
        // clients make again (and the services following it reconnect once it is back).
        let kills: Vec<(Victim, Duration)> = kill_after
            .range(start + 1..=start + batch.len())
            .map(|_| {
                let victim = match rng.random_range(0..5) {
                    0 | 1 => Victim::Indexer(rng.random_range(0..deployment.indexers.len())),
                    2 => Victim::Attribution,
                    _ => Victim::Registry(rng.random_range(0..replicas)),
                };
                (victim, Duration::from_millis(rng.random_range(10..300)))
            })
            .collect();
        let deployment_ref = &mut deployment;
        let chaos = async move {
            let mut killed = Vec::new();
            for (victim, after) in kills {
                // Chaos timing, not synchronisation: when to kill.
                tokio::time::sleep(after).await;
                // Restarting waits (blocking) for the new process to listen.
                tokio::task::block_in_place(|| match victim {
                    Victim::Indexer(n) => deployment_ref.kill_and_restart_indexer(n),
                    Victim::Attribution => deployment_ref.kill_and_restart_attribution(),
                    Victim::Registry(n) => deployment_ref.kill_and_restart_registry(n),
                });
                killed.push(victim);
            }
            killed
        };
        let (_, down, killed) = tokio::join!(futures::future::join_all(runs), outage, chaos);
        longest_outage = longest_outage.max(down);
        for victim in killed {
            match victim {
                Victim::Indexer(_) => indexer_kills += 1,
                Victim::Attribution => attribution_kills += 1,
                Victim::Registry(_) => registry_kills += 1,
            }
        }
    }

    // Contended jobs: four clients through both replicas race on each; every history must be
    // linearizable against the job state machine.
    let endpoints = registries.lock().unwrap().clone();
    let mut checked = 0;
    for n in 0..3 {
        let job = format!("{prefix}-contended-{n}");
        let history = contend(&job, &endpoints, 4, 8, seed.wrapping_add(n)).await;
        assert!(
            linearizability::linearizable(modelops_core::job::JobStatus::Pending, &history),
            "seed {seed}: the history of {job} is not linearizable: {history:#?}"
        );
        checked += history.len();
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

    let queries: Vec<String> = deployment.queries.iter().map(Deployment::endpoint).collect();
    for (n, plan) in plans.iter().enumerate() {
        let query = &queries[n % queries.len()];
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
        assert_eq!(table_rows(query, &plan.job).await, plan.sets * TARGETS, "seed {seed}: {}", plan.job);
    }
    // Attribution reaches job states and specs through the registry's API as well: every job's
    // aggregations (derived by the indexer) are counted, and a partial job's missing tasks are
    // found from its spec streamed by the registry.
    let mut attribution = AttributionClient::new(channel(&Deployment::endpoint(&deployment.attribution)).await);
    for plan in &plans {
        let request = attribution_pb::GetJobAttributionRequest {
            job_id: plan.job.clone(),
            sample_size: 0,
        };
        let counts = attribution.get_job_attribution(request).await.unwrap_or_else(|e| panic!("seed {seed}: {}: {e}", plan.job)).into_inner().counts.unwrap();
        assert_eq!(counts.aggs as usize, (plan.sets - plan.missing.len()) * TARGETS, "seed {seed}: {}", plan.job);
        if !plan.missing.is_empty() {
            let request = attribution_pb::GetResumableTasksRequest { job_id: plan.job.clone() };
            let resumable = attribution.get_resumable_tasks(request).await.unwrap_or_else(|e| panic!("seed {seed}: {}: {e}", plan.job)).into_inner();
            assert_eq!(resumable.task_json.len(), plan.missing.len() * 2, "seed {seed}: {}: two replicates per missing set", plan.job);
        }
    }
    println!(
        "deployment on {backend}: seed {seed}, {jobs} jobs ({} written straight into the stores), {indexer_kills} indexer, {registry_kills} registry replica and {attribution_kills} attribution kills (SIGKILL), {} store outages (longest {} ms, requests in flight), {} registry operations, {checked} operations on contended jobs checked linearizable, watcher reconnects: {} resumed from its position ({} of them moves between replicas), {} replayed, {} failed; 2 registry / 1 attribution / 2 indexer / 2 query processes meeting over gRPC",
        plans.iter().filter(|p| p.direct).count(),
        outage_batches.len(),
        longest_outage.as_millis(),
        ops.load(Ordering::Relaxed),
        reconnects.resumed.load(Ordering::Relaxed),
        reconnects.moved.load(Ordering::Relaxed),
        reconnects.replayed.load(Ordering::Relaxed),
        reconnects.failed.load(Ordering::Relaxed),
    );
    // Positions come from the store: a watcher resumes on any replica, restarted or not.
    assert!(reconnects.moved.load(Ordering::Relaxed) > 0, "seed {seed}: the watcher never moved between replicas");
    assert_eq!(reconnects.replayed.load(Ordering::Relaxed), 0, "seed {seed}: a watcher had to replay every job");
}
