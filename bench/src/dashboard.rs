//! The dashboard's job page on 100k-row jobs, against fetching the same table over Flight: the
//! page reads, samples and renders the table on the server, so its first view should cost about
//! what a client pays just to download the rows it would otherwise plot itself.

use modelops_core::store::Store;

use crate::query::{bundle, python, seconds, write_job};
use crate::report::Row;

/// Runs the dashboard benchmark.
pub async fn run(scale: f64, python_bin: &str) -> anyhow::Result<Vec<Row>> {
    let rows_per_job = ((100_000.0 * scale) as usize).max(10_000);
    let dir = tempfile::tempdir()?;
    let home = dir.path().display().to_string();
    let results = Store::open(&format!("file://{home}/results"))?;
    // Five jobs, so each first view is a cold one (the page cache keys by job).
    let jobs: Vec<String> = (0..5).map(|i| format!("job-dash-{i}")).collect();
    for (i, job) in jobs.iter().enumerate() {
        write_job(&results, job, &bundle(i), rows_per_job / 2, 500 + i as u64).await?;
    }
    let server = mops::serve::LocalServer::start(&mops::serve_args(&["query", "--home", &home])?).await?;
    let measured = python(
        python_bin,
        &[
            "dashboard".into(),
            format!("grpc://{}", server.grpc),
            format!("http://{}", server.http),
            jobs.join(","),
        ],
    );
    server.stop().await?;
    let measured = measured?;
    let (cold, warm, flight) = (seconds(&measured, "cold")?, seconds(&measured, "warm")?, seconds(&measured, "flight")?);
    let rows = measured["rows"].as_u64().unwrap_or(0);
    let page_kb = measured["page_bytes"].as_f64().unwrap_or(0.0) / 1024.0;
    Ok(vec![
        Row {
            workload: format!("dashboard job page of a {rows}-row job, first view (read, sample, render 3 landscapes + histogram)"),
            measured: format!("{:.0} ms, {page_kb:.0} KiB of HTML+SVG", cold * 1e3),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", flight * 1e3),
            ratio: Some(flight / cold),
            target: "responsive: first view ≤ 1 s (issue #8)".into(),
            met: cold <= 1.0,
        },
        Row {
            workload: format!("dashboard job page of a {rows}-row job, viewed again (rendered landscape cached)"),
            measured: format!("{:.1} ms", warm * 1e3),
            baseline: format!("{:.0} ms, the same table over Flight into pyarrow", flight * 1e3),
            ratio: Some(flight / warm),
            target: "responsive: ≤ 100 ms".into(),
            met: warm <= 0.1,
        },
    ])
}
