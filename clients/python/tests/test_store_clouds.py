"""The record writer on the real object stores the test command starts: Azure Blob (Azurite,
through adlfs) and S3 (moto, through s3fs). Each writes upstream's golden tree and must read
back the golden bytes. Fails (never skips) without the stores' variables: run through
``scripts/test``.
"""

from __future__ import annotations

import os
import uuid

import pytest

from test_upstream import FIXTURES, _write_golden_tree


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with scripts/test, which starts Azurite and moto")
    return value


def _check_golden(root: str) -> None:
    tree = FIXTURES / "tree_token"
    written = _write_golden_tree(root, "token", tree)
    writer = written["writer"]
    for rec in written["aggs"]:
        for name in ("metadata.json", "result.json"):
            assert writer.read_bytes(f"{rec.path}/{name}") == (tree / rec.path / name).read_bytes()
    for sim in written["sims"]:
        assert writer.read_bytes(f"{sim.path}/metadata.json") == (tree / sim.path / "metadata.json").read_bytes()
        assert writer.read_bytes(f"{sim.path}/artifact_prevalence.arrow") == (tree / sim.path / "artifact_prevalence.arrow").read_bytes()
        assert writer.exists(sim.path)
    assert not writer.exists(written["sims"][0].path + "0")


def test_the_writer_on_azure_blob_through_adlfs() -> None:
    from azure.storage.blob import BlobServiceClient

    connection = _required("AZURE_STORAGE_CONNECTION_STRING")
    container = f"pywriter-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(connection).create_container(container)
    # adlfs reads the connection string from the variable upstream uses.
    _check_golden(f"az://{container}/provenance")
    names = {b.name for b in BlobServiceClient.from_connection_string(connection).get_container_client(container).list_blobs()}
    assert any(n.startswith("provenance/token/v1/aggs/") and n.endswith("/result.json") for n in names), names


def test_the_writer_on_s3_through_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    endpoint = _required("MOPS_TEST_S3_ENDPOINT")
    bucket = f"pywriter-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    # Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; the endpoint as botocore reads it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    _check_golden(f"s3://{bucket}/provenance")
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("provenance/token/v1/sims/") and k.endswith("/result.json") for k in keys), keys
