"""S3 for tests: one real SeaweedFS server per session, a fresh bucket per test.

Loaded as a pytest plugin from tests/conftest.py. Tests that need S3 ask for
``s3_bucket`` (an :class:`S3Target`) or, rarely, ``s3_service`` itself. They
skip, with how to fix it, only when the ``weed`` binary is not installed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from convtrack.devservices import SeaweedS3, WeedNotFoundError, find_weed

if TYPE_CHECKING:
    import pyarrow.fs


@dataclass(frozen=True)
class S3Target:
    """Where a test may write: ``uri`` is ``s3://<bucket>/<prefix>``, in a bucket of its own."""

    uri: str
    bucket: str
    prefix: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    env: Mapping[str, str]

    def filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A pyarrow S3 filesystem for this server; paths are ``bucket/key``."""
        return s3_filesystem(self.endpoint_url, self.access_key, self.secret_key, self.region)


def s3_filesystem(
    endpoint_url: str, access_key: str, secret_key: str, region: str
) -> pyarrow.fs.S3FileSystem:
    import pyarrow.fs

    scheme, _, host = endpoint_url.partition("://")
    return pyarrow.fs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        endpoint_override=host,
        scheme=scheme,
        region=region,
        allow_bucket_creation=True,
        allow_bucket_deletion=True,
    )


def require_weed() -> None:
    """Skip the calling test when SeaweedFS's binary is not installed."""
    try:
        find_weed()
    except WeedNotFoundError as exc:
        pytest.skip(f"no S3 server for this test: {exc}")


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server on free 127.0.0.1 ports for the whole session."""
    require_weed()
    service = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def s3_bucket(s3_service: SeaweedS3) -> S3Target:
    """A new, empty bucket on the session's server, and how to reach it."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    prefix = "data"
    fs = s3_filesystem(
        s3_service.endpoint_url, s3_service.access_key, s3_service.secret_key, s3_service.region
    )
    fs.create_dir(bucket)
    return S3Target(
        uri=f"s3://{bucket}/{prefix}",
        bucket=bucket,
        prefix=prefix,
        endpoint_url=s3_service.endpoint_url,
        access_key=s3_service.access_key,
        secret_key=s3_service.secret_key,
        region=s3_service.region,
        env=s3_service.env(),
    )
