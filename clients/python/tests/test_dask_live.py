"""The runner kit end to end: a dask.distributed LocalCluster with worker processes writes a
study in the upstream layout (ProvenanceWriter), reports progress and edges as futures finish
(run + track), survives a worker killed mid-job (its task is retried and still counted once),
and a second overlapping job finds the shared results as cache hits. Both loss tables are
checked. Needs the live server the Rust integration tests start (``MOPS_ENDPOINT``,
``MOPS_TEST_RESULTS_DIR``; the provenance store is its sibling ``provenance``)."""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import pytest

_REQUIRED = ["MOPS_ENDPOINT", "MOPS_TEST_RESULTS_DIR"]
if any(not os.environ.get(name) for name in _REQUIRED):
    # Fail, never skip (a skipped module would read as a pass); see test_client.py.
    pytest.fail(f"{__name__} needs a live server: set {', '.join(_REQUIRED)} (run through the Rust integration tests)", pytrace=False)

import pyarrow as pa
from distributed import Client, LocalCluster

from modelops_results import JobClient, JobHandle, NotFound, ProvenanceWriter, ResultClient, run, track
from modelops_results import upstream as up

ENDPOINT = os.environ["MOPS_ENDPOINT"]
PROVENANCE = Path(os.environ["MOPS_TEST_RESULTS_DIR"]).parent / "provenance"
TARGET = "targets.prev:prevalence_target"
OUTPUTS = ["prevalence"]


def simulate(writer: ProvenanceWriter, task: dict, crash_marker: str):
    """One simulation, as a model wire function would run it, written in the upstream layout.
    The first attempt of the task named by ``crash_marker`` kills its worker process."""
    if crash_marker and not os.path.exists(crash_marker):
        open(crash_marker, "w").close()
        os._exit(1)
    seed, params = task["seed"], task["params"]["values"]
    table = pa.table({"day": list(range(5)), "prevalence": [params["beta"] * (d + 1) + (seed % 89) / 10_000 for d in range(5)]})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    meta = up.dumps_indent2({"entrypoint": task["entrypoint"], "seed": seed, "params": params}).encode()
    return writer.write_sim(
        task["bundle_ref"], task["entrypoint"], params, seed, {"prevalence": sink.getvalue(), "metadata": meta},
        param_id=task["params"]["param_id"], declared_outputs=task["outputs"], if_absent=True,
    )


def expected_loss(params: dict) -> float:
    return (params["beta"] - 0.3) ** 2 + (params["gamma"] - 0.1) ** 2


def aggregate(writer: ProvenanceWriter, bundle_ref: str, param_id: str, params: dict, *sims):
    return writer.write_agg(
        bundle_ref, TARGET, [s.task_id for s in sims], expected_loss(params), param_id=param_id,
        diagnostics={"per_replicate_losses": [expected_loss(params)] * len(sims)}, if_absent=True,
    )


def run_study(client: Client, jobs: JobClient, study: dict, bundle_ref: str, crash_marker: str = "") -> str:
    job_id = "job-" + uuid.uuid4().hex[:8]
    jobs.register_job(job_id, study=study, bundle_ref=bundle_ref)
    spec = jobs.get_job_spec(job_id)["spec"]
    writer = ProvenanceWriter(PROVENANCE)
    handle = JobHandle(job_id, ENDPOINT)
    with run(handle, progress_interval=0.05) as job:
        sims, aggs = [], []
        for group in up.task_groups(spec):
            tasks = group.tasks
            futs = [
                client.submit(simulate, writer, t, crash_marker if (crash_marker and i == 0 and not sims) else "",
                              key=f"sim-{job_id}-{group.param_id}-{t['seed']}", retries=2)
                for i, t in enumerate(tasks)
            ]
            sims += futs
            aggs.append(client.submit(aggregate, writer, bundle_ref, group.param_id, group.params, *futs,
                                      key=f"agg-{job_id}-{group.param_id}-{TARGET}"))
        errors = [e for _, _, e in track(sims + aggs, job) if e]  # agg-* keys are not counted
        assert not errors, errors
    return job_id


def losses(results: ResultClient, job_id: str, wait: float = 20.0):
    """The job's loss table, once the query service's catalog has picked the new job up."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return results.get_losses(job_id)
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dask_local_cluster_end_to_end(tmp_path):
    bundle_ref = "sha256:" + uuid.uuid4().hex * 2
    sets = [{"beta": 0.1 * (i + 1), "gamma": 0.1} for i in range(4)]
    study = {"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": sets, "sampling_method": "manual",
             "n_replicates": 3, "outputs": OUTPUTS, "metadata": {"name": "kit-e2e"}, "targets": [TARGET]}
    overlapping = dict(study, parameter_sets=sets[2:] + [{"beta": 0.9, "gamma": 0.2}])
    jobs = JobClient(ENDPOINT, timeout=60)
    marker = str(tmp_path / "crashed-once")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        job_a = run_study(client, jobs, study, bundle_ref, crash_marker=marker)
        assert os.path.exists(marker), "a worker was killed mid-job"
        job_b = run_study(client, jobs, overlapping, bundle_ref)

    for job_id, n_sets, hits in ((job_a, 4, 0), (job_b, 3, 2)):
        state = jobs.get_job(job_id)
        assert state["status"] == "succeeded", state
        assert (state["tasks_completed"], state["tasks_total"]) == (3 * n_sets, 3 * n_sets), "each task counted once"
        counts = jobs.get_attribution(job_id)["counts"]
        assert (counts["sims"], counts["aggs"]) == (3 * n_sets, n_sets), counts
        assert counts["cache_hits"] == hits * 3 + hits, counts
        jobs.index_job(job_id, wait=True, timeout=60)

    results = ResultClient(ENDPOINT)
    for job_id, param_sets in ((job_a, sets), (job_b, overlapping["parameter_sets"])):
        df = losses(results, job_id)
        assert len(df) == len(param_sets) and set(df["status"]) == {"ok"} and set(df["target"]) == {TARGET}
        want = {up.make_param_id(p): expected_loss(p) for p in param_sets}
        got = dict(zip(df["param_id"], df["loss"]))
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-12 for k in want), (got, want)
        assert set(df["n_replicates"]) == {3}
        # The aggregations carried per-replicate losses: one row per replicate, with its seed.
        reps = results.get_replicates(job_id)
        assert len(reps) == 3 * len(param_sets) and sorted(set(reps["replicate_idx"])) == [0, 1, 2]
        seeds = {(t["params"]["param_id"], t["seed"]) for t in jobs.get_job_spec(job_id)["spec"]["tasks"]}
        assert set(zip(reps["param_id"], reps["seed"])) == seeds
    shared = {up.make_param_id(p) for p in sets[2:]}
    df_b = losses(results, job_b)
    assert {pid for pid, hit in zip(df_b["param_id"], df_b["cache_hit"]) if hit} == shared
