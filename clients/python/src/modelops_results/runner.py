"""The runner kit: what a Dask (or any) submitter needs around :class:`JobClient`.

* :class:`JobHandle`, a picklable job reference that opens its gRPC channel lazily, once per
  process (send it to Dask workers freely);
* :func:`run`, the job lifecycle: ``with run(job_id) as job:`` moves the job to ``running``
  (through upstream's legal steps), and on exit seals its attribution and finalizes it
  ``succeeded``, or ``failed`` with the exception's message and code;
* :class:`ProgressReporter` and :class:`EdgeRecorder`, batching reporters: a bounded queue, a
  background thread that flushes every ``interval`` seconds or full batch, retries on failure,
  and a flush on exit; nothing reported before a clean exit is lost;
* :func:`track`, the Dask integration: iterate futures as they complete (``as_completed``),
  counting each task once by its id and recording the edges of what it returns.

Progress is counted **once per task id**: the reporter keeps the set of ids it has counted and
drops repeats, so a task that Dask retries (a worker died) or that reports twice is counted once.
Report from one place per job (the driver, as :func:`track` does); a future completes once per
key however many times its task ran.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from .jobs import Edge, EdgeLike, JobClient

__all__ = ["JobHandle", "ProgressReporter", "EdgeRecorder", "RunningJob", "run", "track"]


class JobHandle:
    """A picklable reference to one job and how to reach the services.

    Its :attr:`client` (a :class:`JobClient`) is created on first use in each process and
    never pickled; a handle unpickled on a Dask worker opens its own channel there.
    """

    def __init__(
        self,
        job_id: str,
        endpoint: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_root_certs: Optional[Union[bytes, str]] = None,
        timeout: Optional[float] = 30.0,
    ) -> None:
        self.job_id = job_id
        self._settings = dict(endpoint=endpoint, token=token, token_file=token_file, tls_root_certs=tls_root_certs, timeout=timeout)
        self._client: Optional[JobClient] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"job_id": self.job_id, "_settings": self._settings}

    def __setstate__(self, state: dict) -> None:
        self.job_id = state["job_id"]
        self._settings = state["_settings"]
        self._client, self._pid, self._lock = None, None, threading.Lock()

    @property
    def client(self) -> JobClient:
        """This process's :class:`JobClient` (opened lazily; reopened after a fork)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = JobClient(**self._settings)
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    # Conveniences for worker code: one call each, no batching.
    def add_progress(self, completed: int = 1) -> tuple[int, int]:
        return self.client.add_progress(self.job_id, completed=completed, ack_when_queued=True)

    def record_edges(self, edges: Iterable[EdgeLike]) -> dict[str, int]:
        return self.client.record_edges(self.job_id, edges)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, endpoint={self._settings['endpoint']!r})"


class _Batcher:
    """A bounded queue drained by a background thread into ``send(batch)``."""

    def __init__(self, name: str, send: Callable[[list], None], *, interval: float, batch_size: int, max_queue: int, retry_delay: float = 0.5) -> None:
        self._send = send
        self._interval = interval
        self._batch_size = batch_size
        self._retry_delay = retry_delay
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_queue)
        self._pending: list = []  # taken from the queue, not yet sent
        self._cond = threading.Condition()
        self._closed = False
        self._flush_requested = False
        self._in_flight = 0  # items put and not yet sent
        self.error: Optional[BaseException] = None
        self.sent_batches = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        if self._closed:
            raise RuntimeError("the reporter is closed")
        with self._cond:
            self._in_flight += 1
        self._queue.put(item)  # blocks when full: back-pressure, nothing dropped
        if self._queue.qsize() >= self._batch_size:
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            with self._cond:
                while not (self._closed or self._flush_requested or self._queue.qsize() >= self._batch_size):
                    remaining = self._interval - (time.monotonic() - last)
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                closing = self._closed
            while True:
                try:
                    self._pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            failed = False
            while self._pending:
                batch = self._pending[: self._batch_size]
                try:
                    self._send(batch)
                except BaseException as e:  # keep the batch; retried on the next round
                    self.error = e
                    failed = True
                    break
                self.error = None
                self.sent_batches += 1
                del self._pending[: len(batch)]
                with self._cond:
                    self._in_flight -= len(batch)
                    self._cond.notify_all()
            last = time.monotonic()
            with self._cond:
                if self._in_flight == 0:
                    self._flush_requested = False
                    self._cond.notify_all()
                if closing and (self._in_flight == 0 or self._give_up):
                    return
            if failed:
                time.sleep(self._retry_delay)

    _give_up = False

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything put so far; True once it is sent (False on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._in_flight > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=0.05 if remaining is None else min(0.05, remaining))
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flushes and stops the thread; True if everything was sent."""
        if self._closed:
            return self._in_flight == 0
        ok = self.flush(timeout)
        with self._cond:
            self._closed = True
            if not ok:
                self._give_up = True
            self._cond.notify_all()
        self._thread.join(timeout=5 if timeout is None else timeout)
        return ok


class ProgressReporter:
    """Counts finished tasks of a job, once per task id, and sends the increments in batches
    (``AddProgress``) from a background thread.

    ``done(task_id)`` returns at once (it blocks only while ``max_queue`` reports are waiting);
    a task id seen before is ignored, so retried or duplicated reports count once.
    """

    def __init__(self, handle: JobHandle, *, interval: float = 0.5, max_queue: int = 100_000, batch_size: int = 10_000) -> None:
        self.handle = handle
        self._seen: set = set()
        self._seen_lock = threading.Lock()
        self.duplicates = 0
        self.sent = 0
        self._batcher = _Batcher(f"progress-{handle.job_id}", self._send, interval=interval, batch_size=batch_size, max_queue=max_queue)

    def _send(self, batch: list) -> None:
        n = sum(batch)
        if n:
            handle = self.handle
            handle.client.add_progress(handle.job_id, completed=n)  # returns once stored
        self.sent += n

    def done(self, task_id: Any) -> bool:
        """Reports the task ``task_id`` finished; False if it was counted before."""
        key = str(task_id)
        with self._seen_lock:
            if key in self._seen:
                self.duplicates += 1
                return False
            self._seen.add(key)
        self._batcher.put(1)
        return True

    @property
    def counted(self) -> int:
        """Distinct task ids reported."""
        return len(self._seen)

    def flush(self, timeout: Optional[float] = None) -> bool:
        return self._batcher.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        return self._batcher.close(timeout)


class EdgeRecorder:
    """Queues job ↔ result edges and records them in batches (``RecordEdges``) from a
    background thread. Recording is idempotent on the server, so a batch retried after an
    error is stored once."""

    def __init__(self, handle: JobHandle, *, interval: float = 1.0, batch_size: int = 1000, max_queue: int = 100_000) -> None:
        self.handle = handle
        self.sent = 0
        self._batcher = _Batcher(f"edges-{handle.job_id}", self._send, interval=interval, batch_size=batch_size, max_queue=max_queue)

    def _send(self, batch: list) -> None:
        self.handle.client.record_edges(self.handle.job_id, batch, batch_size=len(batch) or 1)
        self.sent += len(batch)

    def add(self, edge: EdgeLike) -> None:
        """Queues one edge (an :class:`Edge`, a dict, or anything with ``.edge()`` such as
        what :class:`~modelops_results.store.ProvenanceWriter` returns)."""
        if hasattr(edge, "edge") and callable(edge.edge):
            edge = edge.edge()
        self._batcher.put(edge)

    def add_all(self, edges: Iterable[EdgeLike]) -> None:
        for edge in edges:
            self.add(edge)

    def flush(self, timeout: Optional[float] = None) -> bool:
        return self._batcher.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        return self._batcher.close(timeout)


_TO_RUNNING = {"pending": ["submitting", "scheduled", "running"], "submitting": ["scheduled", "running"], "scheduled": ["running"], "running": []}


class RunningJob:
    """What ``with run(job_id) as job:`` gives: the handle, a progress reporter and an edge
    recorder."""

    def __init__(self, handle: JobHandle, progress: ProgressReporter, edges: EdgeRecorder) -> None:
        self.handle, self.progress, self.edges = handle, progress, edges
        self.job_id = handle.job_id
        self.final_status: Optional[str] = None

    def done(self, task_id: Any) -> bool:
        return self.progress.done(task_id)

    def record(self, *edges: EdgeLike) -> None:
        for edge in edges:
            self.edges.add(edge)

    def track(self, futures: Iterable[Any], **kwargs: Any) -> Iterator[tuple[Any, Any, Optional[BaseException]]]:
        return track(futures, self, **kwargs)


class run:
    """``with run(job_id) as job:`` — the lifecycle of a job on the submission side.

    On enter the job is moved to ``running`` (pending → submitting → scheduled → running, from
    wherever it is). On a clean exit the reporters are flushed, attribution is sealed and the job
    is finalized ``succeeded`` (or ``final_status``, e.g. ``"partial"``, if the body set
    ``job.final_status``). On an exception the job is finalized ``failed`` with
    ``error_message`` = ``"{ExceptionType}: {message}"`` and ``error_code`` = the exception's
    ``code`` attribute or its type name, and the exception propagates.

    Args:
        job: a job id or a :class:`JobHandle`; other keyword arguments build the handle.
        seal: seal attribution before finalizing (default True).
        total: set ``tasks_total`` on enter.
        flush_timeout: how long a clean exit waits for queued progress and edges to be stored
            (retrying while the service is unavailable) before finalizing the job ``failed``
            with code ``REPORTING_FAILED``; None waits for ever.
    """

    def __init__(
        self,
        job: Union[str, JobHandle],
        *,
        seal: bool = True,
        total: Optional[int] = None,
        progress_interval: float = 0.5,
        edge_interval: float = 1.0,
        flush_timeout: Optional[float] = 600.0,
        **handle_kwargs: Any,
    ) -> None:
        self.handle = job if isinstance(job, JobHandle) else JobHandle(job, **handle_kwargs)
        self.seal = seal
        self.flush_timeout = flush_timeout
        self.total = total
        self._intervals = (progress_interval, edge_interval)
        self.job: Optional[RunningJob] = None

    def __enter__(self) -> RunningJob:
        client = self.handle.client
        status = client.get_job(self.handle.job_id)["status"]
        if status not in _TO_RUNNING:
            raise RuntimeError(f"job {self.handle.job_id} is {status}; it cannot be run")
        for step in _TO_RUNNING[status]:
            client.update_status(self.handle.job_id, step)
        if self.total is not None:
            client.set_progress(self.handle.job_id, total=self.total)
        self.job = RunningJob(
            self.handle,
            ProgressReporter(self.handle, interval=self._intervals[0]),
            EdgeRecorder(self.handle, interval=self._intervals[1]),
        )
        return self.job

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        job = self.job
        assert job is not None
        client = self.handle.client
        if exc is None:
            ok_progress = job.progress.close(self.flush_timeout)
            ok_edges = job.edges.close(self.flush_timeout)
            if not (ok_progress and ok_edges):
                err = job.edges._batcher.error or job.progress._batcher.error
                client.finalize(self.handle.job_id, "failed", error_message=f"reporting failed: {err}", error_code="REPORTING_FAILED")
                raise RuntimeError(f"progress or edges could not be sent: {err}")
            if self.seal:
                client.seal(self.handle.job_id)
            client.finalize(self.handle.job_id, job.final_status or "succeeded")
            return None
        # Failure: send what we have (bounded wait), then record the failure.
        job.progress.close(timeout=10)
        job.edges.close(timeout=10)
        code = getattr(exc, "code", None)
        code = code if isinstance(code, str) and code else type(exc).__name__
        client.finalize(self.handle.job_id, "failed", error_message=f"{type(exc).__name__}: {exc}", error_code=code)
        return None


def _as_completed(futures: list) -> Iterable[Any]:
    if futures:
        try:
            import distributed

            if isinstance(futures[0], distributed.Future):
                return distributed.as_completed(futures)
        except ImportError:
            pass
    import concurrent.futures

    return concurrent.futures.as_completed(futures)


def _default_task_id(future: Any) -> Optional[str]:
    key = getattr(future, "key", None)
    if key is None:
        return str(id(future))
    key = str(key)
    # Upstream's Dask keys: sim-{run}-{param_id}-{i} and agg-{run}-{param_id}-{target}. The job's
    # tasks_total counts simulations, so aggregations are not counted.
    return None if key.startswith("agg-") else key


def _edges_of(result: Any) -> list:
    if result is None:
        return []
    if isinstance(result, Edge) or (hasattr(result, "edge") and callable(result.edge)):
        return [result]
    if isinstance(result, (list, tuple)):
        return [r for r in result if isinstance(r, Edge) or (hasattr(r, "edge") and callable(r.edge))]
    return []


def track(
    futures: Iterable[Any],
    job: RunningJob,
    *,
    task_id: Callable[[Any], Any] = _default_task_id,
    record_edges: bool = True,
) -> Iterator[tuple[Any, Any, Optional[BaseException]]]:
    """Yields ``(future, result, error)`` as futures complete (Dask ``as_completed`` for
    ``distributed`` futures, :mod:`concurrent.futures` otherwise), reporting each as done once
    by ``task_id(future)`` (default: the Dask key, except keys starting with ``agg-``, upstream's
    aggregation keys, which count nothing: ``tasks_total`` counts simulations; a ``task_id``
    returning ``None`` counts nothing) and queueing the edges its result carries
    (an :class:`Edge`, a written record from :class:`~modelops_results.store.ProvenanceWriter`,
    or a list of them). A failed future is counted as done too (upstream counts finished
    tasks, not successes) and yielded with its exception."""
    futures = list(futures)
    for future in _as_completed(futures):
        try:
            result, error = future.result(), None
        except BaseException as e:  # the task failed for good
            result, error = None, e
        if record_edges and error is None:
            for edge in _edges_of(result):
                job.edges.add(edge)
        tid = task_id(future)
        if tid is not None:  # None: a future that is not a counted task (e.g. an aggregation)
            job.progress.done(tid)
        yield future, result, error
