//! Registry benchmarks (TARGETS.md):
//!
//! - sequential progress updates through the service on etcd, against raw etcd compare-and-swap
//!   transactions (read, then a transaction on `mod_revision`) from the same process: the
//!   service must keep ≥ 0.8× the raw throughput;
//! - 128,000 progress increments from 16 concurrent reporters on one job: none lost, and at most
//!   10 backend writes per second for that job.

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
    server.stop().await?;
    Ok(rows)
}
