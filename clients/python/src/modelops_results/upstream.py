"""Upstream ModelOps ids and provenance layout, in pure Python.

Byte-identical to ``crates/core/src/ids.rs`` and ``paths.rs`` (and so to the Python ModelOps,
``modelops-contracts``, ``modelops-calabaria``; see ``docs/UPSTREAM-FORMAT.md``), checked against
the golden fixtures in ``crates/core/tests/fixtures/upstream`` by ``tests/test_upstream.py``.
The JSON is produced with the stdlib :mod:`json` module with exactly upstream's options, so float
``repr``, ``ensure_ascii`` and key order come out as upstream's do.

Also: the ``SimulationStudy → SimJob`` expansion (``study_to_simjob``), a SimJob's task groups
(``task_groups``, ``target_entrypoints``) and :class:`~modelops_results.Edge` builders from what a
record writer returns (``sim_edge``, ``agg_edge``, ``edge_from_path``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .jobs import Edge

__all__ = [
    "PARAM_ID_PREFIX",
    "SCHEMAS",
    "blake2b_hex",
    "canonical_json",
    "param_preimage",
    "make_param_id",
    "replicate_seed",
    "replicate_seeds",
    "calibration_trial_seed",
    "runner_task_id",
    "runner_error_task_id",
    "canonical_task_id",
    "aggregation_id",
    "legacy_aggregation_id",
    "shard",
    "bundle_digest",
    "bundle12",
    "is_valid_bundle_ref",
    "artifact_checksum",
    "schema_root",
    "sim_dir",
    "agg_dir",
    "target_dir_name",
    "dumps_indent2",
    "now_iso",
    "study_to_simjob",
    "dumps_spec",
    "TaskGroup",
    "task_groups",
    "target_entrypoints",
    "ParsedPath",
    "parse_result_path",
    "relative_result_path",
    "sim_edge",
    "agg_edge",
    "edge_from_path",
]

PARAM_ID_PREFIX = "contracts:param:v1|"
#: The two provenance layouts: ``token/v1`` (upstream's DEFAULT_SCHEMA) and ``bundle/v1``.
SCHEMAS = ("token", "bundle")


def blake2b_hex(data: Union[str, bytes], digest_size: int) -> str:
    """``hashlib.blake2b(data, digest_size=n).hexdigest()`` (str is UTF-8 encoded)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=digest_size).hexdigest()


# --- param_id (MC param_hashing.make_param_id) ------------------------------------------------


def _normalize(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _normalize(value[k], f"{path}.{k}" if path else str(k)) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_normalize(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {path!r} is not a finite float")
        return value  # -0.0 stays -0.0, as upstream's code (not its docstring) does
    raise TypeError(f"parameter {path!r} has unsupported type {type(value).__name__}")


def canonical_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON upstream hashes: keys sorted recursively, no whitespace, raw UTF-8,
    floats as Python ``repr``; raises ``ValueError`` on a non-finite float."""
    return json.dumps(_normalize(params, ""), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def param_preimage(params: Mapping[str, Any]) -> str:
    """``contracts:param:v1|`` + :func:`canonical_json`."""
    return PARAM_ID_PREFIX + canonical_json(params)


def make_param_id(params: Mapping[str, Any]) -> str:
    """The parameter-set id: blake2b-256 of the preimage, 64 hex chars."""
    return blake2b_hex(param_preimage(params), 32)


# --- seeds -------------------------------------------------------------------------------------


def _blake2b_u64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def replicate_seed(param_id: str, replicate: int) -> int:
    """``SimulationStudy.to_simjob``'s seed of replicate ``i`` (entries without a seed)."""
    return _blake2b_u64(f"{param_id}:{replicate}") % 2**32


def replicate_seeds(param_id: str, n_replicates: int) -> list[int]:
    """The seeds of replicates ``0..n-1``."""
    return [replicate_seed(param_id, i) for i in range(n_replicates)]


def calibration_trial_seed(param_id: str, base_seed: int = 42) -> int:
    """Calabaria's trial seed; replicate ``i`` of a calibration trial runs with ``trial_seed + i``."""
    return _blake2b_u64(f"{param_id}:trial{base_seed}") & 0x7FFFFFFF


# --- task and aggregation ids ------------------------------------------------------------------


def runner_task_id(param_id: str, seed: int, output_names: Iterable[str]) -> str:
    """The task id the workers store (``metadata`` included in ``output_names``), 64 hex."""
    return blake2b_hex(f"{param_id[:16]}-{seed}-{','.join(sorted(output_names))}", 32)


def runner_error_task_id(param_id: str, seed: int) -> str:
    """The task id of a failed simulation's return."""
    return blake2b_hex(f"{param_id[:16]}-{seed}-error", 32)


def canonical_task_id(bundle_ref: str, entrypoint: str, param_id: str, seed: int) -> str:
    """The contracts' ``canonical_task_id`` (32 hex). Unused by upstream's store; here for completeness."""
    return blake2b_hex(f"sim:v1|{bundle_ref}|{entrypoint}|{param_id}|{seed}", 16)


def _aggregation_key(target_entrypoint: str, task_ids: Iterable[str]) -> str:
    return f"{target_entrypoint}:{','.join(sorted(task_ids))}"


def aggregation_id(target_entrypoint: str, task_ids: Iterable[str]) -> str:
    """The aggregation id the store uses (blake2b-256 cut to 16 hex); input order does not matter."""
    return blake2b_hex(_aggregation_key(target_entrypoint, task_ids), 32)[:16]


def legacy_aggregation_id(target_entrypoint: str, task_ids: Iterable[str]) -> str:
    """The contracts' unused ``utils.aggregation_id`` (blake2b-128 cut to 16): not the store's."""
    return blake2b_hex(_aggregation_key(target_entrypoint, task_ids), 16)[:16]


def artifact_checksum(data: bytes) -> str:
    """An artifact's checksum: blake2b-256 hex of its bytes."""
    return blake2b_hex(data, 32)


# --- bundle digests and paths ------------------------------------------------------------------


def shard(value: str) -> str:
    """``shard(param_id,2,2)``: ``h[0:2]/h[2:4]`` of blake2b-256 of the text."""
    h = blake2b_hex(str(value), 32)
    return f"{h[0:2]}/{h[2:4]}"


def bundle_digest(bundle_ref: str) -> str:
    """Everything after the first ``:`` (the whole string if none), as the store cuts it."""
    return bundle_ref.split(":", 1)[1] if ":" in bundle_ref else bundle_ref


def bundle12(bundle_ref: str) -> str:
    """The 12 digest characters in record paths."""
    return bundle_digest(bundle_ref)[:12]


_SHA256_HEX = re.compile(r"sha256:[0-9a-f]{64}")


def is_valid_bundle_ref(bundle_ref: str) -> bool:
    """``sha256:<64 hex>``, optionally after a non-empty ``repo@``."""
    repo, at, digest = bundle_ref.rpartition("@")
    if at and not repo:
        return False
    return _SHA256_HEX.fullmatch(digest if at else bundle_ref) is not None


def _check_schema(schema: str) -> str:
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, not {schema!r}")
    return schema


def schema_root(schema: str = "token") -> str:
    """``token/v1`` or ``bundle/v1``."""
    return f"{_check_schema(schema)}/v1"


def sim_dir(bundle_ref: str, param_id: str, seed: int, schema: str = "token") -> str:
    """A simulation record's directory relative to the provenance root."""
    return f"{schema_root(schema)}/sims/{bundle12(bundle_ref)}/{shard(param_id)}/params_{param_id[:8]}/seed_{seed}"


def target_dir_name(target_entrypoint: str) -> str:
    """``target_`` + the entrypoint with ``/`` replaced by ``_`` (``:`` is kept)."""
    return "target_" + target_entrypoint.replace("/", "_")


def agg_dir(bundle_ref: str, target_entrypoint: str, aggregation_id: str, schema: str = "token") -> str:
    """An aggregation record's directory relative to the provenance root."""
    return f"{schema_root(schema)}/aggs/{bundle12(bundle_ref)}/{target_dir_name(target_entrypoint)}/agg_{aggregation_id}"


# --- JSON files --------------------------------------------------------------------------------


def dumps_indent2(obj: Any) -> str:
    """Upstream's record JSON: ``json.dumps(obj, indent=2)`` (no trailing newline)."""
    return json.dumps(obj, indent=2)


def now_iso(when: Optional[datetime] = None) -> str:
    """``datetime.now(UTC).isoformat()``, as upstream stamps records (``+00:00``)."""
    when = datetime.now(timezone.utc) if when is None else when.astimezone(timezone.utc)
    return when.isoformat()


# --- studies and SimJob specs ------------------------------------------------------------------


def study_to_simjob(study: Mapping[str, Any], bundle_ref: str, job_id: str) -> dict[str, Any]:
    """Expands a ``SimulationStudy`` (the ``study.json`` dict, old or new ``parameter_sets``
    form) into the SimJob spec dict upstream's submission writes, keys in upstream's order.
    ``dumps_spec`` of it gives the bytes of ``jobs/simulation/{job_id}.json``."""
    if not is_valid_bundle_ref(bundle_ref):
        raise ValueError(f"bundle_ref must be sha256:<64 hex> or repo@sha256:<64 hex>, got {bundle_ref!r}")
    entrypoint = f"{study['model']}/{study['scenario']}"
    outputs = study.get("outputs")
    outputs = sorted(outputs) if outputs is not None else None
    n_replicates = int(study.get("n_replicates", 1))
    tasks = []
    entries = study["parameter_sets"]
    for entry in entries:
        if isinstance(entry, Mapping) and "params" in entry and isinstance(entry["params"], Mapping):
            params, seed = entry["params"], entry.get("seed")
        else:
            params, seed = entry, None
        param_id = make_param_id(params)
        seeds = [seed] if seed is not None else replicate_seeds(param_id, n_replicates)
        for s in seeds:
            tasks.append(
                {
                    "entrypoint": entrypoint,
                    "bundle_ref": bundle_ref,
                    "params": {"param_id": param_id, "values": dict(params)},
                    "seed": s,
                    "outputs": list(outputs) if outputs is not None else None,
                }
            )
    metadata = {
        "sampling_method": study.get("sampling_method", "manual"),
        "n_parameter_sets": len(entries),
        "n_replicates": n_replicates,
        "model": study["model"],
        "scenario": study["scenario"],
        **dict(study.get("metadata") or {}),
    }
    spec: dict[str, Any] = {
        "job_type": "simulation",
        "job_id": job_id,
        "bundle_ref": bundle_ref,
        "priority": 0,
        "metadata": metadata,
    }
    targets = study.get("targets")
    if targets:
        meta = study.get("metadata") or {}
        ids, tset = meta.get("target_ids"), meta.get("target_set")
        spec["target_spec"] = {
            "data": {"target_entrypoints": list(targets), "target_ids": ids, "target_set": tset},
            "loss_function": "default",
            "weights": None,
            "metadata": {"targets": list(targets), "target_ids": ids, "target_set": tset},
        }
    spec["tasks"] = tasks
    return spec


def dumps_spec(spec: Mapping[str, Any]) -> str:
    """A job spec blob as upstream writes it: ``json.dumps(spec, indent=2, default=str)``."""
    return json.dumps(spec, indent=2, default=str)


@dataclass(frozen=True)
class TaskGroup:
    """The tasks of one parameter set in a SimJob spec (upstream's ``get_task_groups``)."""

    param_id: str
    params: dict
    seeds: tuple
    entrypoint: str
    bundle_ref: str
    outputs: Optional[tuple]
    tasks: tuple = field(default=(), compare=False)
    """The spec's task dicts of this parameter set, in spec order."""


def _unwrap(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    # Accept what JobClient.get_job_spec returns ({"job_type", "job_spec_json", "spec"}) too.
    if "tasks" not in spec and isinstance(spec.get("spec"), Mapping):
        return spec["spec"]
    return spec


def task_groups(spec: Mapping[str, Any]) -> list[TaskGroup]:
    """A SimJob spec's tasks grouped by param_id, in first-seen order (the spec dict, or what
    ``JobClient.get_job_spec`` returns)."""
    spec = _unwrap(spec)
    groups: dict[str, dict[str, Any]] = {}
    for task in spec.get("tasks", []):
        p = task["params"]
        param_id = p["param_id"]
        g = groups.setdefault(
            param_id,
            {"params": dict(p.get("values", {})), "seeds": [], "entrypoint": task["entrypoint"], "bundle_ref": task.get("bundle_ref", spec.get("bundle_ref")), "outputs": task.get("outputs")},
        )
        g["seeds"].append(int(task["seed"]))
        g.setdefault("tasks", []).append(task)
    return [
        TaskGroup(pid, g["params"], tuple(g["seeds"]), g["entrypoint"], g["bundle_ref"], tuple(g["outputs"]) if g["outputs"] is not None else None, tuple(g["tasks"]))
        for pid, g in groups.items()
    ]


def target_entrypoints(spec: Mapping[str, Any]) -> list[str]:
    """The target entrypoints of a SimJob spec (``target_spec.data.target_entrypoints``)."""
    spec = _unwrap(spec)
    ts = spec.get("target_spec") or {}
    data = ts.get("data") or {}
    found = data.get("target_entrypoints") or (ts.get("metadata") or {}).get("targets") or []
    return [str(t) for t in found]


# --- result paths and edges --------------------------------------------------------------------

_SIM_RE = re.compile(r"(token|bundle)/v1/sims/([^/]+)/([0-9a-f]{2})/([0-9a-f]{2})/params_([^/]+)/seed_([0-9]+)")
_AGG_RE = re.compile(r"(token|bundle)/v1/aggs/([^/]+)/target_([^/]+)/agg_([0-9a-f]+)")


@dataclass(frozen=True)
class ParsedPath:
    """What a record directory's path says by itself."""

    path: str
    kind: str  # "sim" or "agg"
    schema: str
    bundle12: str
    param_prefix: Optional[str] = None
    seed: Optional[int] = None
    target_dir: Optional[str] = None  # the entrypoint with "/" → "_"
    aggregation_id: Optional[str] = None


def relative_result_path(path: Union[str, "os.PathLike[str]"], root: Union[str, "os.PathLike[str]", None] = None) -> str:
    """A record directory relative to the provenance root: ``path`` is relative already, or
    absolute under ``root`` (a local path or a URL such as ``az://c/prefix``), or contains
    ``token/v1/`` / ``bundle/v1/`` (what follows it is kept). Trailing ``result.json`` /
    ``metadata.json`` and slashes are dropped."""
    p = os.fspath(path).replace("\\", "/")
    if root is not None:
        r = os.fspath(root).replace("\\", "/").rstrip("/")
        if p.startswith(r + "/"):
            p = p[len(r) + 1 :]
    p = p.rstrip("/")
    for name in ("/result.json", "/metadata.json"):
        if p.endswith(name):
            p = p[: -len(name)]
    if not (p.startswith("token/v1/") or p.startswith("bundle/v1/")):
        for marker in ("/token/v1/", "/bundle/v1/"):
            i = p.rfind(marker)
            if i >= 0:
                p = p[i + 1 :]
                break
    parts = p.split("/")
    if not p or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a record path relative to the provenance root: {os.fspath(path)!r}")
    return p


def parse_result_path(path: Union[str, "os.PathLike[str]"], root: Union[str, "os.PathLike[str]", None] = None) -> ParsedPath:
    """Parses a sim or agg record directory (see :func:`relative_result_path`)."""
    rel = relative_result_path(path, root)
    m = _SIM_RE.fullmatch(rel)
    if m:
        return ParsedPath(rel, "sim", m.group(1), m.group(2), param_prefix=m.group(5), seed=int(m.group(6)))
    m = _AGG_RE.fullmatch(rel)
    if m:
        return ParsedPath(rel, "agg", m.group(1), m.group(2), target_dir=m.group(3), aggregation_id=m.group(4))
    raise ValueError(f"not a sim or agg record directory: {rel!r}")


def sim_edge(bundle_ref: str, param_id: str, seed: int, *, schema: str = "token", role: str = "computed") -> Edge:
    """The edge of a simulation record, from its inputs."""
    return Edge.sim(sim_dir(bundle_ref, param_id, seed, schema), param_id, int(seed), role=role)


def agg_edge(
    bundle_ref: str,
    param_id: str,
    target: str,
    aggregation_id_or_task_ids: Union[str, Sequence[str]],
    *,
    schema: str = "token",
    role: str = "computed",
) -> Edge:
    """The edge of an aggregation record, from its inputs: the aggregation id, or the input
    task ids it is computed from. ``param_id`` is the parameter set's id (not the record
    metadata's ``param_id``, which upstream fills with a task-id prefix)."""
    agg_id = aggregation_id_or_task_ids if isinstance(aggregation_id_or_task_ids, str) else aggregation_id(target, aggregation_id_or_task_ids)
    return Edge.agg(agg_dir(bundle_ref, target, agg_id, schema), param_id, target, agg_id, role=role)


def edge_from_path(
    path: Union[str, "os.PathLike[str]"],
    param_id: str,
    *,
    root: Union[str, "os.PathLike[str]", None] = None,
    target: Optional[str] = None,
    role: str = "computed",
) -> Edge:
    """The edge of the record at ``path`` (absolute under ``root``, or relative, as a writer
    returns it, e.g. upstream ``ProvenanceStore``'s directories). The seed and aggregation id
    are read from the path; ``param_id`` (full, 64 hex) must agree with the path's
    ``params_`` prefix. For an aggregation ``target`` is required unless the entrypoint has
    no ``/`` (the directory name replaces ``/`` by ``_``, which cannot be undone)."""
    parsed = parse_result_path(path, root)
    if parsed.kind == "sim":
        if not param_id.startswith(parsed.param_prefix or ""):
            raise ValueError(f"param_id {param_id[:8]}… does not match the path's params_{parsed.param_prefix}")
        return Edge.sim(parsed.path, param_id, parsed.seed or 0, role=role)
    if target is None:
        target = parsed.target_dir or ""  # right unless the entrypoint holds a "/"
    elif target_dir_name(target) != f"target_{parsed.target_dir}":
        raise ValueError(f"target {target!r} does not match the path's target_{parsed.target_dir}")
    return Edge.agg(parsed.path, param_id, target, parsed.aggregation_id or "", role=role)
