"""The runner kit (JobHandle, run, ProgressReporter, EdgeRecorder, track) against an in-process
fake of JobClient: pure Python, no server needed."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import time

import pytest

import modelops_results.runner as runner_mod
from modelops_results import Edge, EdgeRecorder, JobHandle, ProgressReporter, ProvenanceWriter, run, track
from modelops_results import upstream as up

BUNDLE = "sha256:" + "01" * 32
TRANSITIONS = {
    "pending": {"submitting", "cancelled"},
    "submitting": {"scheduled", "failed"},
    "scheduled": {"running", "failed", "cancelled"},
    "running": {"validating", "succeeded", "failed", "cancelled"},
}


class FakeClient:
    """Records what the kit calls, with upstream's state machine; can fail on demand."""

    instances: list = []

    def __init__(self, **settings):
        self.settings = settings
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.status = {}
        self.calls = []
        self.completed = 0
        self.edges = []
        self.fail_next = 0
        FakeClient.instances.append(self)

    def _maybe_fail(self):
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("unavailable")

    def get_job(self, job_id):
        return {"job_id": job_id, "status": self.status.setdefault(job_id, "pending")}

    def update_status(self, job_id, status, **kw):
        current = self.status.setdefault(job_id, "pending")
        if status not in TRANSITIONS.get(current, set()):
            raise RuntimeError(f"Invalid transition from {current} to {status}")
        self.status[job_id] = status
        self.calls.append(("update_status", status))
        return {"status": status}

    def set_progress(self, job_id, *, completed=None, total=None):
        self.calls.append(("set_progress", total))

    def add_progress(self, job_id, completed=0, *, total=0, ack_when_queued=False):
        with self.lock:
            self._maybe_fail()
            self.completed += completed
            self.calls.append(("add_progress", completed))
        return self.completed, 0

    def record_edges(self, job_id, edges, *, batch_size=1000, batch_id=None):
        with self.lock:
            self._maybe_fail()
            self.edges.extend(edges)
            self.calls.append(("record_edges", len(edges)))
        return {}

    def seal(self, job_id, **kw):
        self.calls.append(("seal",))

    def finalize(self, job_id, status="succeeded", *, results_path=None, error_message=None, error_code=None):
        current = self.status[job_id]
        assert status in TRANSITIONS[current], (current, status)
        self.status[job_id] = status
        self.calls.append(("finalize", status, error_message, error_code))

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    FakeClient.instances = []
    monkeypatch.setattr(runner_mod, "JobClient", FakeClient)
    return FakeClient


def _client(handle):
    return handle.client


def test_handle_is_picklable_and_lazy(fake):
    handle = JobHandle("job-1", "http://127.0.0.1:1", timeout=5)
    assert fake.instances == [], "no channel until used"
    client = handle.client
    assert handle.client is client and client.settings["endpoint"] == "http://127.0.0.1:1"
    clone = pickle.loads(pickle.dumps(handle))
    assert clone.job_id == "job-1" and clone._client is None
    assert clone.client is not client and clone.client.settings == client.settings
    # Unpickled in another process (spawned: forking a process with live gRPC channels is unsafe).
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_settings_in_child, handle).result() == ("job-1", "http://127.0.0.1:1")


def _settings_in_child(handle):
    assert handle._client is None
    return handle.job_id, handle._settings["endpoint"]


def test_progress_counts_each_task_once(fake):
    handle = JobHandle("job-p")
    reporter = ProgressReporter(handle, interval=0.05)
    threads = [threading.Thread(target=lambda i=i: [reporter.done(f"t{j}") for j in range(i, 500, 1)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reporter.flush(timeout=10)
    assert handle.client.completed == 500 and reporter.counted == 500
    assert reporter.duplicates == (500 + 499 + 498 + 497) - 500
    calls = [c for c in handle.client.calls if c[0] == "add_progress"]
    assert len(calls) < 100, "batched, not one call per task"
    assert not reporter.done("t3"), "a retried task is not counted again"
    assert reporter.close(timeout=10) and handle.client.completed == 500


def test_reporters_retry_and_lose_nothing(fake):
    handle = JobHandle("job-r")
    handle.client.fail_next = 3
    edges = EdgeRecorder(handle, interval=0.01, batch_size=7)
    progress = ProgressReporter(handle, interval=0.01)
    edges._batcher._retry_delay = progress._batcher._retry_delay = 0.01
    for i in range(100):
        edges.add(Edge.sim(f"token/v1/sims/x/{i}", "p" * 64, i))
        progress.done(i)
    assert edges.close(timeout=10) and progress.close(timeout=10)
    client = handle.client
    assert sorted(e.seed for e in client.edges) == list(range(100))
    assert client.completed == 100
    assert max(n for c, n in [c for c in client.calls if c[0] == "record_edges"]) <= 7


def test_bounded_queue_applies_back_pressure(fake):
    handle = JobHandle("job-b")
    gate = threading.Event()
    original = FakeClient.add_progress

    def slow(self, *a, **kw):
        gate.wait(5)
        return original(self, *a, **kw)

    FakeClient.add_progress = slow
    try:
        reporter = ProgressReporter(handle, interval=0.01, max_queue=5, batch_size=5)
        done = []
        t = threading.Thread(target=lambda: [done.append(reporter.done(i)) for i in range(50)])
        t.start()
        time.sleep(0.2)
        assert len(done) < 50, "producers wait while the queue is full"
        gate.set()
        t.join(5)
        assert reporter.close(timeout=10)
        assert handle.client.completed == 50
    finally:
        FakeClient.add_progress = original


def test_run_lifecycle_success(fake):
    handle = JobHandle("job-ok")
    with run(handle, total=3, progress_interval=0.01) as job:
        for i in range(3):
            job.done(f"task-{i}")
            job.record(Edge.sim(f"token/v1/sims/a/{i}", "f" * 64, i))
        job.done("task-0")
    client = handle.client
    steps = [c[1] for c in client.calls if c[0] == "update_status"]
    assert steps == ["submitting", "scheduled", "running"]
    names = [c[0] for c in client.calls]
    assert names.index("seal") < names.index("finalize") and names[-1] == "finalize"
    assert names.index("add_progress") < names.index("seal") and names.index("record_edges") < names.index("seal")
    assert client.calls[-1] == ("finalize", "succeeded", None, None)
    assert client.completed == 3 and len(client.edges) == 3


def test_run_from_scheduled_and_partial(fake):
    handle = JobHandle("job-s")
    handle.client.status["job-s"] = "scheduled"
    with run(handle, seal=False) as job:
        job.final_status = "failed"
    assert [c[1] for c in handle.client.calls if c[0] == "update_status"] == ["running"]
    assert "seal" not in [c[0] for c in handle.client.calls]
    handle.client.status["job-done"] = "succeeded"
    with pytest.raises(RuntimeError, match="cannot be run"):
        run(handle_with(handle, "job-done")).__enter__()


def handle_with(handle, job_id):
    other = JobHandle(job_id)
    other._client, other._pid = handle.client, os.getpid()
    return other


class CodedError(Exception):
    code = "MODEL_CRASHED"


def test_run_lifecycle_failure(fake):
    handle = JobHandle("job-bad")
    with pytest.raises(ValueError, match="bad seed"):
        with run(handle) as job:
            job.done("t1")
            raise ValueError("bad seed")
    client = handle.client
    assert client.calls[-1] == ("finalize", "failed", "ValueError: bad seed", "ValueError")
    assert client.completed == 1, "what was reported is still sent"
    assert "seal" not in [c[0] for c in client.calls]
    with pytest.raises(CodedError):
        with run(handle_with(handle, "job-bad2")):
            raise CodedError("segfault")
    assert client.calls[-1][3] == "MODEL_CRASHED"


def _simulate(writer, seed):
    return writer.write_sim(BUNDLE, "m.seir/base", {"beta": 0.3}, seed, {"prevalence": b"x" * seed, "metadata": b"{}"}, if_absent=True)


def test_track_with_concurrent_futures_and_writer(fake, tmp_path):
    handle = JobHandle("job-t")
    writer = ProvenanceWriter(tmp_path)
    writer.write_sim(BUNDLE, "m.seir/base", {"beta": 0.3}, 4, {"prevalence": b"x", "metadata": b"{}"})
    seen = []
    with run(handle, progress_interval=0.01) as job, concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_simulate, writer, s) for s in range(1, 5)]
        futures.append(pool.submit(lambda: (_ for _ in ()).throw(OSError("lost"))))
        futures.append(pool.submit(lambda: None))
        for i, fut in enumerate(futures):
            fut.key = f"sim-{i}"
        futures[-1].key = "agg-job-t-p-target"  # aggregations are not counted
        for fut, result, error in track(futures, job):
            seen.append((fut.key, error is None))
        # The same task reported again (as after a retry) is not counted again.
        assert not job.done("sim-0")
    client = handle.client
    assert sorted(seen) == [("agg-job-t-p-target", True), ("sim-0", True), ("sim-1", True), ("sim-2", True), ("sim-3", True), ("sim-4", False)]
    assert client.completed == 5, "each task id once, failures included"
    assert sorted((e.seed, e.role) for e in client.edges) == [(1, "computed"), (2, "computed"), (3, "computed"), (4, "cache_hit")]
    pid = up.make_param_id({"beta": 0.3})
    assert {e.path for e in client.edges} == {up.sim_dir(BUNDLE, pid, s) for s in range(1, 5)}
    assert client.calls[-1][:2] == ("finalize", "succeeded")


def test_run_gives_up_on_reporting_after_flush_timeout(fake):
    handle = JobHandle("job-down")
    with pytest.raises(RuntimeError, match="could not be sent"):
        with run(handle, flush_timeout=0.3, progress_interval=0.01) as job:
            job.progress._batcher._retry_delay = 0.01
            handle.client.fail_next = 10**9  # the service stays unavailable
            job.done("t1")
    assert handle.client.calls[-1][1:] == ("failed", "reporting failed: unavailable", "REPORTING_FAILED")
