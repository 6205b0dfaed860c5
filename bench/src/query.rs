//! Query benchmarks (TARGETS.md), each against a baseline in the same invocation:
//!
//! - `get_losses` of a 1M-row job into a pyarrow Table, against a pyarrow Flight server streaming
//!   the same table from memory (a separate Python process): with the table cache off, every
//!   read decoded from Parquet, ≥ 1.0× (issue #20; the same server sending the dictionary
//!   columns as dictionaries too is reported beside); read again from the table cache, ≥ 0.8×;
//! - the best 10 parameter sets of one target over 1,000 jobs × 10k rows, and a selective losses
//!   query (bundle + loss range) over the same jobs, against DuckDB over the same Parquet files,
//!   warm: ≥ 3× faster.
//!
//! Tables are written with the indexer's own [`TableWriter`], so they are what the indexer
//! commits (schema, row groups, statistics, summary, manifest). Both sides are timed from the
//! same Python process; every answer is checked against the baseline's.

use std::sync::Arc;

use modelops_core::job::JobId;
use modelops_core::pyjson::PyObject;
use modelops_core::store::Store;
use modelops_indexer::build::{IndexOptions, TableWriter};
use modelops_indexer::columns::{ParamColumn, ParamType};
use modelops_indexer::table::{Row as TableRow, RowStatus};
use rand::{Rng, SeedableRng};

use crate::report::Row;

pub(crate) const TARGETS: [&str; 2] = ["targets.prev:prevalence_target", "targets.deaths:deaths_target"];
const BUNDLES: usize = 10;

pub(crate) fn bundle(i: usize) -> String {
    format!("sha256:{:064x}", 0xb0_0000 + i)
}

/// Writes one job's table: `sets` parameter sets × both targets, random losses in [0, 10).
pub(crate) async fn write_job(results: &Store, job: &str, bundle: &str, sets: usize, seed: u64) -> anyhow::Result<()> {
    let columns = vec![
        ParamColumn { name: "beta".into(), kind: ParamType::Float },
        ParamColumn { name: "gamma".into(), kind: ParamType::Float },
        ParamColumn { name: "contacts".into(), kind: ParamType::Int },
    ];
    let targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    let options = IndexOptions {
        batch_rows: 16 * 1024,
        ..IndexOptions::default()
    };
    let mut writer = TableWriter::new(Arc::clone(&results.object_store), &JobId::new(job)?, bundle, targets, columns, options)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let computed_at = chrono::Utc::now().timestamp_micros();
    for set in 0..sets {
        let mut values = PyObject::new();
        values.insert("beta", rng.random_range(0.0..1.0_f64).into());
        values.insert("gamma", rng.random_range(0.0..1.0_f64).into());
        values.insert("contacts", (rng.random_range(1..50_i64)).into());
        let param_id = format!("{:016x}{:048x}", seed, set);
        for target in TARGETS {
            let row = TableRow {
                param_id: param_id.clone(),
                values: values.clone(),
                target: target.to_owned(),
                loss: Some(rng.random_range(0.0..10.0)),
                n_replicates: Some(4),
                computed_at: Some(computed_at + set as i64),
                cache_hit: false,
                status: RowStatus::Ok,
            };
            writer.push(row, None).await?;
        }
    }
    writer.commit(format!("bench-{seed}")).await?;
    Ok(())
}

/// Times both sides from one Python process and prints a JSON object of seconds and checks.
const PYTHON_QUERIES: &str = r#"
import json, subprocess, sys, time
import duckdb, pyarrow as pa, pyarrow.flight as flight

mode, endpoint = sys.argv[1], sys.argv[2]
client = flight.FlightClient(endpoint)

def ours(descriptor):
    info = client.get_flight_info(descriptor)
    return pa.concat_tables([client.do_get(e.ticket).read_all() for e in info.endpoints])

def timed(fn, runs):
    fn()
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result

out = {}
if mode == "table":
    job, table_path, baseline_port = sys.argv[3], sys.argv[4], sys.argv[5]
    # The baseline: the table as pyarrow reads it (ticket "t"), and the same with the columns
    # our server sends as dictionaries read as dictionaries (ticket "d").
    server = subprocess.Popen([sys.executable, "-c", """
import sys, pyarrow.flight as flight, pyarrow.parquet as pq
tables = {b"t": pq.read_table(sys.argv[1]),
          b"d": pq.read_table(sys.argv[1], read_dictionary=["job_id", "target", "bundle_digest", "status"])}
class Server(flight.FlightServerBase):
    def do_get(self, context, ticket):
        return flight.RecordBatchStream(tables[ticket.ticket])
server = Server("grpc://127.0.0.1:" + sys.argv[2])
print("ready", flush=True)
server.serve()
""", table_path, baseline_port], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    try:
        baseline = flight.FlightClient("grpc://127.0.0.1:" + baseline_port)
        start = time.perf_counter()
        ours(flight.FlightDescriptor.for_path("losses", job))
        out["ours_first"] = time.perf_counter() - start
        out["ours"], table = timed(lambda: ours(flight.FlightDescriptor.for_path("losses", job)), 5)
        out["baseline"], expected = timed(lambda: baseline.do_get(flight.Ticket(b"t")).read_all(), 5)
        out["baseline_dictionaries"], _ = timed(lambda: baseline.do_get(flight.Ticket(b"d")).read_all(), 5)
        out["rows"] = table.num_rows
        out["bytes"], out["baseline_bytes"] = table.nbytes, expected.nbytes
        # Ours sends four text columns as dictionaries: the same values once expanded.
        out["equal"] = table.cast(expected.schema).equals(expected)
    finally:
        server.kill()
elif mode == "dashboard":
    import urllib.request
    base, jobs, big = sys.argv[3], sys.argv[4].split(","), sys.argv[5]
    timings = {}
    def get(path):
        with urllib.request.urlopen(f"{base}{path}") as response:
            timings["last"] = response.headers.get("Server-Timing", "")
            return response.read()
    def page(job, query=""):
        body = get(f"/jobs/{job}{query}")
        assert body.count(b'<figure class="landscape"') == 3, body[:2000]
        assert b'<svg class="heatmap"' in body and b'<svg class="parallel"' in body, body[:2000]
        return body
    def first_views(ids):
        times = []
        for job in ids:
            start = time.perf_counter()
            body = page(job)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2], body
    out["cold"], _ = first_views(jobs)
    out["cold_timing"] = timings["last"]
    out["warm"], body = timed(lambda: page(jobs[0]), 9)
    out["warm_timing"] = timings["last"]
    out["page_bytes"] = len(body)
    out["flight"], table = timed(lambda: ours(flight.FlightDescriptor.for_path("losses", jobs[0])), 5)
    out["rows"] = table.num_rows
    # The 1M-row job: its first view, then other views (another pair, filter and scale each
    # time, so no view is one the server has rendered before).
    start = time.perf_counter()
    body = page(big)
    out["big_cold"] = time.perf_counter() - start
    out["big_cold_timing"] = timings["last"]
    out["big_bytes"] = len(body)
    views = [f"?x=gamma&y=contacts&keep={k}&top=50&xscale=log" for k in (90, 80, 70, 60, 50)]
    times = []
    for query in views:
        start = time.perf_counter()
        body = page(big, query)
        times.append(time.perf_counter() - start)
    out["big_view"] = sorted(times)[len(times) // 2]
    out["big_view_bytes"] = len(body)
    out["big_flight"], table = timed(lambda: ours(flight.FlightDescriptor.for_path("losses", big)), 3)
    out["big_rows"] = table.num_rows
    # The history of a target over every indexed job.
    out["history"], body = timed(lambda: get("/history?target=targets.prev%3Aprevalence_target"), 5)
    out["history_bytes"] = len(body)
    out["history_points"] = body.count(b'<circle class="job"')
elif mode == "jobs_page":
    # The dashboard's jobs list: its first page of the registry's jobs, each with its table's
    # best loss from the catalog.
    import urllib.request
    base = sys.argv[3]
    import html, re
    def jobs_page(path="/jobs"):
        with urllib.request.urlopen(f"{base}{path}") as response:
            return response.read()
    out["jobs_page"], body = timed(jobs_page, 9)
    out["jobs_page_bytes"] = len(body)
    # The row template's row has an empty job id; a row with its table names its target.
    out["jobs_page_rows"] = body.count(b'<tr data-job="job-')
    out["jobs_page_with_table"] = body.count(b'data-field="target" title="targets.')
    # An older page, reached by the first page's link: every page costs about the same.
    older = html.unescape(re.search(rb'rel="next" href="([^"]+)"', body).group(1).decode())
    out["older_page"], body = timed(lambda: jobs_page(older), 9)
    out["older_page_rows"] = body.count(b'<tr data-job="job-')
else:
    if mode == "catalog":
        # Many small jobs: the listings first, then the same queries as over the large jobs
        # (DuckDB takes seconds over tens of thousands of files: three runs).
        sys.argv.pop(3)
        out["list_flights"], listed = timed(lambda: list(client.list_flights()), 9)
        out["flights"] = len(listed)
        # The baseline: a pyarrow Flight server listing as many FlightInfos, with our schema,
        # descriptors and tickets, from memory.
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".arrow-schema") as schema_file:
            schema_file.write(listed[0].schema.serialize().to_pybytes())
            schema_file.flush()
            lister = subprocess.Popen([sys.executable, "-c", """
import sys, pyarrow as pa, pyarrow.flight as flight
schema = pa.ipc.read_schema(pa.py_buffer(open(sys.argv[1], "rb").read()))
n = int(sys.argv[3])
infos = [flight.FlightInfo(schema, flight.FlightDescriptor.for_path("losses", f"job-small-{i:06}"),
                           [flight.FlightEndpoint(b'{"type":"losses","job_ids":["job-small-%06d"]}' % i, [])], 256, 40000)
         for i in range(n)]
class Server(flight.FlightServerBase):
    def list_flights(self, context, criteria):
        return iter(infos)
server = Server("grpc://127.0.0.1:" + sys.argv[2])
print("ready", flush=True)
server.serve()
""", schema_file.name, sys.argv[-1], str(len(listed))], stdout=subprocess.PIPE, text=True)
            assert lister.stdout.readline().strip() == "ready"
        try:
            baseline_lister = flight.FlightClient("grpc://127.0.0.1:" + sys.argv[-1])
            out["list_flights_baseline"], _ = timed(lambda: list(baseline_lister.list_flights()), 9)
        finally:
            lister.kill()
        sys.argv.pop()
        jobs = {"type": "jobs"}
        out["jobs_command"], _ = timed(lambda: ours(flight.FlightDescriptor.for_command(json.dumps(jobs))), 9)
    duck_runs = 3 if mode == "catalog" else 5
    glob, target, bundle, lo, hi = sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]), float(sys.argv[7])
    con = duckdb.connect()
    # DuckDB draws a progress bar on stdout for queries over a second; this prints only JSON.
    con.execute("SET enable_progress_bar = false")
    best = {"type": "best_parameters", "target": target, "n": 10}
    out["ours_best"], got = timed(lambda: ours(flight.FlightDescriptor.for_command(json.dumps(best))), 9)
    sql = f"SELECT job_id, param_id, loss FROM read_parquet('{glob}') WHERE target = ? AND status = 'ok' ORDER BY loss, job_id, param_id LIMIT 10"
    out["duckdb_best"], expected = timed(lambda: con.execute(sql, [target]).to_arrow_table(), duck_runs)
    out["best_equal"] = got.select(["job_id", "param_id", "loss"]).to_pylist() == pa.table(expected).to_pylist()
    if not out["best_equal"]:
        out["best_ours"] = got.select(["job_id", "param_id", "loss"]).to_pylist()
        out["best_duckdb"] = pa.table(expected).to_pylist()
    query = {"type": "losses", "bundle_digest": bundle, "min_loss": lo, "max_loss": hi}
    out["ours_selective"], got = timed(lambda: ours(flight.FlightDescriptor.for_command(json.dumps(query))), 9)
    sql = f"SELECT * FROM read_parquet('{glob}') WHERE bundle_digest = ? AND loss BETWEEN ? AND ?"
    out["duckdb_selective"], expected = timed(lambda: con.execute(sql, [bundle, lo, hi]).to_arrow_table(), duck_runs)
    out["selective_rows"] = got.num_rows
    out["selective_equal"] = got.num_rows == pa.table(expected).num_rows
print(json.dumps(out))
"#;

/// Waits for the files just written to reach the disk (`sync`), so the kernel's write-back
/// does not share the cores with what is measured next.
pub(crate) fn flush_writes() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

pub(crate) fn python(python: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(python).args(["-c", PYTHON_QUERIES]).args(args).output()?;
    anyhow::ensure!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub(crate) fn seconds(value: &serde_json::Value, key: &str) -> anyhow::Result<f64> {
    value[key].as_f64().ok_or_else(|| anyhow::anyhow!("no {key} in {value}"))
}

/// Runs the query rows with `python` (a venv with pyarrow and duckdb).
pub async fn run(scale: f64, python_bin: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();

    // get_losses of a 1M-row job.
    let big_rows = ((1_000_000.0 * scale) as usize).max(20_000);
    let dir = tempfile::tempdir()?;
    // `MOPS_BENCH_QUERY_DATA` names a directory to write the 1M-row job in and leave, for
    // looking at its reads by hand.
    let home = std::env::var("MOPS_BENCH_QUERY_DATA").unwrap_or_else(|_| dir.path().display().to_string());
    let results = Store::open(&format!("file://{home}/results"))?;
    write_job(&results, "job-big", &bundle(0), big_rows / 2, 1).await?;
    let table_path = format!("{home}/results/results/job-big/losses.parquet");
    flush_writes()?;
    // The same reads with the table cache on (the default) and off: every read decoded from Parquet.
    // Each a `mops serve query` process of its own, as deployed (served from within this
    // process, a runtime thread of the server would stay blocked on the Python measurement).
    let mops = std::env::current_exe()?.with_file_name("mops");
    anyhow::ensure!(mops.exists(), "{} is missing (scripts/bench builds it)", mops.display());
    let mut measured = Vec::new();
    for cache_mb in ["1024", "0"] {
        let server = crate::catalog::start_query_with(&mops, std::path::Path::new(&home), &["--table-cache-mb", cache_mb, "--compact-jobs-under", "0"]).await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port().to_string();
        let run = python(python_bin, &["table".into(), server.grpc.clone(), "job-big".into(), table_path.clone(), port])?;
        drop(server);
        anyhow::ensure!(run["equal"] == true, "the streamed table differs from the stored one: {run}");
        measured.push(run);
    }
    let (ours, baseline) = (seconds(&measured[0], "ours")?, seconds(&measured[0], "baseline")?);
    let rows_read = measured[0]["rows"].as_f64().unwrap_or(0.0);
    let uncached = &measured[1];
    let first = seconds(uncached, "ours_first")?;
    let (decoded, decoded_baseline) = (seconds(uncached, "ours")?, seconds(uncached, "baseline")?);
    let dictionaries_baseline = seconds(uncached, "baseline_dictionaries")?;
    let megabytes = |key: &str| uncached[key].as_f64().unwrap_or(0.0) / 1e6;
    let ratio = decoded_baseline / decoded;
    rows.push(Row {
        workload: format!(
            "get_losses of a {}-row job into a pyarrow Table (Flight), every read decoded from Parquet (table cache off), median of 5",
            rows_read as u64
        ),
        measured: format!(
            "{:.3} s ({:.1} M rows/s, {:.0} MB in Arrow: job_id, target, bundle_digest and status as dictionaries); the first read of the fresh server process {:.3} s",
            decoded,
            rows_read / decoded / 1e6,
            megabytes("bytes"),
            first,
        ),
        baseline: format!(
            "{:.3} s ({:.0} MB in Arrow), pyarrow Flight server from memory; {:.3} s when it too sends those columns as dictionaries",
            decoded_baseline,
            megabytes("baseline_bytes"),
            dictionaries_baseline,
        ),
        ratio: Some(ratio),
        target: "≥ 1.0× (issue #20)".into(),
        met: ratio >= 1.0,
    });
    let ratio = baseline / ours;
    rows.push(Row {
        workload: format!("get_losses of a {}-row job into a pyarrow Table (Flight), read again (median of 5)", rows_read as u64),
        measured: format!("{:.3} s ({:.1} M rows/s) from the table cache", ours, rows_read / ours / 1e6),
        baseline: format!("{:.3} s ({:.1} M rows/s), pyarrow Flight server from memory", baseline, rows_read / baseline / 1e6),
        ratio: Some(ratio),
        target: "≥ 0.8× throughput".into(),
        met: ratio >= 0.8,
    });

    // 1,000 jobs × 10k rows.
    let jobs = ((1000.0 * scale) as usize).max(20);
    let dir = tempfile::tempdir()?;
    let home = dir.path().display().to_string();
    let results = Store::open(&format!("file://{home}/results"))?;
    let started = std::time::Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    let per_task = jobs.div_ceil(2);
    for part in 0..2 {
        let results = results.clone();
        writers.spawn(async move {
            for i in (part * per_task)..((part + 1) * per_task).min(jobs) {
                write_job(&results, &format!("job-{i:05}"), &bundle(i % BUNDLES), 5_000, 100 + i as u64).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    eprintln!("query bench: wrote {jobs} tables in {:.1} s", started.elapsed().as_secs_f64());
    flush_writes()?;
    // Compaction off: these rows read each job's own table (the many-small-jobs rows measure
    // reads from compacted parts).
    let server = crate::catalog::start_query_with(&mops, std::path::Path::new(&home), &["--compact-jobs-under", "0"]).await?;
    let glob = format!("{home}/results/results/job-*/losses.parquet");
    let measured = python(
        python_bin,
        &["jobs".into(), server.grpc.clone(), glob, TARGETS[0].into(), bundle(3), "2.0".into(), "2.05".into()],
    )?;
    drop(server);
    anyhow::ensure!(measured["best_equal"] == true && measured["selective_equal"] == true, "answers differ from DuckDB's: {measured}");
    let (ours, duck) = (seconds(&measured, "ours_best")?, seconds(&measured, "duckdb_best")?);
    rows.push(Row {
        workload: format!("best 10 of one target over {jobs} jobs × 10k rows"),
        measured: format!("{:.1} ms", ours * 1e3),
        baseline: format!("{:.1} ms, DuckDB over the Parquet files, warm", duck * 1e3),
        ratio: Some(duck / ours),
        target: "≥ 3× faster".into(),
        met: duck / ours >= 3.0,
    });
    let (ours, duck) = (seconds(&measured, "ours_selective")?, seconds(&measured, "duckdb_selective")?);
    rows.push(Row {
        workload: format!(
            "selective losses query (bundle + loss range, {} rows) over the same jobs",
            measured["selective_rows"].as_u64().unwrap_or(0)
        ),
        measured: format!("{:.1} ms", ours * 1e3),
        baseline: format!("{:.1} ms, DuckDB, warm", duck * 1e3),
        ratio: Some(duck / ours),
        target: "≥ 3× faster".into(),
        met: duck / ours >= 3.0,
    });
    Ok(rows)
}
