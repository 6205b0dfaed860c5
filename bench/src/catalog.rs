//! The query service over many small jobs (issue #20, item 2): 20,000 jobs × 256 rows plus 50 jobs
//! × 100k rows in one file results store, as a team that calibrates daily accumulates them.
//!
//! - start-up of a `mops serve query` process (the binary beside this one) to its first answer
//!   (`ListFlights`), and its resident memory then, against the same process over an empty store:
//!   the difference divided by the jobs is what the catalog holds per job;
//! - the same over 100,000 small jobs (80,000 more written after the first measurement);
//! - `ListFlights` and the jobs command, timed from Python;
//! - best 10 and the selective losses query against DuckDB over the same files, warm, after
//!   the small jobs are compacted ([`modelops_query::compaction`]) as the service would;
//! - the catalog's start-up over the same jobs through a store answering like a cloud region
//!   ([`crate::indexer::cloud_store`]).
//!
//! Writing the jobs takes minutes; `MOPS_BENCH_CATALOG_DATA` names a directory to keep them in
//! and reuse on the next run (jobs already there are not written again).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt as _, TryStreamExt as _};
use modelops_core::store::Store;

use crate::query::{bundle, python, seconds, write_job};
use crate::report::Row;

/// Rows per small job: 128 parameter sets × two targets.
const SMALL_SETS: usize = 128;

/// Writes jobs `first..last` of `sets` parameter sets each under `home`, skipping those already
/// committed (their manifest exists), two writers at once.
async fn write_jobs(home: &Path, prefix: &str, range: std::ops::Range<usize>, sets: usize, seed: u64) -> anyhow::Result<()> {
    let results = Store::open(&format!("file://{}/results", home.display()))?;
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for part in 0..2 {
        let (results, prefix, range, home) = (results.clone(), prefix.to_owned(), range.clone(), home.to_owned());
        writers.spawn(async move {
            for i in range.filter(|i| i % 2 == part) {
                let job = format!("{prefix}-{i:06}");
                if home.join(format!("results/results/{job}/manifest.json")).exists() {
                    continue;
                }
                write_job(&results, &job, &bundle(i % 10), sets, seed + i as u64).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    eprintln!("catalog bench: {prefix} jobs {range:?} written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A `mops serve query` process and what it took to answer first.
pub(crate) struct Started {
    child: std::process::Child,
    /// Its Flight endpoint (`grpc://…`).
    pub(crate) grpc: String,
    /// Its dashboard (`http://…`).
    pub(crate) http: String,
    /// From spawning the process to its first `ListFlights` answer.
    first_answer: Duration,
    /// Resident memory right after that answer, in bytes.
    rss: u64,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (closed again, for the child to bind).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `mops serve query` over the stores under `home` and waits for its first answer.
async fn start_query(mops: &Path, home: &Path) -> anyhow::Result<Started> {
    start_query_with(mops, home, &[]).await
}

/// [`start_query`] with more flags.
pub(crate) async fn start_query_with(mops: &Path, home: &Path, flags: &[&str]) -> anyhow::Result<Started> {
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let started = Instant::now();
    let child = std::process::Command::new(mops)
        .args(["serve", "query", "--home"])
        .arg(home)
        .args(["--listen", &format!("127.0.0.1:{grpc_port}"), "--metrics-listen", &format!("127.0.0.1:{http_port}")])
        .args(flags)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let mut started_child = Started {
        child,
        grpc: format!("grpc://127.0.0.1:{grpc_port}"),
        http: format!("http://127.0.0.1:{http_port}"),
        first_answer: Duration::ZERO,
        rss: 0,
    };
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    loop {
        if let Some(status) = started_child.child.try_wait()? {
            anyhow::bail!("mops serve query exited with {status}");
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "mops serve query did not answer within 10 minutes");
        // The port answers only once the process listens: poll it (there is no event to wait on
        // from outside the process).
        let Ok(channel) = tonic::transport::Channel::from_shared(endpoint.clone())?.connect().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let mut client = FlightServiceClient::new(channel);
        if let Ok(listed) = client.list_flights(arrow_flight::Criteria::default()).await {
            let mut flights = listed.into_inner();
            while futures::StreamExt::next(&mut flights).await.transpose()?.is_some() {}
            started_child.first_answer = started.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started_child.rss = crate::indexer::memory_of(started_child.child.id(), "VmRSS")?;
    Ok(started_child)
}

/// Compacts the small jobs under `home` as a query service does (nothing when a part already
/// holds them), before the measured processes start: they then find nothing to compact.
/// Returns the time it took, what it wrote and how many parts the store then has.
async fn compact_all(home: &Path) -> anyhow::Result<(Duration, modelops_query::compaction::Compacted, usize)> {
    let results = Store::open(&format!("file://{}/results", home.display()))?;
    let catalog = modelops_query::Catalog::new(Arc::clone(&results.object_store));
    catalog.load_all().await?;
    let started = Instant::now();
    let done = modelops_query::compaction::compact(&catalog, &modelops_query::compaction::CompactionOptions::default()).await?;
    let took = started.elapsed();
    eprintln!("catalog bench: {} parts of {} jobs written in {:.1} s", done.parts, done.jobs, took.as_secs_f64());
    let parts = catalog.parts().all().len();
    Ok((took, done, parts))
}

/// The median time of 9 `ListFlights` calls to `endpoint` (`grpc://…`) read to the end by a Rust
/// arrow-flight client (tonic), after one unmeasured call, and how many flights each listed:
/// what the server costs without pyarrow's client.
async fn list_flights_from_rust(endpoint: &str) -> anyhow::Result<(Duration, usize)> {
    let channel = tonic::transport::Channel::from_shared(endpoint.replacen("grpc://", "http://", 1))?.connect().await?;
    let mut client = FlightServiceClient::new(channel);
    let mut times = Vec::new();
    let mut listed = 0;
    for run in 0..10 {
        let started = Instant::now();
        let flights: Vec<arrow_flight::FlightInfo> = client.list_flights(arrow_flight::Criteria::default()).await?.into_inner().try_collect().await?;
        if run > 0 {
            times.push(started.elapsed());
        }
        listed = flights.len();
    }
    times.sort();
    Ok((times[times.len() / 2], listed))
}

/// The dashboard's jobs list with the `jobs` small jobs under `home` registered (an
/// all-in-one `mops serve` over the same stores, its registry embedded): returns the registry's
/// jobs and the page's figures as the Python helper measured them.
async fn jobs_page(home: &Path, jobs: usize, python_bin: &str) -> anyhow::Result<(usize, serde_json::Value)> {
    use modelops_proto::registry::v1 as pb;
    let server = mops::serve::LocalServer::start(&mops::serve_args(&["--home", &home.display().to_string()])?).await?;
    let channel = tonic::transport::Channel::from_shared(server.endpoint())?.connect().await?;
    let started = Instant::now();
    let registered = futures::stream::iter(0..jobs)
        .map(|i| {
            let mut registry = pb::job_registry_client::JobRegistryClient::new(channel.clone());
            async move {
                let request = pb::RegisterJobRequest {
                    job_id: format!("job-small-{i:06}"),
                    ..Default::default()
                };
                match registry.register_job(request).await {
                    // Kept data: registered by an earlier run.
                    Ok(_) => anyhow::Ok(()),
                    Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
                    Err(status) => Err(status.into()),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?
        .len();
    eprintln!("catalog bench: {registered} jobs registered in {:.1} s", started.elapsed().as_secs_f64());
    let measured = python(python_bin, &["jobs_page".into(), format!("grpc://{}", server.grpc), format!("http://{}", server.http)]);
    server.stop().await?;
    Ok((registered, measured?))
}

/// Runs the many-small-jobs rows.
pub async fn run(scale: f64, python_bin: &str) -> anyhow::Result<Vec<Row>> {
    let mops = std::env::current_exe()?.with_file_name("mops");
    anyhow::ensure!(mops.exists(), "{} is missing (scripts/bench builds it)", mops.display());
    let small = ((20_000.0 * scale) as usize).max(200);
    let many = ((100_000.0 * scale) as usize).max(1_000);
    let large = ((50.0 * scale) as usize).max(2);
    let large_sets = ((50_000.0 * scale) as usize).max(5_000);
    let kept = std::env::var_os("MOPS_BENCH_CATALOG_DATA").map(PathBuf::from);
    let temporary = tempfile::tempdir()?;
    let home = match &kept {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temporary.path().to_owned(),
    };
    let empty = tempfile::tempdir()?;

    write_jobs(&home, "job-small", 0..small, SMALL_SETS, 1_000_000).await?;
    write_jobs(&home, "job-large", 0..large, large_sets, 2_000_000).await?;
    let jobs = small + large;
    let (compaction, compacted, parts) = compact_all(&home).await?;
    crate::query::flush_writes()?;

    // Catalog memory: the process over the jobs against the same process over nothing.
    let idle = start_query(&mops, empty.path()).await?;
    let idle_rss = idle.rss;
    drop(idle);
    let server = start_query(&mops, &home).await?;
    let per_job = server.rss.saturating_sub(idle_rss) as f64 / jobs as f64;
    let (list_flights_rust, listed_by_rust) = list_flights_from_rust(&server.grpc).await?;
    anyhow::ensure!(listed_by_rust == jobs, "ListFlights listed {listed_by_rust} of {jobs} jobs to the Rust client");
    let glob = format!("{}/results/results/job-*/losses.parquet", home.display());
    let measured = python(
        python_bin,
        &[
            "catalog".into(),
            server.grpc.clone(),
            server.http.clone(),
            glob,
            crate::query::TARGETS[0].into(),
            bundle(3),
            "2.0".into(),
            "2.05".into(),
            free_port()?.to_string(),
        ],
    );
    let (first_answer, server_rss) = (server.first_answer, server.rss);
    drop(server);
    let measured = measured?;

    let (registered, page) = jobs_page(&home, small, python_bin).await?;

    // The same catalog through a store answering like a cloud region (issue #20, item 3).
    let cloud = crate::indexer::cloud_store(&home.join("results")).await?;
    let catalog = modelops_query::Catalog::new(Arc::clone(&cloud.object_store));
    let started = Instant::now();
    let loaded = catalog.load_all().await?;
    let cloud_startup = started.elapsed();
    anyhow::ensure!(loaded == jobs, "the catalog through the cloud-like store loaded {loaded} of {jobs} jobs");
    anyhow::ensure!(measured["best_equal"] == true && measured["selective_equal"] == true, "answers differ from DuckDB's: {measured}");
    anyhow::ensure!(measured["flights"].as_u64() == Some(jobs as u64), "ListFlights did not list every job: {measured}");

    // 100,000 small jobs.
    write_jobs(&home, "job-small", small..many, SMALL_SETS, 1_000_000).await?;
    compact_all(&home).await?;
    let server = start_query(&mops, &home).await?;
    let many_jobs = many + large;
    let many_per_job = server.rss.saturating_sub(idle_rss) as f64 / many_jobs as f64;
    let (many_first, many_rss) = (server.first_answer, server.rss);
    drop(server);

    let mb = |bytes: u64| bytes as f64 / 1e6;
    let ms = |key: &str| seconds(&measured, key).map(|s| s * 1e3);
    let (ours_best, duck_best) = (ms("ours_best")?, ms("duckdb_best")?);
    let (ours_selective, duck_selective) = (ms("ours_selective")?, ms("duckdb_selective")?);
    let (list_flights, jobs_command, list_flights_baseline) = (ms("list_flights")?, ms("jobs_command")?, ms("list_flights_baseline")?);
    let what = format!("{small} jobs × {} rows + {large} jobs × {} rows, file store", SMALL_SETS * 2, large_sets * 2);
    Ok(vec![
        Row {
            workload: format!("`mops serve query` start-up to its first answer (ListFlights) over {what}"),
            measured: format!("{:.2} s; RSS {:.0} MB ({:.0} MB over an empty store), {:.1} KB of catalog per job", first_answer.as_secs_f64(), mb(server_rss), mb(idle_rss), per_job / 1e3),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 3 s; RSS ≤ 250 MB; ≤ 4 KB per job (issue #20)".into(),
            met: first_answer.as_secs_f64() <= 3.0 && mb(server_rss) <= 250.0 && per_job <= 4_000.0,
        },
        Row {
            workload: format!(
                "the catalog's start-up over the same {jobs} jobs through a store answering each request after {} ms (ThrottledStore over the files; one listing of the job directories, one GET per job)",
                crate::indexer::CLOUD_LATENCY.as_millis()
            ),
            measured: format!("{:.2} s", cloud_startup.as_secs_f64()),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 30 s (issue #20)".into(),
            met: cloud_startup.as_secs_f64() <= 30.0,
        },
        Row {
            workload: format!("the same over {many} small jobs + {large} large"),
            measured: format!("{:.2} s; RSS {:.0} MB, {:.1} KB of catalog per job", many_first.as_secs_f64(), mb(many_rss), many_per_job / 1e3),
            baseline: "—".into(),
            ratio: None,
            target: "100,000 jobs in ≤ 1 GB (issue #20)".into(),
            met: mb(many_rss) <= 1_000.0,
        },
        Row {
            workload: format!("ListFlights (pyarrow client) and the jobs command over {jobs} jobs (median of 9)"),
            measured: format!(
                "{list_flights:.1} ms ListFlights; {jobs_command:.1} ms jobs command; {:.1} ms ListFlights read by a Rust arrow-flight client",
                list_flights_rust.as_secs_f64() * 1e3
            ),
            baseline: format!("{list_flights_baseline:.1} ms, a pyarrow Flight server listing as many FlightInfos (the same schema) from memory"),
            ratio: Some(list_flights_baseline / list_flights),
            target: "≤ 100 ms (issue #20)".into(),
            met: list_flights <= 100.0 && jobs_command <= 100.0,
        },
        Row {
            workload: format!(
                "the dashboard's jobs list with {registered} jobs in the registry (embedded) and indexed: the first page of {} with each table's best loss, then the next older page (median of 9 each)",
                page["jobs_page_rows"].as_u64().unwrap_or(0)
            ),
            measured: format!(
                "{:.1} ms, {:.0} KiB, {} rows with their table; older page {:.1} ms ({} rows)",
                seconds(&page, "jobs_page")? * 1e3,
                page["jobs_page_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
                page["jobs_page_with_table"].as_u64().unwrap_or(0),
                seconds(&page, "older_page")? * 1e3,
                page["older_page_rows"].as_u64().unwrap_or(0)
            ),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 100 ms (issue #20)".into(),
            met: seconds(&page, "jobs_page")?.max(seconds(&page, "older_page")?) <= 0.1,
        },
        Row {
            workload: format!("best 10 of one target over {what}"),
            measured: format!("{ours_best:.1} ms"),
            baseline: format!("{duck_best:.1} ms, DuckDB over the Parquet files, warm"),
            ratio: Some(duck_best / ours_best),
            target: "≥ 20× faster (issue #20)".into(),
            met: duck_best / ours_best >= 20.0,
        },
        Row {
            workload: format!(
                "selective losses query (bundle + loss range, {} rows) over the same jobs",
                measured["selective_rows"].as_u64().unwrap_or(0)
            ),
            measured: format!(
                "{ours_selective:.1} ms, the small jobs read from the store's {parts} compacted parts ({} of them, holding {} jobs, written in {:.1} s before the process started)",
                compacted.parts,
                compacted.jobs,
                compaction.as_secs_f64()
            ),
            baseline: format!("{duck_selective:.1} ms, DuckDB, warm"),
            ratio: Some(duck_selective / ours_selective),
            target: "≤ 100 ms and ≥ 20× faster (issue #20)".into(),
            met: ours_selective <= 100.0 && duck_selective / ours_selective >= 20.0,
        },
    ])
}
