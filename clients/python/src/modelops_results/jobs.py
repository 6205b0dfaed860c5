"""Job registry, attribution and indexer over gRPC: :class:`JobClient`.

These are the calls the submission side (the Dask runner) makes: register a job, report
progress and status, record which results the job computed or reused, seal its attribution,
and ask for its loss table to be built. The wrappers are thin: arguments map one to one onto the
request fields of ``proto/modelops/{registry,attribution,indexer}/v1/*.proto`` and replies come
back as plain dicts. The raw stubs are there too (:attr:`JobClient.registry`,
:attr:`JobClient.attribution`, :attr:`JobClient.indexer`) for anything not wrapped.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple, Optional, TypeVar, Union

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from ._connection import Endpoint, PathOrBytes, connection_settings
from ._proto import (
    attribution_pb2,
    attribution_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from .errors import from_grpc_error

__all__ = ["JobClient", "Edge", "EdgeLike"]

_T = TypeVar("_T")
_MAX_MESSAGE = 64 * 1024 * 1024
_DEFAULT: Any = object()  # "use the client's timeout"


# --- messages ↔ Python values ----------------------------------------------------------------


def _enum_prefix(enum: EnumDescriptor) -> str:
    """``JobStatus`` → ``JOB_STATUS_``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def _enum_name(enum: EnumDescriptor, number: int) -> Optional[Union[str, int]]:
    """``JOB_STATUS_RUNNING`` → ``"running"``; UNSPECIFIED → None; unknown numbers stay ints."""
    value = enum.values_by_number.get(number)
    if value is None:
        return number
    name = value.name
    prefix = _enum_prefix(enum)
    if name.startswith(prefix):
        name = name[len(prefix):]
    return None if name == "UNSPECIFIED" else name.lower()


_ENUM_ALIASES = {"PARTIAL_SUCCESS": "PARTIAL"}


def _enum_number(enum: EnumDescriptor, value: Union[str, int], what: str) -> int:
    """``"running"``, ``"RUNNING"``, ``"JOB_STATUS_RUNNING"`` or the number → the number."""
    if isinstance(value, int):
        return value
    prefix = _enum_prefix(enum)
    name = str(value).strip().upper().replace("-", "_")
    name = _ENUM_ALIASES.get(name, name)
    if not name.startswith(prefix):
        name = prefix + name
    found = enum.values_by_name.get(name)
    if found is None:
        choices = ", ".join(n[len(prefix):].lower() for n in enum.values_by_name if not n.endswith("_UNSPECIFIED"))
        raise ValueError(f"unknown {what} {value!r} (one of: {choices})")
    return found.number


def _is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _has_presence(message: Message, field: FieldDescriptor) -> Optional[bool]:
    """Whether ``field`` is set, or None when the field does not track presence."""
    try:
        return message.HasField(field.name)
    except ValueError:
        return None


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return value.ToDatetime(tzinfo=timezone.utc)
        return to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_name(field.enum_type, value)
    return value


def to_dict(message: Message) -> dict[str, Any]:
    """A message as a dict keyed by proto field names: enums as short lowercase names
    (``"running"``, ``"cache_hit"``; UNSPECIFIED → None), timestamps as aware UTC datetimes,
    unset optional fields and messages as None, nested messages as dicts."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_repeated(field):
            out[field.name] = [_value(field, item) for item in value]
        elif _has_presence(message, field) is False:
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


def _job_dict(job: registry_pb2.JobState) -> dict[str, Any]:
    """A JobState as a dict, with ``metadata`` (the parsed ``metadata_json``) added."""
    out = to_dict(job)
    out["metadata"] = json.loads(job.metadata_json) if job.metadata_json.strip() else {}
    return out


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(timezone.utc))
    return stamp


def _json_text(value: Union[str, bytes, Mapping[str, Any]]) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    return json.dumps(value)


_JOB_STATUS = registry_pb2.DESCRIPTOR.enum_types_by_name["JobStatus"]
_RESULT_KIND = attribution_pb2.DESCRIPTOR.enum_types_by_name["ResultKind"]
_ROLE = attribution_pb2.DESCRIPTOR.enum_types_by_name["Role"]
_EDGE_SOURCE = attribution_pb2.DESCRIPTOR.enum_types_by_name["EdgeSource"]


# --- edges ------------------------------------------------------------------------------------


@dataclass
class Edge:
    """One job ↔ result link, as the runner reports it to attribution.

    ``path`` is the result directory relative to the provenance root
    (``token/v1/sims/…/params_{param_id[:8]}/seed_{seed}`` for a simulation,
    ``token/v1/aggs/…/agg_{aggregation_id}`` for an aggregation; ``bundle/v1/…`` likewise).
    The service checks that the path matches the kind, seed and param_id.
    """

    path: str
    """Result directory relative to the provenance root."""
    param_id: str
    """Parameter-set id (64 lowercase hex)."""
    kind: str = "sim"
    """``"sim"`` or ``"agg"``."""
    seed: Optional[int] = None
    """The seed (simulations)."""
    target: Optional[str] = None
    """The target entrypoint (aggregations)."""
    aggregation_id: Optional[str] = None
    """The aggregation id, 16 hex (aggregations)."""
    role: str = "computed"
    """``"computed"``, ``"cache_hit"`` or ``"unknown"``."""
    source: str = "reported"
    """``"reported"`` or ``"derived"``."""
    job_id: str = ""
    """The owning job; empty means the batch's job."""

    @classmethod
    def sim(cls, path: str, param_id: str, seed: int, *, role: str = "computed") -> "Edge":
        """A simulation edge."""
        return cls(path=path, param_id=param_id, kind="sim", seed=seed, role=role)

    @classmethod
    def agg(cls, path: str, param_id: str, target: str, aggregation_id: str, *, role: str = "computed") -> "Edge":
        """An aggregation edge."""
        return cls(path=path, param_id=param_id, kind="agg", target=target, aggregation_id=aggregation_id, role=role)

    def to_proto(self) -> attribution_pb2.Edge:
        """The ``modelops.attribution.v1.Edge`` message."""
        edge = attribution_pb2.Edge(
            job_id=self.job_id,
            kind=_enum_number(_RESULT_KIND, self.kind, "kind"),
            path=self.path,
            param_id=self.param_id,
            role=_enum_number(_ROLE, self.role, "role"),
            source=_enum_number(_EDGE_SOURCE, self.source, "source"),
        )
        if self.seed is not None:
            edge.seed = self.seed
        if self.target is not None:
            edge.target = self.target
        if self.aggregation_id is not None:
            edge.aggregation_id = self.aggregation_id
        return edge


#: What :meth:`JobClient.record_edges` accepts for one edge.
EdgeLike = Union[Edge, Mapping[str, Any], attribution_pb2.Edge]
_EDGE_FIELDS = {f.name for f in fields(Edge)}


def _edge_proto(edge: EdgeLike) -> attribution_pb2.Edge:
    if isinstance(edge, attribution_pb2.Edge):
        return edge
    if isinstance(edge, Edge):
        return edge.to_proto()
    if isinstance(edge, Mapping):
        # `recorded_at` is set by the service; tolerate it so listed edges can be re-sent.
        unknown = set(edge) - _EDGE_FIELDS - {"recorded_at"}
        if unknown:
            raise TypeError(f"unknown edge field(s): {', '.join(sorted(unknown))}")
        values = {k: v for k, v in edge.items() if k in _EDGE_FIELDS and v is not None}
        return Edge(**values).to_proto()
    raise TypeError(f"an edge must be an Edge, a dict or an attribution_pb2.Edge, not {type(edge).__name__}")


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# --- auth -------------------------------------------------------------------------------------


class _CallDetails(NamedTuple):
    method: str
    timeout: Optional[float]
    metadata: Optional[list[tuple[str, str]]]
    credentials: Optional[grpc.CallCredentials]
    wait_for_ready: Optional[bool]
    compression: Any


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call (plaintext and TLS alike)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or []) + [self._header]
        return _ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


# --- the client -------------------------------------------------------------------------------


class JobClient:
    """The job registry, attribution and indexer services of a ``mops serve`` (gRPC).

    Example (the submission side)::

        jobs = JobClient()                                # $MOPS_ENDPOINT or http://127.0.0.1:50051
        jobs.register_job(spec=sim_job_dict)              # status "pending"
        jobs.update_status(job_id, "submitting"); jobs.update_status(job_id, "scheduled")
        jobs.update_status(job_id, "running")
        jobs.add_progress(job_id, completed=1)            # from every worker, as tasks finish
        jobs.record_edges(job_id, [Edge.sim(path, param_id, seed)])
        jobs.seal(job_id)
        jobs.finalize(job_id, "succeeded")                # the indexer then builds the loss table

    Statuses are upstream's strings (``"pending"``, ``"submitting"``, ``"scheduled"``,
    ``"running"``, ``"validating"``, ``"succeeded"``, ``"partial"``, ``"failed"``,
    ``"cancelled"``); job states come back as dicts keyed by the ``JobState`` field names, with
    ``status`` as such a string and ``metadata`` parsed from ``metadata_json``. Errors are
    :class:`~modelops_results.ModelOpsError` subclasses (``NotFound``, ``AlreadyExists``,
    ``FailedPrecondition`` for an illegal transition, ...).

    Args:
        endpoint, token, token_file, tls_root_certs: as for :class:`~modelops_results.ResultClient`.
        timeout: default deadline in seconds of each call (default: none). Calls that wait
            (``index_job(wait=True)``, ``watch_jobs``) take their own ``timeout``.
        channel: an existing channel to use instead of opening one (endpoint and TLS are then
            ignored; the token is still added).

    Attributes:
        registry: the raw ``JobRegistryStub``.
        attribution: the raw ``AttributionStub``.
        indexer: the raw ``IndexerStub``.
        channel: the gRPC channel.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_root_certs: Optional[PathOrBytes] = None,
        timeout: Optional[float] = None,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        parsed, resolved_token, certs = connection_settings(endpoint, token, token_file, tls_root_certs)
        self.endpoint: Endpoint = parsed
        self.timeout = timeout
        if channel is None:
            options = [
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ]
            if parsed.tls:
                credentials = grpc.ssl_channel_credentials(root_certificates=certs)
                channel = grpc.secure_channel(parsed.target, credentials, options=options)
            else:
                channel = grpc.insecure_channel(parsed.target, options=options)
        self._own_channel = channel
        if resolved_token:
            channel = grpc.intercept_channel(channel, _BearerToken(resolved_token))
        self.channel: grpc.Channel = channel
        self.registry = registry_pb2_grpc.JobRegistryStub(channel)
        self.attribution = attribution_pb2_grpc.AttributionStub(channel)
        self.indexer = indexer_pb2_grpc.IndexerStub(channel)

    def _call(self, method: Callable[..., _T], request: Any, timeout: Union[float, None, object] = _DEFAULT) -> _T:
        try:
            return method(request, timeout=self.timeout if timeout is _DEFAULT else timeout)
        except grpc.RpcError as e:
            raise from_grpc_error(e) from None

    def _stream(self, method: Callable[..., Iterable[_T]], request: Any, timeout: Optional[float]) -> Iterator[_T]:
        try:
            yield from method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise from_grpc_error(e) from None

    # --- registry -----------------------------------------------------------------------------

    def register_job(
        self,
        job_id: str = "",
        *,
        spec: Optional[Union[str, bytes, Mapping[str, Any]]] = None,
        study: Optional[Union[str, bytes, Mapping[str, Any]]] = None,
        bundle_ref: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        k8s_name: Optional[str] = None,
        k8s_namespace: Optional[str] = None,
    ) -> dict[str, Any]:
        """Registers a new job in status ``pending`` and returns its state.

        Args:
            job_id: ``[a-z0-9][a-z0-9._-]*``, ≤ 128 characters. Empty: taken from ``spec``, or
                generated (``job-`` + 8 hex).
            spec: a SimJob or CalibrationJob spec blob in upstream form (``job_type``,
                ``job_id``, ``bundle_ref``, ``tasks``, ...), as JSON text or a dict. Its job id
                must equal ``job_id`` when both are given. ``tasks_total`` becomes its task count.
            study: instead of ``spec``, a Calabaria ``study.json`` (text or dict), expanded into a
                SimJob with ``bundle_ref`` (``sha256:<64 hex>`` or ``repo@sha256:<64 hex>``).
            metadata: a JSON object stored as the job's metadata.
            k8s_name, k8s_namespace: the Kubernetes Job.

        Raises:
            AlreadyExists: the job id is taken.
            InvalidArgument: bad job id, spec or study.
        """
        request = registry_pb2.RegisterJobRequest(job_id=job_id, metadata_json=json.dumps(dict(metadata)) if metadata else "")
        if k8s_name is not None:
            request.k8s_name = k8s_name
        if k8s_namespace is not None:
            request.k8s_namespace = k8s_namespace
        if spec is not None and study is not None:
            raise ValueError("give spec or study, not both")
        if spec is not None:
            request.job_spec_json = _json_text(spec)
        elif study is not None:
            if not bundle_ref:
                raise ValueError("a study needs a bundle_ref")
            request.study.CopyFrom(registry_pb2.StudySpec(study_json=_json_text(study), bundle_ref=bundle_ref))
        elif bundle_ref is not None:
            raise ValueError("bundle_ref is only used with study")
        return _job_dict(self._call(self.registry.RegisterJob, request).job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """A job's state as a dict (``status``, ``tasks_total``, ``tasks_completed``, ``metadata``,
        ``index_state``, ``state_json`` — the stored upstream document —, ...).

        Raises:
            NotFound: unknown job.
        """
        return _job_dict(self._call(self.registry.GetJob, registry_pb2.GetJobRequest(job_id=job_id)).job)

    def get_job_spec(self, job_id: str) -> dict[str, Any]:
        """The spec a job was registered with: ``{"job_type", "job_spec_json", "spec"}`` (``spec`` parsed).

        Raises:
            NotFound: unknown job, or registered without a spec.
        """
        response = self._call(self.registry.GetJobSpec, registry_pb2.GetJobSpecRequest(job_id=job_id))
        return {"job_type": response.job_type, "job_spec_json": response.job_spec_json, "spec": json.loads(response.job_spec_json)}

    def get_stores(self) -> dict[str, str]:
        """Where the server keeps its data, as URLs without credentials: ``provenance``
        (``file:///…``, ``az://container/prefix``, ``s3://…``), ``results``, ``jobs`` and
        ``registry`` (described). A submitter writes its records under ``provenance``."""
        response = self._call(self.registry.GetStores, registry_pb2.GetStoresRequest())
        return {
            "provenance": response.provenance_url,
            "results": response.results_url,
            "jobs": response.jobs_url,
            "registry": response.registry_store,
        }

    def get_resumable_tasks(self, job_id: str) -> list[dict[str, Any]]:
        """The tasks of a partial job whose simulation results are missing from the provenance
        store (upstream's ``get_resumable_tasks``), as SimTask dicts in spec order, to run again.

        Raises:
            FailedPrecondition: the job is not partial (``reason == "JOB_NOT_PARTIAL"``).
            NotFound: unknown job.
        """
        request = attribution_pb2.GetResumableTasksRequest(job_id=job_id)
        response = self._call(self.attribution.GetResumableTasks, request)
        return [json.loads(task) for task in response.task_json]

    def update_status(
        self,
        job_id: str,
        status: Union[str, int],
        *,
        error_message: Optional[str] = None,
        error_code: Optional[str] = None,
        results_path: Optional[str] = None,
        tasks_completed: Optional[int] = None,
        tasks_total: Optional[int] = None,
        k8s_uid: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        expected_revision: Optional[int] = None,
        validation_started_at: Optional[str] = None,
        validation_completed_at: Optional[str] = None,
        validation_attempts: Optional[int] = None,
        last_validation_error: Optional[str] = None,
        tasks_verified: Optional[int] = None,
        verified_outputs: Optional[Iterable[str]] = None,
        missing_outputs: Optional[Iterable[str]] = None,
        clear_fields: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Moves a job to ``status`` along upstream's transitions (pending → submitting →
        scheduled → running → validating → succeeded/partial/failed; cancelled from pending,
        scheduled or running) and returns its new state. Fields given are set with it;
        ``metadata`` keys are merged into the job's metadata. With ``expected_revision`` the
        update applies only at that revision. Setting a terminal job to its own status again is
        a no-op. The validation fields are upstream's (``transition_to_validating``,
        ``finalize_with_validation``); ``clear_fields`` sets nullable fields back to ``None``
        first (``error_message``, ``error_code``, ``results_path``, ``k8s_uid``,
        ``validation_started_at``, ``validation_completed_at``, ``last_validation_error``).
        A refusal carries ``reason`` (``INVALID_TRANSITION``, ``TERMINAL_STATE``,
        ``REVISION_CONFLICT``) and ``details``.

        Raises:
            FailedPrecondition: illegal transition, or the job is terminal.
            Aborted: ``expected_revision`` did not match.
            NotFound: unknown job.
        """
        request = registry_pb2.UpdateStatusRequest(job_id=job_id, status=_enum_number(_JOB_STATUS, status, "status"))
        for name, value in (
            ("error_message", error_message),
            ("error_code", error_code),
            ("results_path", results_path),
            ("tasks_completed", tasks_completed),
            ("tasks_total", tasks_total),
            ("k8s_uid", k8s_uid),
            ("expected_revision", expected_revision),
            ("validation_started_at", validation_started_at),
            ("validation_completed_at", validation_completed_at),
            ("validation_attempts", validation_attempts),
            ("last_validation_error", last_validation_error),
            ("tasks_verified", tasks_verified),
        ):
            if value is not None:
                setattr(request, name, value)
        for name, values in (("verified_outputs", verified_outputs), ("missing_outputs", missing_outputs)):
            if values is not None:
                getattr(request, name).values.extend(values)
        request.clear_fields.extend(clear_fields)
        if metadata is not None:
            request.metadata_json = json.dumps(dict(metadata))
        return _job_dict(self._call(self.registry.UpdateStatus, request).job)

    def add_progress(self, job_id: str, completed: int = 0, *, total: int = 0, ack_when_queued: bool = False) -> tuple[int, int]:
        """Adds ``completed`` finished tasks (and ``total`` newly discovered ones) to a job's
        counters and returns ``(tasks_completed, tasks_total)`` including this increment.

        Increments from many reporters are coalesced by the server into few writes and none is
        lost; by default the call returns once the increment is stored. With
        ``ack_when_queued`` it returns as soon as it is queued (the returned counters may lag).
        Counters are not split by outcome: a task that finished in failure counts as completed.
        """
        request = registry_pb2.AddProgressRequest(job_id=job_id, completed_delta=completed, total_delta=total, ack_when_queued=ack_when_queued)
        response = self._call(self.registry.AddProgress, request)
        return response.tasks_completed, response.tasks_total

    def set_progress(self, job_id: str, *, completed: Optional[int] = None, total: Optional[int] = None) -> dict[str, Any]:
        """Sets a job's counters to absolute values and returns its state."""
        request = registry_pb2.SetProgressRequest(job_id=job_id)
        if completed is not None:
            request.tasks_completed = completed
        if total is not None:
            request.tasks_total = total
        return _job_dict(self._call(self.registry.SetProgress, request).job)

    def finalize(
        self,
        job_id: str,
        status: Union[str, int] = "succeeded",
        *,
        results_path: Optional[str] = None,
        error_message: Optional[str] = None,
        error_code: Optional[str] = None,
    ) -> dict[str, Any]:
        """Moves a job to a terminal status (``succeeded``, ``partial``, ``failed`` or
        ``cancelled``) with its results path or error, and returns its state. Reaching
        succeeded, partial or failed starts the indexing of its loss table.

        Raises:
            InvalidArgument: ``status`` is not terminal.
            FailedPrecondition: the transition is illegal from the job's status.
        """
        request = registry_pb2.FinalizeJobRequest(job_id=job_id, status=_enum_number(_JOB_STATUS, status, "status"))
        if results_path is not None:
            request.results_path = results_path
        if error_message is not None:
            request.error_message = error_message
        if error_code is not None:
            request.error_code = error_code
        return _job_dict(self._call(self.registry.FinalizeJob, request).job)

    def cancel(self, job_id: str, reason: Optional[str] = None) -> dict[str, Any]:
        """Cancels a job (its error message becomes ``Cancelled: {reason}``) and returns its state.

        Raises:
            NotFound: unknown job.
            FailedPrecondition: the job cannot be cancelled from its status.
        """
        request = registry_pb2.CancelJobRequest(job_id=job_id)
        if reason is not None:
            request.reason = reason
        return _job_dict(self._call(self.registry.CancelJob, request).job)

    def list_jobs(
        self,
        statuses: Optional[Iterable[Union[str, int]]] = None,
        *,
        since: Optional[datetime] = None,
        limit: Optional[int] = None,
    ) -> list[dict[str, Any]]:
        """Jobs newest first, following every page: only ``statuses`` (all when None), only
        those created at or after ``since`` (naive datetimes are UTC), at most ``limit``."""
        request = registry_pb2.ListJobsRequest(
            statuses=[_enum_number(_JOB_STATUS, s, "status") for s in ([statuses] if isinstance(statuses, str) else statuses or [])],
            limit=1000 if limit is None else max(1, min(limit, 1000)),
        )
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        jobs: list[dict[str, Any]] = []
        while True:
            response = self._call(self.registry.ListJobs, request)
            jobs.extend(_job_dict(job) for job in response.jobs)
            if limit is not None and len(jobs) >= limit:
                return jobs[:limit]
            if not response.next_page_token:
                return jobs
            request.page_token = response.next_page_token

    def count_jobs_by_status(self) -> dict[str, int]:
        """``{status: number of jobs}`` for every status."""
        response = self._call(self.registry.CountJobsByStatus, registry_pb2.CountJobsByStatusRequest())
        return {str(_enum_name(_JOB_STATUS, c.status)): c.count for c in response.counts}

    def watch_jobs(
        self,
        job_ids: Optional[Iterable[str]] = None,
        statuses: Optional[Iterable[Union[str, int]]] = None,
        *,
        replay_current: bool = False,
        after_revision: int = 0,
        timeout: Optional[float] = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields job state changes as they happen: dicts with ``job`` (the state after the
        change), ``previous_status``, ``replayed`` and ``watch_revision`` (resume from it with
        ``after_revision``). With ``replay_current`` the current state of every matching job
        comes first. Runs until the server ends the stream, ``timeout`` passes, or the caller stops."""
        request = registry_pb2.WatchJobsRequest(
            job_ids=list(job_ids or []),
            statuses=[_enum_number(_JOB_STATUS, s, "status") for s in statuses or []],
            replay_current=replay_current,
            after_revision=after_revision,
        )
        for change in self._stream(self.registry.WatchJobs, request, timeout):
            out = to_dict(change)
            out["job"] = _job_dict(change.job)
            yield out

    # --- attribution --------------------------------------------------------------------------

    def record_edges(
        self,
        job_id: str,
        edges: Iterable[EdgeLike],
        *,
        batch_size: int = 1000,
        batch_id: Optional[str] = None,
    ) -> dict[str, int]:
        """Streams ``edges`` (``Edge`` objects, dicts with the same keys, or ``Edge`` messages)
        to attribution in batches of ``batch_size`` over one ``RecordEdges`` call, and returns
        ``{"batches", "edges_received", "batches_already_stored"}``.

        Recording is idempotent: a batch already stored changes nothing. Batches are identified
        by their content unless ``batch_id`` is given, in which case batch *n* is
        ``f"{batch_id}-{n}"`` (same characters as a job id).

        Raises:
            InvalidArgument: a malformed edge (the message names its index within its batch)
                or a path outside the provenance root.
            NotFound: unknown job.
            FailedPrecondition: the job's attribution is sealed.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        failure: list[BaseException] = []

        def requests() -> Iterator[attribution_pb2.RecordEdgesRequest]:
            try:
                for n, chunk in enumerate(_batches(edges, batch_size)):
                    yield attribution_pb2.RecordEdgesRequest(
                        job_id=job_id,
                        batch_id=f"{batch_id}-{n}" if batch_id else "",
                        edges=[_edge_proto(edge) for edge in chunk],
                    )
            except BaseException as e:  # surfaced below instead of grpc's CANCELLED
                failure.append(e)
                raise

        try:
            response = self.attribution.RecordEdges(requests(), timeout=self.timeout)
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise from_grpc_error(e) from None
        return to_dict(response)

    def seal(self, job_id: str, *, derive_missing: bool = False) -> dict[str, Any]:
        """Compacts a job's edges into its immutable, deduplicated edge set and returns
        ``{"counts": {...}, "sealed_at": datetime, "newly_sealed": bool}``. Idempotent.
        With ``derive_missing``, edges no reporter sent are first derived from the spec."""
        request = attribution_pb2.SealJobRequest(job_id=job_id, derive_missing=derive_missing)
        return to_dict(self._call(self.attribution.SealJob, request))

    def get_attribution(self, job_id: str, *, sample_size: int = 10) -> dict[str, Any]:
        """A job's edge ``counts`` (sims, aggs, computed, cache_hits, unknown, expected_missing),
        ``sealed``, ``sealed_at``, a ``sample`` of edges (dicts) and ``missing_paths``."""
        request = attribution_pb2.GetJobAttributionRequest(job_id=job_id, sample_size=sample_size)
        return to_dict(self._call(self.attribution.GetJobAttribution, request))

    def list_job_results(
        self,
        job_id: str,
        *,
        kind: Optional[str] = None,
        target: Optional[str] = None,
        role: Optional[str] = None,
        param_id: Optional[str] = None,
    ) -> list[dict[str, Any]]:
        """Every edge of a job (as dicts), optionally only one ``kind`` (``"sim"``/``"agg"``),
        ``target``, ``role`` or parameter set (``param_id``)."""
        request = attribution_pb2.ListJobResultsRequest(
            job_id=job_id,
            kind=0 if kind is None else _enum_number(_RESULT_KIND, kind, "kind"),
            role=0 if role is None else _enum_number(_ROLE, role, "role"),
        )
        if target is not None:
            request.target = target
        if param_id is not None:
            request.param_id = param_id
        return [to_dict(edge) for message in self._stream(self.attribution.ListJobResults, request, self.timeout) for edge in message.edges]

    def get_result_owners(self, path: str) -> list[dict[str, Any]]:
        """The jobs owning the result directory ``path``: one edge (dict) per owning job."""
        response = self._call(self.attribution.GetResultOwners, attribution_pb2.GetResultOwnersRequest(path=path))
        return [to_dict(edge) for edge in response.owners]

    # --- indexer ------------------------------------------------------------------------------

    def index_job(self, job_id: str, force: bool = False, wait: bool = False, *, timeout: Optional[float] = None) -> dict[str, Any]:
        """Starts (or joins) the indexing of a job's loss table and returns its status: a dict
        with ``phase`` (``"queued"``, ``"running"``, ``"done"``, ``"failed"``, ...), ``counts``
        (total, ok, missing, failed), ``results_path``, ``unchanged``, ``error``, ...

        Args:
            force: rebuild even if the inputs are unchanged, and index a job not yet terminal.
            wait: return only when indexing has finished.
            timeout: deadline in seconds (default: the client's, or none when waiting).

        Raises:
            FailedPrecondition: the job is not terminal and ``force`` is not set.
            NotFound: unknown job.
        """
        request = indexer_pb2.IndexJobRequest(job_id=job_id, force=force, wait=wait)
        deadline = timeout if timeout is not None or wait else self.timeout
        return to_dict(self._call(self.indexer.IndexJob, request, deadline).status)

    def get_index_status(self, job_id: str) -> dict[str, Any]:
        """The status of a job's index (as :meth:`index_job` returns it)."""
        return to_dict(self._call(self.indexer.GetIndexStatus, indexer_pb2.GetIndexStatusRequest(job_id=job_id)).status)

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel."""
        self._own_channel.close()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobClient({self.endpoint.target!r}, tls={self.endpoint.tls})"

