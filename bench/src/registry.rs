//! Registry benchmarks (TARGETS.md):
//!
//! - sequential progress updates through the service on etcd, against raw etcd compare-and-swap
//!   transactions (read, then a transaction on `mod_revision`) from the same process: the
//!   service must keep ≥ 0.8× the raw throughput;
//! - 128,000 progress increments from 16 concurrent reporters on one job: none lost, and at most
//!   10 backend writes per second for that job;
//! - 1,000 `WatchJobs` subscribers while 200 updates a second flow (issue #20): delivery latency
//!   from the update's call to each subscriber, and the process's memory.

use std::time::{Duration, Instant};

use futures::StreamExt;
use modelops_proto::etcd::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient, request_op};
use modelops_proto::registry::v1 as pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;
use tonic::transport::Channel;

use crate::report::Row;

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())?.connect().await?)
}

/// `n` sequential read-then-CAS updates of one key, straight to etcd. Returns updates/s.
async fn raw_etcd_cas(etcd: &str, key: &str, n: usize) -> anyhow::Result<f64> {
    let mut kv = KvClient::new(connect(etcd).await?);
    let value = vec![b'x'; 900];
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.clone(),
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    for _ in 0..n {
        let current = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let revision = current.kvs.first().map_or(0, |kv| kv.mod_revision);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal.into(),
                target: compare::CompareTarget::Mod.into(),
                key: key.as_bytes().to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(revision)),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.clone(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        anyhow::ensure!(kv.txn(txn).await?.into_inner().succeeded, "uncontended CAS failed");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `n` sequential SetProgress calls through the service. Returns updates/s.
async fn service_updates(endpoint: &str, job: &str, n: usize) -> anyhow::Result<f64> {
    let mut client = JobRegistryClient::new(connect(endpoint).await?);
    let started = Instant::now();
    for i in 0..n {
        client
            .set_progress(pb::SetProgressRequest {
                job_id: job.to_owned(),
                tasks_completed: Some(i as i64),
                tasks_total: None,
            })
            .await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn start_server(etcd: &str, prefix: &str) -> anyhow::Result<(mops::serve::LocalServer, tempfile::TempDir)> {
    let home = tempfile::tempdir()?;
    let registry_store = format!("etcd://{}/{prefix}", etcd.trim_start_matches("http://"));
    let args = mops::serve_args(&["--home", &home.path().display().to_string(), "--registry-store", &registry_store])?;
    Ok((mops::serve::LocalServer::start(&args).await?, home))
}

async fn register(endpoint: &str, job: &str) -> anyhow::Result<()> {
    JobRegistryClient::new(connect(endpoint).await?)
        .register_job(pb::RegisterJobRequest {
            job_id: job.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Runs the registry rows against the etcd at `etcd`.
pub async fn run(etcd: &str, scale: f64) -> anyhow::Result<Vec<Row>> {
    let prefix = format!("bench-{}", std::process::id());
    let (server, _home) = start_server(etcd, &prefix).await?;
    let endpoint = server.endpoint();
    register(&endpoint, "job-sequential").await?;

    let n = ((1000.0 * scale) as usize).max(50);
    raw_etcd_cas(etcd, &format!("{prefix}-raw/warmup"), 50).await?;
    service_updates(&endpoint, "job-sequential", 50).await?;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for round in 0..5 {
        raw.push(raw_etcd_cas(etcd, &format!("{prefix}-raw/{round}"), n).await?);
        ours.push(service_updates(&endpoint, "job-sequential", n).await?);
    }
    let (raw, ours) = (median(raw), median(ours));
    let ratio = ours / raw;
    let mut rows = vec![Row {
        workload: format!("{n} sequential progress updates, etcd backend (median of 5 rounds)"),
        measured: format!("{ours:.0} updates/s"),
        baseline: format!("{raw:.0} raw etcd CAS/s"),
        ratio: Some(ratio),
        target: "≥ 0.8×".into(),
        met: ratio >= 0.8,
    }];

    let reporters = 16;
    let per_reporter = ((8000.0 * scale) as usize).max(100);
    let total = reporters * per_reporter;
    register(&endpoint, "job-progress").await?;
    let started = Instant::now();
    let tasks = (0..reporters).map(|_| {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let client = JobRegistryClient::new(connect(&endpoint).await?);
            let results: Vec<Result<(), tonic::Status>> = futures::stream::iter(0..per_reporter)
                .map(|_| {
                    let mut client = client.clone();
                    async move {
                        client
                            .add_progress(pb::AddProgressRequest {
                                job_id: "job-progress".into(),
                                completed_delta: 1,
                                ..Default::default()
                            })
                            .await
                            .map(|_| ())
                    }
                })
                .buffer_unordered(256)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<_>, _>>()?;
            anyhow::Ok(())
        })
    });
    for task in futures::future::join_all(tasks).await {
        task??;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = JobRegistryClient::new(connect(&endpoint).await?)
        .get_job(pb::GetJobRequest {
            job_id: "job-progress".into(),
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("no job"))?;
    let writes = job.revision.saturating_sub(1);
    let per_second = writes as f64 / elapsed.as_secs_f64();
    let complete = job.tasks_completed == total as i64;
    rows.push(Row {
        workload: format!("{total} progress increments from {reporters} concurrent reporters on one job (etcd)"),
        measured: format!(
            "{} of {total} counted in {:.1} s; {writes} writes = {per_second:.1} writes/s",
            job.tasks_completed,
            elapsed.as_secs_f64()
        ),
        baseline: "—".into(),
        ratio: None,
        target: "none lost; ≤ 10 writes/s".into(),
        met: complete && per_second <= 10.0,
    });
    rows.push(watch_fan_out(&endpoint, scale).await?);
    server.stop().await?;
    Ok(rows)
}

/// The process's resident memory in bytes (Linux), 0 where unknown.
fn rss_bytes() -> u64 {
    crate::indexer::memory_of(std::process::id(), "VmRSS").unwrap_or(0)
}

/// `subscribers` watchers of every job (over 8 connections) while one updater sets the progress
/// of 200 jobs in turn, 200 updates a second for 10 s. Each update's start is recorded before its
/// call; each watcher computes, for each change it receives, the time since that start.
async fn watch_fan_out(endpoint: &str, scale: f64) -> anyhow::Result<Row> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const JOBS: usize = 200;
    const RATE: u64 = 200;
    let seconds = 10u64;
    let subscribers = ((1000.0 * scale) as usize).max(50);
    let updates = (RATE * seconds) as usize;
    for j in 0..JOBS {
        register(endpoint, &format!("job-fan-{j:03}")).await?;
    }
    let rss_before = rss_bytes();
    let channels: Vec<Channel> = futures::future::try_join_all((0..8).map(|_| connect(endpoint))).await?;
    // When update k started, in µs after `origin` (0 until sent).
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..updates).map(|_| AtomicU64::new(0)).collect());
    let mut watchers = Vec::new();
    for s in 0..subscribers {
        let mut client = JobRegistryClient::new(channels[s % channels.len()].clone());
        let stream = client.watch_jobs(pb::WatchJobsRequest::default()).await?.into_inner();
        let sent = Arc::clone(&sent);
        watchers.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut latencies: Vec<u32> = Vec::with_capacity(updates);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 20);
            while latencies.len() < updates {
                let Ok(Ok(Some(message))) = tokio::time::timeout_at(deadline, stream.message()).await else { break };
                let Some(job) = message.job.filter(|_| !message.replayed) else { continue };
                let (Some(j), Ok(completed)) = (job.job_id.strip_prefix("job-fan-").and_then(|j| j.parse::<usize>().ok()), usize::try_from(job.tasks_completed)) else { continue };
                let Some(k) = completed.checked_sub(1).map(|c| c * JOBS + j).filter(|&k| k < updates) else { continue };
                let at = sent[k].load(Ordering::Acquire);
                let now = origin.elapsed().as_micros() as u64;
                latencies.push(now.saturating_sub(at) as u32);
            }
            latencies
        }));
    }
    let rss_watching = rss_bytes();
    // The updater: update k sets job k % 200 to completed k / 200 + 1, at 200 a second.
    let mut updater = JobRegistryClient::new(channels[0].clone());
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut rss_peak = rss_watching;
    for k in 0..updates {
        ticks.tick().await;
        sent[k].store(origin.elapsed().as_micros() as u64, Ordering::Release);
        updater
            .set_progress(pb::SetProgressRequest {
                job_id: format!("job-fan-{:03}", k % JOBS),
                tasks_completed: Some((k / JOBS + 1) as i64),
                tasks_total: None,
            })
            .await?;
        if k % 400 == 0 {
            rss_peak = rss_peak.max(rss_bytes());
        }
    }
    let mut all: Vec<u32> = Vec::with_capacity(updates * subscribers);
    for watcher in watchers {
        all.extend(watcher.await?);
    }
    rss_peak = rss_peak.max(rss_bytes());
    let delivered = all.len();
    let expected = updates * subscribers;
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1))).map_or(f64::NAN, |&us| f64::from(us) / 1e3);
    let (p50, p99) = (at(0.5), at(0.99));
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    Ok(Row {
        workload: format!("{subscribers} WatchJobs subscribers of every job (8 connections) while {RATE} progress updates a second flow for {seconds} s over {JOBS} jobs (etcd; server and subscribers in one process)"),
        measured: format!(
            "delivery p50 {p50:.1} ms, p99 {p99:.1} ms; {delivered} of {expected} changes delivered; process RSS {:.0} MB before, {:.0} MB with the streams open, {:.0} MB at most",
            mb(rss_before),
            mb(rss_watching),
            mb(rss_peak)
        ),
        baseline: "—".into(),
        ratio: None,
        target: "p99 ≤ 50 ms, RSS bounded (issue #20)".into(),
        met: p99 <= 50.0 && delivered == expected,
    })
}
