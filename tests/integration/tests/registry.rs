//! The registry against every real backend (etcd, Azurite, moto, embedded), through the domain
//! API and through gRPC: conformance, races, A→B→A on S3, a state.json written by upstream
//! Python, coalesced progress, watches, a backend going away, etcd with TLS and authentication,
//! and the CLI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use modelops_core::job::{JobId, JobStatus};
use modelops_core::store::Store;
use futures::StreamExt;
use modelops_integration_tests::{
    MopsProcess, TestServer, azurite_container, channel, etcd_url, free_port, mops_binary, required_env, s3_bucket, start_private_etcd, unique,
};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use modelops_registry::registry::{Registration, StatusUpdate, revision};
use modelops_registry::store::etcd::EtcdOptions;
use modelops_registry::store::{self, StoreError, VersionedStore, conformance};
use modelops_registry::{JobRegistry, RegistryConfig, RegistryError};

/// The backends every registry guarantee is checked on, as registry-store URLs.
async fn backend_urls(name: &str) -> Vec<(&'static str, String)> {
    let dir = tempfile::tempdir().unwrap().keep();
    let container = unique(name);
    vec![
        ("memory", "memory://".to_owned()),
        ("embedded", format!("embedded://{}", dir.display())),
        ("etcd", etcd_url(&unique(name))),
        ("azurite", format!("{}/registry", azurite_container(&container).await)),
        ("s3", s3_bucket(&container).await),
    ]
}

fn registry_over(store: Arc<dyn VersionedStore>) -> JobRegistry {
    JobRegistry::new(store, Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new())
}

fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

/// Registers a bare job through the domain API.
async fn register_direct(registry: &JobRegistry, job: &JobId) {
    registry
        .register(Registration {
            job_id: Some(job.clone()),
            ..Registration::default()
        })
        .await
        .unwrap();
}

/// Registers a bare job through gRPC.
async fn register_bare(client: &mut JobRegistryClient<tonic::transport::Channel>, job: &str) {
    client
        .register_job(pb::RegisterJobRequest {
            job_id: job.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn conformance_on_etcd_azurite_and_s3() {
    for (name, url) in backend_urls("conformance").await.into_iter().skip(2) {
        let store = store::open(&url).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        // A failure's output then names the backend it happened on.
        eprintln!("conformance on {name}");
        conformance::run_all(store.as_ref(), &format!("{}/", unique("ns"))).await;
    }
}

#[tokio::test]
async fn twenty_concurrent_registrations_have_one_winner_on_every_backend() {
    for (name, url) in backend_urls("race").await {
        let registry = registry_over(store::open(&url).await.unwrap());
        let attempts = (0..20).map(|_| {
            registry.register(Registration {
                job_id: Some(id("job-race")),
                ..Registration::default()
            })
        });
        let results = join_all(attempts).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{name}: {results:?}");
        assert!(
            results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, RegistryError::AlreadyExists(_))),
            "{name}: {results:?}"
        );
    }
}

#[tokio::test]
async fn two_conflicting_transitions_have_one_winner_on_every_backend() {
    for (name, url) in backend_urls("transitions").await {
        let registry = registry_over(store::open(&url).await.unwrap());
        for round in 0..5 {
            let job = id(&format!("job-{round}"));
            register_direct(&registry, &job).await;
            let (a, b) = tokio::join!(
                registry.update_status(&job, StatusUpdate::to(JobStatus::Submitting)),
                registry.update_status(&job, StatusUpdate::to(JobStatus::Cancelled)),
            );
            assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{name}: {a:?} {b:?}");
            let final_status = registry.require(&job).await.unwrap().status();
            let expected = if a.is_ok() { JobStatus::Submitting } else { JobStatus::Cancelled };
            assert_eq!(final_status, expected, "{name}: the winner's write is what is stored");
        }
    }
}

#[tokio::test]
async fn a_b_a_is_rejected_on_s3() {
    let url = s3_bucket(&unique("aba")).await;
    let raw = store::open(&url).await.unwrap();

    // The hazard: S3 ETags are content hashes, so bytes that return to A get A's ETag back and a
    // writer still holding it wins.
    let v_a = raw.create_if_absent("raw/state.json", Bytes::from_static(b"A")).await.unwrap().unwrap();
    let v_b = raw.put_if_version("raw/state.json", Bytes::from_static(b"B"), &v_a).await.unwrap().unwrap();
    raw.put_if_version("raw/state.json", Bytes::from_static(b"A"), &v_b).await.unwrap().unwrap();
    assert!(
        raw.put_if_version("raw/state.json", Bytes::from_static(b"stale"), &v_a).await.unwrap().is_some(),
        "moto's ETag is the content hash, so raw bytes A→B→A let a stale writer through"
    );

    // The registry's revision counter makes every write's bytes unique, so the stale write fails
    // even when the job's fields return to what they were.
    let registry = registry_over(Arc::clone(&raw));
    let job = id("job-aba");
    register_direct(&registry, &job).await;
    let key = "jobs/job-aba/state.json";
    let stale = raw.get(key).await.unwrap().unwrap();
    registry.set_progress(&job, Some(5), None).await.unwrap();
    registry.set_progress(&job, Some(0), None).await.unwrap();
    let now = registry.require(&job).await.unwrap();
    assert_eq!((now.tasks_completed(), revision(&now)), (0, 3));
    assert!(raw.put_if_version(key, stale.value.clone(), &stale.version).await.unwrap().is_none(), "stale writer rejected");
}

/// The state.json fixtures were written by upstream's Python `JobRegistry`.
const UPSTREAM_RUNNING: &str = include_str!("../../../crates/core/tests/fixtures/upstream/state_running.json");
const UPSTREAM_SUCCEEDED: &str = include_str!("../../../crates/core/tests/fixtures/upstream/state_succeeded.json");

#[tokio::test]
async fn a_state_written_by_upstream_python_on_azure_is_served_and_rewritten_in_place() {
    let url = azurite_container(&unique("job-registry")).await.to_string();
    let blobs = Store::open(&url).unwrap();
    let key = object_store::path::Path::from("jobs/job-5b718dc8/state.json");
    object_store::ObjectStoreExt::put(blobs.object_store.as_ref(), &key, Bytes::from_static(UPSTREAM_RUNNING.as_bytes()).into())
        .await
        .unwrap();

    let registry = registry_over(store::open(&url).await.unwrap());
    let job = id("job-5b718dc8");
    let state = registry.require(&job).await.unwrap();
    assert_eq!((state.status(), state.tasks_completed(), state.tasks_total()), (JobStatus::Running, 5, 100));
    let finalized = registry
        .finalize(&job, JobStatus::Succeeded, Some("results/job-5b718dc8/".into()), None, None)
        .await
        .unwrap();

    // Same bytes as upstream's own finalize, except the time and the appended revision counter.
    let stored = object_store::ObjectStoreExt::get(blobs.object_store.as_ref(), &key).await.unwrap().bytes().await.unwrap();
    let expected = UPSTREAM_SUCCEEDED
        .replace("2026-11-22T20:05:12+00:00", finalized.updated_at())
        .replacen("\n}", ",\n  \"_revision\": 1\n}", 1);
    assert_eq!(String::from_utf8(stored.to_vec()).unwrap(), expected);
}

#[tokio::test]
async fn grpc_progress_from_sixteen_reporters_loses_nothing_and_coalesces() {
    let server = TestServer::start(&[]).await;
    let mut client = JobRegistryClient::new(channel(&server.endpoint()).await);
    register_bare(&mut client, "job-progress").await;
    let reporters = 16;
    let per_reporter = 60;
    let started = Instant::now();
    let tasks = (0..reporters).map(|r| {
        let endpoint = server.endpoint();
        tokio::spawn(async move {
            let mut client = JobRegistryClient::new(channel(&endpoint).await);
            for i in 0..per_reporter {
                let request = pb::AddProgressRequest {
                    job_id: "job-progress".into(),
                    completed_delta: 1,
                    total_delta: 1,
                    ack_when_queued: (r + i) % 4 == 0,
                };
                client.add_progress(request).await.unwrap();
            }
        })
    });
    for task in join_all(tasks).await {
        task.unwrap();
    }
    let elapsed = started.elapsed();
    // Queued increments are flushed within one interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = client
        .get_job(pb::GetJobRequest {
            job_id: "job-progress".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let expected = i64::from(reporters * per_reporter);
    assert_eq!((job.tasks_completed, job.tasks_total), (expected, expected), "no increment lost");
    // Register + progress writes: one per flush interval (200 ms) at most.
    let writes = job.revision;
    let allowed = 2 + (elapsed.as_secs_f64() / 0.2).ceil() as u64 + 2;
    assert!(writes <= allowed, "{writes} writes in {elapsed:?} (allowed {allowed})");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_watch_replays_streams_filters_and_refuses_stale_resumes() {
    let server = TestServer::start(&[]).await;
    let mut client = JobRegistryClient::new(channel(&server.endpoint()).await);
    for job in ["job-a", "job-b"] {
        register_bare(&mut client, job).await;
    }
    let mut watch = client
        .watch_jobs(pb::WatchJobsRequest {
            job_ids: vec!["job-a".into()],
            replay_current: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let replayed = watch.message().await.unwrap().unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.job.unwrap().job_id, "job-a");
    for job in ["job-b", "job-a"] {
        client
            .update_status(pb::UpdateStatusRequest {
                job_id: job.into(),
                status: pb::JobStatus::Submitting.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let change = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    let job = change.job.unwrap();
    assert_eq!((job.job_id.as_str(), job.status), ("job-a", i32::from(pb::JobStatus::Submitting)), "job-b is filtered out");
    assert_eq!(change.previous_status, i32::from(pb::JobStatus::Pending));
    assert!(!change.replayed && change.watch_revision > 0);

    // Resuming from a recent revision replays what followed it.
    let mut resumed = client
        .watch_jobs(pb::WatchJobsRequest {
            after_revision: change.watch_revision - 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again = resumed.message().await.unwrap().unwrap();
    assert_eq!(again.watch_revision, change.watch_revision);
    server.stop().await.unwrap();
}

/// A watch of `job`'s changes after position `after`.
async fn watch_after(client: &mut JobRegistryClient<tonic::transport::Channel>, job: &str, after: u64) -> Result<tonic::Streaming<pb::WatchJobsResponse>, tonic::Status> {
    let request = pb::WatchJobsRequest {
        job_ids: vec![job.to_owned()],
        after_revision: after,
        ..Default::default()
    };
    Ok(client.watch_jobs(request).await?.into_inner())
}

/// The next change of a watch: its position and the job's status.
async fn next(stream: &mut tonic::Streaming<pb::WatchJobsResponse>) -> (u64, i32) {
    // Bounded, not a synchronisation: the message is the event waited for.
    let message = tokio::time::timeout(Duration::from_secs(15), stream.message()).await.expect("a change within 15 s");
    let message = message.unwrap().expect("the stream goes on");
    (message.watch_revision, message.job.unwrap().status)
}

/// Two registry replicas on one store, a client of each, and a new job registered through B while
/// A's watch follows it from the position of a listing taken before (which misses nothing after it).
struct Replicas {
    a: TestServer,
    b: TestServer,
    on_a: JobRegistryClient<tonic::transport::Channel>,
    on_b: JobRegistryClient<tonic::transport::Channel>,
    job: String,
    listed: pb::ListJobsResponse,
    watch_a: tonic::Streaming<pb::WatchJobsResponse>,
}

impl Replicas {
    async fn watching_a_new_job(url: &str) -> Self {
        let a = TestServer::start(&["--registry-store", url]).await;
        let b = TestServer::start(&["--registry-store", url]).await;
        let mut on_a = JobRegistryClient::new(channel(&a.endpoint()).await);
        let mut on_b = JobRegistryClient::new(channel(&b.endpoint()).await);
        let job = unique("job-resume");
        let listed = on_a.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner();
        let watch_a = watch_after(&mut on_a, &job, listed.watch_revision).await.unwrap();
        register_bare(&mut on_b, &job).await;
        Self { a, b, on_a, on_b, job, listed, watch_a }
    }
}

#[tokio::test]
async fn on_etcd_a_watch_resumes_on_another_replica_at_the_same_positions() {
    // Registry replicas on one etcd prefix. Watch positions are etcd's revisions: a watcher of
    // replica A that lost its stream resumes on replica B, or on a replica C started later, from
    // its last position, without a replay, and gets what followed it at the same positions.
    let url = etcd_url(&unique("resume"));
    let Replicas { a, b, mut on_a, mut on_b, job, listed, mut watch_a } = Replicas::watching_a_new_job(&url).await;
    let status = |to: pb::JobStatus| pb::UpdateStatusRequest {
        job_id: job.clone(),
        status: to.into(),
        ..Default::default()
    };
    on_b.update_status(status(pb::JobStatus::Submitting)).await.unwrap();
    let registered = next(&mut watch_a).await;
    let submitted = next(&mut watch_a).await;
    assert_eq!((registered.1, submitted.1), (i32::from(pb::JobStatus::Pending), i32::from(pb::JobStatus::Submitting)));
    assert!(submitted.0 > registered.0 && registered.0 > listed.watch_revision, "{registered:?} {submitted:?}");
    drop(watch_a);

    // Resumed on B after the registration: the submission comes again, at the same position.
    let mut watch_b = watch_after(&mut on_b, &job, registered.0).await.expect("a position of replica A is good on replica B");
    assert_eq!(next(&mut watch_b).await, submitted);
    on_a.update_status(status(pb::JobStatus::Scheduled)).await.unwrap();
    let scheduled = next(&mut watch_b).await;
    assert_eq!(scheduled.1, i32::from(pb::JobStatus::Scheduled));
    // And A, asked from the submission on, gives the same next position.
    let mut again_a = watch_after(&mut on_a, &job, submitted.0).await.unwrap();
    assert_eq!(next(&mut again_a).await, scheduled);
    // A replica started after those changes replays the store's recent revisions into its
    // backlog: a watcher moving to it resumes there too.
    let c = TestServer::start(&["--registry-store", &url]).await;
    let mut on_c = JobRegistryClient::new(channel(&c.endpoint()).await);
    let mut watch_c = watch_after(&mut on_c, &job, submitted.0).await.expect("a position from before this replica started is good on it");
    assert_eq!(next(&mut watch_c).await, scheduled);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}

#[tokio::test]
async fn on_azurite_a_watch_resumes_on_another_replica_with_what_changed_since_its_position() {
    // Registry replicas on one Azure container. Positions are times on the store's clock
    // (`Last-Modified`): a watcher of replica A resumes on replica B, or on a replica C started
    // later, without a replay, and first gets the latest state of every job written since.
    let container = azurite_container(&unique("resume-az")).await;
    let url = format!("{container}/registry");
    let Replicas { a, b, mut on_a, mut on_b, job, listed: _, mut watch_a } = Replicas::watching_a_new_job(&url).await;
    let status = |to: pb::JobStatus| pb::UpdateStatusRequest {
        job_id: job.clone(),
        status: to.into(),
        ..Default::default()
    };
    // B's write reaches A's watcher through A's poll of the container.
    let registered = next(&mut watch_a).await;
    assert_eq!(registered.1, i32::from(pb::JobStatus::Pending));
    drop(watch_a);
    on_a.update_status(status(pb::JobStatus::Submitting)).await.unwrap();

    // Resumed on B: the job's latest state, not a replay and not an error.
    let mut watch_b = watch_after(&mut on_b, &job, registered.0).await.expect("a position of replica A is good on replica B");
    assert_eq!(next(&mut watch_b).await.1, i32::from(pb::JobStatus::Submitting));
    on_a.update_status(status(pb::JobStatus::Scheduled)).await.unwrap();
    assert_eq!(next(&mut watch_b).await.1, i32::from(pb::JobStatus::Scheduled));
    // A replica started after those changes asks the container too.
    let c = TestServer::start(&["--registry-store", &url]).await;
    let mut on_c = JobRegistryClient::new(channel(&c.endpoint()).await);
    let mut watch_c = watch_after(&mut on_c, &job, registered.0).await.expect("a position from before this replica started is good on it");
    assert_eq!(next(&mut watch_c).await.1, i32::from(pb::JobStatus::Scheduled));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_errors_have_the_documented_codes() {
    let server = TestServer::start(&[]).await;
    let mut client = JobRegistryClient::new(channel(&server.endpoint()).await);
    let code = |r: Result<tonic::Response<pb::GetJobResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(client.get_job(pb::GetJobRequest { job_id: "job-none".into() }).await), tonic::Code::NotFound);
    for bad in ["../x", "a/b", "", "UPPER", &"a".repeat(129)] {
        assert_eq!(code(client.get_job(pb::GetJobRequest { job_id: bad.into() }).await), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let register = |job_id: &str, metadata_json: &str| pb::RegisterJobRequest {
        job_id: job_id.into(),
        metadata_json: metadata_json.into(),
        ..Default::default()
    };
    client.register_job(register("job-1", "")).await.unwrap();
    assert_eq!(client.register_job(register("job-1", "")).await.unwrap_err().code(), tonic::Code::AlreadyExists);
    assert_eq!(client.register_job(register("job-2", "[1]")).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(client.register_job(register("job-2", "{\"a\":")).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let study = pb::RegisterJobRequest {
        job_id: "job-3".into(),
        spec: Some(pb::register_job_request::Spec::Study(pb::StudySpec {
            study_json: "{\"model\": \"m.x\", \"scenario\": \"s\", \"parameter_sets\": [{\"a\": NaN}]}".into(),
            bundle_ref: "sha256:x".into(),
        })),
        ..Default::default()
    };
    assert_eq!(client.register_job(study).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let transition = |status: pb::JobStatus| pb::UpdateStatusRequest {
        job_id: "job-1".into(),
        status: status.into(),
        ..Default::default()
    };
    assert_eq!(client.update_status(transition(pb::JobStatus::Running)).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    assert_eq!(client.update_status(transition(pb::JobStatus::Unspecified)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let stale = pb::UpdateStatusRequest {
        expected_revision: Some(99),
        ..transition(pb::JobStatus::Submitting)
    };
    assert_eq!(client.update_status(stale).await.unwrap_err().code(), tonic::Code::Aborted);
    // On the embedded store a position is its revision, kept in its file: revision 1 (job-1's
    // registration) is one, and a watch resumed from it gets the next change.
    let mut since_first = client
        .watch_jobs(pb::WatchJobsRequest {
            after_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    client.update_status(transition(pb::JobStatus::Submitting)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(15), since_first.message()).await.expect("the next change within 15 s");
    assert_eq!(next.unwrap().unwrap().job.unwrap().status, i32::from(pb::JobStatus::Submitting));
    // The server is still up and answering.
    assert_eq!(client.count_jobs_by_status(pb::CountJobsByStatusRequest {}).await.unwrap().into_inner().counts.len(), 9);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn etcd_going_away_gives_unavailable_and_work_resumes_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = (free_port(), free_port());
    let mut etcd = start_private_etcd(dir.path(), client_port, peer_port);
    let url = format!("etcd://127.0.0.1:{client_port}/fault");
    let server = TestServer::start(&["--registry-store", &url]).await;
    let mut client = JobRegistryClient::new(channel(&server.endpoint()).await);
    let register = |job: &str| pb::RegisterJobRequest {
        job_id: job.into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.register_job(register("job-before")).await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    etcd.kill().unwrap();
    etcd.wait().unwrap();
    let down = client.register_job(register("job-during")).await.unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");

    let mut etcd = start_private_etcd(dir.path(), client_port, peer_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get_job(pb::GetJobRequest { job_id: "job-before".into() }).await {
            Ok(response) => {
                assert_eq!(response.into_inner().job.unwrap().job_id, "job-before", "acknowledged writes survive");
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                assert!(Instant::now() < deadline, "etcd did not come back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    client.register_job(register("job-after")).await.unwrap();
    server.stop().await.unwrap();
    etcd.kill().unwrap();
    let _ = etcd.wait();
}

/// The test etcd with TLS, required client certificates and authentication (`start_etcd_secure`
/// in scripts/services.sh): an `etcds://` URL under `prefix`, and options naming its CA, a client
/// certificate and user root's password file.
fn secure_etcd(prefix: &str) -> (String, EtcdOptions) {
    let endpoint = required_env("MOPS_TEST_ETCD_TLS_ENDPOINT");
    let dir = std::path::PathBuf::from(required_env("MOPS_TEST_ETCD_TLS_DIR"));
    let url = format!("etcds://{}/{prefix}", endpoint.trim_start_matches("https://"));
    let options = EtcdOptions {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(dir.join("client.pem")),
        key_file: Some(dir.join("client-key.pem")),
        user: Some("root".into()),
        password_file: Some(dir.join("password")),
    };
    (url, options)
}

#[tokio::test]
async fn conformance_and_watch_on_etcd_with_tls_client_certificates_and_auth() {
    let (url, options) = secure_etcd(&unique("secure"));
    let store = store::open_with(&url, &options).await.unwrap();
    let password = std::fs::read_to_string(options.password_file.as_ref().unwrap()).unwrap();
    let shown = format!("{store:?} {}", store.describe());
    assert!(shown.contains("root") && !shown.contains(password.trim()), "{shown}");

    let ns = format!("{}/", unique("ns"));
    conformance::run_all(store.as_ref(), &ns).await;

    // The watch is opened in the background, so a write may precede it: write until one is seen.
    let key = format!("{ns}watched/state.json");
    let mut feed = store.changes(&ns).expect("etcd has a change feed");
    let first = Bytes::from_static(b"0");
    let mut written = vec![(store.create_if_absent(&key, first.clone()).await.unwrap().unwrap(), first)];
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen = loop {
        match tokio::time::timeout(Duration::from_millis(200), feed.next()).await {
            Ok(Some(change)) => break change.unwrap(),
            Ok(None) => panic!("the change feed ended"),
            Err(_) => {
                assert!(Instant::now() < deadline, "no change arrived through the watch");
                let next = Bytes::from(written.len().to_string());
                let version = store.put_if_version(&key, next.clone(), &written.last().unwrap().0).await.unwrap().unwrap();
                written.push((version, next));
            }
        }
    };
    let modelops_registry::store::ChangeFeedItem::Changed(seen) = seen else { panic!("etcd's feed reports changes only") };
    assert_eq!(seen.key, key);
    let value = seen.value.expect("a write, not a delete");
    assert!(written.contains(&(value.version.clone(), value.value.clone())), "{value:?} is not one of {written:?}");
}

#[tokio::test]
async fn etcd_refuses_a_wrong_password_at_open_without_showing_it() {
    let (url, mut options) = secure_etcd(&unique("wrong-password"));
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    options.password_file = Some(wrong);
    let error = store::open_with(&url, &options).await.unwrap_err();
    assert!(matches!(error, StoreError::Unauthenticated(_)), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("not-the-password"), "{error}");
}

#[tokio::test]
async fn etcd_over_tls_fails_at_open_without_the_ca() {
    let (url, options) = secure_etcd(&unique("untrusted"));
    let without_ca = EtcdOptions { ca_file: None, ..options };
    let error = store::open_with(&url, &without_ca).await.unwrap_err();
    assert!(matches!(error, StoreError::Unauthenticated(_)), "the system's roots do not know the test CA: {error:?}");
}

#[tokio::test]
async fn mops_serve_keeps_jobs_in_etcd_with_tls_and_auth_set_by_its_flags() {
    let (url, options) = secure_etcd(&unique("serve-secure"));
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().display().to_string();
    let (ca, cert, key, password) = (path(&options.ca_file), path(&options.cert_file), path(&options.key_file), path(&options.password_file));
    let server = TestServer::start(&[
        "--registry-store",
        &url,
        "--etcd-ca-file",
        &ca,
        "--etcd-cert-file",
        &cert,
        "--etcd-key-file",
        &key,
        "--etcd-user",
        "root",
        "--etcd-password-file",
        &password,
    ])
    .await;
    let mut client = JobRegistryClient::new(channel(&server.endpoint()).await);
    register_bare(&mut client, "job-secure").await;
    server.stop().await.unwrap();

    let stored = store::open_with(&url, &options).await.unwrap();
    assert!(stored.get("jobs/job-secure/state.json").await.unwrap().is_some(), "the job is in the secured etcd");
}

#[tokio::test]
async fn a_watcher_on_one_server_sees_writes_made_through_another_on_shared_storage() {
    let url = format!("{}/registry", azurite_container(&unique("shared")).await);
    let a = TestServer::start(&["--registry-store", &url]).await;
    let b = TestServer::start(&["--registry-store", &url]).await;
    let mut watcher = JobRegistryClient::new(channel(&a.endpoint()).await);
    let mut stream = watcher.watch_jobs(pb::WatchJobsRequest::default()).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut writer = JobRegistryClient::new(channel(&b.endpoint()).await);
    register_bare(&mut writer, "job-elsewhere").await;
    let seen = tokio::time::timeout(Duration::from_secs(15), stream.message()).await.expect("change reached the other server").unwrap().unwrap();
    assert_eq!(seen.job.unwrap().job_id, "job-elsewhere");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[test]
fn the_jobs_cli_submits_lists_updates_and_reports_errors() {
    let home = tempfile::tempdir().unwrap();
    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let mops = |args: &[&str]| {
        std::process::Command::new(mops_binary())
            .args(["jobs", "--endpoint", &endpoint])
            .args(args)
            .output()
            .unwrap()
    };
    let study = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates/core/tests/fixtures/upstream/study_plain.json");
    let bundle = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let out = mops(&["submit", study, "--bundle-ref", bundle, "--job-id", "job-cli", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = modelops_core::job::JobState::from_json(&out.stdout).unwrap();
    assert_eq!((state.job_id().as_str(), state.tasks_total()), ("job-cli", 9));

    for status in ["submitting", "scheduled", "running"] {
        assert!(mops(&["update", "job-cli", "--status", status]).status.success());
    }
    let out = mops(&["update", "job-cli", "--completed", "3"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Progress:   3/9 (33.3%)"));

    let list = String::from_utf8(mops(&["list"]).stdout).unwrap();
    assert!(list.contains("job-cli") && list.contains("running") && list.contains("3/9"), "{list}");
    // One output convention: JSON lines (one upstream state per line), CSV with a header; the
    // older --json is --format json.
    for format in [&["--format", "json"][..], &["--json"][..]] {
        let json = mops(&[&["list", "--status", "running"][..], format].concat());
        let lines: Vec<&[u8]> = json.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(&json.stdout));
        assert_eq!(modelops_core::job::JobState::from_json(lines[0]).unwrap().job_id().as_str(), "job-cli");
    }
    let csv = String::from_utf8(mops(&["list", "--format", "csv"]).stdout).unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("job_id,status,tasks_completed,tasks_total,created_at,updated_at,index_state,results_path,error_message"));
    assert!(rows.next().is_some_and(|row| row.starts_with("job-cli,running,3,9,")), "{csv}");
    let status = String::from_utf8(mops(&["status", "job-cli", "--format", "csv"]).stdout).unwrap();
    assert_eq!(status.lines().count(), 2, "{status}");

    let refused = mops(&["update", "job-cli", "--status", "pending"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("FailedPrecondition"));
    let missing = mops(&["status", "job-missing"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    let cancelled = mops(&["cancel", "job-cli", "--reason", "operator"]);
    assert!(cancelled.status.success());
    let status = String::from_utf8(mops(&["status", "job-cli"]).stdout).unwrap();
    assert!(status.contains("cancelled") && status.contains("Cancelled: operator"), "{status}");
    assert!(server.terminate().success());
}
