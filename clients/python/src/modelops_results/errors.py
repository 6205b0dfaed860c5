"""Errors raised by the ModelOps clients.

Every error a server returns becomes a :class:`ModelOpsError` subclass chosen by its gRPC status
code, keeping the server's message. The same classes are raised by :class:`~modelops_results.ResultClient`
(Arrow Flight) and :class:`~modelops_results.JobClient` (gRPC), so callers can catch
``NotFound`` without caring which transport reported it.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Union

__all__ = [
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
    "error_for_code",
]


class ModelOpsError(Exception):
    """Base class of every error returned by a ModelOps service.

    Attributes:
        code: the gRPC status code name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ...), or
            ``"UNKNOWN"`` when it could not be determined.
        message: the server's message, without transport decoration.
    """

    #: The gRPC status code this class stands for (``None`` on the base class).
    status_code: Optional[str] = None

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        reason: Optional[str] = None,
        details: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code or self.status_code or "UNKNOWN"
        #: The stable, machine-readable reason of a refusal (``"INVALID_TRANSITION"``,
        #: ``"TERMINAL_STATE"``, ``"REVISION_CONFLICT"``, ...) from the status's
        #: ``google.rpc.ErrorInfo``, or ``None``.
        self.reason: Optional[str] = reason
        #: What the refusal concerns (``job_id``, ``from``, ``to``, ...), from the ErrorInfo.
        self.details: dict[str, str] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ModelOpsError, ValueError):
    """The request was malformed: bad JSON command, unknown field, bad SQL, bad job id (INVALID_ARGUMENT)."""

    status_code = "INVALID_ARGUMENT"


class NotFound(ModelOpsError, LookupError):
    """The job (or spec, or result) does not exist (NOT_FOUND)."""

    status_code = "NOT_FOUND"


class AlreadyExists(ModelOpsError):
    """A job with this id is already registered (ALREADY_EXISTS)."""

    status_code = "ALREADY_EXISTS"


class FailedPrecondition(ModelOpsError):
    """Illegal status transition, recording into a sealed job, indexing a running job (FAILED_PRECONDITION)."""

    status_code = "FAILED_PRECONDITION"


class Aborted(ModelOpsError):
    """A compare-and-swap update lost (expected revision mismatch, retries exhausted) (ABORTED)."""

    status_code = "ABORTED"


class OutOfRange(ModelOpsError):
    """A watch was resumed from a revision the server no longer keeps (OUT_OF_RANGE)."""

    status_code = "OUT_OF_RANGE"


class Unauthenticated(ModelOpsError):
    """Missing or wrong bearer token (UNAUTHENTICATED)."""

    status_code = "UNAUTHENTICATED"


class PermissionDenied(ModelOpsError):
    """The caller may not do this (PERMISSION_DENIED)."""

    status_code = "PERMISSION_DENIED"


class Unavailable(ModelOpsError):
    """The server, or a store behind it, cannot be reached (UNAVAILABLE)."""

    status_code = "UNAVAILABLE"


class DeadlineExceeded(ModelOpsError, TimeoutError):
    """The call did not finish within its timeout (DEADLINE_EXCEEDED)."""

    status_code = "DEADLINE_EXCEEDED"


class Cancelled(ModelOpsError):
    """The call was cancelled (CANCELLED)."""

    status_code = "CANCELLED"


class ResourceExhausted(ModelOpsError):
    """A size or rate limit was hit (RESOURCE_EXHAUSTED)."""

    status_code = "RESOURCE_EXHAUSTED"


class Unimplemented(ModelOpsError):
    """The server does not implement this call or command (UNIMPLEMENTED)."""

    status_code = "UNIMPLEMENTED"


class Internal(ModelOpsError):
    """A server-side bug or corrupt data (INTERNAL, DATA_LOSS)."""

    status_code = "INTERNAL"


_BY_CODE: dict[str, type[ModelOpsError]] = {
    cls.status_code: cls  # type: ignore[misc]
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        ResourceExhausted,
        Unimplemented,
        Internal,
    )
}
_BY_CODE["DATA_LOSS"] = Internal


def error_for_code(code: str, message: str, *, reason: Optional[str] = None, details: Optional[dict[str, str]] = None) -> ModelOpsError:
    """The exception for gRPC status ``code`` (a name such as ``"NOT_FOUND"``) with ``message``."""
    cls = _BY_CODE.get(code, ModelOpsError)
    return cls(message, code=code, reason=reason, details=details)


# --- gRPC (grpcio) ---------------------------------------------------------------------------

_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


def _fields(data: bytes) -> Iterable[tuple[int, Union[int, bytes]]]:
    """(field number, value) of a protobuf message's varint and length-delimited fields."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            length = varint()
            yield number, data[i : i + length]
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return


def error_info(status_details: bytes) -> tuple[Optional[str], dict[str, str]]:
    """(reason, metadata) of the ``google.rpc.ErrorInfo`` in a ``grpc-status-details-bin``
    value (a serialized ``google.rpc.Status``); ``(None, {})`` when there is none."""
    try:
        for number, value in _fields(status_details):
            if number != 3 or not isinstance(value, bytes):
                continue
            any_fields = dict(_fields(value))
            if any_fields.get(1) != _ERROR_INFO_TYPE.encode():
                continue
            reason: Optional[str] = None
            metadata: dict[str, str] = {}
            for field, item in _fields(bytes(any_fields.get(2, b""))):
                if field == 1 and isinstance(item, bytes):
                    reason = item.decode()
                elif field == 3 and isinstance(item, bytes):
                    entry = dict(_fields(item))
                    metadata[bytes(entry.get(1, b"")).decode()] = bytes(entry.get(2, b"")).decode()
            return reason, metadata
    except (IndexError, UnicodeDecodeError):
        pass
    return None, {}


def from_grpc_error(error: "Exception") -> ModelOpsError:
    """Converts a ``grpc.RpcError`` into a :class:`ModelOpsError`, with the refusal's reason
    when the server sent one."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    trailers_fn = getattr(error, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else None
    name = getattr(code, "name", None) or "UNKNOWN"
    message = details_fn() if callable(details_fn) else None
    reason: Optional[str] = None
    details: dict[str, str] = {}
    for key, value in (trailers_fn() if callable(trailers_fn) else None) or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            reason, details = error_info(value)
    return error_for_code(name, message or str(error), reason=reason, details=details)


# --- Arrow Flight (pyarrow.flight) -----------------------------------------------------------

# How pyarrow's Flight client words each gRPC status (`Flight returned <phrase> error, ...`).
_FLIGHT_PHRASES: dict[str, str] = {
    "invalid argument": "INVALID_ARGUMENT",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "precondition failed": "FAILED_PRECONDITION",
    "aborted": "ABORTED",
    "out-of-range": "OUT_OF_RANGE",
    "unauthenticated": "UNAUTHENTICATED",
    "unauthorized": "PERMISSION_DENIED",
    "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "resource exhausted": "RESOURCE_EXHAUSTED",
    "unimplemented": "UNIMPLEMENTED",
    "internal": "INTERNAL",
    "data loss": "DATA_LOSS",
}
_FLIGHT_RETURNED = re.compile(r"(?:Flight|gRPC) returned (?P<phrase>[\w -]+?) error, with message: ", re.S)
_FLIGHT_OTHER = re.compile(r"Flight (?:cancelled call|RPC failed), with message: ", re.S)
_FLIGHT_TAIL = re.compile(r"\. (?:gRPC client debug context|Client context|Detail): ", re.S)


def _flight_message(text: str) -> tuple[Optional[str], str]:
    """(code, server message) out of a pyarrow Flight error text."""
    code: Optional[str] = None
    match = _FLIGHT_RETURNED.search(text)
    if match:
        code = _FLIGHT_PHRASES.get(match.group("phrase").strip().lower())
    else:
        match = _FLIGHT_OTHER.search(text)
        if match:
            code = "CANCELLED" if "cancelled" in match.group(0) else "UNKNOWN"
    message = text[match.end():] if match else text
    tail = _FLIGHT_TAIL.search(message)
    if tail:
        message = message[: tail.start()]
    return code, message


def from_flight_error(error: BaseException) -> ModelOpsError:
    """Converts an exception raised by ``pyarrow.flight`` into a :class:`ModelOpsError`.

    pyarrow maps several gRPC codes onto one Python class (``FAILED_PRECONDITION`` and
    ``INVALID_ARGUMENT`` both become ``ArrowInvalid``), so the code is read from pyarrow's
    message first and from the exception class only as a fallback.
    """
    import pyarrow as pa
    import pyarrow.flight as flight

    text = str(error)
    code, message = _flight_message(text)
    if code is None:
        for cls, name in (
            (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
            (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
            (flight.FlightUnavailableError, "UNAVAILABLE"),
            (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
            (flight.FlightCancelledError, "CANCELLED"),
            (flight.FlightInternalError, "INTERNAL"),
            (pa.ArrowInvalid, "INVALID_ARGUMENT"),
            (pa.ArrowKeyError, "NOT_FOUND"),
            (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
        ):
            if isinstance(error, cls):
                code = name
                break
    return error_for_code(code or "UNKNOWN", message)
