//! The query service through `mops serve` with real clients: the Python package (pyarrow.flight,
//! pandas, ADBC Flight SQL, the registry/attribution stubs) in pytest, grpcurl through
//! reflection, and the `mops results` commands.

use std::time::Duration;

use modelops_core::store::Store;
use modelops_integration_tests::{TestServer, channel, mops_binary, move_through, register_study, required_env, text, tool, wait_indexed, write_results};
use modelops_proto::registry::v1 as registry_pb;
use modelops_proto::registry::v1::job_registry_client::JobRegistryClient;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TARGET: &str = "targets.prev:prevalence_target";

/// A study over `sets` (beta, gamma) with two targets.
fn study(sets: &[(f64, &str)]) -> String {
    let sets: Vec<String> = sets.iter().map(|(beta, gamma)| format!(r#"{{"params": {{"beta": {beta}, "gamma": {gamma}}}}}"#)).collect();
    format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 2,
            "targets": ["{TARGET}", "targets.deaths/deaths_target"]}}"#,
        sets.join(", ")
    )
}

/// Registers `job`, writes its results (all sets but `missing`), finalizes it and waits for the
/// indexer to commit its table.
async fn run_job(server: &TestServer, job: &str, sets: &[(f64, &str)], missing: &[usize]) {
    let channel = channel(&server.endpoint()).await;
    let spec = register_study(&channel, job, &study(sets), BUNDLE).await;
    let provenance = Store::open(&format!("file://{}/provenance", server.home.path().display())).unwrap();
    let written: Vec<usize> = (0..sets.len()).filter(|i| !missing.contains(i)).collect();
    write_results(&provenance, &spec, &written).await;
    move_through(&channel, job, &[registry_pb::JobStatus::Submitting, registry_pb::JobStatus::Scheduled, registry_pb::JobStatus::Running, registry_pb::JobStatus::Validating]).await;
    let last = if missing.is_empty() { registry_pb::JobStatus::Succeeded } else { registry_pb::JobStatus::Partial };
    JobRegistryClient::new(channel.clone())
        .finalize_job(registry_pb::FinalizeJobRequest {
            job_id: job.into(),
            status: last.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_indexed(&channel, job, Duration::from_secs(30)).await;
}

const SETS_A: [(f64, &str); 6] = [(0.1, "1"), (0.2, "2"), (0.3, "3"), (0.4, "4"), (0.5, "5"), (0.6, "6")];
const SETS_B: [(f64, &str); 5] = [(0.1, "1"), (0.2, "2"), (0.3, "3"), (0.7, "0.5"), (0.8, "0.25")];

/// A server with jobs `a` and `b` indexed (sharing three parameter sets; b misses one).
async fn server_with_two_jobs() -> (TestServer, String, String) {
    let server = TestServer::start(&["--catalog-refresh-ms", "200"]).await;
    let (a, b) = ("query-a".to_owned(), "query-b".to_owned());
    run_job(&server, &a, &SETS_A, &[]).await;
    run_job(&server, &b, &SETS_B, &[4]).await;
    (server, a, b)
}

#[tokio::test]
async fn python_client_pyarrow_flight_and_adbc_against_mops_serve() {
    let (server, a, b) = server_with_two_jobs().await;
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/tests");
    let out = tokio::process::Command::new(required_env("MOPS_TEST_PYTHON"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"])
        .arg(&tests)
        .env("MOPS_ENDPOINT", server.endpoint())
        .env("MOPS_TEST_RESULTS_DIR", server.home.path().join("results"))
        .env("MOPS_TEST_JOB_A", &a)
        .env("MOPS_TEST_JOB_B", &b)
        .env("MOPS_TEST_TARGET", TARGET)
        .output()
        .await
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pytest failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("skipped"), "no test may be skipped:\n{stdout}");
    assert!(stdout.contains(" passed"), "{stdout}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpcurl_reaches_flight_through_reflection() {
    let (server, a, _) = server_with_two_jobs().await;
    let addr = server.grpc.to_string();
    let grpcurl = |args: Vec<String>| async move { tokio::process::Command::new(tool("MOPS_TEST_GRPCURL")).args(args).output().await.unwrap() };
    let listed = grpcurl(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    assert!(text(&listed.stdout).lines().any(|l| l == "arrow.flight.protocol.FlightService"), "{}", text(&listed.stdout));

    let described = grpcurl(vec!["-plaintext".into(), addr.clone(), "describe".into(), "arrow.flight.protocol.FlightDescriptor".into()]).await;
    assert!(text(&described.stdout).contains("repeated string path = 3"), "{}", text(&described.stdout));

    let info = grpcurl(vec![
        "-plaintext".into(),
        "-d".into(),
        format!(r#"{{"type": "PATH", "path": ["losses", "{a}"]}}"#),
        addr.clone(),
        "arrow.flight.protocol.FlightService/GetFlightInfo".into(),
    ])
    .await;
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["totalRecords"], "12", "{info}");
    assert!(info["endpoint"][0]["ticket"]["ticket"].is_string());

    let flights = grpcurl(vec!["-plaintext".into(), addr.clone(), "arrow.flight.protocol.FlightService/ListFlights".into()]).await;
    assert!(flights.status.success(), "{}", text(&flights.stderr));
    assert_eq!(text(&flights.stdout).matches("\"totalRecords\"").count(), 2);

    // A bad command is INVALID_ARGUMENT naming the field, and the service stays up.
    use base64::Engine as _;
    let bad = base64::engine::general_purpose::STANDARD.encode(br#"{"type": "losses", "limit": "ten"}"#);
    let refused = grpcurl(vec![
        "-plaintext".into(),
        "-d".into(),
        format!(r#"{{"type": "CMD", "cmd": "{bad}"}}"#),
        addr.clone(),
        "arrow.flight.protocol.FlightService/GetFlightInfo".into(),
    ])
    .await;
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(message.contains("InvalidArgument") && message.contains("limit"), "{message}");
    let unknown = grpcurl(vec![
        "-plaintext".into(),
        "-d".into(),
        r#"{"type": "PATH", "path": ["losses", "no-such-job"]}"#.into(),
        addr.clone(),
        "arrow.flight.protocol.FlightService/GetFlightInfo".into(),
    ])
    .await;
    assert!(text(&unknown.stderr).contains("NotFound"), "{}", text(&unknown.stderr));
    let again = grpcurl(vec!["-plaintext".into(), addr, "arrow.flight.protocol.FlightService/ListFlights".into()]).await;
    assert!(again.status.success());
    server.stop().await.unwrap();
}

async fn mops(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(mops_binary())
        .args(["results", "--endpoint", &server.endpoint()])
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn mops_results_commands() {
    let (server, a, b) = server_with_two_jobs().await;

    let csv = mops(&server, &["losses", &a, "--format", "csv"]).await;
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let csv = text(&csv.stdout);
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("job_id,param_id,param_beta,param_gamma,loss,"), "{header}");
    assert_eq!(csv.lines().count(), 13, "a header and 12 rows");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.parquet");
    let written = mops(&server, &["losses", &b, "--format", "parquet", "-o", file.to_str().unwrap()]).await;
    assert!(written.status.success(), "{}", text(&written.stderr));
    let script = format!(
        "import pyarrow.parquet as pq\nt = pq.read_table({:?})\nu = pq.read_table({:?})\nprint(t.equals(u), t.num_rows)",
        file.display().to_string(),
        server.home.path().join(format!("results/results/{b}/losses.parquet")).display().to_string()
    );
    let out = tokio::process::Command::new(required_env("MOPS_TEST_PYTHON")).args(["-c", &script]).output().await.unwrap();
    assert_eq!(text(&out.stdout).trim(), "True 10", "{}", text(&out.stderr));

    let best = mops(&server, &["best", "--target", "prevalence_target", "-n", "2", "--format", "json"]).await;
    assert!(best.status.success(), "{}", text(&best.stderr));
    let rows: Vec<serde_json::Value> = text(&best.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["loss"].as_f64().unwrap() <= rows[1]["loss"].as_f64().unwrap());
    assert!(rows.iter().all(|r| r["target"] == TARGET && r["status"] == "ok"));

    let query = mops(&server, &["query", "--job", &b, "--status", "missing", "--format", "csv"]).await;
    assert!(query.status.success(), "{}", text(&query.stderr));
    assert_eq!(text(&query.stdout).lines().count(), 3, "one missing set × two targets: {}", text(&query.stdout));

    let compare = mops(&server, &["compare", &a, &b]).await;
    assert!(compare.status.success(), "{}", text(&compare.stderr));
    let table = text(&compare.stdout);
    assert!(table.lines().next().unwrap().contains("loss_a") && table.contains("(6 rows)"), "{table}");

    let sql = mops(&server, &["sql", "SELECT job_id, count(*) AS n FROM losses GROUP BY job_id ORDER BY job_id", "--format", "csv"]).await;
    assert_eq!(text(&sql.stdout), format!("job_id,n\n{a},12\n{b},10\n"), "{}", text(&sql.stderr));

    let jobs = mops(&server, &["jobs"]).await;
    assert!(text(&jobs.stdout).contains("(2 rows)"), "{}", text(&jobs.stdout));

    let bad_sql = mops(&server, &["sql", "SELEC nonsense"]).await;
    assert!(!bad_sql.status.success());
    assert!(text(&bad_sql.stderr).contains("InvalidArgument"), "{}", text(&bad_sql.stderr));
    let unknown = mops(&server, &["losses", "no-such-job"]).await;
    assert!(text(&unknown.stderr).contains("NotFound"), "{}", text(&unknown.stderr));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mops_results_writes_tables_to_files_lists_to_csv_and_ends_quietly_on_a_closed_pipe() {
    let (server, a, _b) = server_with_two_jobs().await;
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("a.txt");
    let table = mops(&server, &["losses", &a, "-o", file.to_str().unwrap()]).await;
    assert!(table.status.success(), "{}", text(&table.stderr));
    assert_eq!(text(&table.stdout), "", "the table goes to the file, not stdout");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("job_id") && written.contains("(12 rows)"), "{written}");

    let file = dir.path().join("jobs.csv");
    let csv = mops(&server, &["jobs", "--format", "csv", "-o", file.to_str().unwrap()]).await;
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3, "a header and two jobs");
    let sql = mops(&server, &["sql", "SELECT * FROM jobs", "--format", "csv"]).await;
    assert!(sql.status.success(), "{}", text(&sql.stderr));
    assert_eq!(text(&sql.stdout).lines().count(), 3, "{}", text(&sql.stdout));

    let empty = mops(&server, &["sql", "SELECT * FROM losses WHERE loss < -1"]).await;
    assert_eq!(text(&empty.stdout), "(0 rows)\n");

    // A reader that has gone away before anything is written (`mops … | head -0`).
    let mut child = tokio::process::Command::new(mops_binary())
        .args(["results", "--endpoint", &server.endpoint(), "losses", &a, "--format", "csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().await.unwrap();
    assert!(closed.status.success(), "{:?}: {}", closed.status, text(&closed.stderr));
    assert_eq!(text(&closed.stderr), "");
    server.stop().await.unwrap();
}
