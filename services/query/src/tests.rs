//! The engine and catalog over real tables built by the indexer from upstream-layout trees.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use chrono::Utc;
use modelops_attribution::derive::derive;
use modelops_core::job::JobId;
use modelops_core::loss_table::Manifest;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::study::{SimJobSpec, SimulationStudy};
use modelops_core::synthetic::{self, SyntheticRun};
use modelops_indexer::build::{IndexOptions, index_job};
use modelops_indexer::locate::locate;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::Catalog;
use crate::command::{Command, LossesQuery, Order, StatusFilter};
use crate::engine::{Engine, collect};
use crate::error::QueryError;
use crate::service::QueryService;
use crate::table_cache::TableCache;

const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_BUNDLE: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const PREV: &str = "targets.prev:prevalence_target";
const DEATHS: &str = "targets.deaths/deaths_target";

/// Six sets with integer gammas; B shares the first three and adds three with float gammas.
fn study(sets: &[(f64, &str)]) -> String {
    let sets: Vec<String> = sets.iter().map(|(beta, gamma)| format!(r#"{{"params": {{"beta": {beta}, "gamma": {gamma}}}}}"#)).collect();
    format!(
        r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 2, "targets": ["{PREV}", "{DEATHS}"]}}"#,
        sets.join(", ")
    )
}

fn job(id: &str, bundle: &str, sets: &[(f64, &str)]) -> SimJobSpec {
    SimulationStudy::from_json(study(sets).as_bytes()).unwrap().to_sim_job(bundle, Some(JobId::new(id).unwrap())).unwrap()
}

struct Fixture {
    provenance: Store,
    results: Store,
    engine: Engine,
    _dir: tempfile::TempDir,
}

const SETS_A: [(f64, &str); 6] = [(0.1, "1"), (0.2, "2"), (0.3, "3"), (0.4, "4"), (0.5, "5"), (0.6, "6")];
const SETS_B: [(f64, &str); 6] = [(0.1, "1"), (0.2, "2"), (0.3, "3"), (0.7, "0.5"), (0.8, "0.25"), (0.9, "0.125")];

async fn write_and_index(fixture: &Fixture, job: &SimJobSpec, missing: &[usize], timestamp: &str) {
    let sets: Vec<usize> = (0..job.task_groups().len()).filter(|i| !missing.contains(i)).collect();
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp,
        param_sets: Some(&sets),
        failed_aggregations: &[],
    };
    synthetic::write_job_results(fixture.provenance.object_store.as_ref(), job, &run).await.unwrap();
    let derived = derive(fixture.provenance.object_store.as_ref(), job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    let locations = locate(job, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    index_job(&fixture.provenance, Arc::clone(&fixture.results.object_store), job, &locations, IndexOptions::default(), |_, _| {})
        .await
        .unwrap();
}

/// Jobs A and B (same bundle, sharing three sets; B misses one set) and C (another bundle).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&format!("file://{}/{name}", dir.path().display())).unwrap();
    let results = open("results");
    let catalog = Catalog::new(Arc::clone(&results.object_store));
    let fixture = Fixture {
        provenance: open("provenance"),
        engine: Engine::new(catalog).unwrap(),
        results,
        _dir: dir,
    };
    write_and_index(&fixture, &job("job-a", BUNDLE, &SETS_A), &[], "2026-01-01T00:00:00+00:00").await;
    write_and_index(&fixture, &job("job-b", BUNDLE, &SETS_B), &[5], "2026-02-01T00:00:00+00:00").await;
    write_and_index(&fixture, &job("job-c", OTHER_BUNDLE, &[(0.05, "1")]), &[], "2026-03-01T00:00:00+00:00").await;
    assert_eq!(fixture.engine.catalog().refresh().await.unwrap(), 3);
    fixture
}

/// One row of a table, as the tests compare them.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    job_id: String,
    param_id: String,
    target: String,
    loss: Option<f64>,
    status: String,
    cache_hit: bool,
}

fn row_order(a: &Row, b: &Row) -> std::cmp::Ordering {
    (&a.job_id, &a.param_id, &a.target).cmp(&(&b.job_id, &b.param_id, &b.target))
}

/// `batches` as one batch, dictionary columns expanded to their values: a served table as
/// the Parquet file stores it.
fn as_stored(batches: &[RecordBatch]) -> RecordBatch {
    crate::engine::expanded(&arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()).unwrap()
}

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for batch in batches.iter().map(|batch| as_stored(std::slice::from_ref(batch))) {
        let batch = &batch;
        let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (jobs, params, targets, statuses) = (text("job_id"), text("param_id"), text("target"), text("status"));
        let losses = batch.column_by_name("loss").unwrap().as_primitive::<Float64Type>();
        let cache_hits = batch.column_by_name("cache_hit").unwrap().as_boolean().clone();
        for i in 0..batch.num_rows() {
            out.push(Row {
                job_id: jobs.value(i).to_owned(),
                param_id: params.value(i).to_owned(),
                target: targets.value(i).to_owned(),
                loss: (!losses.is_null(i)).then(|| losses.value(i)),
                status: statuses.value(i).to_owned(),
                cache_hit: cache_hits.value(i),
            });
        }
    }
    out
}

async fn stored_table(fixture: &Fixture, job: &str) -> Vec<RecordBatch> {
    let bytes = fixture
        .results
        .object_store
        .get(&Path::from(format!("results/{job}/losses.parquet")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect()
}

async fn run(fixture: &Fixture, command: &Command) -> Vec<RecordBatch> {
    let schema = fixture.engine.schema(command).await.unwrap();
    let batches = collect(fixture.engine.execute(command).await.unwrap()).await.unwrap();
    for batch in &batches {
        assert_eq!(batch.schema(), schema, "the planned schema is the streamed one");
    }
    batches
}

fn losses(query: LossesQuery) -> Command {
    Command::Losses(query)
}

#[tokio::test]
async fn one_job_streams_exactly_its_stored_table() {
    let fixture = fixture().await;
    for job in ["job-a", "job-b"] {
        let streamed = run(&fixture, &losses(LossesQuery::whole_table(job))).await;
        let stored = stored_table(&fixture, job).await;
        assert_eq!(as_stored(&streamed), as_stored(&stored), "{job}");
        // Served with its few-valued text columns as dictionaries, every other as stored.
        let served = streamed[0].schema();
        assert_eq!(served.as_ref(), &crate::engine::served_schema(&stored[0].schema()));
        for field in served.fields() {
            let dictionary = matches!(field.data_type(), DataType::Dictionary(..));
            assert_eq!(dictionary, crate::engine::DICTIONARY_COLUMNS.contains(&field.name().as_str()), "{field}");
        }
    }
    let (records, bytes) = fixture.engine.size_hint(&losses(LossesQuery::whole_table("job-b"))).await.unwrap();
    assert_eq!(records, 12);
    assert!(bytes > 0);
}

#[tokio::test]
async fn filters_across_jobs_equal_the_rows_they_select() {
    let fixture = fixture().await;
    let mut all = rows(&stored_table(&fixture, "job-a").await);
    all.extend(rows(&stored_table(&fixture, "job-b").await));
    let ok_losses: Vec<f64> = all.iter().filter_map(|r| r.loss).collect();
    let (lo, hi) = (ok_losses.iter().copied().fold(f64::MAX, f64::min), ok_losses.iter().copied().fold(f64::MIN, f64::max));
    let (lo, hi) = (lo + (hi - lo) * 0.2, lo + (hi - lo) * 0.7);
    let query = LossesQuery {
        job_ids: Some(vec!["job-a".into(), "job-b".into()]),
        bundle_digest: Some("0123456789abcdef".into()),
        min_loss: Some(lo),
        max_loss: Some(hi),
        ..LossesQuery::default()
    };
    let batches = run(&fixture, &losses(query.clone())).await;
    let schema = batches[0].schema();
    assert_eq!(schema.field_with_name("param_gamma").unwrap().data_type(), &DataType::Float64, "int in A and float in B widen");
    let mut got = rows(&batches);
    got.sort_by(row_order);
    let mut expected: Vec<Row> = all.iter().filter(|r| r.loss.is_some_and(|l| l >= lo && l <= hi)).cloned().collect();
    expected.sort_by(row_order);
    assert!(!expected.is_empty() && expected.len() < all.len(), "the range selects some rows, not all");
    assert_eq!(got, expected);

    // Limited without an order: any 5 of the selected rows, no more.
    let limited = LossesQuery {
        limit: Some(5),
        ..query.clone()
    };
    let got = rows(&run(&fixture, &losses(limited)).await);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|r| expected.contains(r)));

    // Ordered and limited, by the short target name.
    let ordered = LossesQuery {
        target: Some("prevalence_target".into()),
        order: Order::LossAsc,
        limit: Some(3),
        bundle_digest: Some(BUNDLE.into()),
        ..LossesQuery::default()
    };
    let got = rows(&run(&fixture, &losses(ordered)).await);
    let mut expected: Vec<Row> = all.iter().filter(|r| r.target == PREV && r.loss.is_some()).cloned().collect();
    expected.sort_by(|a, b| a.loss.partial_cmp(&b.loss).unwrap().then(a.job_id.cmp(&b.job_id)).then(a.param_id.cmp(&b.param_id)));
    expected.truncate(3);
    assert_eq!(got, expected);

    // Missing rows of job B only (the catalog prunes A, which has none).
    let missing = LossesQuery {
        status: Some(StatusFilter::Missing),
        ..LossesQuery::default()
    };
    let got = rows(&run(&fixture, &losses(missing)).await);
    assert_eq!(got.len(), 2, "one missing set × two targets");
    assert!(got.iter().all(|r| r.job_id == "job-b" && r.status == "missing" && r.loss.is_none()));

    // Time range: only job C's results were computed in March.
    let march = LossesQuery {
        since: Some("2026-03-01T00:00:00Z".parse().unwrap()),
        until: Some("2026-04-01T00:00:00Z".parse().unwrap()),
        ..LossesQuery::default()
    };
    let got = rows(&run(&fixture, &losses(march)).await);
    assert_eq!(got.iter().map(|r| r.job_id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["job-c"]));
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn best_parameters_match_a_full_scan() {
    let fixture = fixture().await;
    let mut all = Vec::new();
    for job in ["job-a", "job-b", "job-c"] {
        all.extend(rows(&stored_table(&fixture, job).await));
    }
    for (n, bundle) in [(1, None), (3, None), (12, None), (40, None), (3, Some(BUNDLE))] {
        let command = Command::BestParameters {
            target: PREV.into(),
            n,
            bundle_digest: bundle.map(str::to_owned),
        };
        let got = rows(&run(&fixture, &command).await);
        // Each parameter set once (A and B share three): its lowest loss, from the job that
        // computed it, else the first job.
        let mut candidates: Vec<Row> = all
            .iter()
            .filter(|r| r.target == PREV && r.status == "ok" && (bundle.is_none() || r.job_id != "job-c"))
            .cloned()
            .collect();
        candidates.sort_by(|a, b| a.loss.partial_cmp(&b.loss).unwrap().then(a.cache_hit.cmp(&b.cache_hit)).then(a.job_id.cmp(&b.job_id)));
        let mut sets = BTreeSet::new();
        let mut expected: Vec<Row> = candidates.into_iter().filter(|r| sets.insert(r.param_id.clone())).collect();
        expected.sort_by(|a, b| a.loss.partial_cmp(&b.loss).unwrap().then(a.job_id.cmp(&b.job_id)).then(a.param_id.cmp(&b.param_id)));
        expected.truncate(n);
        assert_eq!(got, expected, "n = {n}, bundle = {bundle:?}");
        let distinct: BTreeSet<&str> = got.iter().map(|r| r.param_id.as_str()).collect();
        assert_eq!(distinct.len(), got.len(), "n = {n}: a set is listed once");
    }
}

#[tokio::test]
async fn compare_joins_shared_sets() {
    let fixture = fixture().await;
    let batches = run(
        &fixture,
        &Command::Compare {
            job_a: "job-a".into(),
            job_b: "job-b".into(),
            target: None,
        },
    )
    .await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 6, "three shared sets × two targets");
    for batch in &batches {
        let a = batch.column_by_name("loss_a").unwrap().as_primitive::<Float64Type>();
        let b = batch.column_by_name("loss_b").unwrap().as_primitive::<Float64Type>();
        let delta = batch.column_by_name("delta").unwrap().as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            assert_eq!(delta.value(i), b.value(i) - a.value(i));
            assert_eq!(a.value(i), b.value(i), "the same parameter set shares its cached aggregation");
        }
        assert!(batch.column_by_name("param_beta").is_some());
    }
    let one_target = run(
        &fixture,
        &Command::Compare {
            job_a: "job-a".into(),
            job_b: "job-b".into(),
            target: Some("deaths_target".into()),
        },
    )
    .await;
    assert_eq!(one_target.iter().map(RecordBatch::num_rows).sum::<usize>(), 3, "the name after a '/' names a target as after a ':'");
    let exact = run(
        &fixture,
        &Command::Compare {
            job_a: "job-a".into(),
            job_b: "job-b".into(),
            target: Some(DEATHS.into()),
        },
    )
    .await;
    assert_eq!(exact.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
}

#[tokio::test]
async fn jobs_and_sql() {
    let fixture = fixture().await;
    let jobs = run(&fixture, &Command::Jobs).await;
    let batch = &jobs[0];
    assert_eq!(batch.num_rows(), 3);
    let rows_column = batch.column_by_name("rows").unwrap().as_primitive::<Int64Type>();
    let missing_column = batch.column_by_name("missing").unwrap().as_primitive::<Int64Type>();
    assert_eq!(rows_column.values().to_vec(), [12, 12, 2]);
    assert_eq!(missing_column.values().to_vec(), [0, 2, 0]);

    let counted = run(
        &fixture,
        &Command::Sql {
            query: "SELECT job_id, count(*) AS n, count(loss) AS with_loss FROM losses GROUP BY job_id ORDER BY job_id".into(),
        },
    )
    .await;
    let counted = &counted[0];
    assert_eq!(counted.column(1).as_primitive::<Int64Type>().values().to_vec(), [12, 12, 2]);
    assert_eq!(counted.column(2).as_primitive::<Int64Type>().values().to_vec(), [12, 10, 2]);
    let joined = run(
        &fixture,
        &Command::Sql {
            query: "SELECT j.bundle_digest, count(*) AS n FROM losses l JOIN jobs j ON l.job_id = j.job_id GROUP BY j.bundle_digest ORDER BY n DESC".into(),
        },
    )
    .await;
    assert_eq!(joined[0].column(1).as_primitive::<Int64Type>().values().to_vec(), [24, 2]);
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_or_not_found() {
    let fixture = fixture().await;
    let engine = &fixture.engine;
    for query in ["SELEC nonsense", "SELECT no_such_column FROM losses", "SELECT * FROM no_such_table", "DROP TABLE losses", "CREATE TABLE t AS SELECT 1"] {
        let error = match engine.schema(&Command::Sql { query: query.into() }).await {
            Err(e) => e,
            Ok(_) => panic!("{query} planned"),
        };
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument, "{query}");
    }
    let unknown = engine.schema(&losses(LossesQuery::whole_table("no-such-job"))).await.unwrap_err();
    assert!(matches!(unknown, QueryError::JobNotFound(_)));
    assert_eq!(tonic::Status::from(unknown).code(), tonic::Code::NotFound);
    for bad in ["../etc", "a/b", ""] {
        let error = engine.schema(&losses(LossesQuery::whole_table(bad))).await.unwrap_err();
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let compare = engine
        .schema(&Command::Compare {
            job_a: "job-a".into(),
            job_b: "nope".into(),
            target: None,
        })
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(compare).code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_target_name_that_names_two_targets_is_refused_with_both() {
    let fixture = fixture().await;
    // Job D's target has the same name as job A's in another module.
    let other = "other.module:prevalence_target";
    let study = format!(r#"{{"model": "m.M", "scenario": "s", "parameter_sets": [{{"beta": 0.5}}], "n_replicates": 1, "targets": ["{other}"]}}"#);
    let job_d = SimulationStudy::from_json(study.as_bytes()).unwrap().to_sim_job(BUNDLE, Some(JobId::new("job-d").unwrap())).unwrap();
    write_and_index(&fixture, &job_d, &[], "2026-04-01T00:00:00+00:00").await;
    fixture.engine.catalog().refresh().await.unwrap();
    let best = |target: &str| Command::BestParameters {
        target: target.into(),
        n: 3,
        bundle_digest: None,
    };
    let refused = fixture.engine.execute(&best("prevalence_target")).await.err().expect("ambiguous");
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains(PREV) && status.message().contains(other), "{}", status.message());
    let query = LossesQuery {
        target: Some("prevalence_target".into()),
        ..LossesQuery::whole_table("job-a")
    };
    assert!(fixture.engine.schema(&losses(query)).await.is_err(), "the losses query too");
    // Whole entrypoints are unambiguous, and a name only one target has still works.
    for (target, job) in [(PREV, "job-a"), (other, "job-d")] {
        let got = rows(&run(&fixture, &best(target)).await);
        assert!(!got.is_empty() && got.iter().all(|r| r.target == target), "{target}: {got:?}");
        assert!(got.iter().any(|r| r.job_id == job));
    }
    assert!(!rows(&run(&fixture, &best("deaths_target")).await).is_empty());
}

#[tokio::test]
async fn the_catalog_sees_new_and_removed_jobs_without_a_restart() {
    let fixture = fixture().await;
    let catalog = fixture.engine.catalog();
    assert_eq!(catalog.refresh().await.unwrap(), 0, "nothing changed");
    write_and_index(&fixture, &job("job-d", BUNDLE, &SETS_A[..2]), &[], "2026-01-01T00:00:00+00:00").await;
    // Asked for by id before any refresh: looked up at once.
    assert_eq!(catalog.job("job-d").await.unwrap().counts[0], 4);
    assert_eq!(catalog.jobs().len(), 4);
    fixture.results.object_store.delete(&Path::from("results/job-c/manifest.json")).await.unwrap();
    catalog.refresh().await.unwrap();
    let ids: Vec<String> = catalog.jobs().iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, ["job-a", "job-b", "job-d"]);
    let entry = catalog.job("job-a").await.unwrap();
    assert_eq!(&*entry.bundle_digest, BUNDLE);
    assert!(entry.computed_at_range.is_some());
    assert_eq!(entry.target("prevalence_target").unwrap().ok, 6);
}

/// The query service served over a real connection, and a client of it.
async fn served(fixture: &Fixture) -> FlightServiceClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = QueryService::new(fixture.engine.clone()).unwrap().into_server();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tonic::transport::Server::builder().add_service(server).serve_with_incoming(incoming).await.unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    FlightServiceClient::new(channel)
}

/// The batches of a DoGet, or the status it ended with.
async fn do_get(client: &mut FlightServiceClient<tonic::transport::Channel>, ticket: Ticket) -> Result<Vec<RecordBatch>, tonic::Status> {
    use futures::TryStreamExt;
    let stream = client.do_get(ticket).await?.into_inner();
    FlightRecordBatchStream::new_from_flight_data(stream.map_err(|status| FlightError::Tonic(Box::new(status))))
        .try_collect()
        .await
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => tonic::Status::internal(other.to_string()),
        })
}

#[tokio::test]
async fn do_get_over_a_connection_streams_tables_and_ends_failed_reads_with_a_status() {
    let fixture = fixture().await;
    let mut client = served(&fixture).await;
    let whole = |job: &str| Ticket::new(losses(LossesQuery::whole_table(job)).to_json());
    let concat = as_stored;
    for job in ["job-a", "job-b"] {
        let got = do_get(&mut client, whole(job)).await.unwrap();
        assert_eq!(concat(&got), concat(&stored_table(&fixture, job).await), "{job}");
        let sent = got[0].schema();
        assert!(matches!(sent.field_with_name("bundle_digest").unwrap().data_type(), DataType::Dictionary(..)), "sent as a dictionary: {sent}");
    }
    let sql = Ticket::new(r#"{"type": "sql", "query": "SELECT job_id, count(*) AS n FROM losses GROUP BY job_id ORDER BY job_id"}"#);
    let counts = concat(&do_get(&mut client, sql).await.unwrap());
    assert_eq!(counts.num_rows(), 3);
    // Bad tickets get statuses, and the server keeps answering.
    assert_eq!(do_get(&mut client, Ticket::new(r#"{"type": "nope"}"#)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(do_get(&mut client, Ticket::new("not json")).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(do_get(&mut client, whole("no-such-job")).await.unwrap_err().code(), tonic::Code::NotFound);
    // A table removed after it was listed (and never held decoded): the stream ends with an
    // error status, not a short success.
    let table = fixture.engine.catalog().job("job-c").await.unwrap().table.location.clone();
    fixture.results.object_store.delete(&table).await.unwrap();
    let gone = do_get(&mut client, whole("job-c")).await.unwrap_err();
    assert_ne!(gone.code(), tonic::Code::Ok);
    assert!(gone.message().contains("results/job-c/tables/losses-"), "{gone:?}");
    assert!(!gone.message().contains(&fixture._dir.path().display().to_string()), "no absolute path: {gone:?}");
    assert_eq!(do_get(&mut client, whole("job-b")).await.unwrap().iter().map(RecordBatch::num_rows).sum::<usize>(), 12);
}

#[tokio::test]
async fn a_table_read_whole_again_stays_decoded_until_evicted_or_reindexed() {
    use futures::StreamExt;
    let fixture = fixture().await;
    let tables = TableCache::new(64 * 1024 * 1024);
    let engine = fixture.engine.clone().with_table_cache(tables.clone());
    let whole = |job: &str| losses(LossesQuery::whole_table(job));
    let concat = as_stored;
    let entry = |job: &'static str| {
        let catalog = engine.catalog().clone();
        async move { catalog.job(job).await.unwrap() }
    };

    // A first read keeps nothing; a second read stopped before its end keeps nothing either.
    let first = collect(engine.execute(&whole("job-a")).await.unwrap()).await.unwrap();
    assert_eq!(tables.bytes(), 0);
    let mut stream = engine.execute(&whole("job-a")).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    assert_eq!(tables.bytes(), 0);

    // Read to the end twice, the table is kept; the next read comes from memory (the file is gone).
    collect(engine.execute(&whole("job-a")).await.unwrap()).await.unwrap();
    collect(engine.execute(&whole("job-a")).await.unwrap()).await.unwrap();
    let held = tables.bytes();
    assert!(held > 0);
    let table = engine.catalog().job("job-a").await.unwrap().table.location.clone();
    fixture.results.object_store.delete(&table).await.unwrap();
    let again = collect(engine.execute(&whole("job-a")).await.unwrap()).await.unwrap();
    assert_eq!(concat(&again), concat(&first));

    // Re-indexed: the new table is read, not the held one.
    write_and_index(&fixture, &job("job-a", BUNDLE, &SETS_A[..2]), &[], "2026-04-01T00:00:00+00:00").await;
    engine.catalog().reload("job-a").await;
    let reindexed = collect(engine.execute(&whole("job-a")).await.unwrap()).await.unwrap();
    assert_eq!(reindexed.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    assert_eq!(concat(&reindexed), concat(&stored_table(&fixture, "job-a").await));

    // A budget for either table but not both: reading one evicts the other.
    let read_twice = |engine: Engine, job: &'static str| async move {
        for _ in 0..2 {
            collect(engine.execute(&whole(job)).await.unwrap()).await.unwrap();
        }
    };
    let held_alone = |job: &'static str| {
        let cache = TableCache::new(64 * 1024 * 1024);
        let engine = fixture.engine.clone().with_table_cache(cache.clone());
        async move {
            read_twice(engine, job).await;
            cache.bytes()
        }
    };
    let (b, c) = (held_alone("job-b").await, held_alone("job-c").await);
    let small = TableCache::new(b + c - 1);
    let engine = fixture.engine.clone().with_table_cache(small.clone());
    read_twice(engine.clone(), "job-b").await;
    read_twice(engine, "job-c").await;
    assert!(small.get(&*entry("job-b").await).is_none(), "job-b evicted");
    assert!(small.get(&*entry("job-c").await).is_some());
    assert_eq!(small.bytes(), c);
    // A budget smaller than any table keeps none.
    let tiny = TableCache::new(1024);
    read_twice(fixture.engine.clone().with_table_cache(tiny.clone()), "job-b").await;
    assert_eq!(tiny.bytes(), 0);
}

#[tokio::test]
async fn queries_over_their_memory_or_time_fail_with_statuses_naming_the_limit() {
    use futures::TryStreamExt as _;
    let fixture = fixture().await;
    let limits = crate::engine::SqlLimits {
        memory_bytes: 16 * 1024 * 1024,
        timeout: std::time::Duration::from_millis(500),
    };
    let engine = Engine::with_limits(fixture.engine.catalog().clone(), limits).unwrap();
    let run_to_end = |query: &'static str| {
        let engine = engine.clone();
        async move {
            let stream = engine.execute(&Command::Sql { query: query.into() }).await?;
            stream.try_collect::<Vec<_>>().await.map_err(QueryError::from)
        }
    };
    // A sort of 10^8 rows needs ~800 MB: over 16 MiB, it fails instead of growing or spilling.
    let sort = run_to_end("SELECT value FROM generate_series(1, 100000000) ORDER BY value DESC").await.unwrap_err();
    let status = tonic::Status::from(sort);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--sql-memory-mb"), "{status:?}");
    // Counting 10^12 rows takes hours: the deadline ends it with DEADLINE_EXCEEDED.
    let long = run_to_end("SELECT count(*) FROM generate_series(1, 1000000000000)").await.unwrap_err();
    let status = tonic::Status::from(long);
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("--sql-timeout-seconds"), "{status:?}");
    // Runtime errors of the query's own making are the caller's.
    for query in ["SELECT 1/0", "SELECT CAST(300 AS TINYINT)", "SELECT regexp_like('a', '(')"] {
        let error = run_to_end(query).await.unwrap_err();
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument, "{query}");
    }
    // The engine still answers.
    let counts = run_to_end("SELECT count(*) FROM losses").await.unwrap();
    assert_eq!(counts.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
}

/// Job R: job A's sets, each aggregation's result carrying per-replicate losses
/// `[set + 0.25, set + 0.5]`; indexed.
async fn index_job_with_replicates(fixture: &Fixture) -> SimJobSpec {
    use modelops_core::pyjson::{self, PyValue};
    let job = job("job-r", BUNDLE, &SETS_A[..3]);
    let run = SyntheticRun {
        schema: ProvenanceSchema::Token,
        timestamp: "2026-01-01T00:00:00+00:00",
        param_sets: None,
        failed_aggregations: &[],
    };
    let provenance = fixture.provenance.object_store.as_ref();
    synthetic::write_job_results(provenance, &job, &run).await.unwrap();
    let groups = job.task_groups();
    let derived = derive(provenance, &job, Utc::now(), &ProvenanceSchema::ALL, 8, |_, _| {}).await.unwrap();
    for edge in derived.edges.iter().filter(|e| e.kind == modelops_attribution::edge::Kind::Agg) {
        let set = groups.iter().position(|g| g.param_id == edge.param_id).unwrap() as f64;
        let path = Path::from(format!("{}/result.json", edge.path));
        let bytes = provenance.get(&path).await.unwrap().bytes().await.unwrap();
        let PyValue::Object(mut result) = pyjson::parse(&bytes).unwrap() else { panic!("an object") };
        let mut diagnostics = result.get("diagnostics").and_then(PyValue::as_object).cloned().unwrap_or_default();
        diagnostics.insert("per_replicate_losses", PyValue::List(vec![PyValue::Float(set + 0.25), PyValue::Float(set + 0.5)]));
        result.insert("diagnostics", PyValue::Object(diagnostics));
        provenance.put(&path, bytes::Bytes::from(pyjson::to_indent2(&PyValue::Object(result))).into()).await.unwrap();
    }
    let locations = locate(&job, derived.edges.iter().filter_map(modelops_attribution::edge::Edge::as_agg_edge));
    index_job(&fixture.provenance, Arc::clone(&fixture.results.object_store), &job, &locations, IndexOptions::default(), |_, _| {})
        .await
        .unwrap();
    job
}

#[tokio::test]
async fn replicates_are_served_by_path_and_command_and_not_found_without_a_table() {
    use arrow_flight::FlightDescriptor;
    let fixture = fixture().await;
    let job = index_job_with_replicates(&fixture).await;
    let concat = as_stored;
    let stored = {
        let path = Path::from("results/job-r/replicates.parquet");
        let bytes = fixture.results.object_store.get(&path).await.unwrap().bytes().await.unwrap();
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect();
        concat(&batches)
    };
    // Three sets × two targets × two replicates, each with its task's seed.
    assert_eq!(stored.num_rows(), 12);
    let groups = job.task_groups();
    let seeds = stored.column_by_name("seed").unwrap().as_primitive::<Int64Type>();
    let expected: Vec<i64> = groups.iter().flat_map(|g| [g.tasks[0].seed, g.tasks[1].seed, g.tasks[0].seed, g.tasks[1].seed]).map(|s| s as i64).collect();
    assert_eq!(seeds.values().to_vec(), expected);

    // The engine, through the command.
    let command = Command::Replicates { job_id: "job-r".into() };
    assert_eq!(concat(&run(&fixture, &command).await), stored);
    assert_eq!(fixture.engine.size_hint(&command).await.unwrap().0, 12);

    // Over a connection: the JSON command as a ticket, and the path descriptor.
    let mut client = served(&fixture).await;
    let by_command = do_get(&mut client, Ticket::new(r#"{"type": "replicates", "job_id": "job-r"}"#)).await.unwrap();
    assert_eq!(concat(&by_command), stored);
    let info = client
        .get_flight_info(FlightDescriptor::new_path(vec!["replicates".into(), "job-r".into()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.total_records, 12);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(concat(&do_get(&mut client, ticket).await.unwrap()), stored);

    // A job without per-replicate losses, and an unknown job: NOT_FOUND.
    let none = fixture.engine.schema(&Command::Replicates { job_id: "job-a".into() }).await.unwrap_err();
    assert!(matches!(&none, QueryError::NoReplicates(job) if job == "job-a"), "{none:?}");
    let status = tonic::Status::from(none);
    assert_eq!(status.code(), tonic::Code::NotFound);
    let without = do_get(&mut client, Ticket::new(r#"{"type": "replicates", "job_id": "job-a"}"#)).await.unwrap_err();
    assert_eq!(without.code(), tonic::Code::NotFound);
    let by_path = client
        .get_flight_info(FlightDescriptor::new_path(vec!["replicates".into(), "job-a".into()]))
        .await
        .unwrap_err();
    assert_eq!(by_path.code(), tonic::Code::NotFound);
    let unknown = do_get(&mut client, Ticket::new(r#"{"type": "replicates", "job_id": "no-such-job"}"#)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let missing_field = do_get(&mut client, Ticket::new(r#"{"type": "replicates"}"#)).await.unwrap_err();
    assert_eq!(missing_field.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn sql_tools_can_browse_catalogs_schemas_tables_and_their_schemas() {
    use arrow_flight::sql::{CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, ProstMessageExt as _};
    use prost::Message as _;
    let fixture = fixture().await;
    let mut client = served(&fixture).await;
    // As ADBC's get_objects / get_table_schema / get_table_types ask: GetFlightInfo, then DoGet.
    async fn ask(client: &mut FlightServiceClient<tonic::transport::Channel>, command: Vec<u8>) -> RecordBatch {
        let info = client.get_flight_info(arrow_flight::FlightDescriptor::new_cmd(command)).await.unwrap().into_inner();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches = do_get(client, ticket).await.unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }
    let strings = |batch: &RecordBatch, column: &str| -> Vec<String> {
        let array = batch.column_by_name(column).unwrap().as_string::<i32>();
        (0..array.len()).map(|i| array.value(i).to_owned()).collect()
    };
    let catalogs = ask(&mut client, CommandGetCatalogs {}.as_any().encode_to_vec()).await;
    assert_eq!(strings(&catalogs, "catalog_name"), ["datafusion"]);
    let schemas = CommandGetDbSchemas {
        catalog: None,
        db_schema_filter_pattern: Some("pub%".into()),
    };
    assert_eq!(strings(&ask(&mut client, schemas.as_any().encode_to_vec()).await, "db_schema_name"), ["public"]);
    let types = ask(&mut client, CommandGetTableTypes {}.as_any().encode_to_vec()).await;
    assert_eq!(strings(&types, "table_type"), ["TABLE"]);

    let tables = CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema: true,
    };
    let tables = ask(&mut client, tables.as_any().encode_to_vec()).await;
    let mut names = strings(&tables, "table_name");
    names.sort();
    assert_eq!(names, ["jobs", "losses"]);
    // Each table's schema, as IPC: what the SQL `SELECT *` of it answers with.
    let schemas = tables.column_by_name("table_schema").unwrap().as_binary::<i32>();
    for (row, name) in strings(&tables, "table_name").iter().enumerate() {
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(row)).unwrap();
        let expected = fixture.engine.schema(&Command::Sql { query: format!("SELECT * FROM {name}") }).await.unwrap();
        assert_eq!(&schema, expected.as_ref(), "{name}");
    }
    // A filter on the name, and the table types: only what matches.
    let only_losses = CommandGetTables {
        catalog: Some("datafusion".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("lo%".into()),
        table_types: vec!["TABLE".into()],
        include_schema: false,
    };
    let only = ask(&mut client, only_losses.as_any().encode_to_vec()).await;
    assert_eq!(strings(&only, "table_name"), ["losses"]);
    assert!(only.column_by_name("table_schema").is_none());
    // The qualified name those answers imply works in SQL.
    let counted = run(&fixture, &Command::Sql { query: "SELECT count(*) AS n FROM datafusion.public.losses".into() }).await;
    assert!(counted[0].column(0).as_primitive::<Int64Type>().value(0) > 0);
}

#[tokio::test]
async fn prepared_statements_take_bound_parameters_in_a_stateless_handle() {
    use arrow_flight::sql::{ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt as _};
    use futures::TryStreamExt as _;
    use prost::Message as _;
    let fixture = fixture().await;
    let mut client = served(&fixture).await;
    let query = "SELECT count(*) AS n FROM losses WHERE job_id = $1";
    let prepare = arrow_flight::Action::new("CreatePreparedStatement", ActionCreatePreparedStatementRequest { query: query.into(), transaction_id: None }.as_any().encode_to_vec());
    let answer = client.do_action(prepare).await.unwrap().into_inner().try_next().await.unwrap().unwrap();
    let prepared: ActionCreatePreparedStatementResult = Any::decode(answer.body).unwrap().unpack().unwrap().unwrap();
    let parameters = arrow::ipc::convert::try_schema_from_ipc_buffer(&prepared.parameter_schema).unwrap();
    assert_eq!(parameters.fields().iter().map(|f| (f.name().as_str(), f.data_type().clone())).collect::<Vec<_>>(), [("$1", DataType::Utf8)]);

    // Binding: DoPut of one row on the statement answers with a new handle carrying it.
    let bind = |client: &mut FlightServiceClient<tonic::transport::Channel>, command: Vec<u8>, jobs: Vec<&'static str>| {
        let mut client = client.clone();
        async move {
            let batch = RecordBatch::try_from_iter([("$1", Arc::new(arrow::array::StringArray::from(jobs)) as arrow::array::ArrayRef)]).unwrap();
            let messages = arrow_flight::encode::FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_cmd(command)))
                .build(futures::stream::once(async { Ok(batch) }))
                .try_collect::<Vec<_>>()
                .await
                .unwrap();
            let result = client.do_put(futures::stream::iter(messages)).await?.into_inner().try_next().await?.unwrap();
            Ok::<_, tonic::Status>(DoPutPreparedStatementResult::decode(result.app_metadata).unwrap().prepared_statement_handle.unwrap())
        }
    };
    let statement = |handle: bytes::Bytes| CommandPreparedStatementQuery { prepared_statement_handle: handle }.as_any().encode_to_vec();
    let count = |client: &mut FlightServiceClient<tonic::transport::Channel>, handle: bytes::Bytes| {
        let mut client = client.clone();
        async move {
            let info = client.get_flight_info(arrow_flight::FlightDescriptor::new_cmd(statement(handle))).await?.into_inner();
            let batches = do_get(&mut client, info.endpoint[0].ticket.clone().unwrap()).await?;
            Ok::<_, tonic::Status>(batches[0].column(0).as_primitive::<Int64Type>().value(0))
        }
    };
    let rows_of = |job: &str| fixture.engine.catalog().jobs().into_iter().find(|j| j.job_id == job).unwrap().counts[0] as i64;
    for job in ["job-a", "job-c"] {
        let handle = bind(&mut client, statement(prepared.prepared_statement_handle.clone()), vec![job]).await.unwrap();
        // Stateless: the handle alone answers, on any replica, as often as asked.
        assert_eq!(count(&mut client, handle.clone()).await.unwrap(), rows_of(job), "{job}");
        assert_eq!(count(&mut client, handle).await.unwrap(), rows_of(job), "{job}, again");
    }
    // One row binds a query; more are refused, and nothing else is written.
    let two = bind(&mut client, statement(prepared.prepared_statement_handle.clone()), vec!["job-a", "job-b"]).await.unwrap_err();
    assert_eq!(two.code(), tonic::Code::InvalidArgument, "{two:?}");
    let update = CommandStatementUpdate { query: "DELETE FROM losses".into(), transaction_id: None }.as_any().encode_to_vec();
    assert_eq!(bind(&mut client, update, vec!["x"]).await.unwrap_err().code(), tonic::Code::Unimplemented);
    // A forged handle is refused, not trusted.
    let mut forged = b"\0mops-bound\0".to_vec();
    forged.extend_from_slice(&u32::MAX.to_le_bytes());
    let refused = count(&mut client, forged.into()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

/// Reads `job`'s manifest, lets `change` alter it, and writes it back.
async fn rewrite_manifest(fixture: &Fixture, job: &str, change: impl FnOnce(&mut Manifest)) {
    let path = Path::from(format!("results/{job}/manifest.json"));
    let bytes = fixture.results.object_store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut manifest = Manifest::from_json_bytes(&bytes).unwrap();
    change(&mut manifest);
    fixture.results.object_store.put(&path, manifest.to_json_bytes().into()).await.unwrap();
}

#[tokio::test]
async fn a_job_is_known_from_its_manifest_alone_as_from_its_files() {
    let fixture = fixture().await;
    let catalog = fixture.engine.catalog();
    // A and C have integer gammas, B float ones.
    let (a, b, c) = (catalog.job("job-a").await.unwrap(), catalog.job("job-b").await.unwrap(), catalog.job("job-c").await.unwrap());
    assert!(Arc::ptr_eq(&a.schema, &c.schema), "jobs of the same columns share one schema");
    assert_ne!(a.schema, b.schema);
    assert_eq!(a.schema, stored_table(&fixture, "job-a").await[0].schema(), "the manifest's schema is the table's own");
    assert!(a.computed_at_range.is_some());

    // The same job from a manifest written before its facts: summary, footer and sizes instead.
    rewrite_manifest(&fixture, "job-a", |manifest| {
        assert!(manifest.table.is_some(), "the indexer writes the facts");
        manifest.table = None;
        manifest.files.losses_bytes = 0;
    })
    .await;
    let old = Catalog::new(Arc::clone(&fixture.results.object_store));
    let from_files = old.job("job-a").await.unwrap();
    assert_eq!(from_files.schema, a.schema);
    assert_eq!(from_files.targets, a.targets);
    assert_eq!(from_files.computed_at_range, a.computed_at_range);
    assert_eq!((&from_files.table.location, from_files.table_bytes), (&a.table.location, a.table_bytes));
    assert_eq!(from_files.counts, a.counts);
    let engine = Engine::new(old).unwrap();
    let whole = collect(engine.execute(&losses(LossesQuery::whole_table("job-a"))).await.unwrap()).await.unwrap();
    assert_eq!(rows(&whole), rows(&stored_table(&fixture, "job-a").await));
}

#[tokio::test]
async fn large_tables_are_read_by_ranges_from_a_kept_footer() {
    let fixture = fixture().await;
    index_job_with_replicates(&fixture).await;
    // Every table counts as large here.
    let footers = crate::footers::FooterCache::new(1024 * 1024).reading_whole_up_to(0);
    let catalog = Catalog::new(Arc::clone(&fixture.results.object_store)).with_footers(footers.clone());
    catalog.refresh().await.unwrap();
    let engine = Engine::new(catalog).unwrap();
    let concat = as_stored;
    for job in ["job-a", "job-b", "job-c"] {
        let got = collect(engine.execute(&losses(LossesQuery::whole_table(job))).await.unwrap()).await.unwrap();
        assert_eq!(concat(&got), concat(&stored_table(&fixture, job).await), "{job}");
    }
    let kept = footers.bytes();
    assert!(kept > 0, "the footers read are kept");
    // A loss range: the ranged reader decodes the loss column first (the row filter).
    let query = LossesQuery {
        min_loss: Some(-1e300),
        ..LossesQuery::default()
    };
    let scanned = collect(engine.execute(&losses(query)).await.unwrap()).await.unwrap();
    let mut expected = Vec::new();
    for job in ["job-a", "job-b", "job-c", "job-r"] {
        expected.extend(rows(&stored_table(&fixture, job).await).into_iter().filter(|row| row.loss.is_some()));
    }
    let mut got = rows(&scanned);
    got.sort_by(row_order);
    expected.sort_by(row_order);
    assert_eq!(got, expected);
    assert_eq!(scanned.len(), 1, "four jobs' few rows come as one batch, not one or more per job");
    let replicates = collect(engine.execute(&Command::Replicates { job_id: "job-r".into() }).await.unwrap()).await.unwrap();
    assert_eq!(replicates.iter().map(RecordBatch::num_rows).sum::<usize>(), 12);
    assert!(footers.bytes() > kept, "job-r's two footers joined them");

    // A budget below one footer keeps none, and reads still work.
    let none = crate::footers::FooterCache::new(16).reading_whole_up_to(0);
    let engine = Engine::new(Catalog::new(Arc::clone(&fixture.results.object_store)).with_footers(none.clone())).unwrap();
    let got = collect(engine.execute(&losses(LossesQuery::whole_table("job-a"))).await.unwrap()).await.unwrap();
    assert_eq!(concat(&got), concat(&stored_table(&fixture, "job-a").await));
    assert_eq!(none.bytes(), 0);
}

#[tokio::test]
async fn a_manifest_lying_about_its_table_gets_a_status_and_changes_nothing() {
    let fixture = fixture().await;
    let mut client = served(&fixture).await;
    let whole = |job: &str| Ticket::new(losses(LossesQuery::whole_table(job)).to_json());
    let stored_a = stored_table(&fixture, "job-a").await;
    // A schema that is not base64, then one that is base64 but not a schema: the job cannot be
    // known (an internal status naming the manifest), the others still are.
    for schema in ["not base64 at all!", "/////wAAAAA="] {
        rewrite_manifest(&fixture, "job-c", |manifest| manifest.table.as_mut().unwrap().arrow_schema = schema.into()).await;
        fixture.engine.catalog().reload("job-c").await;
        let catalog = Catalog::new(Arc::clone(&fixture.results.object_store));
        assert_eq!(catalog.refresh().await.unwrap(), 2, "the other two jobs load");
        let error = catalog.job("job-c").await.unwrap_err();
        assert!(error.to_string().contains("schema"), "{error}");
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::Internal);
    }
    // A manifest of 20 MiB is refused before its body is read; the other jobs still load.
    let huge = Path::from("results/job-c/manifest.json");
    fixture.results.object_store.put(&huge, bytes::Bytes::from(vec![b' '; 20 << 20]).into()).await.unwrap();
    let catalog = Catalog::new(Arc::clone(&fixture.results.object_store));
    assert_eq!(catalog.load_all().await.unwrap(), 2);
    let error = catalog.job("job-c").await.unwrap_err();
    assert!(error.to_string().contains("more than the 16777216"), "{error}");
    // Sizes that are not the table's: far shorter, one byte short, a terabyte. Each read ends with
    // a status; nothing near the claimed size is allocated, and the server keeps answering.
    for claimed in [100, stored_a_size(&fixture).await - 1, 1 << 40] {
        rewrite_manifest(&fixture, "job-a", |manifest| manifest.files.losses_bytes = claimed).await;
        fixture.engine.catalog().reload("job-a").await;
        assert_eq!(fixture.engine.catalog().job("job-a").await.unwrap().table_bytes, claimed);
        let status = do_get(&mut client, whole("job-a")).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok, "{claimed}");
        assert!(!status.message().contains(&fixture._dir.path().display().to_string()), "no absolute path: {status:?}");
        assert_eq!(do_get(&mut client, whole("job-b")).await.unwrap().iter().map(RecordBatch::num_rows).sum::<usize>(), 12);
    }
    assert_eq!(stored_table(&fixture, "job-a").await, stored_a, "the table is untouched");
}

/// The size of job-a's committed table.
async fn stored_a_size(fixture: &Fixture) -> u64 {
    let location = fixture.engine.catalog().job("job-a").await.unwrap().table.location.clone();
    fixture.results.object_store.head(&location).await.unwrap().size
}

#[tokio::test]
async fn a_table_of_one_large_row_group_streams_exactly_as_stored() {
    use modelops_core::pyjson::PyObject;
    use modelops_indexer::build::TableWriter;
    use modelops_indexer::columns::{ParamColumn, ParamType};
    use modelops_indexer::table::{Row as TableRow, RowStatus};
    let fixture = fixture().await;
    // 24,000 rows in one row group: decoded as two halves of its columns at once.
    let columns = vec![
        ParamColumn { name: "beta".into(), kind: ParamType::Float },
        ParamColumn { name: "region".into(), kind: ParamType::Text },
    ];
    let targets = vec![PREV.to_owned(), DEATHS.to_owned()];
    let job = JobId::new("job-large").unwrap();
    let mut writer = TableWriter::new(Arc::clone(&fixture.results.object_store), &job, BUNDLE, targets.clone(), columns, IndexOptions::default()).unwrap();
    for set in 0..12_000 {
        let mut values = PyObject::new();
        values.insert("beta", (set as f64 / 1000.0).into());
        values.insert("region", format!("region {}", set % 17).as_str().into());
        for (t, target) in targets.iter().enumerate() {
            let failed = set % 101 == 0;
            let row = TableRow {
                param_id: format!("{set:064x}"),
                values: values.clone(),
                target: target.clone(),
                loss: (!failed).then_some(set as f64 * 0.5 + t as f64),
                n_replicates: Some(2),
                computed_at: Some(1_700_000_000_000_000 + set),
                cache_hit: set % 3 == 0,
                status: if failed { RowStatus::Failed } else { RowStatus::Ok },
            };
            writer.push(row, None).await.unwrap();
        }
    }
    writer.commit("large".into()).await.unwrap();
    let stored = stored_table(&fixture, "job-large").await;
    let footer = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
        &fixture.results.object_store.get(&Path::from("results/job-large/losses.parquet")).await.unwrap().bytes().await.unwrap(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(footer.metadata().num_row_groups(), 1);
    let concat = as_stored;
    for whole_up_to in [0, u64::MAX] {
        // Read by ranges, and read whole.
        let footers = crate::footers::FooterCache::default().reading_whole_up_to(whole_up_to);
        let engine = Engine::new(Catalog::new(Arc::clone(&fixture.results.object_store)).with_footers(footers)).unwrap();
        let got = collect(engine.execute(&losses(LossesQuery::whole_table("job-large"))).await.unwrap()).await.unwrap();
        assert_eq!(got[0].schema(), engine.schema(&losses(LossesQuery::whole_table("job-large"))).await.unwrap());
        assert_eq!(concat(&got), concat(&stored), "read whole up to {whole_up_to} bytes");
    }
}

#[tokio::test]
async fn a_catalog_loaded_job_by_job_is_the_refreshed_one_and_needs_no_refresh() {
    let fixture = fixture().await;
    let loaded = Catalog::new(Arc::clone(&fixture.results.object_store));
    assert_eq!(loaded.load_all().await.unwrap(), 3);
    let refreshed = fixture.engine.catalog();
    for (a, b) in loaded.jobs().iter().zip(refreshed.jobs()) {
        assert_eq!((&a.job_id, &a.targets, a.counts, &a.table.location), (&b.job_id, &b.targets, b.counts, &b.table.location));
    }
    // The versions it read are those a listing gives: the first refresh reads nothing again.
    assert_eq!(loaded.refresh().await.unwrap(), 0);
    // A job indexed since, and one removed: seen by the next refresh.
    write_and_index(&fixture, &job("job-d", BUNDLE, &SETS_A[..2]), &[], "2026-01-01T00:00:00+00:00").await;
    fixture.results.object_store.delete(&Path::from("results/job-c/manifest.json")).await.unwrap();
    assert_eq!(loaded.refresh().await.unwrap(), 1);
    let ids: Vec<String> = loaded.jobs().iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, ["job-a", "job-b", "job-d"]);
    // A directory under results/ without a manifest is no job.
    fixture.results.object_store.put(&Path::from("results/job-e/losses.parquet"), bytes::Bytes::from_static(b"x").into()).await.unwrap();
    let again = Catalog::new(Arc::clone(&fixture.results.object_store));
    assert_eq!(again.load_all().await.unwrap(), 3);
}

/// Writes `job`'s table of `sets` parameter sets × two targets (losses from `seed`, a failed
/// row every seventh set) through the indexer's writer, committed as version `version`.
async fn write_small_job(results: &Store, job: &str, bundle: &str, sets: u64, seed: u64, version: &str) {
    use modelops_core::pyjson::PyObject;
    use modelops_indexer::build::TableWriter;
    use modelops_indexer::columns::{ParamColumn, ParamType};
    use modelops_indexer::table::{Row as TableRow, RowStatus};
    let columns = vec![ParamColumn { name: "beta".into(), kind: ParamType::Float }];
    let targets = vec![PREV.to_owned(), DEATHS.to_owned()];
    let id = JobId::new(job).unwrap();
    let mut writer = TableWriter::new(Arc::clone(&results.object_store), &id, bundle, targets.clone(), columns, IndexOptions::default()).unwrap();
    for set in 0..sets {
        let mut values = PyObject::new();
        values.insert("beta", (set as f64 / 10.0).into());
        for (t, target) in targets.iter().enumerate() {
            let failed = (set + seed).is_multiple_of(7);
            // Losses spread over [0, 100) and interleaved across jobs.
            let loss = ((set * 37 + seed * 11 + t as u64 * 5) % 1000) as f64 / 10.0;
            writer
                .push(
                    TableRow {
                        param_id: format!("{seed:032x}{set:032x}"),
                        values: values.clone(),
                        target: target.clone(),
                        loss: (!failed).then_some(loss),
                        n_replicates: Some(2),
                        computed_at: Some(1_700_000_000_000_000 + (seed * 1000 + set) as i64),
                        cache_hit: false,
                        status: if failed { RowStatus::Failed } else { RowStatus::Ok },
                    },
                    None,
                )
                .await
                .unwrap();
        }
    }
    writer.commit(version.into()).await.unwrap();
}

/// The rows `query` answers, in a fixed order.
async fn answer(engine: &Engine, query: &LossesQuery) -> Vec<Row> {
    let mut got = rows(&collect(engine.execute(&losses(query.clone())).await.unwrap()).await.unwrap());
    got.sort_by(row_order);
    got
}

#[tokio::test]
async fn compacted_small_jobs_answer_as_their_own_tables_and_give_way_when_reindexed() {
    use crate::compaction::{CompactionOptions, compact};
    let dir = tempfile::tempdir().unwrap();
    let results = Store::open(&format!("file://{}/results", dir.path().display())).unwrap();
    for i in 0..6 {
        write_small_job(&results, &format!("job-s{i}"), BUNDLE, 40, i, "v1").await;
    }
    write_small_job(&results, "job-other", OTHER_BUNDLE, 40, 9, "v1").await;
    let catalog = Catalog::new(Arc::clone(&results.object_store));
    catalog.load_all().await.unwrap();
    let engine = Engine::new(catalog.clone()).unwrap();
    let queries = [
        LossesQuery { bundle_digest: Some(BUNDLE.into()), min_loss: Some(20.0), max_loss: Some(30.0), ..LossesQuery::default() },
        LossesQuery { min_loss: Some(99.0), ..LossesQuery::default() },
        LossesQuery { max_loss: Some(5.0), target: Some("deaths_target".into()), ..LossesQuery::default() },
        LossesQuery { status: Some(StatusFilter::Failed), ..LossesQuery::default() },
        LossesQuery { job_ids: Some(vec!["job-s1".into(), "job-s4".into()]), min_loss: Some(50.0), ..LossesQuery::default() },
        LossesQuery { since: Some(chrono::DateTime::from_timestamp_micros(1_700_000_000_003_010).unwrap()), ..LossesQuery::default() },
    ];
    let mut before = Vec::new();
    for query in &queries {
        before.push(answer(&engine, query).await);
    }
    assert!(before.iter().all(|rows| !rows.is_empty()), "every query selects rows");

    // Six jobs of one bundle make a part (in row groups of 16 rows, so loss ranges skip most);
    // the other bundle's one job does not.
    let options = CompactionOptions { min_jobs: 3, row_group_rows: 16, ..CompactionOptions::default() };
    let done = compact(&catalog, &options).await.unwrap();
    assert_eq!((done.parts, done.jobs, done.rows), (1, 6, 480));
    assert_eq!(catalog.parts().jobs_held(), 6);
    for (query, expected) in queries.iter().zip(&before) {
        assert_eq!(&answer(&engine, query).await, expected, "{query:?}");
    }
    assert_eq!(compact(&catalog, &options).await.unwrap().parts, 0, "nothing left to compact");

    // The part stands for its jobs: with one job's own table gone, its rows still come.
    let s2 = catalog.job("job-s2").await.unwrap();
    let own_table = s2.table.location.clone();
    let own_bytes = results.object_store.get(&own_table).await.unwrap().bytes().await.unwrap();
    results.object_store.delete(&own_table).await.unwrap();
    assert_eq!(answer(&engine, &queries[0]).await, before[0]);
    results.object_store.put(&own_table, own_bytes.into()).await.unwrap();

    // Re-indexed with other rows: the job is read from its own new table, not the part.
    write_small_job(&results, "job-s2", BUNDLE, 20, 77, "v2").await;
    catalog.reload("job-s2").await;
    let mut expected = Vec::new();
    for i in 0..6 {
        expected.extend(rows(&stored_versioned(&results, &format!("job-s{i}")).await).into_iter().filter(|r| r.loss.is_some_and(|l| (20.0..=30.0).contains(&l))));
    }
    expected.sort_by(row_order);
    let got = answer(&engine, &queries[0]).await;
    assert_eq!(got, expected);
    assert!(got.iter().any(|r| r.job_id == "job-s2" && r.param_id.starts_with(&format!("{:032x}", 77))), "the new rows of job-s2");

    // Another catalog over the same store knows the part from its manifest and compacts nothing
    // more (job-s2 alone waits).
    let other = Catalog::new(Arc::clone(&results.object_store));
    other.load_all().await.unwrap();
    assert_eq!(other.parts().jobs_held(), 6);
    assert_eq!(compact(&other, &options).await.unwrap().parts, 0);
    assert_eq!(answer(&Engine::new(other).unwrap(), &queries[0]).await, expected);

    // A member deleted: the catalog forgets it; with every member gone, the part too.
    for i in 0..6 {
        results.object_store.delete(&Path::from(format!("results/job-s{i}/manifest.json"))).await.unwrap();
        catalog.refresh().await.unwrap();
        assert_eq!(catalog.parts().jobs_held(), 5 - i);
    }
    assert!(catalog.parts().all().is_empty());
}

/// `job`'s table as its manifest names it now.
async fn stored_versioned(results: &Store, job: &str) -> Vec<RecordBatch> {
    let manifest = results.object_store.get(&Path::from(format!("results/{job}/manifest.json"))).await.unwrap().bytes().await.unwrap();
    let manifest = Manifest::from_json_bytes(&manifest).unwrap();
    let bytes = results.object_store.get(&Path::from(format!("results/{job}/{}", manifest.files.losses))).await.unwrap().bytes().await.unwrap();
    ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn hostile_compacted_parts_are_left_out_and_their_jobs_read_from_their_own_tables() {
    use crate::compaction::{CompactionOptions, compact};
    use modelops_core::compacted::{PartManifest, part_manifest_file, part_rows_file};
    let dir = tempfile::tempdir().unwrap();
    let results = Store::open(&format!("file://{}/results", dir.path().display())).unwrap();
    for i in 0..4 {
        write_small_job(&results, &format!("job-s{i}"), BUNDLE, 30, i, "v1").await;
    }
    let catalog = Catalog::new(Arc::clone(&results.object_store));
    catalog.load_all().await.unwrap();
    let engine = Engine::new(catalog.clone()).unwrap();
    let query = LossesQuery { min_loss: Some(10.0), max_loss: Some(60.0), ..LossesQuery::default() };
    let expected = answer(&engine, &query).await;
    compact(&catalog, &CompactionOptions { min_jobs: 2, ..CompactionOptions::default() }).await.unwrap();
    let id = catalog.parts().ids().pop().unwrap();
    let manifest_path = Path::from(part_manifest_file(&id));
    let good = results.object_store.get(&manifest_path).await.unwrap().bytes().await.unwrap();
    let manifest = PartManifest::from_json_bytes(&good).unwrap();
    let rows_path = Path::from(part_rows_file(&id));
    let rows_bytes = results.object_store.get(&rows_path).await.unwrap().bytes().await.unwrap();

    let lying = |change: &dyn Fn(&mut PartManifest)| {
        let mut bad = manifest.clone();
        change(&mut bad);
        bad.to_json_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, Option<bytes::Bytes>)> = vec![
        ("not JSON", b"{\"members\": [".to_vec(), None),
        ("rows size lies", lying(&|m| m.rows_bytes += 1), None),
        ("rows size 1 TiB", lying(&|m| m.rows_bytes = 1 << 40), None),
        ("escaping member", lying(&|m| m.members[0].job_id = "../job-s0".into()), None),
        ("rows file gone", good.to_vec(), Some(bytes::Bytes::new())),
        ("20 MiB manifest", vec![b' '; 20 * 1024 * 1024], None),
    ];
    for (case, manifest_bytes, rows_file) in cases {
        results.object_store.put(&manifest_path, manifest_bytes.into()).await.unwrap();
        if rows_file.is_some() {
            results.object_store.delete(&rows_path).await.unwrap();
        }
        let fresh = Catalog::new(Arc::clone(&results.object_store));
        fresh.load_all().await.unwrap();
        assert_eq!(fresh.parts().jobs_held(), 0, "{case}: the part is left out");
        assert_eq!(answer(&Engine::new(fresh).unwrap(), &query).await, expected, "{case}");
        results.object_store.put(&rows_path, rows_bytes.clone().into()).await.unwrap();
    }
    // Put right again, the part is read.
    results.object_store.put(&manifest_path, good.into()).await.unwrap();
    let fresh = Catalog::new(Arc::clone(&results.object_store));
    fresh.load_all().await.unwrap();
    assert_eq!(fresh.parts().jobs_held(), 4);
    assert_eq!(answer(&Engine::new(fresh).unwrap(), &query).await, expected);
}

#[tokio::test]
async fn text_at_rows_reads_the_stored_values_at_those_rows_only_and_refuses_bad_rows() {
    let fixture = fixture().await;
    let stored = as_stored(&stored_table(&fixture, "job-b").await);
    let ids = stored.column_by_name("param_id").unwrap().as_string::<i32>().clone();
    let targets = stored.column_by_name("target").unwrap().as_string::<i32>().clone();
    let n = stored.num_rows() as u64;
    let picks: Vec<Vec<u64>> = vec![vec![0], vec![n - 1], (0..n).step_by(3).collect(), (0..n).collect(), vec![1, 2, n - 2]];
    // The file read whole, the file read by ranges, and the table held in the cache (served
    // with `target` as a dictionary).
    let ranged = {
        let footers = crate::footers::FooterCache::new(1024 * 1024).reading_whole_up_to(0);
        let catalog = Catalog::new(Arc::clone(&fixture.results.object_store)).with_footers(footers);
        catalog.refresh().await.unwrap();
        Engine::new(catalog).unwrap()
    };
    let cached = fixture.engine.clone().with_table_cache(TableCache::new(64 * 1024 * 1024));
    for _ in 0..2 {
        collect(cached.execute(&losses(LossesQuery::whole_table("job-b"))).await.unwrap()).await.unwrap();
    }
    for engine in [&fixture.engine, &ranged, &cached] {
        let entry = engine.catalog().job("job-b").await.unwrap();
        for rows in &picks {
            let got = engine.text_at(&entry, "param_id", rows).await.unwrap();
            let expected: Vec<String> = rows.iter().map(|&r| ids.value(r as usize).to_owned()).collect();
            assert_eq!(got, expected, "{rows:?}");
            let got = engine.text_at(&entry, "target", rows).await.unwrap();
            assert_eq!(got, rows.iter().map(|&r| targets.value(r as usize).to_owned()).collect::<Vec<_>>());
        }
        assert!(engine.text_at(&entry, "param_id", &[]).await.unwrap().is_empty());
        // Hostile rows and columns: a clear invalid argument each.
        for rows in [vec![n], vec![u64::MAX], vec![2, 1], vec![3, 3]] {
            let error = engine.text_at(&entry, "param_id", &rows).await.unwrap_err();
            assert!(matches!(error, QueryError::InvalidArgument { .. }), "{rows:?}: {error}");
        }
        for column in ["loss", "no_such_column", ""] {
            let error = engine.text_at(&entry, column, &[0]).await.unwrap_err();
            assert!(matches!(error, QueryError::InvalidArgument { .. }), "{column}: {error}");
        }
    }
}
