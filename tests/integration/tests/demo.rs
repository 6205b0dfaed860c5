//! `mops demo` as a new user runs it: the embedded default in-process, then a running server
//! serving what it wrote (attribution shows the second study's cache hits, the best row is the
//! one the demo printed, pyarrow reads the table), and the demo against that running server.

use std::process::Command;

use modelops_integration_tests::{MopsProcess, mops_binary, required_env, text};

/// The line of the demo's output about `job` (`{job}: N simulations (…)`).
fn job_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("demo-") && l.contains(" simulations ("))
        .map(|l| {
            let (job, rest) = l.split_once(": ").unwrap();
            (job.to_owned(), rest.to_owned())
        })
        .collect()
}

#[test]
fn demo_runs_end_to_end_and_its_results_are_served() {
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let out = Command::new(mops_binary())
        .args(["demo", "--home", home_arg, "--overlap", "--n-samples", "16", "--n-replicates", "2"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let jobs = job_lines(&stdout);
    assert_eq!(jobs.len(), 2, "{stdout}");
    let (first, overlap) = (&jobs[0].0, &jobs[1].0);
    assert!(jobs[0].1.starts_with("32 simulations (32 computed, 0 from the cache), 16 aggregations (16 computed, 0 from the cache)"), "{stdout}");
    assert!(jobs[1].1.starts_with("32 simulations (16 computed, 16 from the cache), 16 aggregations (8 computed, 8 from the cache)"), "{stdout}");
    assert!(stdout.contains("(5 rows)") && stdout.contains(&format!("df = client.get_losses(\"{first}\")")), "{stdout}");
    // The first row of the printed best table: its param_id (shortened) is the second cell.
    let header = stdout.lines().position(|l| l.starts_with("job_id ")).unwrap();
    let best_printed = stdout.lines().nth(header + 2).unwrap().split_whitespace().nth(1).unwrap().to_owned();

    let table = home.path().join(format!("results/results/{first}/losses.parquet"));
    let script = format!("import pyarrow.parquet as pq\nt = pq.read_table({:?})\nprint(t.num_rows, set(t.column('status').to_pylist()))", table.display().to_string());
    let read = Command::new(required_env("MOPS_TEST_PYTHON")).args(["-c", &script]).output().unwrap();
    assert_eq!(text(&read.stdout).trim(), "16 {'ok'}", "{}", text(&read.stderr));

    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let mops = |args: &[&str]| Command::new(mops_binary()).args(args).env("MOPS_ENDPOINT", &endpoint).output().unwrap();
    let shown = mops(&["attribution", "show", overlap, "--format", "json"]);
    let shown_json = modelops_core::pyjson::parse(&shown.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&shown.stdout), text(&shown.stderr)));
    let count = |name: &str| shown_json.as_object().and_then(|o| o.get(name)).and_then(modelops_core::pyjson::PyValue::as_u64).unwrap();
    assert_eq!((count("computed"), count("cache_hits")), (24, 24));
    // Each kind on its own: the second study found half its simulations and aggregations cached.
    assert_eq!(count("sims_computed") + count("aggs_computed"), 24);
    assert_eq!((count("sims_cache_hits"), count("aggs_cache_hits")), (count("sims_computed"), count("aggs_computed")));
    assert!(count("aggs_cache_hits") > 0);
    let shown_text = text(&mops(&["attribution", "show", overlap]).stdout);
    assert!(shown_text.contains(&format!("Aggregations: {} ({} computed, {} cache hits)", count("aggs"), count("aggs_computed"), count("aggs_cache_hits"))), "{shown_text}");

    let best = mops(&["results", "best", "--target", "prevalence_target", "-n", "1", "--format", "csv"]);
    let best_csv = text(&best.stdout);
    let row = best_csv.lines().nth(1).unwrap_or_default();
    assert!(row.split(',').nth(1).unwrap_or_default().starts_with(&best_printed), "{best_csv} vs {best_printed}");

    // Against the running server: a third study, a fourth with overlap.
    let again = Command::new(mops_binary())
        .args(["demo", "--endpoint", &endpoint, "--home", home_arg, "--n-samples", "8", "--n-replicates", "2", "--sampler", "lhs"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}\n{}", text(&again.stdout), text(&again.stderr));
    assert_eq!(job_lines(&text(&again.stdout)).len(), 1);
    let listed = mops(&["jobs", "list", "--status", "succeeded"]);
    assert_eq!(text(&listed.stdout).matches("demo-").count(), 3, "{}", text(&listed.stdout));
    assert!(server.terminate().success());
}

#[test]
fn the_embedded_demo_prints_its_bundle_and_how_to_reach_its_dashboard() {
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let out = Command::new(mops_binary())
        .args(["demo", "--home", home_arg, "--n-samples", "4", "--n-replicates", "1"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let bundle = stdout.lines().find(|l| l.starts_with("The demo's bundle: sha256:")).unwrap_or_else(|| panic!("no bundle line: {stdout}"));
    let short = bundle.split("--bundle ").nth(1).unwrap().trim_end_matches("`)");
    assert_eq!(short.len(), 12, "{bundle}");
    let (first, _) = &job_lines(&stdout)[0];
    // The embedded server is gone when the demo ends: the link says which server serves it.
    assert!(stdout.contains(&format!("once `mops serve --home {home_arg}` runs: http://127.0.0.1:9464/jobs/{first}")), "{stdout}");

    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let query = Command::new(mops_binary())
        .args(["results", "--endpoint", &endpoint, "query", "--bundle", short, "--format", "csv"])
        .output()
        .unwrap();
    assert!(query.status.success(), "{}", text(&query.stderr));
    assert_eq!(text(&query.stdout).lines().count(), 5, "a header and the 4 sets of the printed bundle: {}", text(&query.stdout));
}

#[test]
fn a_demo_against_a_server_writes_its_records_where_the_server_reads_them() {
    let (server_home, demo_home, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = MopsProcess::serve(server_home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let demo = |extra: &[&str]| {
        Command::new(mops_binary())
            .args(["demo", "--endpoint", &endpoint, "--home", demo_home.path().to_str().unwrap(), "--n-samples", "4", "--n-replicates", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Run from another home without --provenance: the server names the store it reads.
    let out = demo(&[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(stderr.contains("where the server reads them"), "{stderr}");
    assert!(server_home.path().join("provenance/token/v1").is_dir(), "the records are in the server's store");
    assert!(!demo_home.path().join("provenance").exists(), "and not under the demo's own home");
    // A store the server does not read, given explicitly, fails naming the flag (other sets than
    // the first run's, which the server would find in its own store).
    let other = format!("file://{}", elsewhere.path().display());
    let out = demo(&["--provenance", &other, "--sampler", "lhs", "--seed", "99"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(stderr.contains("--provenance") && stderr.contains("missing"), "{stderr}");
}

#[test]
fn backfill_reports_each_job_on_stdout_when_not_on_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let demo = Command::new(mops_binary())
        .args(["demo", "--home", home_arg, "--n-samples", "4", "--n-replicates", "1"])
        .output()
        .unwrap();
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    let (job, _) = job_lines(&text(&demo.stdout)).remove(0);

    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let out = Command::new(mops_binary())
        .args(["attribution", "--endpoint", &endpoint, "backfill", "--all"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.starts_with("Deriving the edges of 1 job(s)"), "{stderr}");
    assert!(stdout.starts_with(&format!("{job}: ")) && stdout.contains(" sims, "), "{stdout}\n{stderr}");
}
