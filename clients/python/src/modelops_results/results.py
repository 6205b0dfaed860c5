"""Loss tables over Arrow Flight: :class:`ResultClient`."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

import pyarrow as pa
import pyarrow.flight as flight

from ._connection import Endpoint, PathOrBytes, connection_settings
from .errors import InvalidArgument, ModelOpsError, from_flight_error

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ResultClient", "JobFlight", "TimeLike"]

#: A time accepted by the filters: an aware datetime (naive means UTC), a date (midnight UTC),
#: or an RFC 3339 string sent as is.
TimeLike = Union[datetime, date, str]

_REUSE_CONNECTION = b"arrow-flight-reuse-connection:"


class JobFlight(NamedTuple):
    """One indexed job as ``ListFlights`` reports it."""

    job_id: str
    """The job."""
    rows: int
    """Rows of its loss table (``total_records``; -1 if the server did not say)."""


def _rfc3339(value: TimeLike, name: str) -> str:
    """``value`` as RFC 3339 UTC (``2026-11-22T20:05:11Z``, with microseconds when non-zero)."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0), tzinfo=timezone.utc)
    else:
        raise TypeError(f"{name} must be a datetime, date or RFC 3339 string, not {type(value).__name__}")
    moment = moment.astimezone(timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def _job_ids(job_ids: Union[str, Iterable[str]]) -> list[str]:
    if isinstance(job_ids, str):
        return [job_ids]
    return [str(job) for job in job_ids]


class ResultClient:
    """Reads job loss tables from the ModelOps query service (Arrow Flight).

    Every method returns a :class:`pandas.DataFrame`, or a :class:`pyarrow.Table` when called
    with ``as_arrow=True``. Server errors are raised as :class:`~modelops_results.ModelOpsError`
    subclasses (:class:`~modelops_results.NotFound`, :class:`~modelops_results.InvalidArgument`,
    ...) carrying the server's message.

    Example::

        client = ResultClient()                       # $MOPS_ENDPOINT or http://127.0.0.1:50051
        df = client.get_losses("job-5b718dc8")
        best = client.get_best_parameters("targets.prev:prevalence_target", n_best=5)

    Args:
        endpoint: ``http://host:port``, ``grpc://host:port`` (plaintext), ``https://host:port``,
            ``grpc+tls://host:port`` (TLS) or ``host:port``. Default: ``$MOPS_ENDPOINT``, else
            ``http://127.0.0.1:50051``.
        token: bearer token sent as ``authorization: Bearer <token>``.
        token_file: file holding the token. Default: ``$MOPS_AUTH_TOKEN_FILE`` when set.
        tls_root_certs: PEM root certificates (bytes, or a path) to verify the server with;
            default: the system roots.
        timeout: seconds allowed for each Flight call (default: no limit).

    Attributes:
        flight: the underlying :class:`pyarrow.flight.FlightClient`, for raw Flight calls
            (pass :attr:`call_options` so the token is sent).
        call_options: :class:`pyarrow.flight.FlightCallOptions` carrying the token and timeout.
        endpoint: the parsed endpoint.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_file: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_root_certs: Optional[PathOrBytes] = None,
        timeout: Optional[float] = None,
    ) -> None:
        parsed, resolved_token, certs = connection_settings(endpoint, token, token_file, tls_root_certs)
        self.endpoint: Endpoint = parsed
        self._tls_root_certs = certs
        headers = [(b"authorization", f"Bearer {resolved_token}".encode())] if resolved_token else []
        self.call_options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        self.flight: flight.FlightClient = self._connect(parsed.flight_uri)
        self._other_clients: dict[bytes, flight.FlightClient] = {}

    # --- plumbing -----------------------------------------------------------------------------

    def _connect(self, uri: Union[str, bytes]) -> flight.FlightClient:
        if self._tls_root_certs is not None:
            return flight.FlightClient(uri, tls_root_certs=self._tls_root_certs)
        return flight.FlightClient(uri)

    @staticmethod
    @contextmanager
    def _errors() -> Iterator[None]:
        try:
            yield
        except ModelOpsError:
            raise
        except pa.ArrowException as e:
            raise from_flight_error(e) from e

    def _client_for(self, endpoint: flight.FlightEndpoint) -> flight.FlightClient:
        """The client to redeem ``endpoint``'s ticket with: this one unless it names another server."""
        for location in endpoint.locations:
            uri = location.uri
            if uri.startswith(_REUSE_CONNECTION):
                return self.flight
            if uri not in self._other_clients:
                self._other_clients[uri] = self._connect(uri)
            return self._other_clients[uri]
        return self.flight

    def _read(self, descriptor: flight.FlightDescriptor) -> pa.Table:
        """The whole result of ``descriptor``: every endpoint's stream, in order, concatenated."""
        with self._errors():
            info = self.flight.get_flight_info(descriptor, self.call_options)
            tables = []
            for endpoint in info.endpoints:
                reader = self._client_for(endpoint).do_get(endpoint.ticket, self.call_options)
                tables.append(reader.read_all())
        if not tables:
            return info.schema.empty_table()
        if len(tables) == 1:
            return tables[0]
        return pa.concat_tables(tables, promote_options="default")

    @staticmethod
    def _finish(table: pa.Table, as_arrow: bool) -> Union["pd.DataFrame", pa.Table]:
        return table if as_arrow else table.to_pandas()

    # --- generic ------------------------------------------------------------------------------

    def run_command(self, command: Mapping[str, Any], *, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """Runs a JSON command (``{"type": ..., ...}``, see FLIGHT_COMMANDS.md) and returns its result.

        Keys whose value is ``None`` are left out.
        """
        body = {key: value for key, value in command.items() if value is not None}
        try:
            payload = json.dumps(body, allow_nan=False, separators=(",", ":"))
        except ValueError as e:
            raise InvalidArgument(f"command is not valid JSON: {e}") from None
        return self._finish(self._read(flight.FlightDescriptor.for_command(payload.encode())), as_arrow)

    def read_path(self, *path: str, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """Reads a PATH descriptor, e.g. ``read_path("losses", job_id)`` or ``read_path("jobs")``."""
        return self._finish(self._read(flight.FlightDescriptor.for_path(*path)), as_arrow)

    # --- the commands -------------------------------------------------------------------------

    def get_losses(self, job_id: str, *, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """One job's whole loss table, rows in the job's order (descriptor ``PATH ["losses", job_id]``).

        ``job_id``, ``target``, ``bundle_digest`` and ``status`` come as dictionaries (pandas
        categoricals): one value or a few per job, sent once per batch instead of once per row.

        Raises:
            NotFound: the job is unknown or not indexed.
        """
        return self.read_path("losses", job_id, as_arrow=as_arrow)

    def get_replicates(self, job_id: str, *, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """One job's per-replicate losses (job_id, param_id, target, replicate_idx, seed, loss),
        where its aggregation results carried ``diagnostics.per_replicate_losses``
        (descriptor ``PATH ["replicates", job_id]``).

        Raises:
            NotFound: the job is unknown, not indexed, or its results carry no per-replicate losses.
        """
        return self.read_path("replicates", job_id, as_arrow=as_arrow)

    def query_losses(
        self,
        job_ids: Optional[Union[str, Iterable[str]]] = None,
        bundle_digest: Optional[str] = None,
        target: Optional[str] = None,
        status: Optional[str] = None,
        min_loss: Optional[float] = None,
        max_loss: Optional[float] = None,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        order: Optional[str] = None,
        limit: Optional[int] = None,
        *,
        as_arrow: bool = False,
    ) -> Union["pd.DataFrame", pa.Table]:
        """Rows of the loss tables of many jobs (the ``losses`` command); every filter is optional.

        Args:
            job_ids: only these jobs (a single id is accepted too).
            bundle_digest: only jobs of this bundle: a full ref, its digest hex, or a prefix of
                at least 12 hex characters.
            target: only this target: the full entrypoint (``targets.prev:prevalence_target``)
                or the name after the last ``:`` (``prevalence_target``).
            status: ``"ok"``, ``"missing"`` or ``"failed"``.
            min_loss: loss ≥ this (inclusive).
            max_loss: loss ≤ this (inclusive).
            since: computed_at ≥ this. Datetimes are sent as RFC 3339 UTC (naive ones are taken
                as UTC); strings are sent as is.
            until: computed_at < this.
            order: ``"none"`` (default), ``"loss_asc"`` or ``"loss_desc"``.
            limit: at most this many rows.
            as_arrow: return a pyarrow Table instead of a DataFrame.
        """
        command: dict[str, Any] = {
            "type": "losses",
            "job_ids": None if job_ids is None else _job_ids(job_ids),
            "bundle_digest": bundle_digest,
            "target": target,
            "status": status,
            "min_loss": None if min_loss is None else float(min_loss),
            "max_loss": None if max_loss is None else float(max_loss),
            "since": None if since is None else _rfc3339(since, "since"),
            "until": None if until is None else _rfc3339(until, "until"),
            "order": order,
            "limit": None if limit is None else operator.index(limit),
        }
        return self.run_command(command, as_arrow=as_arrow)

    def get_best_parameters(
        self,
        target: str,
        n_best: int = 10,
        bundle_digest: Optional[str] = None,
        *,
        as_arrow: bool = False,
    ) -> Union["pd.DataFrame", pa.Table]:
        """The ``n_best`` parameter sets with the lowest loss (status ok) for ``target`` across every
        indexed job, lowest first, ties broken by job_id then param_id (the ``best_parameters``
        command). A set several jobs share is one row: its lowest loss, from the job that computed it.

        ``target`` is a full entrypoint or its short name (refused when two entrypoints share it);
        ``bundle_digest`` restricts to one bundle.
        """
        command = {"type": "best_parameters", "target": target, "n": operator.index(n_best), "bundle_digest": bundle_digest}
        return self.run_command(command, as_arrow=as_arrow)

    def compare_jobs(
        self,
        job_a: str,
        job_b: str,
        target: Optional[str] = None,
        *,
        as_arrow: bool = False,
    ) -> Union["pd.DataFrame", pa.Table]:
        """Two jobs side by side (the ``compare`` command): one row per (param_id, target) present
        in both, with ``loss_a``, ``loss_b``, ``delta`` (= loss_b − loss_a), ``status_a``, ``status_b``
        and the parameter columns.

        Raises:
            NotFound: either job is unknown.
        """
        command = {"type": "compare", "job_a": job_a, "job_b": job_b, "target": target}
        return self.run_command(command, as_arrow=as_arrow)

    def list_jobs(self, *, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """The catalog (the ``jobs`` command): one row per indexed job with ``job_id``,
        ``bundle_digest``, ``targets``, ``rows``, ``ok``, ``missing``, ``failed``, ``min_loss``,
        ``max_loss``, ``indexed_at`` and ``schema_version``."""
        return self.run_command({"type": "jobs"}, as_arrow=as_arrow)

    def sql(self, query: str, *, as_arrow: bool = False) -> Union["pd.DataFrame", pa.Table]:
        """Runs a SQL query (DataFusion dialect) over the tables ``losses`` and ``jobs``.

        Raises:
            InvalidArgument: the query does not parse or plan; the message is the parser's.
        """
        return self.run_command({"type": "sql", "query": query}, as_arrow=as_arrow)

    def flights(self) -> list[JobFlight]:
        """``ListFlights``: every indexed job with its row count, as ``(job_id, rows)`` pairs."""
        out: list[JobFlight] = []
        with self._errors():
            for info in self.flight.list_flights(b"", self.call_options):
                path = info.descriptor.path or []
                if len(path) == 2 and path[0] == b"losses":
                    out.append(JobFlight(path[1].decode(), info.total_records))
        return out

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection(s)."""
        for client in [self.flight, *self._other_clients.values()]:
            client.close()
        self._other_clients.clear()

    def __enter__(self) -> "ResultClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultClient({self.endpoint.flight_uri!r})"
