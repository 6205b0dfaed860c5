//! Indexer benchmarks (TARGETS.md), on one job of 100k aggregations in a file provenance store,
//! warm cache, all three reading exactly the same files:
//!
//! - the indexer (library, 64 reads at once) against a Python indexer with orjson and pyarrow on
//!   8 threads that writes the same table: ≥ 3× faster;
//! - the indexer against `cat` of the same files (`xargs -P2`), the I/O floor: ≤ 1.5× its time.
//!
//! Only aggregations are written: with a job's edges at hand the indexer reads nothing else, so
//! simulation directories would not change either side's work.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use modelops_core::ids;
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::records::{self, AggRecord};
use modelops_core::store::Store;
use modelops_core::study::{SimJobSpec, SimulationStudy};
use modelops_core::synthetic;
use modelops_indexer::build::{IndexOptions, index_job};
use modelops_indexer::locate::AggLocation;
use object_store::ObjectStoreExt as _;

use crate::report::Row;

const TARGET: &str = "targets.prev:prevalence_target";
const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The Python baseline reading files: same inputs, same columns, same compression (followed by
/// [`PYTHON_WRITE_TABLE`]).
const PYTHON_READ_FILES: &str = r#"
import sys, time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
import orjson, pyarrow as pa, pyarrow.parquet as pq
lines = [l for l in open(sys.argv[1]).read().split("\n") if l]
start = time.perf_counter()
def read(line):
    d, pid, beta, gamma = line.split("|")
    with open(d + "/result.json", "rb") as f:
        r = orjson.loads(f.read())
    with open(d + "/metadata.json", "rb") as f:
        m = orjson.loads(f.read())
    return pid, float(beta), float(gamma), r["loss"], r["n_replicates"], datetime.fromisoformat(m["timestamp"])
with ThreadPoolExecutor(8) as pool:
    rows = list(pool.map(read, lines, chunksize=512))
"#;

/// The second half of both Python baselines: the table from `rows`, written as Parquet.
const PYTHON_WRITE_TABLE: &str = r#"n = len(rows)
table = pa.table({
    "job_id": pa.array([sys.argv[3]] * n),
    "param_id": pa.array([r[0] for r in rows]),
    "param_beta": pa.array([r[1] for r in rows], pa.float64()),
    "param_gamma": pa.array([r[2] for r in rows], pa.float64()),
    "loss": pa.array([r[3] for r in rows], pa.float64()),
    "n_replicates": pa.array([r[4] for r in rows], pa.int64()),
    "target": pa.array(["targets.prev:prevalence_target"] * n),
    "bundle_digest": pa.array([sys.argv[4]] * n),
    "computed_at": pa.array([r[5] for r in rows], pa.timestamp("us", tz="UTC")),
    "cache_hit": pa.array([False] * n),
    "status": pa.array(["ok"] * n),
})
pq.write_table(table, sys.argv[2], compression="zstd", row_group_size=128 * 1024)
print(time.perf_counter() - start)
"#;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A job of `n` parameter sets (one replicate, one target) and its aggregation records.
fn bench_job(n: usize, job_id: &str) -> anyhow::Result<(SimJobSpec, Vec<AggRecord>)> {
    let sets: Vec<String> = (0..n).map(|i| format!("{{\"params\": {{\"beta\": {}, \"gamma\": {}}}}}", i as f64 / n as f64, i % 7)).collect();
    let study = format!(
        "{{\"model\": \"models.seir.SEIR\", \"scenario\": \"baseline\", \"parameter_sets\": [{}], \"n_replicates\": 1, \"targets\": [\"{TARGET}\"]}}",
        sets.join(",")
    );
    let job = SimulationStudy::from_json(study.as_bytes())?.to_sim_job(BUNDLE, Some(JobId::new(job_id)?))?;
    let records = job
        .task_groups()
        .iter()
        .enumerate()
        .map(|(i, group)| AggRecord {
            bundle_ref: BUNDLE.into(),
            target_entrypoint: TARGET.into(),
            input_task_ids: group.tasks.iter().map(|t| ids::runner_task_id(&t.param_id, t.seed, synthetic::OUTPUTS)).collect(),
            loss: synthetic::synthetic_loss(group.values, 0) + i as f64 * 1e-9,
            diagnostics: Default::default(),
            n_replicates: 1,
            timestamp: "2026-11-22T20:05:11.254227+00:00".into(),
        })
        .collect();
    Ok((job, records))
}

/// Writes the records into `provenance`, 64 at a time.
async fn write_records(provenance: &Store, records: &[AggRecord]) -> anyhow::Result<()> {
    let store = provenance.object_store.as_ref();
    let mut writes = futures::stream::iter(records).map(|r| records::write_agg(store, ProvenanceSchema::Token, r)).buffer_unordered(64);
    while let Some(result) = writes.next().await {
        result?;
    }
    Ok(())
}

/// Where each record is, as the job's edges would say, and the baselines' input list at
/// `inputs` (`dir|param_id|beta|gamma` per line, `dir` under `root` when given).
fn locate_records(job: &SimJobSpec, records: &[AggRecord], inputs: &std::path::Path, root: Option<&std::path::Path>) -> anyhow::Result<Vec<AggLocation>> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(inputs)?);
    let mut locations = Vec::with_capacity(records.len());
    for (i, (record, group)) in records.iter().zip(job.task_groups()).enumerate() {
        let dir = record.dir(ProvenanceSchema::Token);
        let shown = root.map_or_else(|| dir.clone(), |root| root.join(&dir).display().to_string());
        let beta = group.values.get("beta").and_then(|v| v.as_f64()).unwrap_or_default();
        let gamma = group.values.get("gamma").and_then(|v| v.as_f64()).unwrap_or_default();
        writeln!(out, "{shown}|{}|{beta}|{gamma}", group.param_id)?;
        locations.push(AggLocation {
            group: i,
            target: TARGET.into(),
            path: Some(dir),
            cache_hit: false,
        });
    }
    out.flush()?;
    Ok(locations)
}

/// Runs a Python baseline (`reader` followed by the table writer) and returns the seconds it
/// reports for its work.
fn python_baseline(python: &str, reader: &str, inputs: &std::path::Path, output: &std::path::Path, job_id: &str, extra: &[&str]) -> anyhow::Result<f64> {
    let out = std::process::Command::new(python)
        .args(["-c", &format!("{reader}{PYTHON_WRITE_TABLE}")])
        .arg(inputs)
        .arg(output)
        .args([job_id, BUNDLE])
        .args(extra)
        .output()?;
    anyhow::ensure!(out.status.success(), "python indexer failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Times the indexer on `job` (after removing its manifest, so the whole build runs).
async fn time_indexer(provenance: &Store, results: &Store, job: &SimJobSpec, locations: &[AggLocation]) -> anyhow::Result<f64> {
    let manifest = object_store::path::Path::from(format!("results/{}/manifest.json", job.job_id));
    let _ = results.object_store.delete(&manifest).await;
    let started = Instant::now();
    let outcome = index_job(provenance, Arc::clone(&results.object_store), job, locations, IndexOptions::default(), |_, _| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(outcome.counts.ok == locations.len() as u64 && !outcome.unchanged, "{outcome:?}");
    Ok(seconds)
}

/// Runs the file-store indexer rows with `python` (a venv with orjson and pyarrow).
pub async fn run(scale: f64, python: &str) -> anyhow::Result<Vec<Row>> {
    let n = ((100_000.0 * scale) as usize).max(1000);
    let dir = tempfile::tempdir()?;
    let provenance = Store::open(&format!("file://{}/provenance", dir.path().display()))?;
    let results = Store::open(&format!("file://{}/results", dir.path().display()))?;
    let (job, records) = bench_job(n, "job-bench")?;
    let written = Instant::now();
    write_records(&provenance, &records).await?;
    eprintln!("wrote {n} aggregations in {:.1} s", written.elapsed().as_secs_f64());
    let inputs = dir.path().join("inputs.txt");
    let root = dir.path().join("provenance");
    let locations = locate_records(&job, &records, &inputs, Some(&root))?;
    let mut files = std::io::BufWriter::new(std::fs::File::create(dir.path().join("files.txt"))?);
    for location in &locations {
        let agg = root.join(location.path.as_deref().unwrap_or_default());
        writeln!(files, "{}/result.json\n{}/metadata.json", agg.display(), agg.display())?;
    }
    files.flush()?;
    drop(files);

    let cat = || -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("xargs -P2 -n 2000 cat < {} > /dev/null", dir.path().join("files.txt").display()))
            .status()?;
        anyhow::ensure!(status.success(), "cat failed");
        Ok(started.elapsed().as_secs_f64())
    };
    cat()?; // warm the page cache
    let (mut ours, mut baseline, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        floor.push(cat()?);
        ours.push(time_indexer(&provenance, &results, &job, &locations).await?);
        baseline.push(python_baseline(python, PYTHON_READ_FILES, &inputs, &dir.path().join("python.parquet"), "job-bench", &[])?);
    }
    let (ours, baseline, floor) = (median(ours), median(baseline), median(floor));
    Ok(vec![
        Row {
            workload: format!("index one job of {n} aggregations, file store, warm cache (median of 3)"),
            measured: format!("{ours:.2} s"),
            baseline: format!("{baseline:.2} s Python orjson + pyarrow, 8 threads"),
            ratio: Some(baseline / ours),
            target: "≥ 3× faster".into(),
            met: baseline / ours >= 3.0,
        },
        Row {
            workload: format!("same, against reading the same {} files with cat (xargs -P2)", 2 * n),
            measured: format!("{ours:.2} s"),
            baseline: format!("{floor:.2} s cat"),
            ratio: Some(floor / ours),
            target: "≤ 1.5× the cat time (ratio ≥ 0.67)".into(),
            met: ours <= 1.5 * floor,
        },
    ])
}

/// The Python baseline reading Azure Blob with azure-storage-blob on 32 threads (followed by
/// [`PYTHON_WRITE_TABLE`]).
const PYTHON_READ_AZURE: &str = r#"
import os, sys, time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
import orjson, pyarrow as pa, pyarrow.parquet as pq
from azure.storage.blob import ContainerClient
lines = [l for l in open(sys.argv[1]).read().split("\n") if l]
container = ContainerClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"], sys.argv[5])
start = time.perf_counter()
def read(line):
    d, pid, beta, gamma = line.split("|")
    r = orjson.loads(container.download_blob(d + "/result.json").readall())
    m = orjson.loads(container.download_blob(d + "/metadata.json").readall())
    return pid, float(beta), float(gamma), r["loss"], r["n_replicates"], datetime.fromisoformat(m["timestamp"])
with ThreadPoolExecutor(32) as pool:
    rows = list(pool.map(read, lines, chunksize=64))
"#;

/// The Azurite row: one job's aggregations in Azure Blob (Azurite on loopback), the indexer
/// against the Python baseline on azure-storage-blob with 32 threads.
pub async fn run_azurite(scale: f64, python: &str) -> anyhow::Result<Row> {
    let n = ((5_000.0 * scale) as usize).max(500);
    let container = format!("bench-indexer-{}", std::process::id());
    let created = std::process::Command::new(python)
        .args(["-c", &format!("import os\nfrom azure.storage.blob import BlobServiceClient as C\nC.from_connection_string(os.environ['AZURE_STORAGE_CONNECTION_STRING']).create_container({container:?})")])
        .output()?;
    anyhow::ensure!(created.status.success(), "cannot create the container: {}", String::from_utf8_lossy(&created.stderr));
    let provenance = Store::open(&format!("az://{container}"))?;
    let dir = tempfile::tempdir()?;
    let results = Store::open(&format!("file://{}/results", dir.path().display()))?;
    let (job, records) = bench_job(n, "job-bench-az")?;
    let uploaded = Instant::now();
    write_records(&provenance, &records).await?;
    eprintln!("uploaded {n} aggregations to Azurite in {:.1} s", uploaded.elapsed().as_secs_f64());
    let inputs = dir.path().join("inputs.txt");
    let locations = locate_records(&job, &records, &inputs, None)?;
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ours.push(time_indexer(&provenance, &results, &job, &locations).await?);
        baseline.push(python_baseline(python, PYTHON_READ_AZURE, &inputs, &dir.path().join("python.parquet"), "job-bench-az", &[container.as_str()])?);
    }
    let (ours, baseline) = (median(ours), median(baseline));
    Ok(Row {
        workload: format!("index one job of {n} aggregations in Azurite on loopback (median of 3; 5k, not 100k: Azurite answers a few hundred reads per second here, so 100k would take the baselines tens of minutes)"),
        measured: format!("{ours:.2} s"),
        baseline: format!("{baseline:.2} s Python azure-storage-blob, 32 threads"),
        ratio: Some(baseline / ours),
        target: "≥ 3× faster".into(),
        met: baseline / ours >= 3.0,
    })
}
