"""A drop-in for the Python ModelOps job registry, backed by the registry service.

The Python ModelOps keeps job state in ``modelops.services.job_registry.JobRegistry`` (over a
versioned blob store) with the types of ``modelops.services.job_state``. This module has the
same public names, signatures and return types, so switching a ModelOps installation to the
service is one import::

    # from modelops.services.job_registry import JobRegistry
    # from modelops.services.job_state import JobState, JobStatus, InvalidTransitionError, ...
    from modelops_results.registry import JobRegistry, JobState, JobStatus, InvalidTransitionError

    registry = JobRegistry(store)          # store: ignored unless it is a JobClient or an endpoint
    registry.register_job("job-1", "job-1", "modelops-dask-dev", metadata={"type": "SimJob"})
    registry.update_status("job-1", JobStatus.SUBMITTING)

Every call goes to the service (``$MOPS_ENDPOINT`` by default) through :class:`~modelops_results.JobClient`;
the state machine, compare-and-swap and metadata merge are the server's. Refusals are raised
as upstream's exceptions: :class:`InvalidTransitionError`, :class:`TerminalStateError`,
:class:`JobExistsError`, ``KeyError`` for an unknown job and :class:`TooManyRetriesError` when
concurrent writers exhaust the server's retries. Differences from upstream are listed in the
package README ("A drop-in JobRegistry").
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from .errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, ModelOpsError, NotFound
from .jobs import JobClient

__all__ = [
    "JobRegistry",
    "JobState",
    "JobStatus",
    "ValidationResult",
    "InvalidTransitionError",
    "TerminalStateError",
    "JobExistsError",
    "TooManyRetriesError",
    "TRANSITIONS",
    "is_terminal",
    "validate_transition",
    "now_iso",
]

logger = logging.getLogger(__name__)


# --- job_state -------------------------------------------------------------------------------


class JobStatus(str, Enum):
    """A job's lifecycle status; the value is the string stored in ``state.json``."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    VALIDATING = "validating"
    SUCCEEDED = "succeeded"
    PARTIAL_SUCCESS = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.PARTIAL_SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED})

#: The legal transitions (the server enforces the same table).
TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    JobStatus.PENDING: {JobStatus.SUBMITTING, JobStatus.CANCELLED},
    JobStatus.SUBMITTING: {JobStatus.SCHEDULED, JobStatus.FAILED},
    JobStatus.SCHEDULED: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED},
    JobStatus.RUNNING: {JobStatus.VALIDATING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED},
    JobStatus.VALIDATING: {JobStatus.SUCCEEDED, JobStatus.PARTIAL_SUCCESS, JobStatus.FAILED},
    JobStatus.SUCCEEDED: set(),
    JobStatus.PARTIAL_SUCCESS: set(),
    JobStatus.FAILED: set(),
    JobStatus.CANCELLED: set(),
}


def _status(value: Any) -> JobStatus:
    """A JobStatus from ours, upstream's enum (any str enum) or a status string."""
    if isinstance(value, JobStatus):
        return value
    return JobStatus(getattr(value, "value", value))


def is_terminal(status: Any) -> bool:
    """Whether ``status`` has no transitions out (succeeded, partial, failed, cancelled)."""
    return _status(status) in _TERMINAL


def validate_transition(from_status: Any, to_status: Any) -> bool:
    """Whether moving from ``from_status`` to ``to_status`` is legal."""
    return _status(to_status) in TRANSITIONS.get(_status(from_status), set())


def now_iso() -> str:
    """The current UTC time in ISO 8601 (``2026-11-29T04:05:06.123456+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


class InvalidTransitionError(Exception):
    """The requested status cannot be reached from the job's current status."""


class TerminalStateError(Exception):
    """The job is in a terminal status and cannot move to another one."""


class JobExistsError(Exception):
    """A job with this id is already registered."""


class TooManyRetriesError(Exception):
    """Concurrent writers kept the update from applying within the allowed attempts."""


@dataclass
class JobState:
    """A job's state, field for field the ``state.json`` document (same order, same defaults)."""

    job_id: str
    status: JobStatus
    created_at: str
    updated_at: str
    k8s_name: Optional[str] = None
    k8s_namespace: Optional[str] = None
    k8s_uid: Optional[str] = None
    tasks_total: int = 0
    tasks_completed: int = 0
    error_message: Optional[str] = None
    error_code: Optional[str] = None
    results_path: Optional[str] = None
    expected_outputs: list[dict] = field(default_factory=list)
    verified_outputs: list[str] = field(default_factory=list)
    missing_outputs: list[str] = field(default_factory=list)
    tasks_verified: int = 0
    validation_started_at: Optional[str] = None
    validation_completed_at: Optional[str] = None
    validation_attempts: int = 0
    last_validation_error: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The state as a JSON-ready dict (``status`` as its string value)."""
        data = asdict(self)
        data["status"] = self.status.value if isinstance(self.status, Enum) else self.status
        return data

    def to_json(self) -> str:
        """The state as JSON text (two-space indent, like ``state.json``)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobState":
        """A state from a dict; keys that are not fields (``_revision``, ...) are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(values.get("status"), str):
            values["status"] = JobStatus(values["status"])
        return cls(**values)

    @classmethod
    def from_json(cls, json_str: Union[str, bytes]) -> "JobState":
        """A state from JSON text."""
        return cls.from_dict(json.loads(json_str))

    def copy_with(self, **changes: Any) -> "JobState":
        """A copy with ``changes`` applied."""
        data = self.to_dict()
        data.update(changes)
        return self.from_dict(data)

    @property
    def progress_percent(self) -> Optional[float]:
        """tasks_completed / tasks_total × 100, or None while tasks_total is 0."""
        if self.tasks_total > 0:
            return (self.tasks_completed / self.tasks_total) * 100
        return None

    @property
    def is_terminal(self) -> bool:
        """Whether the status is terminal."""
        return is_terminal(self.status)


@dataclass
class ValidationResult:
    """What :meth:`JobRegistry.validate_outputs` found: ``status`` is ``"complete"``,
    ``"partial"``, ``"failed"`` or ``"unavailable"``."""

    status: str
    verified_count: int = 0
    missing_count: int = 0
    verified_outputs: Optional[list[str]] = None
    missing_outputs: Optional[list[str]] = None
    error: Optional[str] = None


# --- service plumbing -------------------------------------------------------------------------

_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")

# update_status keywords copied into the job (as upstream's whitelist), by kind.
_NULLABLE = ("error_message", "error_code", "results_path", "k8s_uid", "validation_started_at", "validation_completed_at", "last_validation_error")
_COUNTS = ("tasks_completed", "tasks_total", "validation_attempts", "tasks_verified")
_LISTS = ("verified_outputs", "missing_outputs")

_ACTIVE = [JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.SCHEDULED, JobStatus.RUNNING, JobStatus.VALIDATING]


def _state(job: Mapping[str, Any]) -> JobState:
    """A JobClient job dict → JobState, from the stored upstream document when there is one."""
    text = job.get("state_json") or ""
    if text.strip():
        return JobState.from_json(text)
    data = dict(job)
    data["expected_outputs"] = [json.loads(s) for s in job.get("expected_outputs_json") or []]
    return JobState.from_dict(data)


def _target_spec(target: Any) -> dict[str, Any]:
    return {
        "data": getattr(target, "data", None),
        "loss_function": getattr(target, "loss_function", None),
        "weights": getattr(target, "weights", None),
        "metadata": getattr(target, "metadata", None),
    }


def _spec_dict(job_spec: Any) -> Union[str, bytes, Mapping[str, Any]]:
    """A job spec as the service takes it: upstream's spec blob (text or dict) as given, or a
    SimJob / CalibrationJob object in the form upstream's submission client writes."""
    if isinstance(job_spec, (str, bytes, Mapping)):
        return job_spec
    spec: dict[str, Any] = {
        "job_type": getattr(job_spec, "job_type", None),
        "job_id": getattr(job_spec, "job_id", None),
        "bundle_ref": getattr(job_spec, "bundle_ref", None),
    }
    if hasattr(job_spec, "tasks"):  # SimJob
        spec["priority"] = getattr(job_spec, "priority", 0)
        spec["metadata"] = dict(getattr(job_spec, "metadata", None) or {})
        target = getattr(job_spec, "target_spec", None)
        if target:
            spec["target_spec"] = _target_spec(target)
        spec["tasks"] = []
        for task in job_spec.tasks:
            params = task.params
            values = getattr(params, "params", None)
            if values is None:
                values = getattr(params, "values", {})
            spec["tasks"].append(
                {
                    "entrypoint": str(task.entrypoint),
                    "bundle_ref": task.bundle_ref,
                    "params": {"param_id": params.param_id, "values": dict(values)},
                    "seed": task.seed,
                    "outputs": list(task.outputs) if task.outputs is not None else None,
                }
            )
        return json.loads(json.dumps(spec, default=str))
    if hasattr(job_spec, "algorithm"):  # CalibrationJob
        spec["algorithm"] = job_spec.algorithm
        spec["target_spec"] = _target_spec(getattr(job_spec, "target_spec", None))
        for name in ("max_iterations", "convergence_criteria", "algorithm_config"):
            spec[name] = getattr(job_spec, name, None)
        return json.loads(json.dumps(spec, default=str))
    for method in ("model_dump", "to_dict"):
        fn = getattr(job_spec, method, None)
        if callable(fn):
            return fn()
    if is_dataclass(job_spec) and not isinstance(job_spec, type):
        return asdict(job_spec)
    raise TypeError(f"cannot send a {type(job_spec).__name__} as a job spec")


class JobRegistry:
    """Job state management, as upstream's ``JobRegistry``, kept by the registry service.

    Args:
        store: where the state lives. A :class:`~modelops_results.JobClient` or an endpoint
            (``http://host:port``) is used as given; ``None`` or any other object (such as
            upstream's ``AzureVersionedStore``, so existing call sites keep working) means the
            service at ``$MOPS_ENDPOINT``.
        prefix: kept for compatibility; the service has its own key layout (``jobs/{id}/state.json``).
        provenance_store: upstream's ``ProvenanceStore`` (anything with ``storage_dir``), used
            by :meth:`validate_outputs`.
        provenance_schema: kept for compatibility (see the README: expected outputs are not
            generated at registration).
    """

    def __init__(
        self,
        store: Any = None,
        prefix: str = "jobs",
        provenance_store: Any = None,
        provenance_schema: Any = None,
    ) -> None:
        if isinstance(store, JobClient):
            self.client = store
        elif isinstance(store, str):
            self.client = JobClient(store)
        else:
            if store is not None:
                logger.info("JobRegistry: using the registry service at $MOPS_ENDPOINT instead of %s", type(store).__name__)
            self.client = JobClient()
        self.store = store
        self.prefix = prefix
        self.provenance = provenance_store
        self.provenance_schema = provenance_schema

    # --- helpers ------------------------------------------------------------------------------

    def _make_key(self, job_id: str) -> str:
        return f"{self.prefix}/{job_id}/state.json"

    def _not_found(self, job_id: str) -> KeyError:
        return KeyError(f"Key {self._make_key(job_id)} not found")

    def _check_id(self, job_id: str) -> None:
        """A job id the service cannot hold cannot exist: KeyError as for any unknown job."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise self._not_found(str(job_id))

    def _raise(self, error: ModelOpsError, job_id: str) -> None:
        """Re-raises a service refusal as upstream's exception."""
        reason = error.reason
        if isinstance(error, NotFound) or reason == "JOB_NOT_FOUND":
            raise self._not_found(job_id) from error
        if isinstance(error, AlreadyExists) or reason == "JOB_EXISTS":
            raise JobExistsError(f"Job {job_id} already registered") from error
        if reason == "INVALID_TRANSITION":
            raise InvalidTransitionError(error.message) from error
        if reason == "TERMINAL_STATE":
            raise TerminalStateError(error.message) from error
        if isinstance(error, Aborted) and reason != "REVISION_CONFLICT":
            raise TooManyRetriesError(error.message) from error
        raise error

    # --- registration and updates -------------------------------------------------------------

    def register_job(
        self,
        job_id: str,
        k8s_name: str,
        namespace: str,
        job_spec: Any = None,
        metadata: Optional[dict[str, Any]] = None,
    ) -> JobState:
        """Registers a new job in ``pending``.

        ``job_spec`` (a SimJob/CalibrationJob, or its spec blob as text or dict) is stored with
        the job; ``tasks_total`` then becomes its task count.

        Raises:
            JobExistsError: the id is taken.
            ValueError: the service refuses the id or the spec.
        """
        try:
            job = self.client.register_job(
                job_id,
                spec=None if job_spec is None else _spec_dict(job_spec),
                metadata=metadata or None,
                k8s_name=k8s_name,
                k8s_namespace=namespace,
            )
        except ModelOpsError as e:
            self._raise(e, job_id)
        logger.info("Registered job %s in namespace %s", job_id, namespace)
        return _state(job)

    def _update(self, job_id: str, new_status: Any, **kwargs: Any) -> JobState:
        self._check_id(job_id)
        status = _status(new_status)
        try:
            job = self.client.update_status(job_id, status.value, **kwargs)
        except ModelOpsError as e:
            self._raise(e, job_id)
        return _state(job)

    def update_status(self, job_id: str, new_status: JobStatus, **kwargs: Any) -> JobState:
        """Moves a job to ``new_status`` (a legal transition), setting the fields given.

        The fields copied are upstream's: error_message, error_code, results_path,
        tasks_completed, tasks_total, k8s_uid and the validation fields; ``None`` for a nullable
        one sets it back to None. ``metadata`` (a dict) is merged into the job's metadata; other
        keywords are ignored. A terminal job set to its own status again is left as it is.

        Raises:
            KeyError: unknown job.
            InvalidTransitionError: the transition is illegal.
            TerminalStateError: the job is terminal.
        """
        update: dict[str, Any] = {}
        clear: list[str] = []
        for name, value in kwargs.items():
            if name in _NULLABLE:
                if value is None:
                    clear.append(name)
                else:
                    update[name] = value
            elif name in _COUNTS and value is not None:
                update[name] = int(value)
            elif name in _LISTS and value is not None:
                update[name] = [str(v) for v in value]
            elif name == "metadata" and isinstance(value, dict):
                update["metadata"] = value
        if clear:
            update["clear_fields"] = clear
        state = self._update(job_id, new_status, **update)
        logger.info("Updated job %s status to %s", job_id, _status(new_status).value)
        return state

    def update_progress(self, job_id: str, tasks_completed: Optional[int] = None, tasks_total: Optional[int] = None) -> JobState:
        """Sets a job's counters (in any status, terminal ones included).

        Raises:
            KeyError: unknown job.
        """
        self._check_id(job_id)
        try:
            job = self.client.set_progress(job_id, completed=tasks_completed, total=tasks_total)
        except ModelOpsError as e:
            self._raise(e, job_id)
        return _state(job)

    def finalize_job(
        self,
        job_id: str,
        final_status: JobStatus,
        results_path: Optional[str] = None,
        error_info: Optional[dict[str, str]] = None,
    ) -> JobState:
        """Moves a job to a terminal status with its results path and/or error
        (``error_info={"message": …, "code": …}``; a missing or None entry clears the field).

        Raises:
            ValueError: ``final_status`` is not terminal.
            KeyError, InvalidTransitionError, TerminalStateError: as :meth:`update_status`.
        """
        status = _status(final_status)
        if not is_terminal(status):
            raise ValueError(f"{status.value} is not a terminal status")
        kwargs: dict[str, Any] = {}
        if results_path:
            kwargs["results_path"] = results_path
        if error_info:
            kwargs["error_message"] = error_info.get("message")
            kwargs["error_code"] = error_info.get("code")
        return self.update_status(job_id, status, **kwargs)

    def cancel_job(self, job_id: str, reason: Optional[str] = None) -> JobState:
        """Cancels a job; with a ``reason`` its error message becomes ``Cancelled: {reason}``.

        Raises:
            KeyError, InvalidTransitionError, TerminalStateError: as :meth:`update_status`.
        """
        kwargs = {"error_message": f"Cancelled: {reason}"} if reason else {}
        return self.update_status(job_id, JobStatus.CANCELLED, **kwargs)

    # --- queries ------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Optional[JobState]:
        """A job's state, or None if there is no such job."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            return None
        try:
            return _state(self.client.get_job(job_id))
        except NotFound:
            return None

    def list_jobs(
        self,
        limit: int = 100,
        status_filter: Optional[list[JobStatus]] = None,
        since: Optional[datetime] = None,
    ) -> list[JobState]:
        """Jobs newest first (by ``created_at``): only those in ``status_filter`` (all when
        empty), only those created at or after ``since`` (naive datetimes are UTC), at most
        ``limit``."""
        if limit <= 0:
            return []
        statuses = [_status(s).value for s in status_filter] if status_filter else None
        return [_state(job) for job in self.client.list_jobs(statuses, since=since, limit=limit)]

    def count_jobs_by_status(self) -> dict[JobStatus, int]:
        """``{status: number of jobs}``, every status present (0 when none)."""
        counts = {status: 0 for status in JobStatus}
        for name, count in self.client.count_jobs_by_status().items():
            try:
                counts[JobStatus(name)] += count
            except ValueError:
                continue
        return counts

    def get_active_jobs(self) -> list[JobState]:
        """Jobs not yet terminal (pending to validating), at most 100 as upstream."""
        return self.list_jobs(status_filter=_ACTIVE)

    def get_recent_jobs(self, hours: int = 24) -> list[JobState]:
        """Jobs created in the last ``hours`` hours (at most 100)."""
        return self.list_jobs(since=datetime.now(timezone.utc) - timedelta(hours=hours))

    # --- validation ---------------------------------------------------------------------------

    def validate_outputs(self, job_id: str) -> ValidationResult:
        """Checks that each of the job's ``expected_outputs`` exists under the provenance store's
        ``storage_dir``: ``complete`` (none missing), ``partial`` (some found), ``failed`` (none
        found); ``unavailable`` without a provenance store or expected outputs."""
        if self.provenance is None:
            return ValidationResult(status="unavailable", error="ProvenanceStore not configured")
        state = self.get_job(job_id)
        if state is None:
            return ValidationResult(status="failed", error=f"Job {job_id} not found")
        if not state.expected_outputs:
            return ValidationResult(status="unavailable", error="No expected outputs defined")
        root = Path(self.provenance.storage_dir)
        verified: list[str] = []
        missing: list[str] = []
        for output in state.expected_outputs:
            path = output.get("provenance_path") if isinstance(output, Mapping) else None
            if path and (root / path).exists():
                verified.append(path)
            else:
                missing.append(path or "unknown")
        status = "complete" if not missing else "partial" if verified else "failed"
        return ValidationResult(status, len(verified), len(missing), verified, missing)

    def transition_to_validating(self, job_id: str) -> JobState:
        """Moves a job to ``validating``, recording when validation started (attempts = 1).

        Raises:
            KeyError, InvalidTransitionError, TerminalStateError: as :meth:`update_status`.
        """
        return self.update_status(job_id, JobStatus.VALIDATING, validation_started_at=now_iso(), validation_attempts=1)

    def finalize_with_validation(self, job_id: str, validation_result: ValidationResult) -> JobState:
        """Ends a ``validating`` job from a validation result: complete → succeeded, partial →
        partial, anything else → failed, with the verified/missing outputs. A job not in
        ``validating`` is returned unchanged.

        Raises:
            KeyError: unknown job.
        """
        vr = validation_result
        final = {"complete": JobStatus.SUCCEEDED, "partial": JobStatus.PARTIAL_SUCCESS}.get(vr.status, JobStatus.FAILED)
        self._check_id(job_id)
        for attempt in range(5):
            try:
                current = self.client.get_job(job_id)
            except ModelOpsError as e:
                self._raise(e, job_id)
            state = _state(current)
            if state.status != JobStatus.VALIDATING:
                logger.warning("Job %s not in VALIDATING state, skipping finalization", job_id)
                return state
            kwargs: dict[str, Any] = {
                "validation_completed_at": now_iso(),
                "tasks_verified": vr.verified_count,
                "verified_outputs": list(vr.verified_outputs or []),
                "missing_outputs": list(vr.missing_outputs or []),
                "expected_revision": current["revision"],
            }
            if vr.error:
                kwargs["last_validation_error"] = vr.error
            try:
                return _state(self.client.update_status(job_id, final.value, **kwargs))
            except ModelOpsError as e:
                if e.reason == "REVISION_CONFLICT" or (isinstance(e, Aborted) and e.reason is None):
                    time.sleep(0.05 * 2**attempt)
                    continue
                self._raise(e, job_id)
        raise TooManyRetriesError(f"Failed to update {self._make_key(job_id)} after 5 attempts")

    def get_resumable_tasks(self, job_id: str) -> list[Any]:
        """The tasks of a ``partial`` job whose outputs are missing. For a job registered with
        its spec, the service answers from the spec and the provenance store (the tasks whose
        simulation results are missing, with their own entrypoints and outputs, as dicts);
        otherwise they are rebuilt from ``expected_outputs`` as upstream does
        (``modelops_contracts.SimTask`` objects when that package is installed, else dicts with
        the same fields). Empty for any other status."""
        state = self.get_job(job_id)
        if state is None:
            return []
        if state.status != JobStatus.PARTIAL_SUCCESS:
            logger.warning("Job %s is not in PARTIAL_SUCCESS state, cannot get resumable tasks", job_id)
            return []
        try:
            return self.client.get_resumable_tasks(job_id)
        except FailedPrecondition as error:
            if error.reason != "NO_JOB_SPEC":
                raise
        by_path = {o.get("provenance_path"): o for o in state.expected_outputs if isinstance(o, Mapping)}
        tasks = []
        for path in state.missing_outputs:
            spec = by_path.get(path)
            if spec is not None and spec.get("output_type", "simulation") == "simulation":
                tasks.append(_resumable_task(spec))
        return tasks


def _resumable_task(spec: Mapping[str, Any]) -> Any:
    """A task re-running one expected output (entrypoint and outputs as upstream rebuilds them)."""
    task = {
        "bundle_ref": spec.get("bundle_digest"),
        "entrypoint": "simulations.model/run",
        "params": {"param_id": spec.get("param_id"), "values": dict(spec.get("param_values") or {})},
        "seed": spec.get("seed"),
        "outputs": ["output.csv"],
    }
    try:  # pragma: no cover - only with the Python ModelOps installed
        from modelops_contracts import SimTask, UniqueParameterSet  # type: ignore[import-not-found]

        return SimTask(
            bundle_ref=task["bundle_ref"],
            entrypoint=task["entrypoint"],
            params=UniqueParameterSet(param_id=task["params"]["param_id"], params=task["params"]["values"]),
            seed=task["seed"],
            outputs=task["outputs"],
        )
    except Exception:
        return task
