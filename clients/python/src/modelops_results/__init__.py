"""Python client of the ModelOps result services (``mops serve``).

* :class:`ResultClient` reads job loss tables over Arrow Flight (pandas or pyarrow).
* :class:`JobClient` talks to the job registry, attribution and indexer over gRPC: the calls the
  submission (Dask) side makes.
* :mod:`~modelops_results.upstream` (ids and record layout), :class:`ProvenanceWriter` (records in
  the upstream layout) and the runner kit (:class:`JobHandle`, :func:`run`, :func:`track`).
* :class:`JobRegistry` (:mod:`~modelops_results.registry`): a drop-in for the Python ModelOps'
  ``JobRegistry``, with its ``JobState``, ``JobStatus`` and exceptions, backed by the service.

Both connect to ``$MOPS_ENDPOINT`` (default ``http://127.0.0.1:50051``) and send the bearer
token from ``$MOPS_AUTH_TOKEN_FILE`` when set. Server errors are :class:`ModelOpsError`
subclasses named after their gRPC status.
"""

from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ModelOpsError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .jobs import Edge, JobClient
from .results import JobFlight, ResultClient
from . import upstream
from .runner import EdgeRecorder, JobHandle, ProgressReporter, RunningJob, run, track
from .store import AggWritten, ProvenanceWriter, SimError, SimWritten
from .registry import (
    InvalidTransitionError,
    JobExistsError,
    JobRegistry,
    JobState,
    JobStatus,
    TerminalStateError,
    TooManyRetriesError,
    ValidationResult,
)

try:
    from importlib.metadata import version as _version

    __version__ = _version("modelops-results")
except Exception:  # pragma: no cover - not installed
    __version__ = "0+unknown"

__all__ = [
    "ResultClient",
    "JobClient",
    "JobFlight",
    "Edge",
    "upstream",
    "JobHandle",
    "run",
    "track",
    "RunningJob",
    "ProgressReporter",
    "EdgeRecorder",
    "ProvenanceWriter",
    "SimWritten",
    "AggWritten",
    "SimError",
    "JobRegistry",
    "JobState",
    "JobStatus",
    "ValidationResult",
    "InvalidTransitionError",
    "TerminalStateError",
    "JobExistsError",
    "TooManyRetriesError",
    "ModelOpsError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unauthenticated",
    "PermissionDenied",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "ResourceExhausted",
    "Unimplemented",
    "Internal",
]
