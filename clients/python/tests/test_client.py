"""End-to-end tests of modelops_results against a live `mops serve`.

These tests are run by the Rust integration tests (`cargo nextest run -E 'test(python_client)'`),
which start a server, index two jobs and set:

* ``MOPS_ENDPOINT``: the server, e.g. ``http://127.0.0.1:41234``;
* ``MOPS_TEST_RESULTS_DIR``: the results store directory (``{dir}/results/{job}/losses.parquet``);
* ``MOPS_TEST_JOB_A``, ``MOPS_TEST_JOB_B``: two indexed jobs of one bundle sharing parameter sets;
* ``MOPS_TEST_TARGET``: a full target entrypoint present in both.

Every expectation is computed independently from the Parquet files with pyarrow.
"""

from __future__ import annotations


import glob
import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from modelops_results import (
    AlreadyExists,
    Edge,
    FailedPrecondition,
    InvalidArgument,
    JobClient,
    ModelOpsError,
    NotFound,
    ResultClient,
)

_REQUIRED = ["MOPS_ENDPOINT", "MOPS_TEST_RESULTS_DIR", "MOPS_TEST_JOB_A", "MOPS_TEST_JOB_B", "MOPS_TEST_TARGET"]
_missing = [name for name in _REQUIRED if not os.environ.get(name)]
if _missing:
    # Fail, never skip: a skipped module would read as a pass.
    pytest.fail(
        "clients/python/tests need a live server prepared by the Rust integration tests, which set "
        + ", ".join(_REQUIRED)
        + f" (missing: {', '.join(_missing)}). Run them with `cargo nextest run -E 'test(python_client)'`.",
        pytrace=False,
    )

ENDPOINT = os.environ["MOPS_ENDPOINT"]
RESULTS_DIR = Path(os.environ["MOPS_TEST_RESULTS_DIR"])
JOB_A = os.environ["MOPS_TEST_JOB_A"]
JOB_B = os.environ["MOPS_TEST_JOB_B"]
TARGET = os.environ["MOPS_TEST_TARGET"]
SHORT_TARGET = TARGET.rsplit(":", 1)[-1]
KEY = ("job_id", "param_id", "target")


# --- expectations from the Parquet files -----------------------------------------------------


def losses_path(job_id: str) -> Path:
    return RESULTS_DIR / "results" / job_id / "losses.parquet"


def read_losses(job_id: str) -> pa.Table:
    return pq.read_table(losses_path(job_id))


def indexed_jobs() -> list[str]:
    """Every job with a committed table (manifest.json written last), as the query service sees them."""
    return sorted(Path(m).parent.name for m in glob.glob(str(RESULTS_DIR / "results" / "*" / "manifest.json")))


def is_param_column(name: str) -> bool:
    return name.startswith("param_") and name != "param_id"


def union_columns(*tables: pa.Table) -> set[str]:
    """The columns of a multi-job `losses` result: shared columns plus every `param_*` column."""
    shared = set.intersection(*(set(t.column_names) for t in tables))
    params = set().union(*({c for c in t.column_names if is_param_column(c)} for t in tables))
    return {c for c in shared if not is_param_column(c)} | params


def rows_of(*tables: pa.Table, columns: Optional[Iterable[str]] = None) -> list[dict[str, Any]]:
    """Rows of `tables` as dicts over `columns` (absent ones None), sorted by (job_id, param_id, target)."""
    columns = sorted(columns if columns is not None else union_columns(*tables))
    rows = [{c: row.get(c) for c in columns} for t in tables for row in t.to_pylist()]
    return sorted(rows, key=lambda r: tuple(r[k] for k in KEY))


def result_rows(table: pa.Table) -> list[dict[str, Any]]:
    return rows_of(table, columns=table.column_names)


def ok_losses(*tables: pa.Table) -> list[float]:
    return sorted(r["loss"] for t in tables for r in t.to_pylist() if r["status"] == "ok")


def matches_target(target: str, wanted: str) -> bool:
    return target == wanted or re.split("[:/]", target)[-1] == wanted


# --- fixtures --------------------------------------------------------------------------------


def _token() -> Optional[str]:
    path = os.environ.get("MOPS_AUTH_TOKEN_FILE")
    return Path(path).read_text().strip() if path else None


@pytest.fixture(scope="module")
def client() -> Iterable[ResultClient]:
    with ResultClient(ENDPOINT) as c:
        yield c


@pytest.fixture(scope="module")
def jobs() -> Iterable[JobClient]:
    with JobClient(ENDPOINT, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def flight_uri() -> str:
    parts = urlsplit(ENDPOINT if "://" in ENDPOINT else f"http://{ENDPOINT}")
    tls = parts.scheme in ("https", "grpc+tls", "grpcs")
    return f"grpc+{'tls' if tls else 'tcp'}://{parts.hostname}:{parts.port}"


@pytest.fixture(scope="module")
def raw(flight_uri: str) -> Iterable[flight.FlightClient]:
    """A plain pyarrow Flight client, independent of modelops_results."""
    c = flight.FlightClient(flight_uri)
    yield c
    c.close()


@pytest.fixture(scope="module")
def options() -> flight.FlightCallOptions:
    token = _token()
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())] if token else [])


@pytest.fixture(scope="module")
def table_a() -> pa.Table:
    return read_losses(JOB_A)


@pytest.fixture(scope="module")
def table_b() -> pa.Table:
    return read_losses(JOB_B)


def read_all_endpoints(raw: flight.FlightClient, info: flight.FlightInfo, options: flight.FlightCallOptions) -> pa.Table:
    tables = [raw.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
    return pa.concat_tables(tables, promote_options="default") if tables else info.schema.empty_table()


def test_fixtures_are_usable(table_a: pa.Table, table_b: pa.Table) -> None:
    """The prepared data is what these tests assume: shared parameter sets, the target in both."""
    assert table_a.num_rows > 0 and table_b.num_rows > 0
    shared = set(table_a.column("param_id").to_pylist()) & set(table_b.column("param_id").to_pylist())
    assert shared, "jobs A and B share no parameter set"
    assert TARGET in table_a.column("target").to_pylist() and TARGET in table_b.column("target").to_pylist()
    assert {JOB_A, JOB_B} <= set(indexed_jobs())


# --- ResultClient ----------------------------------------------------------------------------


# A job's whole table comes with these text columns (one value or a few per job) as
# dictionaries; every other column, and every answer across jobs, is as stored.
DICTIONARY_COLUMNS = ("job_id", "target", "bundle_digest", "status")


def served_schema(stored: pa.Schema) -> pa.Schema:
    """``stored`` (a loss table's Parquet schema) as a job's whole table is served."""
    for name in DICTIONARY_COLUMNS:
        i = stored.get_field_index(name)
        stored = stored.set(i, stored.field(i).with_type(pa.dictionary(pa.int32(), pa.string())))
    return stored


@pytest.mark.parametrize("job", [JOB_A, JOB_B])
def test_get_losses_is_the_parquet_table(client: ResultClient, job: str) -> None:
    expected = read_losses(job)
    table = client.get_losses(job, as_arrow=True)
    assert isinstance(table, pa.Table)
    assert table.schema.equals(served_schema(expected.schema)), f"{table.schema}\n!=\n{expected.schema}"
    assert table.cast(expected.schema).combine_chunks().equals(expected.combine_chunks()), "rows differ (order must be the job's)"

    frame = client.get_losses(job)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == expected.column_names
    assert all(isinstance(frame[name].dtype, pd.CategoricalDtype) for name in DICTIONARY_COLUMNS)
    pd.testing.assert_frame_equal(frame, expected.to_pandas(), check_dtype=False, check_categorical=False)


def test_flights_lists_both_jobs(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    listed = dict(client.flights())
    assert listed[JOB_A] == table_a.num_rows
    assert listed[JOB_B] == table_b.num_rows


def test_raw_flight(raw: flight.FlightClient, options: flight.FlightCallOptions, table_a: pa.Table, table_b: pa.Table) -> None:
    infos = {tuple(p.decode() for p in info.descriptor.path or []): info for info in raw.list_flights(b"", options)}
    for job, table in ((JOB_A, table_a), (JOB_B, table_b)):
        info = infos[("losses", job)]
        assert info.total_records == table.num_rows
        assert info.schema.equals(served_schema(table.schema))

    descriptor = flight.FlightDescriptor.for_path("losses", JOB_A)
    info = raw.get_flight_info(descriptor, options)
    assert info.endpoints
    whole = read_all_endpoints(raw, info, options)
    assert whole.schema.equals(info.schema)
    assert whole.cast(table_a.schema).combine_chunks().equals(table_a.combine_chunks())
    assert raw.get_schema(descriptor, options).schema.equals(info.schema)

    # A command over both jobs may span several endpoints; together they hold every row.
    command = flight.FlightDescriptor.for_command(json.dumps({"type": "losses", "job_ids": [JOB_A, JOB_B]}).encode())
    info = raw.get_flight_info(command, options)
    both = read_all_endpoints(raw, info, options)
    assert result_rows(both) == rows_of(table_a, table_b)
    assert raw.get_schema(command, options).schema.equals(info.schema)


def test_query_losses_loss_range(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    losses = sorted(set(ok_losses(table_a, table_b)))
    assert losses, "no ok rows"
    low, high = losses[len(losses) // 4], losses[(3 * len(losses)) // 4]
    result = client.query_losses(job_ids=[JOB_A, JOB_B], min_loss=low, max_loss=high, as_arrow=True)
    assert set(result.column_names) == union_columns(table_a, table_b)
    expected = [r for r in rows_of(table_a, table_b) if r["status"] == "ok" and low <= r["loss"] <= high]
    assert expected
    assert result_rows(result) == expected

    frame = client.query_losses(job_ids=[JOB_A, JOB_B], min_loss=low, max_loss=high)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(expected)


def test_query_losses_order_and_limit(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    losses = ok_losses(table_a, table_b)
    everything = rows_of(table_a, table_b)

    lowest = client.query_losses(job_ids=[JOB_A, JOB_B], status="ok", order="loss_asc", limit=5, as_arrow=True)
    assert lowest.column("loss").to_pylist() == losses[:5]
    highest = client.query_losses(job_ids=[JOB_A, JOB_B], status="ok", order="loss_desc", limit=5, as_arrow=True)
    assert highest.column("loss").to_pylist() == losses[::-1][:5]
    for row in lowest.to_pylist() + highest.to_pylist():
        assert {k: row[k] for k in everything[0]} in everything


def test_query_losses_status_and_target(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    everything = rows_of(table_a, table_b)
    for status in ("ok", "missing", "failed"):
        result = client.query_losses(job_ids=[JOB_A, JOB_B], status=status, as_arrow=True)
        assert result_rows(result) == [r for r in everything if r["status"] == status], status

    by_full = client.query_losses(job_ids=[JOB_A, JOB_B], target=TARGET, as_arrow=True)
    by_short = client.query_losses(job_ids=[JOB_A, JOB_B], target=SHORT_TARGET, as_arrow=True)
    expected = [r for r in everything if matches_target(r["target"], SHORT_TARGET)]
    assert result_rows(by_short) == expected
    assert result_rows(by_full) == [r for r in everything if r["target"] == TARGET]


def test_query_losses_time_window(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    everything = rows_of(table_a, table_b)
    times = sorted(r["computed_at"] for r in everything if r["computed_at"] is not None)
    assert times, "no row has a computed_at"
    since, until = times[len(times) // 2], times[-1]

    # since as a datetime (sent as RFC 3339 UTC by the client), until as an RFC 3339 string.
    until_text = until.isoformat().replace("+00:00", "Z")
    result = client.query_losses(job_ids=[JOB_A, JOB_B], since=since, until=until_text, as_arrow=True)
    expected = [r for r in everything if r["computed_at"] is not None and since <= r["computed_at"] < until]
    assert result_rows(result) == expected


def test_best_parameters(client: ResultClient) -> None:
    tables = [read_losses(job) for job in indexed_jobs()]
    candidates = [
        r for t in tables for r in t.select(["job_id", "param_id", "target", "loss", "status", "cache_hit"]).to_pylist() if r["status"] == "ok"
    ]

    def best(wanted: str, n: int) -> list[tuple[Any, ...]]:
        # A parameter set several jobs share is listed once: its lowest loss, from the job that
        # computed it, else the first job.
        rows = [r for r in candidates if matches_target(r["target"], wanted)]
        rows.sort(key=lambda r: (r["loss"], r["cache_hit"], r["job_id"]))
        first_of_set: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            first_of_set.setdefault((r["param_id"], r["target"]), r)
        ranked = sorted(first_of_set.values(), key=lambda r: (r["loss"], r["job_id"], r["param_id"]))
        return [(r["job_id"], r["param_id"], r["target"], r["loss"]) for r in ranked[:n]]

    def got(table: pa.Table) -> list[tuple[Any, ...]]:
        return [(r["job_id"], r["param_id"], r["target"], r["loss"]) for r in table.to_pylist()]

    expected = best(TARGET, 3)
    assert len(expected) == 3, "fewer than 3 ok rows for the target"
    result = client.get_best_parameters(target=TARGET, n_best=3, as_arrow=True)
    assert got(result) == expected
    assert set(result.column("status").to_pylist()) == {"ok"}
    assert got(client.get_best_parameters(target=SHORT_TARGET, n_best=3, as_arrow=True)) == best(SHORT_TARGET, 3)

    frame = client.get_best_parameters(TARGET)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.loss) == [row[3] for row in best(TARGET, 10)]


def test_compare_jobs(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    a = {(r["param_id"], r["target"]): r for r in table_a.to_pylist()}
    b = {(r["param_id"], r["target"]): r for r in table_b.to_pylist()}
    shared = sorted(a.keys() & b.keys())
    assert shared

    result = client.compare_jobs(JOB_A, JOB_B, as_arrow=True)
    params = sorted(c for c in set(table_a.column_names) & set(table_b.column_names) if is_param_column(c))
    assert {"param_id", "target", "loss_a", "loss_b", "delta", "status_a", "status_b", *params} <= set(result.column_names)
    rows = sorted(result.to_pylist(), key=lambda r: (r["param_id"], r["target"]))
    assert [(r["param_id"], r["target"]) for r in rows] == shared
    for row in rows:
        ra, rb = a[(row["param_id"], row["target"])], b[(row["param_id"], row["target"])]
        assert (row["loss_a"], row["loss_b"], row["status_a"], row["status_b"]) == (ra["loss"], rb["loss"], ra["status"], rb["status"])
        delta = None if ra["loss"] is None or rb["loss"] is None else rb["loss"] - ra["loss"]
        assert row["delta"] == delta
        for column in params:
            assert row[column] == ra[column], column

    only_target = client.compare_jobs(JOB_A, JOB_B, target=TARGET, as_arrow=True)
    assert sorted(only_target.column("param_id").to_pylist()) == sorted(p for p, t in shared if t == TARGET)


def test_list_jobs(client: ResultClient) -> None:
    catalog = client.list_jobs(as_arrow=True)
    by_job = {r["job_id"]: r for r in catalog.to_pylist()}
    for job in (JOB_A, JOB_B):
        table = read_losses(job)
        statuses = table.column("status").to_pylist()
        losses = ok_losses(table)
        row = by_job[job]
        assert (row["rows"], row["ok"], row["missing"], row["failed"]) == (
            table.num_rows,
            statuses.count("ok"),
            statuses.count("missing"),
            statuses.count("failed"),
        )
        assert (row["min_loss"], row["max_loss"]) == ((losses[0], losses[-1]) if losses else (None, None))
        assert sorted(row["targets"]) == sorted(set(table.column("target").to_pylist()))
        assert [row["bundle_digest"]] == list(set(table.column("bundle_digest").to_pylist()))
        assert row["schema_version"] == 1
        assert row["indexed_at"] is not None
    assert isinstance(client.list_jobs(), pd.DataFrame)


def test_sql(client: ResultClient, table_a: pa.Table, table_b: pa.Table) -> None:
    frame = client.sql("SELECT job_id, count(*) AS n FROM losses GROUP BY job_id ORDER BY job_id")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["job_id", "n"]
    assert list(frame.job_id) == sorted(frame.job_id)
    counts = dict(zip(frame.job_id, frame.n))
    assert (counts[JOB_A], counts[JOB_B]) == (table_a.num_rows, table_b.num_rows)

    ok = client.sql(f"SELECT count(*) AS n FROM losses WHERE job_id = '{JOB_A}' AND status = 'ok'", as_arrow=True)
    assert ok.column("n").to_pylist() == [len(ok_losses(table_a))]


def test_errors(client: ResultClient, raw: flight.FlightClient, options: flight.FlightCallOptions, table_a: pa.Table) -> None:
    with pytest.raises(NotFound) as not_found:
        client.get_losses("no-such-job")
    assert isinstance(not_found.value, ModelOpsError) and not_found.value.code == "NOT_FOUND"
    assert "no-such-job" in str(not_found.value)
    with pytest.raises(NotFound):
        client.compare_jobs(JOB_A, "no-such-job")
    with pytest.raises(NotFound):
        client.get_replicates(JOB_A)  # its aggregations carry no per-replicate losses

    with pytest.raises(InvalidArgument) as bad_sql:
        client.sql("SELEC nonsense")
    assert bad_sql.value.message

    with pytest.raises(InvalidArgument, match="bogus"):
        client.run_command({"type": "losses", "job_ids": [JOB_A], "bogus": 1})
    with pytest.raises(InvalidArgument, match="limit"):
        client.run_command({"type": "losses", "job_ids": [JOB_A], "limit": "five"})

    unknown = flight.FlightDescriptor.for_command(b'{"type":"nope"}')
    with pytest.raises(pa.ArrowInvalid, match="type"):
        raw.get_flight_info(unknown, options)
    with pytest.raises(pa.ArrowInvalid, match="type"):
        raw.get_schema(unknown, options)
    with pytest.raises(pa.ArrowException):
        raw.do_get(flight.Ticket(b'{"type":"nope"}'), options).read_all()
    with pytest.raises(InvalidArgument, match="type"):
        client.run_command({"type": "nope"})

    # The server is still serving.
    assert client.get_losses(JOB_A, as_arrow=True).num_rows == table_a.num_rows
    assert JOB_A in dict(client.flights())


def test_adbc_flight_sql(flight_uri: str, table_a: pa.Table) -> None:
    import adbc_driver_flightsql.dbapi as flightsql

    uri = flight_uri.replace("grpc+tcp://", "grpc://")
    token = _token()
    db_kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"} if token else {}
    with flightsql.connect(uri, db_kwargs=db_kwargs) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM losses WHERE job_id = '{JOB_A}'")
        assert cursor.fetchone()[0] == table_a.num_rows

        # A bound parameter (a prepared statement; the server hands back a handle carrying it).
        cursor.execute("SELECT count(*) FROM losses WHERE job_id = $1", (JOB_A,))
        assert cursor.fetchone()[0] == table_a.num_rows
        cursor.execute("SELECT count(*) FROM losses WHERE job_id = $1", (JOB_B,))
        assert cursor.fetchone()[0] == read_losses(JOB_B).num_rows

        cursor.execute("SELECT * FROM jobs")
        catalog = cursor.fetch_arrow_table()
        rows = {r["job_id"]: r for r in catalog.to_pylist()}
        assert rows[JOB_A]["rows"] == table_a.num_rows
        assert JOB_B in rows

        # What SQL tools browse with: the catalog's objects, a table's schema, the table types.
        objects = connection.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = {t["table_name"]: t for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
        assert set(tables) == {"losses", "jobs"}
        assert {"job_id", "param_id", "loss", "target", "status"} <= {c["column_name"] for c in tables["losses"]["table_columns"]}
        schema = connection.adbc_get_table_schema("losses")
        assert schema.field("loss").type == pa.float64()
        assert connection.adbc_get_table_types() == ["TABLE"]


# --- JobClient -------------------------------------------------------------------------------

BUNDLE = "sha256:" + "ab" * 32


def new_job_id(kind: str) -> str:
    return f"py-{kind}-{uuid.uuid4().hex[:12]}"


def sim_job_spec(job_id: str, n_tasks: int = 3) -> dict[str, Any]:
    """A minimal upstream SimJob spec blob: one task per parameter set, no targets."""
    tasks = []
    for i in range(n_tasks):
        param_id = hashlib.sha256(f"{job_id}/{i}".encode()).hexdigest()
        tasks.append(
            {
                "entrypoint": "models.seir.SEIR/baseline",
                "bundle_ref": BUNDLE,
                "params": {"param_id": param_id, "values": {"beta": 0.1 * (i + 1), "gamma": 0.1}},
                "seed": 1000 + i,
                "outputs": ["prevalence"],
            }
        )
    return {"job_type": "simulation", "job_id": job_id, "bundle_ref": BUNDLE, "priority": 0, "metadata": {"name": "python-client-test"}, "tasks": tasks}


def sim_edge(spec: dict[str, Any], index: int) -> Edge:
    task = spec["tasks"][index]
    param_id, seed = task["params"]["param_id"], task["seed"]
    path = f"token/v1/sims/0123456789ab/{param_id[:2]}/{param_id[2:4]}/params_{param_id[:8]}/seed_{seed}"
    return Edge.sim(path, param_id, seed)


def wait_for(predicate: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_job_lifecycle(jobs: JobClient) -> None:
    job_id = new_job_id("lifecycle")
    spec = sim_job_spec(job_id)
    job = jobs.register_job(job_id, spec=spec, metadata={"image": "example/sim:1"})
    assert (job["job_id"], job["status"], job["tasks_total"], job["tasks_completed"]) == (job_id, "pending", 3, 0)
    assert job["metadata"]["type"] == "SimJob" and job["metadata"]["image"] == "example/sim:1"
    with pytest.raises(AlreadyExists):
        jobs.register_job(job_id, spec=spec)

    for status in ("submitting", "scheduled", "running"):
        assert jobs.update_status(job_id, status)["status"] == status
    with pytest.raises(FailedPrecondition):
        jobs.update_status(job_id, "pending")

    completed, total = jobs.add_progress(job_id, completed=1)
    assert (completed, total) == (1, 3)
    jobs.add_progress(job_id, completed=1, ack_when_queued=True)
    jobs.add_progress(job_id, completed=1)
    wait_for(lambda: jobs.get_job(job_id)["tasks_completed"] == 3, "coalesced progress")
    job = jobs.get_job(job_id)
    assert (job["status"], job["tasks_total"], job["progress_percent"]) == ("running", 3, 100.0)

    job = jobs.finalize(job_id, "succeeded", results_path=f"results/{job_id}/")
    assert job["status"] == "succeeded"
    assert jobs.get_job(job_id)["status"] == "succeeded"
    assert jobs.finalize(job_id, "succeeded")["status"] == "succeeded"  # terminal to itself: no-op
    with pytest.raises(FailedPrecondition):
        jobs.cancel(job_id, reason="too late")
    assert job_id in {j["job_id"] for j in jobs.list_jobs(["succeeded"])}


def test_refusals_carry_upstream_wording_and_a_reason(jobs: JobClient) -> None:
    job_id = new_job_id("reasons")
    jobs.register_job(job_id, spec=sim_job_spec(job_id))
    with pytest.raises(FailedPrecondition) as refused:
        jobs.update_status(job_id, "running")
    assert str(refused.value).startswith("Invalid transition")
    assert refused.value.reason == "INVALID_TRANSITION"
    assert (refused.value.details["job_id"], refused.value.details["from"], refused.value.details["to"]) == (job_id, "pending", "running")
    for status in ("submitting", "scheduled", "running"):
        jobs.update_status(job_id, status)
    job = jobs.update_status(
        job_id, "validating", validation_started_at="2026-11-29T00:00:00+00:00", validation_attempts=1, error_message="flaky"
    )
    assert (job["validation_attempts"], job["error_message"]) == (1, "flaky")
    job = jobs.update_status(
        job_id,
        "partial",
        validation_completed_at="2026-11-29T00:01:00+00:00",
        tasks_verified=2,
        verified_outputs=["a", "b"],
        missing_outputs=["c"],
        last_validation_error="1 output missing",
        clear_fields=["error_message"],
    )
    assert (job["tasks_verified"], list(job["verified_outputs"]), list(job["missing_outputs"])) == (2, ["a", "b"], ["c"])
    assert not job.get("error_message")
    with pytest.raises(FailedPrecondition) as terminal:
        jobs.update_status(job_id, "failed")
    assert str(terminal.value).startswith("Cannot modify terminal")
    assert terminal.value.reason == "TERMINAL_STATE"


def test_stores_are_discoverable_without_credentials(jobs: JobClient) -> None:
    stores = jobs.get_stores()
    results_dir = os.environ["MOPS_TEST_RESULTS_DIR"]
    assert stores["results"] == "file://" + results_dir
    assert stores["provenance"] == "file://" + os.path.join(os.path.dirname(results_dir), "provenance")
    assert stores["jobs"].endswith("/jobs") and stores["registry"]


def test_resumable_tasks_of_a_job_that_is_not_partial_are_refused(jobs: JobClient) -> None:
    job_id = new_job_id("resume")
    spec = sim_job_spec(job_id)
    jobs.register_job(job_id, spec=spec)
    with pytest.raises(FailedPrecondition) as refused:
        jobs.get_resumable_tasks(job_id)
    assert refused.value.reason == "JOB_NOT_PARTIAL"
    for status in ("submitting", "scheduled", "running", "validating", "partial"):
        jobs.update_status(job_id, status)
    # No result of this job was ever written: every task is resumable, as the spec has it.
    assert jobs.get_resumable_tasks(job_id) == spec["tasks"]


def test_attribution(jobs: JobClient) -> None:
    job_id = new_job_id("edges")
    spec = sim_job_spec(job_id)
    jobs.register_job(job_id, spec=spec)

    edges: list[Any] = [sim_edge(spec, i) for i in range(3)]
    param_id = spec["tasks"][0]["params"]["param_id"]
    edges.append(
        {
            "kind": "agg",
            "path": "token/v1/aggs/0123456789ab/target_targets.prev:prevalence_target/agg_4efec569a17ca9ef",
            "param_id": param_id,
            "target": "targets.prev:prevalence_target",
            "aggregation_id": "4efec569a17ca9ef",
            "role": "cache_hit",
        }
    )
    assert jobs.record_edges(job_id, edges) == {"batches": 1, "edges_received": 4, "batches_already_stored": 0}
    assert jobs.record_edges(job_id, edges)["batches_already_stored"] == 1  # idempotent

    bad = Edge.sim("token/v1/sims/../../etc/params_x/seed_1", param_id, 1)
    with pytest.raises(InvalidArgument, match="edge 0"):
        jobs.record_edges(job_id, [bad])
    with pytest.raises(NotFound):
        jobs.record_edges("no-such-job", edges[:1])

    sealed = jobs.seal(job_id)
    assert sealed["newly_sealed"] is True
    counts = sealed["counts"]
    assert (counts["sims"], counts["aggs"], counts["computed"], counts["cache_hits"], counts["unknown"]) == (3, 1, 3, 1, 0)
    again = jobs.seal(job_id)
    assert (again["newly_sealed"], again["counts"], again["sealed_at"]) == (False, counts, sealed["sealed_at"])
    with pytest.raises(FailedPrecondition):
        jobs.record_edges(job_id, [sim_edge(spec, 0)])

    summary = jobs.get_attribution(job_id)
    assert summary["sealed"] is True and summary["counts"] == counts
    assert {e["path"] for e in summary["sample"]} == {e.path if isinstance(e, Edge) else e["path"] for e in edges}

    cancelled = jobs.cancel(job_id, reason="test over")
    assert (cancelled["status"], cancelled["error_message"]) == ("cancelled", "Cancelled: test over")
    with pytest.raises(NotFound):
        jobs.cancel("no-such-job", reason="x")


def test_index_job(jobs: JobClient, table_a: pa.Table) -> None:
    status = jobs.index_job(JOB_A, wait=True)
    statuses = table_a.column("status").to_pylist()
    assert status["phase"] == "done"
    assert status["results_path"] == f"results/{JOB_A}/"
    assert status["counts"] == {
        "total": table_a.num_rows,
        "ok": statuses.count("ok"),
        "missing": statuses.count("missing"),
        "failed": statuses.count("failed"),
    }
    with pytest.raises(NotFound):
        jobs.index_job("no-such-job")
