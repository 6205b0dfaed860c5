"""Upstream ids, layout and record writer against every golden fixture of
``crates/core/tests/fixtures/upstream`` (written by the real upstream Python code). Pure Python:
no server needed."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from modelops_results import Edge, ProvenanceWriter, SimError, upstream as up
from modelops_results._proto import attribution_pb2

FIXTURES = Path(__file__).resolve().parents[3] / "crates" / "core" / "tests" / "fixtures" / "upstream"
IDS = json.loads((FIXTURES / "ids.json").read_text(encoding="utf-8"))
BUNDLE = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
PARAM_ID = "761edf35ca1634d79a760bfa7030cf07e72a3559b3cdb0c56d20557de35b1e07"
SIM_DIR = "token/v1/sims/0123456789ab/9a/db/params_761edf35/seed_751131435"
AGG_DIR = "token/v1/aggs/0123456789ab/target_targets.prev:prevalence_target/agg_4efec569a17ca9ef"


def test_fixtures_are_there():
    assert all(len(IDS[k]) > 0 for k in IDS), IDS.keys()
    assert (FIXTURES / "tree_token").is_dir() and (FIXTURES / "tree_bundle").is_dir()


@pytest.mark.parametrize("case", IDS["param_ids"], ids=lambda c: c["param_id"][:8])
def test_param_ids(case):
    params = json.loads(case["params"])
    assert up.param_preimage(params) == case["canonical"]
    assert up.param_preimage(params).encode("utf-8").hex() == case["canonical_utf8_hex"]
    assert up.make_param_id(params) == case["param_id"]


def test_param_id_refuses_non_finite():
    with pytest.raises(ValueError, match=r"a\.b\[1\]"):
        up.make_param_id({"a": {"b": [1, float("nan")]}})
    with pytest.raises(ValueError):
        up.make_param_id({"x": math.inf})
    assert up.make_param_id({"neg0": -0.0}) != up.make_param_id({"neg0": 0.0}), "upstream keeps -0.0"


def test_replicate_seeds():
    for case in IDS["replicate_seeds"]:
        assert up.replicate_seed(case["param_id"], case["i"]) == case["seed"], case


def test_calibration_seeds():
    for case in IDS["calibration_seeds"]:
        trial = up.calibration_trial_seed(case["param_id"], case["base_seed"])
        assert trial == case["trial_seed"], case
        assert [trial + i for i in range(len(case["replicate_set_seeds"]))] == case["replicate_set_seeds"]


def test_runner_task_ids():
    for case in IDS["runner_task_ids"]:
        assert up.runner_task_id(case["param_id"], case["seed"], case["output_names"]) == case["task_id"], case
        assert f"{case['param_id'][:16]}-{case['seed']}-{','.join(sorted(case['output_names']))}" == case["preimage"]
    for case in IDS["runner_error_task_ids"]:
        assert up.runner_error_task_id(case["param_id"], case["seed"]) == case["task_id"], case
    assert up.canonical_task_id(BUNDLE, "models.seir.SEIR/baseline", PARAM_ID, 751131435) == "78fdeef176bbb04a0f6bb14bfbe8b3b4"
    assert IDS["runner_task_ids"][0]["canonical_task_id_unused"] == "78fdeef176bbb04a0f6bb14bfbe8b3b4"


def test_aggregation_ids_and_dirs():
    for case in IDS["aggregation_ids"]:
        target, task_ids = case["target_entrypoint"], case["task_ids"]
        assert up.aggregation_id(target, task_ids) == case["aggregation_id"], case
        assert up.aggregation_id(target, list(reversed(task_ids))) == case["aggregation_id"], "inputs are sorted"
        assert up.legacy_aggregation_id(target, task_ids) == case["utils_aggregation_id_unused"]
        assert up.agg_dir(case["bundle_ref"], target, case["aggregation_id"], "token") == case["agg_dir_token"]
        assert up.agg_dir(case["bundle_ref"], target, case["aggregation_id"], "bundle") == case["agg_dir_bundle"]


def test_sim_dirs():
    for case in IDS["sim_dirs"]:
        assert up.sim_dir(case["bundle_ref"], case["param_id"], case["seed"]) == case["sim_dir_token"], case
        assert up.sim_dir(case["bundle_ref"], case["param_id"], case["seed"], "bundle") == case["sim_dir_bundle"], case


def test_shards():
    for case in IDS["shards"]:
        assert up.shard(case["value"]) == case["shard"], case
        assert up.blake2b_hex(case["value"], 32)[:8] == case["hash8"]


def test_floats_and_strings_as_upstream_json():
    for case in IDS["floats"]:
        value = struct.unpack(">d", int(case["bits"], 16).to_bytes(8, "big"))[0]
        assert up.dumps_indent2(value) == case["json_indent2"], case
        assert up.dumps_indent2([value]) == case["json_in_list_indent2"], case
    for case in IDS["strings"]:
        assert up.dumps_indent2(case["value"]) == case["json_ensure_ascii"], case
        assert json.dumps(case["value"], ensure_ascii=False) == case["json_raw_utf8"], case


def test_bundle_refs():
    assert up.bundle12(BUNDLE) == "0123456789ab"
    assert up.bundle12(f"repo@{BUNDLE}") == "0123456789ab"
    assert up.bundle12("plainstring") == "plainstring"
    assert up.is_valid_bundle_ref(BUNDLE) and up.is_valid_bundle_ref(f"ghcr.io/org/m@{BUNDLE}")
    assert not up.is_valid_bundle_ref(f"@{BUNDLE}")
    assert not up.is_valid_bundle_ref("sha512:abcd")
    assert not up.is_valid_bundle_ref(BUNDLE.upper())


@pytest.mark.parametrize("name,job_id", [("study_plain", "job-5b718dc8"), ("study_seeds", "job-0000abcd")])
def test_study_to_simjob_bytes(name, job_id):
    study = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    spec = up.study_to_simjob(study, BUNDLE, job_id)
    assert up.dumps_spec(spec).encode("utf-8") == (FIXTURES / f"{name}.simjob.json").read_bytes()


def test_task_groups_and_targets():
    spec = json.loads((FIXTURES / "study_seeds.simjob.json").read_text(encoding="utf-8"))
    groups = up.task_groups(spec)
    assert [g.param_id[:8] for g in groups] == ["4dcc7ab1", "06128d69", "773cb431", "9eb49643"]
    assert groups[0].seeds == (7, 0) and groups[1].seeds == (18446744073709551615,)
    assert [t["seed"] for t in groups[0].tasks] == [7, 0] and groups[0].tasks[1] is spec["tasks"][-1]
    assert groups[2].params == {"beta": 0.7, "gamma": 0.15} and groups[2].entrypoint == "models.seir.SEIR/baseline"
    assert up.target_entrypoints(spec) == []
    plain = json.loads((FIXTURES / "study_plain.simjob.json").read_text(encoding="utf-8"))
    assert up.target_entrypoints(plain) == ["targets.prev:prevalence_target"]
    assert up.target_entrypoints({"job_type": "simulation", "spec": plain}) == ["targets.prev:prevalence_target"]
    assert up.task_groups({"job_type": "simulation", "spec": spec}) == groups
    assert len(up.task_groups(plain)) == 3 and all(len(g.seeds) == 3 for g in up.task_groups(plain))


# --- edges -------------------------------------------------------------------------------------


def test_edges_from_inputs_and_paths(tmp_path):
    sim = up.sim_edge(BUNDLE, PARAM_ID, 751131435)
    assert (sim.path, sim.kind, sim.seed, sim.param_id) == (SIM_DIR, "sim", 751131435, PARAM_ID)
    task_ids = IDS["aggregation_ids"][0]["task_ids"]
    agg = up.agg_edge(BUNDLE, PARAM_ID, "targets.prev:prevalence_target", task_ids, role="cache_hit")
    assert (agg.path, agg.aggregation_id, agg.role) == (AGG_DIR, "4efec569a17ca9ef", "cache_hit")
    assert up.agg_edge(BUNDLE, PARAM_ID, "targets.prev:prevalence_target", "4efec569a17ca9ef") == Edge.agg(
        AGG_DIR, PARAM_ID, "targets.prev:prevalence_target", "4efec569a17ca9ef"
    )

    # Absolute paths under a root, relative paths, paths with a result file, URLs.
    root = tmp_path / "provenance"
    for path, kw in [
        (root / SIM_DIR, {"root": root}),
        (str(root / SIM_DIR) + "/", {"root": str(root)}),
        (SIM_DIR, {}),
        (f"/tmp/modelops/provenance/{SIM_DIR}/result.json", {}),
        (f"az://results/provenance/{SIM_DIR}", {"root": "az://results/provenance"}),
    ]:
        assert up.edge_from_path(path, PARAM_ID, **kw) == sim, path
    assert up.edge_from_path(root / AGG_DIR, PARAM_ID, root=root, role="cache_hit") == agg
    deaths = "bundle/v1/aggs/0123456789ab/target_targets.deaths_deaths_target/agg_2bc4368cc2b1db31"
    edge = up.edge_from_path(deaths, PARAM_ID, target="targets.deaths/deaths_target")
    assert (edge.target, edge.aggregation_id, edge.kind) == ("targets.deaths/deaths_target", "2bc4368cc2b1db31", "agg")
    with pytest.raises(ValueError):
        up.edge_from_path(deaths, PARAM_ID, target="targets.prev:prevalence_target")
    with pytest.raises(ValueError):
        up.edge_from_path(SIM_DIR, "ffff" + PARAM_ID[4:])
    with pytest.raises(ValueError):
        up.edge_from_path("token/v1/sims/../../etc", PARAM_ID)
    with pytest.raises(ValueError):
        up.edge_from_path("elsewhere/x", PARAM_ID)

    message = agg.to_proto()
    assert isinstance(message, attribution_pb2.Edge)
    assert message.kind == attribution_pb2.RESULT_KIND_AGG and message.role == attribution_pb2.ROLE_CACHE_HIT
    assert (message.path, message.target, message.aggregation_id, message.param_id) == (
        AGG_DIR,
        "targets.prev:prevalence_target",
        "4efec569a17ca9ef",
        PARAM_ID,
    )
    assert not message.HasField("seed") and sim.to_proto().seed == 751131435


# --- the record writer against the golden trees ------------------------------------------------

T1 = "2026-11-22T20:05:11.254227+00:00"
T2 = "2026-11-22T20:05:12+00:00"
SEEDS = [751131435, 2264224431, 472503505]


def _write_golden_tree(root: Path, schema: str, tree: Path) -> dict:
    writer = ProvenanceWriter(root, schema=schema)
    sims = []
    for seed in SEEDS:
        src = tree / up.sim_dir(BUNDLE, PARAM_ID, seed, schema)
        outputs = {
            "incidence": (src / "artifact_incidence.arrow").read_bytes(),
            "prevalence": (src / "artifact_prevalence.arrow").read_bytes(),
            "metadata": (src / "artifact_metadata.json").read_bytes(),
        }
        rec = writer.write_sim(
            BUNDLE,
            "models.seir.SEIR/baseline",
            {"beta": 0.3, "gamma": 0.1},
            seed,
            outputs,
            declared_outputs=["prevalence", "incidence"],
            timestamp=T2 if seed == 472503505 else T1,
        )
        assert rec.param_id == PARAM_ID and rec.path == up.sim_dir(BUNDLE, PARAM_ID, seed, schema)
        sims.append(rec)
    r0, r1, r2 = (s.task_id for s in sims)
    prev_target = "targets.prev:prevalence_target"
    golden_diag = json.loads(
        (tree / up.agg_dir(BUNDLE, prev_target, "4efec569a17ca9ef", schema) / "result.json").read_text()
    )["diagnostics"]
    agg1 = writer.write_agg(BUNDLE, prev_target, [r0, r1, r2], 0.123456789, param_id=PARAM_ID, diagnostics=golden_diag, n_replicates=3, timestamp=T1)
    agg2 = writer.write_agg(BUNDLE, "targets.deaths/deaths_target", [r2, r0, r1], 2.5, param_id=PARAM_ID, timestamp=T2)
    assert (agg1.aggregation_id, agg2.aggregation_id) == ("4efec569a17ca9ef", "2bc4368cc2b1db31")
    return {"writer": writer, "sims": sims, "aggs": [agg1, agg2]}


@pytest.mark.parametrize("schema", ["token", "bundle"])
def test_writer_reproduces_golden_tree(tmp_path, schema):
    tree = FIXTURES / f"tree_{schema}"
    out = tmp_path / "prov"
    written = _write_golden_tree(out, schema, tree)
    golden_files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    our_files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert our_files == golden_files, "same files, no temp files left"
    for rel in golden_files:
        ours, theirs = (out / rel).read_bytes(), (tree / rel).read_bytes()
        if rel.endswith(".parquet"):
            # Parquet bytes depend on the encoder (upstream: polars); the data must be equal.
            assert pq.read_table(out / rel).equals(pq.read_table(tree / rel)), rel
        elif rel.endswith("/result.json") and "/sims/" in rel:
            ours_obj, theirs_obj = json.loads(ours), json.loads(theirs)
            for name, info in ours_obj["outputs"].items():
                if "parquet_size" in info:
                    assert info["parquet_size"] == (out / rel).with_name(f"artifact_{name}.parquet").stat().st_size
                    info["parquet_size"] = theirs_obj["outputs"][name]["parquet_size"]
            assert up.dumps_indent2(ours_obj).encode() == theirs, rel
        else:
            assert ours == theirs, rel

    writer = written["writer"]
    assert [s.task_id for s in written["sims"]] == IDS["aggregation_ids"][0]["task_ids"]
    # Cache-hit checks through the store, and if_absent writes nothing.
    assert writer.sim_exists(BUNDLE, PARAM_ID, SEEDS[0]) and not writer.sim_exists(BUNDLE, PARAM_ID, 1)
    assert writer.agg_exists(BUNDLE, "targets.deaths/deaths_target", "2bc4368cc2b1db31")
    before = (out / written["sims"][0].path / "metadata.json").read_bytes()
    hit = writer.write_sim(BUNDLE, "models.seir.SEIR/baseline", {"beta": 0.3, "gamma": 0.1}, SEEDS[0], {"x": b"1", "metadata": b"{}"}, if_absent=True)
    assert hit.existed and hit.role == "cache_hit" and hit.task_id == written["sims"][0].task_id
    assert (out / hit.path / "metadata.json").read_bytes() == before
    assert hit.edge() == Edge.sim(hit.path, PARAM_ID, SEEDS[0], role="cache_hit")
    agg_hit = writer.write_agg(BUNDLE, "targets.deaths/deaths_target", [s.task_id for s in written["sims"]], 9.0, param_id=PARAM_ID, if_absent=True)
    assert agg_hit.existed and agg_hit.edge().role == "cache_hit"
    assert written["aggs"][1].edge() == up.edge_from_path(
        out / written["aggs"][1].path, PARAM_ID, root=out, target="targets.deaths/deaths_target"
    )


def test_writer_file_url_pickle_and_errors(tmp_path):
    writer = ProvenanceWriter(f"file://{tmp_path}/p")
    clone = pickle.loads(pickle.dumps(writer))
    rec = clone.write_sim(BUNDLE, "m.x/s", {"a": 1}, 5, {"out": b"not arrow", "empty": b""}, timestamp=T2)
    d = tmp_path / "p" / rec.path
    assert sorted(p.name for p in d.iterdir()) == ["artifact_out.arrow", "metadata.json", "result.json"]
    result = json.loads((d / "result.json").read_text())
    assert list(result["outputs"]) == ["out"] and list(result["outputs"]["out"]) == ["size", "checksum"]
    assert rec.task_id == up.runner_task_id(up.make_param_id({"a": 1}), 5, ["out", "empty"])
    meta = (d / "metadata.json").read_text()
    assert meta.endswith("}") and json.loads(meta)["outputs"] is None

    err = writer.write_sim(BUNDLE, "m.x/s", {"a": 1}, 6, {}, error=SimError("ValueError", "boom"), error_details=b'{"tb": "x"}')
    res = json.loads((tmp_path / "p" / err.path / "result.json").read_text())
    assert err.task_id == up.runner_error_task_id(err.param_id, 6)
    assert res["error"] == {"error_type": "ValueError", "message": "boom", "retryable": False}
    assert res["error_details"]["checksum"] == up.artifact_checksum(b'{"tb": "x"}')
    assert (tmp_path / "p" / err.path / "error_details.arrow").read_bytes() == b'{"tb": "x"}'
    with pytest.raises(ValueError):
        writer.write_agg(BUNDLE, "t:x", [rec.task_id], float("nan"), param_id=rec.param_id)
    with pytest.raises(ValueError):
        writer.write_agg(BUNDLE, "t:x", [], 1.0, param_id=rec.param_id)


def test_writer_on_a_remote_style_filesystem():
    """fsspec's memory filesystem takes the object-store path (one put per file, no rename)."""
    tree = FIXTURES / "tree_token"
    root = f"memory://golden-{id(tree)}"
    written = _write_golden_tree(root, "token", tree)
    writer = written["writer"]
    for rec in written["aggs"]:
        for name in ("metadata.json", "result.json"):
            assert writer.read_bytes(f"{rec.path}/{name}") == (tree / rec.path / name).read_bytes()
    sim = written["sims"][2]
    assert writer.read_bytes(f"{sim.path}/metadata.json") == (tree / sim.path / "metadata.json").read_bytes()
    assert writer.read_json(f"{sim.path}/result.json")["task_id"] == sim.task_id
    assert writer.exists(sim.path) and not writer.exists(sim.path + "0")
