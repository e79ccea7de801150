"""The lake on a real S3 server (SeaweedFS): the cold-store contract, buckets, an outage
under load, queries."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from convtrack.devservices.seaweed import SeaweedS3
from convtrack.errors import StoreError
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.s3 import S3ColdStore
from tests.conftest import WRITE_KEY, ServerFactory, auth, logged_event_ids
from tests.support.contract.cold_contract import ColdContract
from tests.support.s3_fixtures import S3Target, require_weed


class TestS3ColdContract(ColdContract):
    @pytest.fixture(autouse=True)
    def _bucket(self, s3_bucket: S3Target) -> None:
        self.target = s3_bucket

    def open_store(self, path: Path) -> ColdStore:
        return open_cold_store(self.target.uri, environ=self.target.env)

    def open_uri(self, uri: str) -> ColdStore:
        return open_cold_store(uri, environ=self.target.env)


@pytest.mark.parametrize("scheme", ["s3", "s3a", "s3n"])
def test_an_s3_uri_gives_an_s3_lake(s3_bucket: S3Target, scheme: str) -> None:
    uri = f"{scheme}://{s3_bucket.bucket}/{s3_bucket.prefix}/"
    lake = open_cold_store(uri, environ=s3_bucket.env)
    assert isinstance(lake, S3ColdStore)
    assert lake.uri == s3_bucket.uri
    lake.ensure_ready()
    lake.put("t/a", b"x")
    listed = s3_bucket.filesystem().get_file_info(f"{s3_bucket.bucket}/{s3_bucket.prefix}/t/a")
    assert listed.size == 1


def test_an_s3_uri_without_a_bucket_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="names no bucket"):
        open_cold_store("s3:///lake", environ={})


def test_bucket_is_created_when_missing_and_allowed(s3_service: SeaweedS3) -> None:
    bucket = f"new-{uuid.uuid4().hex[:12]}"
    lake = open_cold_store(f"s3://{bucket}/lake", environ=s3_service.env())
    lake.ensure_ready()
    lake.put("probe.txt", b"x")
    assert lake.list("") == ["probe.txt"]


def test_missing_bucket_is_a_clear_error_when_creation_is_off(s3_service: SeaweedS3) -> None:
    lake = open_cold_store(
        f"s3://absent-{uuid.uuid4().hex[:12]}/x", environ=s3_service.env(), create_bucket=False
    )
    with pytest.raises(StoreError, match="does not exist"):
        lake.ensure_ready()


def test_unreachable_endpoint_is_a_store_error(s3_bucket: S3Target) -> None:
    env = {**s3_bucket.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    with pytest.raises(StoreError):
        open_cold_store(s3_bucket.uri, environ=env).ensure_ready()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A server of this test's own, so it can be stopped without disturbing others."""
    require_weed()
    service = SeaweedS3(tmp_path / "weed")
    service.start()
    yield service
    service.stop()


def send(url: str, ids: list[str]) -> None:
    with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
        for event_id in ids:
            body = {
                "event_id": event_id,
                "event_name": "Purchase",
                "user_id": event_id,
                "value": 5,
                "currency": "USD",
                "campaign_id": "s3",
            }
            assert client.post(f"{url}/v1/track", json=body).status_code == 202


def lake_ids(data_dir: Path, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convtrack",
            "query",
            "--data-dir",
            str(data_dir),
            "--format",
            "json",
            "select event_id from events",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return [row["event_id"] for row in json.loads(out.stdout)]


def test_s3_outage_keeps_ingesting_and_catches_up(
    server_factory: ServerFactory, own_s3: SeaweedS3
) -> None:
    bucket = f"outage-{uuid.uuid4().hex[:10]}"
    env = {
        **own_s3.env(),
        "CONVTRACK_COLD_URI": f"s3://{bucket}/lake",
        "CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "0.3",
    }
    server = server_factory(env)
    server.start()
    query_env = {**server.env}
    deadline = time.monotonic() + 15
    # The lake writer (a child process of serve) creates the bucket as it starts.
    while not httpx.get(f"{server.url}/readyz").json()["cold"]["healthy"]:
        assert time.monotonic() < deadline, "the lake writer never started"
        time.sleep(0.1)
    before = [f"before-{i}" for i in range(10)]
    send(server.url, before)
    deadline = time.monotonic() + 15
    while sorted(lake_ids(server.data_dir, query_env)) != sorted(before):
        assert time.monotonic() < deadline, "the first flush never reached S3"
        time.sleep(0.2)

    own_s3.stop()
    during = [f"during-{i}" for i in range(10)]
    send(server.url, during)  # still 202: the log holds them while S3 is down
    deadline = time.monotonic() + 15
    while True:  # readiness reports the lake's trouble, and stays ready for events
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200
        if not ready.json()["cold"]["healthy"]:
            break
        assert time.monotonic() < deadline, "the failing lake never showed in /readyz"
        time.sleep(0.1)
    own_s3.start()
    deadline = time.monotonic() + 60
    expected = sorted(before + during)
    while sorted(lake_ids(server.data_dir, query_env)) != expected:
        assert time.monotonic() < deadline, "the lake did not catch up after S3 came back"
        time.sleep(0.3)
    assert httpx.get(f"{server.url}/readyz").json()["processor"]["healthy"] is True
    assert server.terminate() == 0
    stored = lake_ids(server.data_dir, query_env)
    assert sorted(stored) == expected == sorted(logged_event_ids(server.data_dir))
