"""The drop-in ``modelops_results.registry.JobRegistry`` against a live ``mops serve``.

Covers every behaviour of the Python ModelOps' registry tests (``tests/test_job_registry.py``, 21
tests, and ``tests/test_job_registry_integration.py``, 3 tests; UPSTREAM-FORMAT.md §10), written
here afresh and run against the registry service instead of an in-memory store, plus the
validation fields, clearing fields and specs the service adds.

The server is shared with the other modules of this directory, so every test uses its own job ids
(a random prefix) and looks only at its own jobs in listings; counts are compared before and
after. Run through the Rust integration tests (``cargo nextest run -E 'test(python_client)'``),
which set ``MOPS_ENDPOINT``; without it this module fails rather than skipping.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

if not os.environ.get("MOPS_ENDPOINT"):
    # Fail, never skip: a skipped module would read as a pass.
    pytest.fail(
        f"{__name__} needs a live server: set MOPS_ENDPOINT (run through the Rust integration tests, "
        "`cargo nextest run -E 'test(python_client)'`)",
        pytrace=False,
    )

import modelops_results
from modelops_results import JobClient, upstream as up
from modelops_results.registry import (
    InvalidTransitionError,
    JobExistsError,
    JobRegistry,
    JobState,
    JobStatus,
    TerminalStateError,
    ValidationResult,
)

ENDPOINT = os.environ["MOPS_ENDPOINT"]
NAMESPACE = "modelops-dask-dev"
BUNDLE = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def registry() -> JobRegistry:
    return JobRegistry()  # $MOPS_ENDPOINT


@pytest.fixture
def ids():
    """Fresh job ids for one test: ``ids("job-1")`` → ``reg-<8 hex>-job-1``."""
    prefix = f"reg-{uuid.uuid4().hex[:8]}"
    return lambda name: f"{prefix}-{name}"


def _walk(registry: JobRegistry, job_id: str, *statuses: JobStatus) -> JobState:
    state = None
    for status in statuses:
        state = registry.update_status(job_id, status)
    return state


TO_RUNNING = (JobStatus.SUBMITTING, JobStatus.SCHEDULED, JobStatus.RUNNING)


# --- upstream tests/test_job_registry.py -----------------------------------------------------


# 1
def test_register_job(registry, ids):
    job = ids("job-123")
    state = registry.register_job(job_id=job, k8s_name="optuna-job-abc", namespace="modelops", metadata={"algorithm": "optuna", "run_id": "run-456"})
    assert isinstance(state, JobState)
    assert state.job_id == job
    assert state.status == JobStatus.PENDING and state.status == "pending"
    assert state.k8s_name == "optuna-job-abc"
    assert state.k8s_namespace == "modelops"
    assert state.metadata == {"algorithm": "optuna", "run_id": "run-456"}
    assert state.created_at and state.updated_at
    datetime.fromisoformat(state.created_at)
    assert (state.tasks_total, state.tasks_completed, state.expected_outputs) == (0, 0, [])
    assert registry.get_job(job) == state


# 2
def test_register_duplicate_job(registry, ids):
    job = ids("job-123")
    registry.register_job(job_id=job, k8s_name="test-job", namespace="default")
    with pytest.raises(JobExistsError, match="already registered"):
        registry.register_job(job_id=job, k8s_name="different-job", namespace="default")
    assert registry.get_job(job).k8s_name == "test-job"


# 3
def test_update_status_valid_transition(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    for status in TO_RUNNING:
        assert registry.update_status(job, status).status == status
    state = registry.update_status(job, JobStatus.SUCCEEDED, results_path="s3://bucket/results/job-1")
    assert state.status == JobStatus.SUCCEEDED
    assert state.results_path == "s3://bucket/results/job-1"
    # running → validating → partial, the validation path
    job2 = ids("job-2")
    registry.register_job(job2, "k8s-job-2", "default")
    _walk(registry, job2, *TO_RUNNING, JobStatus.VALIDATING)
    assert registry.update_status(job2, JobStatus.PARTIAL_SUCCESS).status == "partial"


# 4
def test_update_status_invalid_transition(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    with pytest.raises(InvalidTransitionError, match="Invalid transition"):
        registry.update_status(job, JobStatus.RUNNING)
    registry.update_status(job, JobStatus.SUBMITTING)
    with pytest.raises(InvalidTransitionError, match="Invalid transition"):
        registry.update_status(job, JobStatus.SUCCEEDED)
    with pytest.raises(InvalidTransitionError, match="Invalid transition"):
        registry.update_status(job, JobStatus.CANCELLED)  # submitting cannot be cancelled
    assert registry.get_job(job).status == JobStatus.SUBMITTING


# 5
def test_update_terminal_state(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    _walk(registry, job, *TO_RUNNING, JobStatus.SUCCEEDED)
    with pytest.raises(TerminalStateError, match="Cannot modify terminal"):
        registry.update_status(job, JobStatus.FAILED)
    before = registry.get_job(job)
    state = registry.update_status(job, JobStatus.SUCCEEDED)  # same status: a no-op
    assert state.status == JobStatus.SUCCEEDED
    assert state == before


# 6
def test_update_status_with_metadata(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    state = registry.update_status(job, JobStatus.SUBMITTING, k8s_uid="abc-123-def")
    assert state.k8s_uid == "abc-123-def"
    registry.update_status(job, JobStatus.SCHEDULED)
    state = registry.update_status(job, JobStatus.FAILED, error_message="Pod OOMKilled", error_code="OOM")
    assert (state.status, state.error_message, state.error_code) == (JobStatus.FAILED, "Pod OOMKilled", "OOM")
    assert state.k8s_uid == "abc-123-def"


def test_update_status_ignores_unknown_keywords(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s", "default")
    state = registry.update_status(job, JobStatus.SUBMITTING, k8s_name="other", created_at="x", metadata="not a dict")
    assert (state.k8s_name, state.metadata) == ("k8s", {})
    assert state.created_at != "x"


# 7
def test_update_progress(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    _walk(registry, job, *TO_RUNNING)
    state = registry.update_progress(job, tasks_completed=5, tasks_total=100)
    assert (state.tasks_completed, state.tasks_total, state.progress_percent) == (5, 100, 5.0)
    state = registry.update_progress(job, tasks_completed=50)
    assert (state.tasks_completed, state.tasks_total, state.progress_percent) == (50, 100, 50.0)
    registry.update_status(job, JobStatus.SUCCEEDED)
    state = registry.update_progress(job, tasks_completed=100)  # allowed in a terminal state
    assert state.tasks_completed == 100 and state.status == JobStatus.SUCCEEDED
    assert registry.get_job(job).progress_percent == 100.0


# 8
def test_get_job(registry, ids):
    assert registry.get_job(ids("non-existent")) is None
    assert registry.get_job("Not A Valid Id") is None
    job = ids("job-1")
    registry.register_job(job, "k8s-job-1", "default")
    state = registry.get_job(job)
    assert state is not None and state.job_id == job and state.status == JobStatus.PENDING


# 9
def test_list_jobs(registry, ids):
    jobs = [ids(f"job-{i}") for i in (1, 2, 3)]
    for n, job in enumerate(jobs, 1):
        registry.register_job(job, f"k8s-{n}", "default")
    _walk(registry, jobs[0], *TO_RUNNING)
    _walk(registry, jobs[1], JobStatus.SUBMITTING, JobStatus.FAILED)

    mine = lambda states: [s for s in states if s.job_id in jobs]  # noqa: E731
    listed = mine(registry.list_jobs(limit=10000))
    assert sorted(s.job_id for s in listed) == sorted(jobs)
    assert [s.created_at for s in listed] == sorted((s.created_at for s in listed), reverse=True), "newest first"

    running = mine(registry.list_jobs(limit=10000, status_filter=[JobStatus.RUNNING]))
    assert [s.job_id for s in running] == [jobs[0]]
    terminal = registry.list_jobs(limit=10000, status_filter=[JobStatus.SUCCEEDED, JobStatus.FAILED])
    assert all(s.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) for s in terminal)
    assert [s.job_id for s in mine(terminal)] == [jobs[1]]
    assert [s.job_id for s in mine(registry.list_jobs(limit=10000, status_filter=["pending"]))] == [jobs[2]]

    assert len(registry.list_jobs(limit=2)) == 2
    assert registry.list_jobs(limit=0) == []
    assert all(isinstance(s, JobState) for s in registry.list_jobs())


# 10
def test_list_jobs_by_time(registry, ids):
    job = ids("job-old")
    registry.register_job(job, "k8s-old", "default")
    recent = registry.list_jobs(since=datetime.now(timezone.utc) - timedelta(hours=1), limit=10000)
    assert job in {s.job_id for s in recent}
    assert all(datetime.fromisoformat(s.created_at) >= datetime.now(timezone.utc) - timedelta(hours=1, minutes=1) for s in recent)
    assert registry.list_jobs(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []


# 11
def test_finalize_job_success(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default")
    _walk(registry, job, *TO_RUNNING)
    state = registry.finalize_job(job, JobStatus.SUCCEEDED, results_path="s3://bucket/results/job-1")
    assert (state.status, state.results_path, state.error_message) == (JobStatus.SUCCEEDED, "s3://bucket/results/job-1", None)
    assert state.is_terminal


# 12
def test_finalize_job_failure(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default")
    _walk(registry, job, JobStatus.SUBMITTING, JobStatus.SCHEDULED)
    state = registry.finalize_job(job, JobStatus.FAILED, error_info={"message": "Container exited with code 137", "code": "OOMKilled"})
    assert (state.status, state.error_message, state.error_code) == (JobStatus.FAILED, "Container exited with code 137", "OOMKilled")
    assert state.results_path is None


def test_finalize_job_error_info_none_clears_fields(registry, ids):
    """``error_info={"message": None}`` sets error_message (and error_code) back to None."""
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default")
    registry.update_status(job, JobStatus.SUBMITTING, error_message="transient", error_code="E1")
    registry.update_status(job, JobStatus.SCHEDULED)
    assert registry.get_job(job).error_message == "transient"
    state = registry.finalize_job(job, JobStatus.FAILED, error_info={"message": None})
    assert (state.status, state.error_message, state.error_code) == (JobStatus.FAILED, None, None)
    assert registry.get_job(job).error_message is None


# 13
def test_finalize_non_terminal_error(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default")
    for status in (JobStatus.RUNNING, JobStatus.VALIDATING, "pending"):
        with pytest.raises(ValueError, match="not a terminal status"):
            registry.finalize_job(job, status)
    assert registry.get_job(job).status == JobStatus.PENDING


# 14
def test_cancel_job(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default")
    _walk(registry, job, *TO_RUNNING)
    state = registry.cancel_job(job, reason="User requested cancellation")
    assert state.status == JobStatus.CANCELLED
    assert "Cancelled: User requested" in state.error_message
    with pytest.raises(TerminalStateError):
        registry.update_status(job, JobStatus.FAILED)
    job2 = ids("job-2")
    registry.register_job(job2, "k8s-2", "default")
    state = registry.cancel_job(job2)  # no reason: no message, as upstream
    assert (state.status, state.error_message) == (JobStatus.CANCELLED, None)


# 15
def test_count_jobs_by_status(registry, ids):
    before = registry.count_jobs_by_status()
    assert set(before) == set(JobStatus), "every status is present"
    jobs = {name: ids(name) for name in ("p", "r", "s", "f")}
    for job in jobs.values():
        registry.register_job(job, job, "default")
    _walk(registry, jobs["r"], *TO_RUNNING)
    _walk(registry, jobs["s"], *TO_RUNNING, JobStatus.SUCCEEDED)
    _walk(registry, jobs["f"], JobStatus.SUBMITTING, JobStatus.FAILED)
    after = registry.count_jobs_by_status()
    delta = {status: after[status] - before[status] for status in JobStatus}
    expected = {status: 0 for status in JobStatus}
    expected.update({JobStatus.PENDING: 1, JobStatus.RUNNING: 1, JobStatus.SUCCEEDED: 1, JobStatus.FAILED: 1})
    assert delta == expected


# 16
def test_get_active_jobs(registry, ids):
    pending, running, done = ids("job-pending"), ids("job-running"), ids("job-done")
    for job in (pending, running, done):
        registry.register_job(job, job, "default")
    _walk(registry, running, *TO_RUNNING)
    _walk(registry, done, *TO_RUNNING, JobStatus.SUCCEEDED)
    active = registry.get_active_jobs()
    assert all(not s.is_terminal for s in active)
    found = {s.job_id for s in active}
    assert pending in found and running in found and done not in found


# 17
def test_get_recent_jobs(registry, ids):
    job = ids("job-now")
    registry.register_job(job, "k8s-1", "default")
    assert job in {s.job_id for s in registry.get_recent_jobs()}
    assert len([s for s in registry.get_recent_jobs(hours=0) if s.job_id == job]) in (0, 1)


# 18
def test_concurrent_status_updates(registry, ids):
    for round_ in range(10):
        job = ids(f"job-{round_}")
        registry.register_job(job, job, "default")
        barrier = threading.Barrier(2)
        results, errors = [], []

        def worker(status: JobStatus) -> None:
            barrier.wait()
            try:
                results.append((status, registry.update_status(job, status).status))
            except (InvalidTransitionError, TerminalStateError) as e:
                errors.append((status, e))

        threads = [threading.Thread(target=worker, args=(s,)) for s in (JobStatus.SUBMITTING, JobStatus.CANCELLED)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 1 and len(errors) == 1, (results, errors)
        winner = results[0][1]
        assert winner in (JobStatus.SUBMITTING, JobStatus.CANCELLED)
        assert registry.get_job(job).status == winner


# 19
def test_metadata_merge(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default", metadata={"algorithm": "optuna", "version": "1.0", "nested": {"a": 1}})
    state = registry.update_status(job, JobStatus.SUBMITTING, metadata={"cluster": "prod", "region": "us-east", "nested": {"b": 2}})
    assert state.metadata == {"algorithm": "optuna", "version": "1.0", "nested": {"b": 2}, "cluster": "prod", "region": "us-east"}
    assert registry.get_job(job).metadata == state.metadata


# 20
def test_job_state_serialization(registry, ids):
    job = ids("job-1")
    registry.register_job(job, "k8s-1", "default", metadata={"test": True})
    state = registry.update_status(job, JobStatus.SUBMITTING, k8s_uid="uid-123", tasks_total=100)
    restored = JobState.from_json(state.to_json())
    assert restored == state
    assert (restored.job_id, restored.status, restored.k8s_uid, restored.tasks_total, restored.metadata) == (job, JobStatus.SUBMITTING, "uid-123", 100, {"test": True})
    assert list(state.to_dict()) == [
        "job_id", "status", "created_at", "updated_at", "k8s_name", "k8s_namespace", "k8s_uid",
        "tasks_total", "tasks_completed", "error_message", "error_code", "results_path",
        "expected_outputs", "verified_outputs", "missing_outputs", "tasks_verified",
        "validation_started_at", "validation_completed_at", "validation_attempts",
        "last_validation_error", "metadata",
    ]  # fmt: skip
    assert JobState.from_dict({**state.to_dict(), "unknown": 1, "_revision": 7}) == state
    assert state.copy_with(tasks_completed=50).progress_percent == 50.0


# 21
def test_nonexistent_job_operations(registry, ids):
    job = ids("non-existent")
    with pytest.raises(KeyError, match="not found"):
        registry.update_status(job, JobStatus.RUNNING)
    with pytest.raises(KeyError, match="not found"):
        registry.update_progress(job, tasks_completed=5)
    with pytest.raises(KeyError, match="not found"):
        registry.cancel_job(job)
    with pytest.raises(KeyError, match="not found"):
        registry.finalize_job(job, JobStatus.FAILED)
    with pytest.raises(KeyError, match="not found"):
        registry.transition_to_validating(job)
    with pytest.raises(KeyError, match="not found"):
        registry.update_status("Bad Id!", JobStatus.RUNNING)


# --- upstream tests/test_job_registry_integration.py -----------------------------------------


def test_job_submission_with_registry(registry, ids):
    """What upstream's JobSubmissionClient does to the registry (register with the job's
    metadata, submitting, then scheduled once the K8s Job exists), then a runner's updates."""
    job = ids("job")
    blob_key = f"jobs/simulation/{job}.json"
    registry.register_job(job_id=job, k8s_name=job, namespace=NAMESPACE, metadata={"type": "SimJob", "blob_key": blob_key, "image": "runner:1"})
    registry.update_status(job, JobStatus.SUBMITTING)
    registry.update_status(job, JobStatus.SCHEDULED)

    state = registry.get_job(job)
    assert state is not None and state.status == JobStatus.SCHEDULED
    assert (state.k8s_name, state.k8s_namespace) == (job, NAMESPACE)
    assert state.metadata == {"type": "SimJob", "blob_key": blob_key, "image": "runner:1"}

    registry.update_status(job, JobStatus.RUNNING)
    registry.update_progress(job, tasks_completed=1, tasks_total=2)
    state = registry.get_job(job)
    assert (state.status, state.tasks_completed, state.tasks_total, state.progress_percent) == (JobStatus.RUNNING, 1, 2, 50.0)

    registry.finalize_job(job, JobStatus.SUCCEEDED, results_path="s3://bucket/results/test")
    state = registry.get_job(job)
    assert (state.status, state.results_path) == (JobStatus.SUCCEEDED, "s3://bucket/results/test")
    assert state.is_terminal


def _status_lines(registry: JobRegistry, job_id: str) -> str:
    """What ``mops jobs status`` prints from the registry (id, status, progress)."""
    state = registry.get_job(job_id)
    percent = state.progress_percent or 0
    return f"Job: {state.job_id}\n  Status: {state.status.value}\n  Progress: {state.tasks_completed}/{state.tasks_total} ({percent:.1f}%)"


def _list_table(registry: JobRegistry, status: str | None = None) -> str:
    """What ``mops jobs list [--status s]`` prints from the registry: one row per job."""
    status_filter = [JobStatus(status.lower())] if status else None
    rows = []
    for job in registry.list_jobs(limit=10000, status_filter=status_filter):
        progress = f"{job.tasks_completed}/{job.tasks_total}" if job.tasks_total > 0 else "-"
        rows.append(f"{job.job_id}  {job.status.value}  {progress}  {job.created_at}")
    return "\n".join(rows)


def test_cli_status_command(registry, ids):
    job = ids("test-123")
    registry.register_job(job_id=job, k8s_name=job, namespace=NAMESPACE, metadata={"test": True})
    _walk(registry, job, *TO_RUNNING)
    registry.update_progress(job, tasks_completed=5, tasks_total=10)
    out = _status_lines(registry, job)
    assert job in out and "running" in out.lower() and "5/10" in out and "50.0%" in out


def test_cli_list_command(registry, ids):
    jobs = [ids(f"test-{i:03d}") for i in range(3)]
    for job in jobs:
        registry.register_job(job_id=job, k8s_name=job, namespace=NAMESPACE)
    _walk(registry, jobs[0], *TO_RUNNING)
    _walk(registry, jobs[1], *TO_RUNNING, JobStatus.VALIDATING, JobStatus.SUCCEEDED)
    _walk(registry, jobs[2], JobStatus.SUBMITTING, JobStatus.FAILED)

    out = _list_table(registry)
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert all(job in rows for job in jobs)
    assert "running" in rows[jobs[0]] and "succeeded" in rows[jobs[1]] and "failed" in rows[jobs[2]]

    out = _list_table(registry, "running")
    assert jobs[0] in out and jobs[1] not in out and jobs[2] not in out


# --- beyond upstream's tests: validation fields, specs, the package surface ------------------


def test_validation_transitions_and_fields(registry, ids, tmp_path):
    job = ids("job-1")
    registry.register_job(job, job, "default")
    _walk(registry, job, *TO_RUNNING)
    state = registry.transition_to_validating(job)
    assert (state.status, state.validation_attempts) == (JobStatus.VALIDATING, 1)
    assert datetime.fromisoformat(state.validation_started_at).tzinfo is not None

    with pytest.raises(InvalidTransitionError, match="Invalid transition"):
        registry.update_status(job, JobStatus.CANCELLED)  # validating cannot be cancelled

    vr = ValidationResult(status="partial", verified_count=2, missing_count=1, verified_outputs=["a", "b"], missing_outputs=["c"], error="1 output missing")
    state = registry.finalize_with_validation(job, vr)
    assert state.status == JobStatus.PARTIAL_SUCCESS and state.is_terminal
    assert (state.tasks_verified, state.verified_outputs, state.missing_outputs) == (2, ["a", "b"], ["c"])
    assert state.last_validation_error == "1 output missing"
    assert state.validation_completed_at is not None
    assert registry.get_job(job) == state
    # Not validating any more: left unchanged.
    assert registry.finalize_with_validation(job, ValidationResult(status="complete")) == state
    with pytest.raises(TerminalStateError, match="Cannot modify terminal"):
        registry.transition_to_validating(job)

    job2 = ids("job-2")
    registry.register_job(job2, job2, "default")
    _walk(registry, job2, *TO_RUNNING)
    registry.transition_to_validating(job2)
    state = registry.finalize_with_validation(job2, ValidationResult(status="complete", verified_count=5, verified_outputs=["x"] * 5))
    assert (state.status, state.tasks_verified, state.missing_outputs) == (JobStatus.SUCCEEDED, 5, [])
    job3 = ids("job-3")
    registry.register_job(job3, job3, "default")
    _walk(registry, job3, *TO_RUNNING, JobStatus.VALIDATING)
    assert registry.finalize_with_validation(job3, ValidationResult(status="failed", error="none found")).status == JobStatus.FAILED

    # validate_outputs / get_resumable_tasks with the service: no expected outputs are stored.
    assert registry.validate_outputs(job).status == "unavailable"

    class Provenance:
        storage_dir = tmp_path

    with_store = JobRegistry(JobClient(ENDPOINT), provenance_store=Provenance())
    assert with_store.validate_outputs(ids("missing")).status == "failed"
    assert with_store.validate_outputs(job).status == "unavailable"
    assert registry.get_resumable_tasks(job) == []
    assert registry.get_resumable_tasks(job2) == []


def test_update_status_sets_and_clears_validation_and_nullable_fields(registry, ids):
    job = ids("job-1")
    registry.register_job(job, job, "default")
    state = registry.update_status(job, JobStatus.SUBMITTING, results_path="r", k8s_uid="u", error_message="m")
    assert (state.results_path, state.k8s_uid, state.error_message) == ("r", "u", "m")
    state = registry.update_status(
        job,
        JobStatus.SCHEDULED,
        results_path=None,
        k8s_uid=None,
        validation_attempts=3,
        tasks_verified=4,
        verified_outputs=["v"],
        missing_outputs=["w"],
        last_validation_error="e",
        validation_started_at="2026-11-29T00:00:00+00:00",
    )
    assert (state.results_path, state.k8s_uid, state.error_message) == (None, None, "m")
    assert (state.validation_attempts, state.tasks_verified, state.verified_outputs, state.missing_outputs) == (3, 4, ["v"], ["w"])
    assert (state.last_validation_error, state.validation_started_at) == ("e", "2026-11-29T00:00:00+00:00")


def test_register_with_a_job_spec(registry, ids):
    job = ids("job-spec")
    study = {"model": "models.sir", "scenario": "baseline", "parameter_sets": [{"beta": 0.1}, {"beta": 0.2}], "n_replicates": 1}
    spec = up.study_to_simjob(study, BUNDLE, job)
    state = registry.register_job(job, job, NAMESPACE, job_spec=spec, metadata={"type": "SimJob"})
    assert (state.status, state.tasks_total) == (JobStatus.PENDING, 2)
    stored = registry.client.get_job_spec(job)["spec"]
    assert [t["params"]["param_id"] for t in stored["tasks"]] == [t["params"]["param_id"] for t in spec["tasks"]]
    with pytest.raises(ValueError):
        registry.register_job(ids("other"), "x", NAMESPACE, job_spec={**spec, "job_id": ids("mismatch")})

    # A SimJob-like object (upstream's contracts type) is sent in the spec blob's form.
    from types import SimpleNamespace as NS

    job2 = ids("job-obj")
    tasks = [
        NS(entrypoint=t["entrypoint"], bundle_ref=t["bundle_ref"], params=NS(param_id=t["params"]["param_id"], params=t["params"]["values"]), seed=t["seed"], outputs=None)
        for t in spec["tasks"]
    ]
    sim_job = NS(job_type="simulation", job_id=job2, bundle_ref=BUNDLE, priority=0, metadata={"n": 2}, target_spec=None, tasks=tasks)
    assert registry.register_job(job2, job2, NAMESPACE, job_spec=sim_job).tasks_total == 2
    stored = registry.client.get_job_spec(job2)["spec"]
    assert [(t["params"]["param_id"], t["seed"]) for t in stored["tasks"]] == [(t["params"]["param_id"], t["seed"]) for t in spec["tasks"]]


def test_constructor_and_exports(ids):
    # Upstream call sites pass their VersionedStore: the service at $MOPS_ENDPOINT is used.
    class SomeVersionedStore:
        pass

    reg = JobRegistry(SomeVersionedStore(), prefix="jobs")
    job = ids("job-1")
    reg.register_job(job, job, "default")
    assert JobRegistry(ENDPOINT).get_job(job).job_id == job
    assert JobRegistry(JobClient(ENDPOINT)).get_job(job).job_id == job
    assert modelops_results.JobRegistry is JobRegistry and modelops_results.JobStatus is JobStatus
    for cls in (modelops_results.InvalidTransitionError, modelops_results.TerminalStateError, modelops_results.JobExistsError):
        assert cls.__bases__ == (Exception,)
    assert JobStatus("partial") is JobStatus.PARTIAL_SUCCESS
    assert [s.value for s in JobStatus] == ["pending", "submitting", "scheduled", "running", "validating", "succeeded", "partial", "failed", "cancelled"]


def test_resumable_tasks_of_a_partial_job_with_a_spec_come_from_the_service(registry, ids):
    job = ids("job-resume")
    study = {"model": "models.sir", "scenario": "baseline", "parameter_sets": [{"beta": 0.3}, {"beta": 0.4}], "n_replicates": 2}
    spec = up.study_to_simjob(study, BUNDLE, job)
    registry.register_job(job, job, NAMESPACE, job_spec=spec, metadata={"type": "SimJob"})
    assert registry.get_resumable_tasks(job) == []  # pending: upstream's rule
    _walk(registry, job, *TO_RUNNING, JobStatus.VALIDATING, JobStatus.PARTIAL_SUCCESS)
    # No result of this job was written: every task is resumable, with its own entrypoint.
    tasks = registry.get_resumable_tasks(job)
    assert tasks == spec["tasks"]
    assert tasks[0]["entrypoint"] == "models.sir/baseline"
