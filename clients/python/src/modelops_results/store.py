"""Writes simulation and aggregation records in upstream's provenance layout, for submitters
that do not run the Python ModelOps; and tells whether a record exists (a cache hit).

The files and their bytes are those of upstream's ``ProvenanceStore.put_sim`` / ``put_agg``
(and ``crates/core/src/records.rs``): ``metadata.json`` first, the artifacts, then
``result.json`` last as the commit marker; JSON as ``json.dumps(obj, indent=2)``.

Stores are reached through `fsspec <https://filesystem-spec.readthedocs.io>`_: a local
directory (``/data/provenance`` or ``file:///…``), Azure Blob / ADLS (``az://container/prefix``
or ``abfs://…``, with the ``adlfs`` package) and S3 (``s3://bucket/prefix``, with ``s3fs``);
``storage_options`` go to the filesystem (e.g. ``connection_string=…``, or ``key``/``secret``/
``client_kwargs={"endpoint_url": …}``). Azure also picks up ``AZURE_STORAGE_CONNECTION_STRING``
as upstream does.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import fsspec

from . import upstream as up
from .jobs import Edge

__all__ = ["ProvenanceWriter", "SimWritten", "AggWritten", "SimError"]


@dataclass(frozen=True)
class SimError:
    """A failed simulation's ``ErrorInfo``."""

    error_type: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class SimWritten:
    """A simulation record (written, or found already there)."""

    path: str
    """The record directory relative to the provenance root."""
    task_id: str
    param_id: str
    seed: int
    bundle_ref: str
    existed: bool = False
    """True when the record was already in the store (a cache hit) and was not rewritten."""

    @property
    def role(self) -> str:
        return "cache_hit" if self.existed else "computed"

    def edge(self, role: Optional[str] = None) -> Edge:
        """The attribution edge of this record (role: ``cache_hit`` if it existed)."""
        return Edge.sim(self.path, self.param_id, self.seed, role=role or self.role)


@dataclass(frozen=True)
class AggWritten:
    """An aggregation record (written, or found already there)."""

    path: str
    aggregation_id: str
    param_id: str
    """The parameter set's id, as given to the writer (not the record's metadata.param_id)."""
    target: str
    bundle_ref: str
    input_task_ids: tuple = field(default=())
    existed: bool = False

    @property
    def role(self) -> str:
        return "cache_hit" if self.existed else "computed"

    def edge(self, role: Optional[str] = None) -> Edge:
        return Edge.agg(self.path, self.param_id, self.target, self.aggregation_id, role=role or self.role)


def _parquet_copy(arrow_bytes: bytes) -> Optional[bytes]:
    """Upstream re-encodes each tabular output as Parquet (zstd level 3) when it reads as
    Arrow IPC; when it does not, only the ``.arrow`` copy is written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.ipc.open_file(pa.BufferReader(arrow_bytes)).read_all()
        except Exception:
            table = pa.ipc.open_stream(pa.BufferReader(arrow_bytes)).read_all()
        out = io.BytesIO()
        pq.write_table(table, out, compression="zstd", compression_level=3)
        return out.getvalue()
    except Exception:
        return None


class ProvenanceWriter:
    """Writes and checks records under a provenance root (local path or fsspec URL).

    Example::

        w = ProvenanceWriter("az://results/provenance", connection_string=...)
        rec = w.write_sim(bundle_ref, "models.seir.SEIR/baseline", params, seed,
                          {"prevalence": arrow_bytes, "metadata": json_bytes})
        agg = w.write_agg(bundle_ref, "targets.prev:prevalence_target", [rec.task_id, ...],
                          loss=0.12, param_id=rec.param_id)
        jobs.record_edges(job_id, [rec.edge(), agg.edge()])

    Args:
        root: the provenance root (the ``--provenance`` store of ``mops serve``).
        schema: ``"token"`` (upstream's default, ``token/v1``) or ``"bundle"``.
        parquet: also write upstream's ``artifact_{name}.parquet`` copies (pyarrow, zstd 3).
        **storage_options: passed to the fsspec filesystem.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], *, schema: str = "token", parquet: bool = True, **storage_options: Any) -> None:
        self.root = os.fspath(root)
        self.schema = up.schema_root(schema).split("/")[0]
        self.parquet = parquet
        self.storage_options = storage_options
        self._fs: Any = None
        self._base: str = ""

    # Picklable: the filesystem is opened again in each process.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    @property
    def fs(self) -> Any:
        if self._fs is None:
            fs, base = fsspec.core.url_to_fs(self.root, **self.storage_options)
            self._fs, self._base = fs, base.rstrip("/")
        return self._fs

    def _local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))

    def full_path(self, relative: str) -> str:
        """A store path of a file or directory relative to the root."""
        self.fs
        return f"{self._base}/{relative}" if self._base else relative

    def _put(self, relative: str, data: bytes) -> None:
        path = self.full_path(relative)
        if self._local():
            # Temp file + rename in the same directory, as upstream's atomic_write.
            directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
            os.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{name}.{secrets.token_hex(4)}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)  # one object PUT: atomic on object stores

    def _put_json(self, relative: str, obj: Any) -> None:
        self._put(relative, up.dumps_indent2(obj).encode("utf-8"))

    # --- existence / reading ------------------------------------------------------------------

    def exists(self, record_dir: str) -> bool:
        """Whether the record at ``record_dir`` (relative) is complete: its ``result.json``,
        written last, is in the store."""
        return bool(self.fs.exists(self.full_path(f"{record_dir}/result.json")))

    def sim_exists(self, bundle_ref: str, param_id: str, seed: int) -> bool:
        return self.exists(up.sim_dir(bundle_ref, param_id, seed, self.schema))

    def agg_exists(self, bundle_ref: str, target: str, aggregation_id: str) -> bool:
        return self.exists(up.agg_dir(bundle_ref, target, aggregation_id, self.schema))

    def read_json(self, relative: str) -> Any:
        """A JSON file of the store, parsed (NaN allowed, key order kept)."""
        return json.loads(self.fs.cat_file(self.full_path(relative)))

    def read_bytes(self, relative: str) -> bytes:
        return bytes(self.fs.cat_file(self.full_path(relative)))

    # --- writing ------------------------------------------------------------------------------

    def write_sim(
        self,
        bundle_ref: str,
        entrypoint: str,
        params: Mapping[str, Any],
        seed: int,
        outputs: Mapping[str, bytes],
        *,
        param_id: Optional[str] = None,
        declared_outputs: Optional[Sequence[str]] = None,
        error: Optional[SimError] = None,
        error_details: Optional[bytes] = None,
        timestamp: Optional[str] = None,
        if_absent: bool = False,
    ) -> SimWritten:
        """Writes one simulation record.

        Args:
            outputs: name → bytes as the model returned them (Arrow IPC per table; ``metadata``
                JSON bytes). The task id is computed over every name, as upstream's worker does;
                empty outputs get no file.
            param_id: the task's param_id (computed from ``params`` if not given).
            declared_outputs: the task's ``outputs`` list (``metadata.json``'s ``outputs``).
            error, error_details: a failed simulation (its task id is the error task id).
            timestamp: the record time (default now, upstream's ISO form).
            if_absent: if the record exists already, write nothing and return it with
                ``existed=True`` (its edge is then a cache hit).
        """
        if param_id is None:
            param_id = up.make_param_id(params)
        seed = int(seed)
        rel = up.sim_dir(bundle_ref, param_id, seed, self.schema)
        task_id = up.runner_error_task_id(param_id, seed) if error is not None and not outputs else up.runner_task_id(param_id, seed, outputs)
        if if_absent and self.exists(rel):
            try:
                task_id = self.read_json(f"{rel}/result.json").get("task_id", task_id)
            except Exception:
                pass
            return SimWritten(rel, task_id, param_id, seed, bundle_ref, existed=True)

        metadata = {
            "bundle_ref": bundle_ref,
            "entrypoint": entrypoint,
            "params": dict(params),
            "seed": seed,
            "outputs": sorted(declared_outputs) if declared_outputs is not None else None,
            "param_id": param_id,
            "timestamp": timestamp or up.now_iso(),
        }
        self._put_json(f"{rel}/metadata.json", metadata)
        if error is not None and error_details:
            self._put(f"{rel}/error_details.arrow", bytes(error_details))
        infos: dict[str, Any] = {}
        for name, data in outputs.items():
            data = bytes(data)
            if not data:
                continue
            info: dict[str, Any] = {"size": len(data), "checksum": up.artifact_checksum(data)}
            if name == "metadata":
                self._put(f"{rel}/artifact_metadata.json", data)
                info["json_size"] = len(data)
            else:
                self._put(f"{rel}/artifact_{name}.arrow", data)
                pq_bytes = _parquet_copy(data) if self.parquet else None
                if pq_bytes is not None:
                    self._put(f"{rel}/artifact_{name}.parquet", pq_bytes)
                    info["arrow_size"] = len(data)
                    info["parquet_size"] = len(pq_bytes)
            infos[name] = info
        result: dict[str, Any] = {"task_id": task_id, "outputs": infos}
        if error is not None:
            result["error"] = {"error_type": error.error_type, "message": error.message, "retryable": bool(error.retryable)}
            if error_details is not None:
                result["error_details"] = {"size": len(error_details), "checksum": up.artifact_checksum(bytes(error_details))}
        self._put_json(f"{rel}/result.json", result)
        return SimWritten(rel, task_id, param_id, seed, bundle_ref)

    def write_agg(
        self,
        bundle_ref: str,
        target: str,
        input_task_ids: Sequence[str],
        loss: float,
        *,
        param_id: str,
        diagnostics: Optional[Mapping[str, Any]] = None,
        n_replicates: Optional[int] = None,
        timestamp: Optional[str] = None,
        if_absent: bool = False,
    ) -> AggWritten:
        """Writes one aggregation record (``metadata.json`` then ``result.json``).

        ``input_task_ids`` are the task ids of the simulations aggregated, in input order;
        ``param_id`` is the parameter set's id, used for the returned edge only: upstream's
        ``metadata.param_id`` holds the first input's task-id prefix, and so does this file.
        ``loss`` must be finite; ``n_replicates`` defaults to the number of inputs.
        """
        task_ids = [str(t) for t in input_task_ids]
        if not task_ids:
            raise ValueError("an aggregation needs at least one input task id")
        loss = float(loss)
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise ValueError("loss must be finite")
        agg_id = up.aggregation_id(target, task_ids)
        rel = up.agg_dir(bundle_ref, target, agg_id, self.schema)
        if if_absent and self.exists(rel):
            return AggWritten(rel, agg_id, param_id, target, bundle_ref, tuple(task_ids), existed=True)
        metadata = {
            "bundle_ref": bundle_ref,
            "target_entrypoint": target,
            "n_sim_returns": len(task_ids),
            "param_id": task_ids[0][:16],
            "timestamp": timestamp or up.now_iso(),
        }
        result = {
            "aggregation_id": agg_id,
            "loss": loss,
            "diagnostics": dict(diagnostics or {}),
            "n_replicates": int(n_replicates) if n_replicates is not None else len(task_ids),
            "outputs": {},
            "inputs": [{"type": "sim", "task_id": t} for t in task_ids],
        }
        self._put_json(f"{rel}/metadata.json", metadata)
        self._put_json(f"{rel}/result.json", result)
        return AggWritten(rel, agg_id, param_id, target, bundle_ref, tuple(task_ids))

    def __repr__(self) -> str:
        return f"ProvenanceWriter({self.root!r}, schema={self.schema!r})"
