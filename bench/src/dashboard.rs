//! The dashboard's pages on large jobs and many jobs, against fetching the same table over
//! Flight: the page reads, reduces and renders the table on the server, so its first view should
//! cost about what a client pays just to download the rows it would otherwise plot itself.
//!
//! - five 100k-row jobs: the first view of each (median), then one viewed again;
//! - a 1M-row job: its first view, then views of another pair with other filters (each one the
//!   server has not rendered before);
//! - the history page of a target over 20,000 small jobs (the 100k- and 1M-row jobs among them).

use modelops_core::store::Store;

use crate::query::{bundle, python, seconds, write_job};
use crate::report::Row;

/// Runs the dashboard benchmark.
pub async fn run(scale: f64, python_bin: &str) -> anyhow::Result<Vec<Row>> {
    let rows_per_job = ((100_000.0 * scale) as usize).max(10_000);
    let big_rows = ((1_000_000.0 * scale) as usize).max(20_000);
    let small_jobs = ((20_000.0 * scale) as usize).max(200);
    let dir = tempfile::tempdir()?;
    let home = dir.path().display().to_string();
    let results = Store::open(&format!("file://{home}/results"))?;
    // Five jobs, so each first view is a cold one (the page cache keys by job).
    let jobs: Vec<String> = (0..5).map(|i| format!("job-dash-{i}")).collect();
    for (i, job) in jobs.iter().enumerate() {
        write_job(&results, job, &bundle(i), rows_per_job / 2, 500 + i as u64).await?;
    }
    write_job(&results, "job-dash-big", &bundle(5), big_rows / 2, 600).await?;
    // Small jobs of 8 parameter sets each, for the history page.
    for i in 0..small_jobs {
        write_job(&results, &format!("job-dash-small-{i:05}"), &bundle(i % 7), 8, 10_000 + i as u64).await?;
    }
    crate::query::flush_writes()?;
    // A `mops serve query` process of its own, as deployed: served from within this process, a
    // runtime thread of the server stays blocked on the Python measurement. Compaction off: the
    // pages read each job's own table (20,000 small jobs compacted in the background would
    // share the cores with the views measured).
    let mops = std::env::current_exe()?.with_file_name("mops");
    anyhow::ensure!(mops.exists(), "{} is missing (scripts/bench builds it)", mops.display());
    let server = crate::catalog::start_query_with(&mops, dir.path(), &["--compact-jobs-under", "0"]).await?;
    let measured = python(
        python_bin,
        &[
            "dashboard".into(),
            server.grpc.clone(),
            server.http.clone(),
            jobs.join(","),
            "job-dash-big".into(),
        ],
    );
    drop(server);
    let measured = measured?;
    let (cold, warm, flight) = (seconds(&measured, "cold")?, seconds(&measured, "warm")?, seconds(&measured, "flight")?);
    let (big_cold, big_view, big_flight) = (seconds(&measured, "big_cold")?, seconds(&measured, "big_view")?, seconds(&measured, "big_flight")?);
    let history = seconds(&measured, "history")?;
    let rows = measured["rows"].as_u64().unwrap_or(0);
    let big = measured["big_rows"].as_u64().unwrap_or(0);
    let kib = |key: &str| measured[key].as_f64().unwrap_or(0.0) / 1024.0;
    // The page's Server-Timing header, as `name value` pairs.
    let timing = |key: &str| measured[key].as_str().unwrap_or("").replace(";dur=", " ");
    let jobs_in_history = small_jobs + jobs.len() + 1;
    Ok(vec![
        Row {
            workload: format!("dashboard job page of a {rows}-row job, first view (read; landscapes, histogram, two-parameter heat map, pair matrix, importance, parallel coordinates)"),
            measured: format!("{:.0} ms, {:.0} KiB of HTML+SVG (server, ms: {})", cold * 1e3, kib("page_bytes"), timing("cold_timing")),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", flight * 1e3),
            ratio: Some(flight / cold),
            target: "first view ≤ 150 ms (issue #19)".into(),
            met: cold <= 0.15,
        },
        Row {
            workload: format!("dashboard job page of a {rows}-row job, viewed again (its rows held as columns)"),
            measured: format!("{:.1} ms (server, ms: {})", warm * 1e3, timing("warm_timing")),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", flight * 1e3),
            ratio: Some(flight / warm),
            target: "any later view ≤ 20 ms (issue #19)".into(),
            met: warm <= 0.02,
        },
        Row {
            workload: format!("dashboard job page of a {big}-row job, first view"),
            measured: format!("{:.0} ms, {:.0} KiB (server, ms: {})", big_cold * 1e3, kib("big_bytes"), timing("big_cold_timing")),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", big_flight * 1e3),
            ratio: Some(big_flight / big_cold),
            target: "≤ 1 s (issue #19)".into(),
            met: big_cold <= 1.0,
        },
        Row {
            workload: format!("two-parameter view and parallel coordinates of the {big}-row job, another pair and filter each time (median of 5)"),
            measured: format!("{:.0} ms, {:.0} KiB", big_view * 1e3, kib("big_view_bytes")),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", big_flight * 1e3),
            ratio: Some(big_flight / big_view),
            target: "≤ 300 ms, bounded bytes (issue #19)".into(),
            met: big_view <= 0.3,
        },
        Row {
            workload: format!("history page of a target over {jobs_in_history} indexed jobs ({} points drawn)", measured["history_points"].as_u64().unwrap_or(0)),
            measured: format!("{:.0} ms, {:.0} KiB", history * 1e3, kib("history_bytes")),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 200 ms for 20,000 jobs (issue #19)".into(),
            met: history <= 0.2,
        },
    ])
}
