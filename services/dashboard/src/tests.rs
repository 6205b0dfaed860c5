//! The dashboard's routes over a real registry (in memory), attribution and loss tables the
//! indexer built from upstream-layout trees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::ConnectInfo;
use chrono::Utc;
use http::{Request, StatusCode, header};
use modelops_attribution::Attribution;
use modelops_attribution::derive::derive;
use modelops_core::job::{JobId, JobStatus};
use modelops_core::paths::ProvenanceSchema;
use modelops_core::pyjson::{self, PyObject};
use modelops_core::store::Store;
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_indexer::build::{IndexOptions, index_job};
use modelops_indexer::locate::locate;
use modelops_query::{Catalog, Engine};
use modelops_registry::registry::{Registration, SpecInput, StatusUpdate};
use modelops_registry::store::memory::MemoryStore;
use modelops_registry::{JobRegistry, RegistryConfig};
use object_store::ObjectStoreExt;
use tower::ServiceExt;

use crate::{Dashboard, WebAuth};

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PREV: &str = "targets.prev:prevalence_target";
const DEATHS: &str = "targets.deaths/deaths_target";

fn study(sets: &[(f64, i64)]) -> String {
    let sets: Vec<String> = sets.iter().map(|(beta, gamma)| format!(r#"{{"params": {{"beta": {beta}, "gamma": {gamma}}}}}"#)).collect();
    format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 2, "targets": ["{PREV}", "{DEATHS}"]}}"#,
        sets.join(", ")
    )
}

struct Fixture {
    registry: JobRegistry,
    provenance: Store,
    results: Store,
    dashboard: Dashboard,
    _dir: tempfile::TempDir,
}

fn meta() -> PyObject {
    pyjson::parse(br#"{"type": "SimJob"}"#).unwrap().as_object().unwrap().clone()
}

/// Registers `job`, writes its results, moves it to succeeded and indexes it.
async fn run_job(fixture: &Fixture, provenance: &Store, job: &str, sets: &[(f64, i64)]) {
    run_study(fixture, provenance, job, study(sets)).await;
}

/// [`run_job`] with the study as JSON.
async fn run_study(fixture: &Fixture, provenance: &Store, job: &str, study_json: String) {
    run_study_sets(fixture, provenance, job, study_json, None).await;
}

/// Registers `job` without a spec (pending, nothing to run).
async fn register_without_spec(fixture: &Fixture, job: &JobId) {
    fixture
        .registry
        .register(Registration {
            job_id: Some(job.clone()),
            k8s_name: None,
            k8s_namespace: None,
            metadata: meta(),
            spec: None,
        })
        .await
        .unwrap();
}

/// Registers `job` with `study_json` and returns its expanded spec.
async fn register_study(fixture: &Fixture, job: &str, study_json: String) -> modelops_core::study::SimJobSpec {
    let id = JobId::new(job).unwrap();
    fixture
        .registry
        .register(Registration {
            job_id: Some(id.clone()),
            k8s_name: None,
            k8s_namespace: None,
            metadata: meta(),
            spec: Some(SpecInput::Study {
                study_json,
                bundle_ref: BUNDLE.into(),
            }),
        })
        .await
        .unwrap();
    let modelops_core::study::JobSpec::Simulation(spec) = fixture.registry.get_parsed_spec(&id).await.unwrap() else { panic!("a SimJob spec") };
    spec
}

/// [`run_study`] writing the results of `sets` only (all when `None`).
async fn run_study_sets(fixture: &Fixture, provenance: &Store, job: &str, study_json: String, sets: Option<&[usize]>) {
    let id = JobId::new(job).unwrap();
    let spec = register_study(fixture, job, study_json).await;
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: "2026-01-01T00:00:00+00:00",
        param_sets: sets,
        failed_aggregations: &[],
    };
    synthetic::write_job_results(provenance.object_store.as_ref(), &spec, &run).await.unwrap();
    for status in [JobStatus::Submitting, JobStatus::Scheduled, JobStatus::Running, JobStatus::Succeeded] {
        fixture.registry.update_status(&id, StatusUpdate::to(status)).await.unwrap();
    }
    let derived = derive(provenance.object_store.as_ref(), &spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let locations = locate(&spec, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    index_job(provenance, Arc::clone(&fixture.results.object_store), &spec, &locations, IndexOptions::default(), |_, _| {})
        .await
        .unwrap();
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&format!("file://{}/{name}", dir.path().display())).unwrap();
    let (provenance, results) = (open("provenance"), open("results"));
    let config = RegistryConfig {
        progress_flush_interval: Duration::from_millis(20),
        ..RegistryConfig::default()
    };
    let registry = JobRegistry::new(Arc::new(MemoryStore::new()), open("jobs"), config, &prometheus_registry());
    let attribution = Attribution::new(results.clone(), provenance.clone(), registry.clone());
    let engine = Engine::new(Catalog::new(Arc::clone(&results.object_store))).unwrap();
    let dashboard = Dashboard::new(Some(registry.clone().into()), Some(attribution.into()), Some(engine.clone()));
    let fixture = Fixture {
        registry,
        provenance: provenance.clone(),
        results,
        dashboard,
        _dir: dir,
    };
    let sets_a: Vec<(f64, i64)> = (1..=12).map(|i| (f64::from(i) / 10.0, i64::from(i % 4))).collect();
    let sets_b: Vec<(f64, i64)> = (7..=18).map(|i| (f64::from(i) / 10.0, i64::from(i % 4))).collect();
    run_job(&fixture, &provenance, "job-a", &sets_a).await;
    run_job(&fixture, &provenance, "job-b", &sets_b).await;
    engine.catalog().refresh().await.unwrap();
    fixture
}

fn prometheus_registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

async fn get(router: &axum::Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn stored_table(fixture: &Fixture, job: &str) -> (bytes::Bytes, Vec<RecordBatch>) {
    let bytes = fixture
        .results
        .object_store
        .get(&object_store::path::Path::from(format!("results/{job}/losses.parquet")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap().build().unwrap();
    (bytes, reader.collect::<Result<_, _>>().unwrap())
}

#[tokio::test]
async fn jobs_page_lists_and_filters_jobs() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, headers, body) = get(&router, "/jobs", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(body.matches("<tr data-job=\"job-").count(), 2, "{body}");
    assert!(body.contains("status-succeeded") && body.contains("data-events=\"/jobs/events?after="), "{body}");

    let (_, _, active) = get(&router, "/jobs?status=active", &[]).await;
    assert_eq!(active.matches("<tr data-job=\"job-").count(), 0, "{active}");
    let (_, _, succeeded) = get(&router, "/jobs?status=succeeded&since=24h", &[]).await;
    assert_eq!(succeeded.matches("<tr data-job=\"job-").count(), 2);
    let (status, _, body) = get(&router, "/jobs?status=done", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown job status"), "{body}");
    let (status, _, _) = get(&router, "/jobs?since=2y", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn jobs_page_pages_through_every_job_newest_first() {
    let fixture = fixture().await;
    // 2 jobs of the fixture and 203 more: three pages of 100, 100 and 5.
    for i in 0..203 {
        register_without_spec(&fixture, &JobId::new(format!("job-paged-{i:03}")).unwrap()).await;
    }
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    // (job, created_at) of each row, the row template's empty one left out.
    let rows_of = |body: &str| -> Vec<(String, String)> {
        let attribute = |row: &str, name: &str| {
            let at = row.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            row[at..at + row[at..].find('"').unwrap()].to_owned()
        };
        body.split("<tr ").skip(1).filter(|row| row.starts_with("data-job=")).map(|row| (attribute(row, "data-job"), attribute(row, "data-created"))).filter(|(job, _)| !job.is_empty()).collect()
    };
    let jobs_of = |body: &str| -> Vec<String> { rows_of(body).into_iter().map(|(job, _)| job).collect() };
    let next_of = |body: &str| -> Option<String> {
        let at = body.find("rel=\"next\" href=\"")? + "rel=\"next\" href=\"".len();
        Some(body[at..at + body[at..].find('"').unwrap()].replace("&amp;", "&"))
    };
    let mut seen = Vec::new();
    let mut uri = "/jobs".to_owned();
    let mut pages = 0;
    loop {
        let (status, _, body) = get(&router, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        pages += 1;
        let jobs = rows_of(&body);
        assert!(jobs.len() <= crate::jobs::JOBS_PER_PAGE, "{}", jobs.len());
        // Only the newest page takes in new jobs from the live stream.
        assert_eq!(body.contains("data-insert"), pages == 1, "{uri}");
        assert_eq!(body.contains("← Newest"), pages > 1, "{uri}");
        seen.extend(jobs);
        match next_of(&body) {
            Some(next) => uri = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 205, "every job once");
    let distinct: std::collections::BTreeSet<_> = seen.iter().map(|(job, _)| job).collect();
    assert_eq!(distinct.len(), 205);
    // Newest first across the pages (ties by job id), the fixture's two jobs last.
    assert!(seen.windows(2).all(|pair| pair[0].1 > pair[1].1 || (pair[0].1 == pair[1].1 && pair[0].0 < pair[1].0)), "{seen:?}");
    assert!(seen[203..].iter().all(|(job, _)| job == "job-a" || job == "job-b"), "{:?}", &seen[203..]);

    // The filters ride along the page links.
    let (_, _, body) = get(&router, "/jobs?status=pending", &[]).await;
    assert_eq!(jobs_of(&body).len(), 100);
    let next = next_of(&body).unwrap();
    assert!(next.starts_with("/jobs?status=pending&page="), "{next}");
    let (_, _, body) = get(&router, &next, &[]).await;
    assert_eq!(jobs_of(&body).len(), 100);
    assert!(next_of(&body).is_some(), "203 pending jobs: a third page");

    // Hostile page tokens: a clear 400, and the list still answers.
    let long = "ab".repeat(4096);
    for bad in ["zz", "abc", "0a", long.as_str(), "6a6f622d610a2e2e2f2e2e", "%E2%82%AC%E2"] {
        let (status, _, body) = get(&router, &format!("/jobs?page={bad}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("page_token"), "{body}");
    }
    let (status, _, _) = get(&router, "/jobs", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn job_page_shows_one_landscape_per_parameter_and_the_best_rows() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/jobs/job-a", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.matches("<figure class=\"landscape\"").count(), 2, "{body}");
    assert!(body.contains("data-param=\"beta\"") && body.contains("data-param=\"gamma\""));
    assert!(body.contains("<figure class=\"histogram\" data-loss-scale=\"linear\">"));
    for kind in ["sims", "sims_computed", "sims_cache_hits", "aggs", "aggs_computed", "aggs_cache_hits", "missing"] {
        assert!(body.contains(&format!("data-count=\"{kind}\"")), "{kind}: {body}");
    }

    // The first best row of each target is the stored table's lowest loss of that target.
    let (_, batches) = stored_table(&fixture, "job-a").await;
    for target in [PREV, DEATHS] {
        let mut best: Option<(f64, String)> = None;
        for batch in &batches {
            use arrow::array::AsArray;
            let ids = batch.column_by_name("param_id").unwrap().as_string::<i32>();
            let targets = batch.column_by_name("target").unwrap().as_string::<i32>();
            let losses = batch.column_by_name("loss").unwrap().as_primitive::<arrow::datatypes::Float64Type>();
            for row in 0..batch.num_rows() {
                if targets.value(row) == target && best.as_ref().is_none_or(|(loss, _)| losses.value(row) < *loss) {
                    best = Some((losses.value(row), ids.value(row).to_owned()));
                }
            }
        }
        let (_, param_id) = best.unwrap();
        let table = &body[body.find("id=\"best\"").unwrap()..];
        let first_row = table.find(&format!("data-target=\"{target}\"")).unwrap();
        assert!(table[first_row..].starts_with(&format!("data-target=\"{target}\" data-param-id=\"{param_id}\"")), "{target}");
    }

    let (status, _, body) = get(&router, "/jobs/..", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = get(&router, "/jobs/job-zzz", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&router, "/jobs/job-zzz/losses.csv", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn downloads_are_the_stored_table() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (stored, batches) = stored_table(&fixture, "job-b").await;
    let response = router
        .clone()
        .oneshot(Request::get("/jobs/job-b/losses.parquet").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().contains("job-b-losses.parquet"));
    let parquet = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap();
    assert_eq!(parquet, stored);

    let (status, _, csv) = get(&router, "/jobs/job-b/losses.csv", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(csv.lines().count(), rows + 1, "{csv}");
    assert!(csv.starts_with("job_id,param_id,param_beta,param_gamma,loss"), "{csv}");
    assert_eq!(csv.matches("job_id,").count(), 1, "one header");
}

#[tokio::test]
async fn compare_page_joins_shared_sets_and_ranks_across_jobs() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/compare?a=job-a&b=job-b", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sets 0.7..1.2 are shared: 6 sets × 2 targets.
    assert!(body.contains("12 shared rows"), "{body}");
    assert!(body.contains("<figure class=\"compare\">") && body.contains("id=\"largest\""));
    assert!(body.contains("id=\"best-across\""), "{body}");
    let (status, _, best) = get(&router, &format!("/compare?best_target={DEATHS}&n=3"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let table = &best[best.find("id=\"best-across\"").unwrap()..];
    assert_eq!(table.matches("<tr>").count(), 4, "header + 3 rows: {table}");
    let (status, _, _) = get(&router, "/compare?a=job-a&b=..", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_event_stream_sends_job_changes_and_ends_at_shutdown() {
    let fixture = fixture().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let router = fixture.dashboard.clone().with_shutdown(shutdown.clone()).router(WebAuth::new(None));
    let after = fixture.registry.hub().last_seq();
    let response = router
        .clone()
        .oneshot(Request::get(format!("/jobs/events?after={after}")).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let id = JobId::new("job-c").unwrap();
    register_without_spec(&fixture, &id).await;
    fixture.registry.update_status(&id, StatusUpdate::to(JobStatus::Submitting)).await.unwrap();
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    use futures::StreamExt;
    while !text.contains("\"status\":\"submitting\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("an event within 5 s").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: job") && text.contains("\"job_id\":\"job-c\"") && text.contains("\"status\":\"pending\""), "{text}");
    assert!(text.contains(&format!("id: {}", after + 1)), "{text}");
    // A server shutting down ends the stream, so an open page never holds it up.
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after shutdown");

    // A position this server never reached (a browser reconnecting after a restart) gets every job.
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let stale = fixture.registry.hub().last_seq() + 1000;
    let response = router
        .oneshot(Request::get("/jobs/events").header("last-event-id", stale.to_string()).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while ["job-a", "job-b", "job-c"].iter().any(|job| !text.contains(&format!("\"job_id\":\"{job}\""))) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("every job within 5 s").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn pages_require_the_token_when_the_server_has_one() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())));
    let (status, headers, _) = get(&router, "/jobs/job-a", &[("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login?next=/jobs/job-a");
    let (status, _, _) = get(&router, "/jobs/job-a/losses.parquet", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&router, "/jobs/events", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&router, "/jobs", &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, login) = get(&router, "/login?next=/jobs/job-a", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(login.contains("name=\"next\" value=\"/jobs/job-a\""), "{login}");
    let (status, _, _) = get(&router, "/assets/dashboard.css", &[]).await;
    assert_eq!(status, StatusCode::OK);

    let post = |form: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap()
    };
    let refused = router.clone().oneshot(post("token=nope&next=%2Fjobs")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    let accepted = router.clone().oneshot(post("token=s3cret&next=%2F%2Fevil.example")).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert_eq!(accepted.headers()[header::LOCATION], "/jobs", "never off this server");
    let cookie = accepted.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let (status, _, body) = get(&router, "/jobs/job-a", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A form post to `/login` from the client at `ip`.
fn login_post(form: &str, ip: [u8; 4]) -> Request<Body> {
    let mut request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    request
}

/// A GET of `uri` from the client at `ip` with `headers`.
async fn get_from(router: &axum::Router, uri: &str, ip: [u8; 4], headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap) {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    let response = router.clone().oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn login_follows_only_paths_on_this_server_and_never_fails() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())));
    let long = format!("/jobs/{}", "a".repeat(5000));
    // `next` as the form carries it (percent-encoded once), and where the login must go.
    let cases = [
        ("%2Fjobs%2Fjob-a%3Fstatus%3Dactive", "/jobs/job-a?status=active"),
        ("%2Fcompare%3Fbest_target%3Dtargets.deaths%252Fdeaths_target", "/compare?best_target=targets.deaths%2Fdeaths_target"),
        ("%2F%2Fevil.example", "/jobs"),
        ("%2F%5Cevil.example", "/jobs"),
        ("%2F%09%2Fevil.example", "/jobs"),
        ("%2F%2509%2Fevil.example", "/jobs"),
        ("%2F%250A%2Fevil.example", "/jobs"),
        ("https%3A%2F%2Fevil.example", "/jobs"),
        ("%2Fjobs%0D%0ASet-Cookie%3A%20x%3D1", "/jobs"),
        ("%2Fjobs%0D%0A%0D%0A%3Chtml%3E", "/jobs"),
        ("javascript%3Aalert(1)", "/jobs"),
        ("%2F%E2%80%A8%2Fevil.example", "/jobs"),
        ("", "/jobs"),
        (long.as_str(), "/jobs"),
    ];
    for (next, expected) in cases {
        let response = router.clone().oneshot(login_post(&format!("token=s3cret&next={next}"), [10, 0, 0, 1])).await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()[header::LOCATION], expected, "{next}");
        let (status, _, page) = get(&router, &format!("/login?next={next}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert!(page.contains(&format!("name=\"next\" value=\"{expected}\"")), "{next}: {page}");
    }
    let response = router.clone().oneshot(login_post("token=s3cret", [10, 0, 0, 1])).await.unwrap();
    assert_eq!(response.headers()[header::LOCATION], "/jobs", "no next");
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_client() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())));
    let attacker = [192, 0, 2, 1];
    let mut refused = 0;
    let mut limited = Vec::new();
    for attempt in 0..300 {
        let response = router.clone().oneshot(login_post(&format!("token=guess{attempt}"), attacker)).await.unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => limited.push(response.headers()[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap()),
            status => panic!("attempt {attempt}: {status}"),
        }
    }
    assert_eq!(refused, crate::limit::MAX_FAILURES);
    assert_eq!(limited.len(), 300 - refused as usize);
    assert!(limited.iter().all(|seconds| (1..=crate::limit::WINDOW.as_secs()).contains(seconds)), "{limited:?}");
    // The limited client is refused even with the right token: no oracle while limited.
    let response = router.clone().oneshot(login_post("token=s3cret", attacker)).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    // Another client logs in.
    let response = router.clone().oneshot(login_post("token=s3cret&next=%2Fjobs", [198, 51, 100, 7])).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers().contains_key(header::SET_COOKIE));

    // Wrong bearer tokens count the same way; requests without one do not.
    let limits = crate::limit::LoginLimits {
        max_failures: 3,
        ..Default::default()
    };
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())).with_limits(limits));
    let script = [203, 0, 113, 5];
    for _ in 0..5 {
        assert_eq!(get_from(&router, "/jobs", script, &[]).await.0, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..3 {
        assert_eq!(get_from(&router, "/jobs", script, &[("authorization", "Bearer nope")]).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, headers) = get_from(&router, "/jobs", script, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(get_from(&router, "/jobs", [203, 0, 113, 6], &[("authorization", "Bearer s3cret")]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_login_cookie_is_derived_from_the_token_and_authenticates() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())));
    let response = router.clone().oneshot(login_post("token=s3cret&next=%2Fjobs", [10, 0, 0, 2])).await.unwrap();
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(!set_cookie.contains("s3cret"), "{set_cookie}");
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert_eq!(attributes[0], format!("mops_token={}", crate::auth::cookie_value("s3cret").to_hex()));
    assert_eq!(attributes[1..], ["Path=/", "HttpOnly", "SameSite=Strict"], "no Secure over plain HTTP");
    let (status, _, body) = get(&router, "/jobs", &[("cookie", attributes[0])]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A cookie holding the raw token (as before) no longer passes.
    let (status, headers, _) = get(&router, "/jobs", &[("cookie", "mops_token=s3cret"), ("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login?next=/jobs");
    // Behind a TLS-terminating proxy the cookie is Secure, and so is its removal.
    let mut request = login_post("token=s3cret", [10, 0, 0, 2]);
    request.headers_mut().insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
    let response = router.clone().oneshot(request).await.unwrap();
    assert!(response.headers()[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
    let (_, headers, _) = get(&router, "/logout", &[("x-forwarded-proto", "https")]).await;
    let removal = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(removal.starts_with("mops_token=;") && removal.contains("Secure") && removal.contains("Max-Age=0"), "{removal}");
}

#[tokio::test]
async fn csv_downloads_keep_formula_like_text_as_text() {
    let fixture = fixture().await;
    let hostile = r#"=HYPERLINK("http://x","y")"#;
    let study = format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{{"params": {{"beta": -0.5, "label": {}}}}}, {{"params": {{"beta": 0.25, "label": "plain"}}}}], "n_replicates": 1, "targets": ["{PREV}"]}}"#,
        serde_json::to_string(hostile).unwrap()
    );
    run_study(&fixture, &fixture.provenance, "job-csv", study).await;
    fixture.dashboard.engine.as_ref().unwrap().catalog().refresh().await.unwrap();
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, csv) = get(&router, "/jobs/job-csv/losses.csv", &[]).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert!(csv.contains(r#""'=HYPERLINK(""http://x"",""y"")""#), "{csv}");
    // Read back, the text is the prefixed text, and the numbers are numbers (a negative one too).
    let (schema, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(std::io::Cursor::new(csv.as_bytes()), None)
        .unwrap();
    let schema = Arc::new(schema);
    assert_eq!(schema.field_with_name("param_beta").unwrap().data_type(), &arrow::datatypes::DataType::Float64, "{csv}");
    assert_eq!(schema.field_with_name("loss").unwrap().data_type(), &arrow::datatypes::DataType::Float64, "{csv}");
    let batches: Vec<RecordBatch> = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(std::io::Cursor::new(csv.as_bytes()))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    use arrow::array::{Array, AsArray};
    let labels = batches[0].column_by_name("param_label").unwrap().as_string::<i32>();
    let betas = batches[0].column_by_name("param_beta").unwrap().as_primitive::<arrow::datatypes::Float64Type>();
    let mut rows: Vec<(String, f64)> = (0..labels.len()).map(|i| (labels.value(i).to_owned(), betas.value(i))).collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(rows, [(format!("'{hostile}"), -0.5), ("plain".to_owned(), 0.25)]);
}

#[tokio::test]
async fn https_serves_the_dashboard_with_a_secure_cookie_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command");
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    let tls = modelops_runtime::serve::load_http_tls(&cert, &key).unwrap();

    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(Some("s3cret".into())).with_secure_cookie(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(modelops_runtime::serve::serve_http(listener, Some(tls), router, stop.clone().cancelled_owned()));

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let login = client.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let response = client
        .post(format!("{base}/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("token=s3cret&next=%2Fjobs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.ends_with("; Secure") && !set_cookie.contains("s3cret"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let jobs = client.get(format!("{base}/jobs")).header(header::COOKIE, cookie).send().await.unwrap();
    assert_eq!(jobs.status(), StatusCode::OK);
    assert!(jobs.text().await.unwrap().contains("job-a"));

    let plain = reqwest::Client::new().get(format!("http://{addr}/login")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let untrusted = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).resolve("localhost", addr).build().unwrap();
    assert!(untrusted.get(format!("{base}/login")).send().await.is_err(), "a client not trusting the certificate");

    drop(client);
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn a_large_table_is_sampled_for_plots_but_counted_whole() {
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let rows = 100_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("param_id", DataType::Utf8, false),
        Field::new("param_beta", DataType::Float64, true),
        Field::new("param_label", DataType::Utf8, true),
        Field::new("loss", DataType::Float64, true),
        Field::new("n_replicates", DataType::Int64, true),
        Field::new("target", DataType::Utf8, false),
        Field::new("cache_hit", DataType::Boolean, false),
        Field::new("status", DataType::Utf8, false),
    ]));
    // Loss (beta - 0.3)², lowest at row 30,000; every 1,000th row failed.
    let beta: Vec<f64> = (0..rows).map(|i| i as f64 / rows as f64).collect();
    let loss: Vec<Option<f64>> = (0..rows).map(|i| (i % 1000 != 999).then(|| (beta[i] - 0.3).powi(2))).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["job"; rows])),
            Arc::new(StringArray::from((0..rows).map(|i| format!("p{i:06}")).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(beta.clone())),
            Arc::new(StringArray::from(vec!["ü"; rows])),
            Arc::new(Float64Array::from(loss.clone())),
            Arc::new(Int64Array::from(vec![3; rows])),
            Arc::new(StringArray::from(vec!["t"; rows])),
            Arc::new(BooleanArray::from(vec![false; rows])),
            Arc::new(StringArray::from((0..rows).map(|i| if i % 1000 == 999 { "failed" } else { "ok" }).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let halves = [batch.slice(0, rows / 2), batch.slice(rows / 2, rows / 2)];
    let landscape = crate::landscape::reduce(&halves).unwrap();
    assert_eq!(landscape.rows, rows);
    assert_eq!(landscape.ok_rows, rows - 100);
    assert_eq!(landscape.plotted, crate::landscape::MAX_POINTS);
    assert_eq!(landscape.plots.len(), 1);
    assert_eq!(landscape.unplotted, ["label"]);
    // Points drawn: the sample and the ring on the best (no legend for a single target).
    assert_eq!(landscape.plots[0].svg(None, false).unwrap().0.matches("<circle").count(), crate::landscape::MAX_POINTS + 1);
    assert_eq!(landscape.best.len(), crate::landscape::BEST_PER_TARGET);
    assert_eq!(landscape.best[0].param_id, "p030000");
    assert_eq!(landscape.best[0].params, ["0.3", "ü"]);
    assert!(landscape.best.windows(2).all(|w| w[0].loss <= w[1].loss));
}

#[tokio::test]
async fn a_cancelled_jobs_page_says_how_to_build_its_table_and_waits_for_none() {
    let fixture = fixture().await;
    let id = modelops_core::job::JobId::new("job-cancelled").unwrap();
    fixture
        .registry
        .register(modelops_registry::registry::Registration {
            job_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    fixture.registry.cancel(&id, Some("wrong bundle")).await.unwrap();
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/jobs/job-cancelled", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("mops results index --force job-cancelled"), "{body}");
    assert!(!body.contains("reloads by itself") && !body.contains("data-reload-when-indexed"), "{body}");
}

#[tokio::test]
async fn a_job_without_a_single_loss_lists_its_sets_instead_of_empty_plots() {
    let fixture = fixture().await;
    // A study whose runs wrote nothing: every row is missing.
    let sets: Vec<(f64, i64)> = (1..=3i32).map(|i| (f64::from(i) + 100.0, i64::from(i))).collect();
    run_study_sets(&fixture, &fixture.provenance.clone(), "job-empty", study(&sets), Some(&[])).await;
    fixture.dashboard.engine.as_ref().unwrap().catalog().refresh().await.unwrap();
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/jobs/job-empty", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("No row of this table has a loss"), "{body}");
    assert!(!body.contains("<figure"), "no empty plots: {body}");
    assert_eq!(body.matches("data-status=\"missing\"").count(), 6, "every set × target (3 × 2) listed as missing");
    // Each listed row names its set as the stored table does (the ids are read at those rows).
    let (_, batches) = stored_table(&fixture, "job-empty").await;
    use arrow::array::AsArray as _;
    let mut stored: Vec<String> = batches.iter().flat_map(|b| b.column_by_name("param_id").unwrap().as_string::<i32>().iter().map(|v| v.unwrap().to_owned()).collect::<Vec<_>>()).collect();
    let mut listed: Vec<String> = body.split("<tr data-target=").skip(1).filter_map(|row| row.split(" data-param-id=\"").nth(1)?.split('"').next().map(str::to_owned)).collect();
    stored.sort();
    listed.sort();
    assert_eq!(listed, stored);
    assert!(body.contains(PREV) && body.contains(DEATHS), "the targets are named though none has a loss");
    assert!(!body.contains("id=\"best\""), "no best table without a loss");
    // A job with losses keeps its plots and lists nothing.
    let (_, _, with_losses) = get(&router, "/jobs/job-a", &[]).await;
    assert!(with_losses.contains("<figure class=\"landscape\"") && !with_losses.contains("Rows without a loss"));
}

/// The values of attribute `name` on every element of `body` that has class `class`.
fn attributes(body: &str, class: &str, name: &str) -> Vec<String> {
    body.split('<')
        .filter(|element| element.contains(&format!("class=\"{class}\"")))
        .filter_map(|element| element.split(&format!(" {name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn job_page_shows_two_parameters_at_once_and_refuses_wrong_choices_naming_the_right_ones() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/jobs/job-a", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"pairs\"") && body.contains("<svg class=\"heatmap\""), "{body}");
    assert!(body.contains("data-x=\"beta\" data-y=\"gamma\""), "{body}");
    // Every row of the first target with a loss is in one cell.
    let (_, batches) = stored_table(&fixture, "job-a").await;
    let mut of_prev: Vec<(f64, String)> = Vec::new();
    for batch in &batches {
        use arrow::array::{Array, AsArray};
        let ids = batch.column_by_name("param_id").unwrap().as_string::<i32>();
        let targets = batch.column_by_name("target").unwrap().as_string::<i32>();
        let losses = batch.column_by_name("loss").unwrap().as_primitive::<arrow::datatypes::Float64Type>();
        for row in 0..batch.num_rows() {
            if targets.value(row) == PREV && !losses.is_null(row) && losses.value(row).is_finite() {
                of_prev.push((losses.value(row), ids.value(row).to_owned()));
            }
        }
    }
    of_prev.sort_by(|a, b| a.0.total_cmp(&b.0));
    let counts: u32 = attributes(&body, "cell", "data-count").iter().map(|c| c.parse::<u32>().unwrap()).sum();
    assert_eq!(counts as usize, of_prev.len(), "{body}");
    // The points are the lowest rows, lowest first, named by their parameter set.
    // (drawn highest first, so the lowest is on top)
    let mut points = attributes(&body, "point", "data-param-id");
    points.reverse();
    assert_eq!(points.len(), of_prev.len().min(crate::explore::DEFAULT_TOP));
    let lowest: Vec<String> = of_prev.iter().take(points.len()).map(|(_, id)| id.clone()).collect();
    assert_eq!(points, lowest);
    let best_cells: Vec<&str> = body.split("data-best").skip(1).collect();
    assert_eq!(best_cells.len(), 1, "one best cell");
    // Importance and interactions of both parameters, and the pair matrix.
    assert_eq!(body.matches("<tr data-param=").count(), 2, "{body}");
    assert!(body.contains("<svg class=\"pairs\""), "{body}");

    // Keeping the best half keeps half the rows (rounded up).
    let (status, _, half) = get(&router, "/jobs/job-a?keep=50&cell=mean&xscale=log&top=1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{half}");
    let counts: u32 = attributes(&half, "cell", "data-count").iter().map(|c| c.parse::<u32>().unwrap()).sum();
    assert_eq!(counts as usize, of_prev.len().div_ceil(2));
    assert_eq!(attributes(&half, "point", "data-param-id"), vec![of_prev[0].1.clone()]);
    assert!(half.contains("data-log-x=\"true\""), "{half}");
    // The other target, by its exact name.
    let (status, _, deaths) = get(&router, &format!("/jobs/job-a?target={}", DEATHS.replace('/', "%2F")), &[]).await;
    assert_eq!(status, StatusCode::OK, "{deaths}");
    assert!(deaths.contains(&format!("data-target=\"{DEATHS}\"")), "{deaths}");

    for (query, names) in [
        ("target=nope", PREV),
        ("x=nope", "beta, gamma"),
        ("x=beta&y=beta", "two different parameters"),
        ("keep=0", "above 0 and at most 100"),
        ("keep=-5", "above 0 and at most 100"),
        ("keep=1e999", "above 0 and at most 100"),
        ("keep=NaN", "above 0 and at most 100"),
        ("top=201", "from 0 to 200"),
        ("top=-1", "from 0 to 200"),
        ("top=99999999999999999999999", "from 0 to 200"),
        ("cell=max", "min or mean"),
        ("xscale=cubic", "linear or log"),
    ] {
        let (status, _, body) = get(&router, &format!("/jobs/job-a?{query}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.contains(names), "{query}: {body}");
    }
}

#[tokio::test]
async fn jobs_list_shows_each_indexed_jobs_best_loss_target_and_sets() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (_, _, body) = get(&router, "/jobs", &[]).await;
    let entry = fixture.dashboard.engine.as_ref().unwrap().catalog().job("job-a").await.unwrap();
    let row = body.split("<tr data-job=\"job-a\"").nth(1).unwrap().split("</tr>").next().unwrap();
    let best = crate::layout::number(entry.targets[0].min_loss.unwrap());
    assert!(row.contains(&format!("data-field=\"best_loss\">{best}<")), "{row}");
    assert!(row.contains(&format!("data-field=\"target\" title=\"{PREV}\">{PREV}")) && row.contains(" +1"), "{row}");
    assert!(row.contains("data-field=\"sets\">12<"), "{row}");
}

#[tokio::test]
async fn history_draws_each_jobs_lowest_loss_and_the_best_so_far() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, &format!("/history?target={}", PREV.replace(':', "%3A")), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let catalog = fixture.dashboard.engine.as_ref().unwrap().catalog().clone();
    let (a, b) = (catalog.job("job-a").await.unwrap(), catalog.job("job-b").await.unwrap());
    let drawn = attributes(&body, "job", "data-job");
    assert_eq!(drawn.len(), 2, "{body}");
    // In commit order; the first is always an improvement, the second only when lower.
    let (first, second) = if a.indexed_at <= b.indexed_at { (&a, &b) } else { (&b, &a) };
    assert_eq!(drawn, vec![first.job_id.clone(), second.job_id.clone()]);
    let (l1, l2) = (first.targets[0].min_loss.unwrap(), second.targets[0].min_loss.unwrap());
    assert_eq!(body.matches("<tr data-job=").count(), if l2 < l1 { 2 } else { 1 }, "{body}");
    assert!(body.contains(&format!("data-best=\"{}\"", l1.min(l2))), "{body}");
    // Of one bundle, by a 12-digit prefix: the same jobs; the bundle list names the wrong one.
    let (status, _, of_bundle) = get(&router, &format!("/history?target={}&bundle=0123456789ab", PREV.replace(':', "%3A")), &[]).await;
    assert_eq!(status, StatusCode::OK, "{of_bundle}");
    assert_eq!(attributes(&of_bundle, "job", "data-job").len(), 2);
    for query in ["target=nope", "bundle=0123", "bundle=ffffffffffffffff"] {
        let (status, _, body) = get(&router, &format!("/history?{query}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.contains("expected"), "{query}: {body}");
    }
}

#[tokio::test]
async fn a_job_without_a_table_shows_the_aggregations_recorded_so_far_as_a_provisional_landscape() {
    let mut fixture = fixture().await;
    fixture.dashboard = fixture.dashboard.clone().with_provenance(fixture.provenance.clone());
    fixture.dashboard.live = Arc::new(crate::live::LiveLandscapes::refreshed_on_every_view());
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    // A running job of 6 sets × 2 targets whose results are all written, reported in two halves.
    let id = JobId::new("job-live").unwrap();
    let sets: Vec<(f64, i64)> = (1..=6).map(|i| (f64::from(i) / 10.0, i64::from(i % 3))).collect();
    let spec = register_study(&fixture, "job-live", study(&sets)).await;
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: "2026-01-01T00:00:00+00:00",
        param_sets: None,
        failed_aggregations: &[],
    };
    synthetic::write_job_results(fixture.provenance.object_store.as_ref(), &spec, &run).await.unwrap();
    for status in [JobStatus::Submitting, JobStatus::Scheduled, JobStatus::Running] {
        fixture.registry.update_status(&id, StatusUpdate::to(status)).await.unwrap();
    }

    // Nothing recorded yet: the section says so, with nothing drawn.
    let (status, _, body) = get(&router, "/jobs/job-live", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("data-provisional-rows=\"0\"") && body.contains("data-expected=\"12\""), "{body}");
    let (_, headers, _) = get(&router, "/jobs/job-live", &[]).await;
    let timing = headers.get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(timing.contains("live;dur="), "the provisional landscape's time is its own: {timing}");
    assert!(body.contains("data-live-url=\"/jobs/job-live/live\""), "{body}");

    let derived = derive(fixture.provenance.object_store.as_ref(), &spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let first_sets: Vec<String> = spec.task_groups().iter().take(3).map(|g| g.param_id.to_owned()).collect();
    let (first, rest): (Vec<_>, Vec<_>) = derived.edges.into_iter().partition(|e| first_sets.contains(&e.param_id));
    let attribution = Attribution::new(fixture.results.clone(), fixture.provenance.clone(), fixture.registry.clone());
    attribution.record(&id, None, first).await.unwrap();
    let (status, _, fragment) = get(&router, "/jobs/job-live/live", &[]).await;
    assert_eq!(status, StatusCode::OK, "{fragment}");
    assert!(fragment.contains("data-provisional-rows=\"6\""), "{fragment}");
    assert!(!fragment.contains("<html"), "a fragment, not a page: {fragment}");
    // Only the recorded sets are drawn: the best table lists the three of each target.
    let best_table = fragment.split("id=\"best\"").nth(1).expect("a best table");
    let best: Vec<&str> = best_table.split(" data-param-id=\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert_eq!(best.len(), 6, "{best_table}");
    assert!(best.iter().all(|p| first_sets.iter().any(|s| s == p)), "{best:?}");

    attribution.record(&id, None, rest).await.unwrap();
    let (_, _, page) = get(&router, "/jobs/job-live?keep=50", &[]).await;
    assert!(page.contains("data-provisional-rows=\"12\"") && page.contains("Provisional"), "{page}");
    assert!(page.contains("<svg class=\"heatmap"), "the two-parameter view is drawn: {page}");
    // Filters in the URL apply to it, and are refused as on the final page.
    let (status, _, refused) = get(&router, "/jobs/job-live/live?keep=0", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    // Hostile paths and jobs without a provisional view.
    for (uri, expected) in [
        ("/jobs/..%2Fetc/live", StatusCode::BAD_REQUEST),
        ("/jobs/no-such-job/live", StatusCode::NOT_FOUND),
        ("/jobs/job-a/live", StatusCode::NOT_FOUND),
    ] {
        let (status, _, body) = get(&router, uri, &[]).await;
        assert_eq!(status, expected, "{uri}: {body}");
    }

    // Once indexed, the page shows the table and nothing provisional.
    fixture.registry.update_status(&id, StatusUpdate::to(JobStatus::Succeeded)).await.unwrap();
    let locations = locate(&spec, derive(fixture.provenance.object_store.as_ref(), &spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap().edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    index_job(&fixture.provenance, Arc::clone(&fixture.results.object_store), &spec, &locations, IndexOptions::default(), |_, _| {}).await.unwrap();
    fixture.dashboard.engine.as_ref().unwrap().catalog().refresh().await.unwrap();
    let (_, _, page) = get(&router, "/jobs/job-live", &[]).await;
    assert!(!page.contains("Provisional") && page.contains("Loss table"), "{page}");
    let (status, _, _) = get(&router, "/jobs/job-live/live", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Records the edges derived from the provenance store for `job`, as its runners would have.
async fn record_derived_edges(fixture: &Fixture, job: &str) {
    let id = JobId::new(job).unwrap();
    let modelops_core::study::JobSpec::Simulation(spec) = fixture.registry.get_parsed_spec(&id).await.unwrap() else { panic!("a SimJob spec") };
    let derived = derive(fixture.provenance.object_store.as_ref(), &spec, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let attribution = Attribution::new(fixture.results.clone(), fixture.provenance.clone(), fixture.registry.clone());
    attribution.record(&id, None, derived.edges).await.unwrap();
    attribution.seal(&id, false).await.unwrap();
}

#[tokio::test]
async fn a_parameter_sets_page_shows_its_values_losses_ranks_results_owners_and_python() {
    let mut fixture = fixture().await;
    fixture.dashboard = fixture.dashboard.clone().with_provenance(fixture.provenance.clone());
    record_derived_edges(&fixture, "job-a").await;
    record_derived_edges(&fixture, "job-b").await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    // The job page links its best rows to their sets.
    let (_, _, job_page) = get(&router, "/jobs/job-a", &[]).await;
    let best = job_page.split("id=\"best\"").nth(1).unwrap();
    let link = best.split("<a class=\"set\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let set = link.rsplit('/').next().unwrap().to_owned();
    assert_eq!(link, format!("/jobs/job-a/sets/{set}"));

    let (status, _, body) = get(&router, &link, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Its values from the spec, its loss for each target ranked first (it is the best row).
    assert!(body.contains("<tr data-name=\"beta\">") && body.contains("<tr data-name=\"gamma\">"), "{body}");
    let losses = body.split("class=\"data losses\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert_eq!(losses.matches("<tr data-target=").count(), 2, "{losses}");
    assert!(losses.contains(&format!("data-target=\"{PREV}\"")) && losses.contains("data-rank=\"1\""), "{losses}");
    assert!(losses.contains("1 of 12"), "{losses}");
    // Its results: two simulations (the replicates) and an aggregation per target, with paths.
    let results = body.split("class=\"data results\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert_eq!(results.matches("data-kind=\"sim\"").count(), 2, "{results}");
    assert_eq!(results.matches("data-kind=\"agg\"").count(), 2, "{results}");
    assert!(results.contains("data-path=\"token/v1/"), "{results}");
    // The synthetic outputs are not Arrow: said, not drawn, and the page stands.
    assert!(body.contains("not an Arrow IPC file"), "{body}");
    assert!(body.contains(&format!("param_id=&quot;{set}&quot;")) && body.contains("list_job_results(&quot;job-a&quot;"), "{body}");

    // A set both jobs ran: the other job owns its results, and is linked.
    let shared = fixture.registry.get_parsed_spec(&JobId::new("job-a").unwrap()).await.unwrap();
    let modelops_core::study::JobSpec::Simulation(shared) = shared else { panic!() };
    let shared_set = shared.task_groups()[8].param_id.to_owned();
    let (status, _, body) = get(&router, &format!("/jobs/job-a/sets/{shared_set}"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!("<a class=\"owner\" href=\"/jobs/job-b/sets/{shared_set}\" data-owner=\"job-b\">")), "{body}");
    let (_, _, only_a) = get(&router, &link, &[]).await;
    assert!(!only_a.contains("data-owner=\"job-b\"") || shared_set == set, "{only_a}");

    // Hostile and unknown ids.
    let long = "a".repeat(129);
    for (uri, expected) in [
        ("/jobs/job-a/sets/..%2F..%2Fetc".to_owned(), StatusCode::BAD_REQUEST),
        ("/jobs/job-a/sets/a%00b".to_owned(), StatusCode::BAD_REQUEST),
        (format!("/jobs/job-a/sets/{long}"), StatusCode::BAD_REQUEST),
        ("/jobs/job-a/sets/0000".to_owned(), StatusCode::NOT_FOUND),
        (format!("/jobs/no-such-job/sets/{set}"), StatusCode::NOT_FOUND),
        (format!("/jobs/..%2F/sets/{set}"), StatusCode::BAD_REQUEST),
    ] {
        let (status, _, body) = get(&router, &uri, &[]).await;
        assert_eq!(status, expected, "{uri}: {body}");
    }
}

#[tokio::test]
async fn outputs_are_drawn_as_a_band_over_replicates_within_their_byte_budget() {
    use arrow::array::{Float64Array, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let store = Store::open("memory://").unwrap();
    let ipc = |day: Vec<i32>, cases: Vec<f64>| {
        let schema = Arc::new(Schema::new(vec![Field::new("day", DataType::Int32, false), Field::new("cases", DataType::Float64, false)]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int32Array::from(day)), Arc::new(Float64Array::from(cases))]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = arrow::ipc::writer::FileWriter::try_new(&mut bytes, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        bytes
    };
    let put = |path: &str, bytes: Vec<u8>| {
        let store = store.clone();
        let path = object_store::path::Path::from(path);
        async move { store.object_store.put(&path, bytes.into()).await.unwrap() }
    };
    put("sims/a/artifact_out.arrow", ipc(vec![0, 1, 2], vec![1.0, 4.0, 9.0])).await;
    put("sims/a/artifact_metadata.json", b"{}".to_vec()).await;
    put("sims/b/artifact_out.arrow", ipc(vec![0, 1, 2], vec![3.0, 2.0, 9.0])).await;
    // A third replicate over the per-artifact budget is skipped and said.
    put("sims/c/artifact_out.arrow", vec![0u8; (crate::outputs::MAX_ARTIFACT_BYTES + 1) as usize]).await;
    // Hostile artifacts: a stream header declaring a 2 GiB message, and a file whose footer
    // places a block far outside it. Each is refused at once, without allocating what it declares.
    let mut lying = ipc(vec![0], vec![1.0]);
    let n = lying.len();
    let footer_len = i32::from_le_bytes(lying[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer = n - 10 - footer_len;
    // Make the record batch's block (a 24-byte struct in the footer: offset i64, metadata length
    // i32 and 4 bytes of padding, body length i64) declare a 1 TiB body.
    let read = |b: &[u8], i: usize| i64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let block_at = (footer..n - 10 - 24)
        .find(|&i| {
            let (offset, meta, body) = (read(&lying, i), read(&lying, i + 8) & 0xffff_ffff, read(&lying, i + 16));
            offset >= 8 && meta > 0 && body > 0 && offset + meta + body <= footer as i64
        })
        .expect("the footer's block");
    lying[block_at + 16..block_at + 24].copy_from_slice(&(1i64 << 40).to_le_bytes());
    put("sims/d/artifact_out.arrow", lying).await;
    put("sims/e/artifact_out.arrow", [&[0xff_u8; 4][..], &0x7fff_ffff_i32.to_le_bytes(), b"junk"].concat()).await;
    // A compressed file: each buffer declares the size it inflates to, so it is not read.
    let compressed = {
        let schema = Arc::new(Schema::new(vec![Field::new("cases", DataType::Float64, false)]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Float64Array::from(vec![1.0; 100]))]).unwrap();
        let options = arrow::ipc::writer::IpcWriteOptions::default().try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME)).unwrap();
        let mut bytes = Vec::new();
        let mut writer = arrow::ipc::writer::FileWriter::try_new_with_options(&mut bytes, &schema, options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        bytes
    };
    put("sims/f/artifact_out.arrow", compressed).await;
    let refused_compressed = crate::outputs::read_bands(&store, &[crate::outputs::SimSource { dir: "sims/f".into(), group: 0 }]).await.unwrap();
    assert!(refused_compressed.bands.is_empty() && refused_compressed.skipped[0].contains("compressed"), "{refused_compressed:?}");
    let hostile: Vec<crate::outputs::SimSource> = ["sims/d", "sims/e"].iter().map(|dir| crate::outputs::SimSource { dir: (*dir).into(), group: 0 }).collect();
    let refused = crate::outputs::read_bands(&store, &hostile).await.unwrap();
    assert!(refused.bands.is_empty(), "{refused:?}");
    assert_eq!(refused.skipped.len(), 2, "{:?}", refused.skipped);
    assert!(refused.skipped[0].contains("a block lies outside it"), "{:?}", refused.skipped);
    assert!(refused.skipped[1].contains("not an Arrow IPC file"), "{:?}", refused.skipped);

    let sims: Vec<crate::outputs::SimSource> = ["sims/a", "sims/b", "sims/c"].iter().map(|dir| crate::outputs::SimSource { dir: (*dir).into(), group: 0 }).collect();
    let bands = crate::outputs::read_bands(&store, &sims).await.unwrap();
    assert_eq!(bands.bands.len(), 1, "{bands:?}");
    let band = &bands.bands[0];
    assert_eq!((band.output.as_str(), band.column.as_str(), band.x_name.as_deref()), ("out", "cases", Some("day")));
    assert_eq!(band.x, vec![0.0, 1.0, 2.0]);
    assert_eq!((band.lo.clone(), band.hi.clone(), band.mean.clone()), (vec![1.0, 2.0, 9.0], vec![3.0, 4.0, 9.0], vec![2.0, 3.0, 9.0]));
    assert_eq!(band.replicates, 2);
    assert!(bands.skipped.len() == 1 && bands.skipped[0].contains("over the 16 MiB"), "{:?}", bands.skipped);
    let svg = crate::outputs::figures(&bands).into_string();
    assert!(svg.contains("data-replicates=\"2\"") && svg.contains("data-lo=\"1\"") && svg.contains("data-hi=\"9\""), "{svg}");
}

#[tokio::test]
async fn the_outputs_page_overlays_a_targets_best_sets_and_refuses_wrong_choices() {
    let mut fixture = fixture().await;
    fixture.dashboard = fixture.dashboard.clone().with_provenance(fixture.provenance.clone());
    record_derived_edges(&fixture, "job-a").await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (_, _, job_page) = get(&router, "/jobs/job-a", &[]).await;
    let link = job_page.split("<a class=\"outputs\" href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert_eq!(link, format!("/jobs/job-a/outputs?target={}", PREV.replace(':', "%3A")));
    let (status, _, body) = get(&router, &format!("{link}&k=2"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The legend lists the two best rows of the target, in order, each linking to its set.
    let landscape = fixture.dashboard.landscapes.get(fixture.dashboard.engine.as_ref().unwrap(), &fixture.dashboard.engine.as_ref().unwrap().catalog().job("job-a").await.unwrap()).await.unwrap();
    let best: Vec<&str> = landscape.best.iter().filter(|r| r.target == PREV).take(2).map(|r| r.param_id.as_str()).collect();
    let legend: Vec<&str> = body.split("<li data-param-id=\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert_eq!(legend, best, "{body}");
    // Their synthetic outputs are not Arrow: each replicate of each set is said to be skipped.
    assert_eq!(body.matches("not an Arrow IPC file").count(), 4, "{body}");
    for query in ["k=0", "k=6", "k=-1", "k=99999999999999999999", "k=two", "target=nope"] {
        let (status, _, body) = get(&router, &format!("/jobs/job-a/outputs?{query}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, _, _) = get(&router, "/jobs/no-such-job/outputs", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn compare_overlays_two_jobs_without_shared_sets() {
    let fixture = fixture().await;
    // A job of other sets only: nothing to compare row by row.
    let sets_c: Vec<(f64, i64)> = (1..=5).map(|i| (2.0 + f64::from(i) / 10.0, i64::from(i))).collect();
    run_job(&fixture, &fixture.provenance, "job-c", &sets_c).await;
    fixture.dashboard.engine.as_ref().unwrap().catalog().refresh().await.unwrap();
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let (status, _, body) = get(&router, "/compare?a=job-a&b=job-c", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<p>0 shared rows"), "{body}");
    // Overlaid all the same: the first shared target, all 12 and 5 rows, one plot per parameter.
    let overlay = body.split("<section class=\"overlay\"").nth(1).expect("an overlay section");
    assert!(overlay.starts_with(&format!(" data-target=\"{PREV}\" data-rows-a=\"12\" data-rows-b=\"5\"")), "{overlay}");
    assert_eq!(overlay.matches("<figure class=\"landscape\" data-param=").count(), 2, "{overlay}");
    assert!(overlay.contains("A: job-a") && overlay.contains("B: job-c"), "the legend names both jobs: {overlay}");
    // Another target by name; a target neither has says so.
    let (_, _, deaths) = get(&router, &format!("/compare?a=job-a&b=job-c&target={}", DEATHS.replace('/', "%2F")), &[]).await;
    assert!(deaths.contains(&format!("data-target=\"{DEATHS}\"")), "{deaths}");
    let (status, _, none) = get(&router, "/compare?a=job-a&b=job-c&target=nope", &[]).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert!(none.contains("no target in common"), "{none}");
}

#[tokio::test]
async fn per_parameter_plots_take_a_log_axis_from_the_url_where_every_value_is_positive() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let scale_of = |body: &str, param: &str| {
        body.split(&format!("<figure class=\"landscape\" data-param=\"{param}\" data-xscale=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_owned)
    };
    // By default: linear, as beta spans 12× and gamma holds 0. The page says where its time went.
    let (_, headers, body) = get(&router, "/jobs/job-a", &[]).await;
    let timing = headers.get("server-timing").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(timing.starts_with("state;dur=") && timing.contains("draw;dur=") && timing.contains("read;dur="), "{timing}");
    assert_eq!((scale_of(&body, "beta").as_deref(), scale_of(&body, "gamma").as_deref()), (Some("linear"), Some("linear")));
    // Asked for log: beta (all positive) gets it, with log ticks; gamma (a 0) stays linear.
    let (status, _, body) = get(&router, "/jobs/job-a?slices=log", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((scale_of(&body, "beta").as_deref(), scale_of(&body, "gamma").as_deref()), (Some("log"), Some("linear")));
    assert!(body.contains("beta (log scale)"), "{body}");
    assert!(body.contains("<option value=\"log\" selected>log</option>"), "the form shows the choice: {body}");
    // The matrix's links keep it.
    assert!(body.contains("slices=log"), "{body}");
    // The loss axes: linear by default here (losses span under 1000×), log when asked.
    let (_, _, linear) = get(&router, "/jobs/job-a", &[]).await;
    assert!(linear.contains("<figure class=\"histogram\" data-loss-scale=\"linear\">"), "{linear}");
    let (_, _, log) = get(&router, "/jobs/job-a?loss=log&slices=log", &[]).await;
    assert!(log.contains("<figure class=\"histogram\" data-loss-scale=\"log\">") && log.contains("loss (log scale)"), "{log}");
    assert_eq!(log.matches("data-loss-scale=\"log\"").count(), 3, "both plots and the histogram: {log}");
    assert!(log.contains("loss=log") && log.contains("<option value=\"log\" selected>log</option>"), "{log}");
    for bad in ["slices=LOG", "slices=", "slices=%00", "loss=ln", "loss="] {
        let (status, _, body) = get(&router, &format!("/jobs/job-a?{bad}x"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_zoom_in_the_url_bins_only_the_rows_inside_and_refuses_ranges_that_are_not_ones() {
    let fixture = fixture().await;
    let router = fixture.dashboard.clone().router(WebAuth::new(None));
    let counts = |body: &str| attributes(body, "cell", "data-count").iter().map(|c| c.parse::<u64>().unwrap()).sum::<u64>();
    let (_, _, all) = get(&router, "/jobs/job-a?x=beta&y=gamma", &[]).await;
    assert_eq!(counts(&all), 12);
    // beta 0.1..1.2 and gamma 0..3: the range 0.25..0.65 × 0..3 holds beta 0.3 to 0.6, 4 rows.
    let (status, _, zoomed) = get(&router, "/jobs/job-a?x=beta&y=gamma&xrange=0.25,0.65&yrange=0,3", &[]).await;
    assert_eq!(status, StatusCode::OK, "{zoomed}");
    assert_eq!(counts(&zoomed), 4, "{zoomed}");
    assert!(zoomed.contains("Zoomed on beta 0.25–0.65 × gamma 0–3") && zoomed.contains("class=\"unzoom\""), "{zoomed}");
    for bad in ["xrange=1", "xrange=2,1", "xrange=1,1", "xrange=NaN,1", "xrange=1e999,2", "xrange=a,b", "yrange=,", "yrange=0,1,2"] {
        let (status, _, body) = get(&router, &format!("/jobs/job-a?{bad}"), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("lo,hi"), "{bad}: {body}");
    }
}
