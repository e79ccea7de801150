"""The lake in an S3 bucket (any S3 API: AWS, SeaweedFS, MinIO) through pyarrow.fs.

A single PUT is atomic by itself; a create-if-absent is a PUT with
``If-None-Match: *``, sent with boto3 since pyarrow cannot. DuckDB reads the
Parquet files through a pyarrow dataset on the same file system (no DuckDB
extension to download).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from convtrack.errors import StoreError
from convtrack.optional import S3_CLIENT
from convtrack.store.cold.base import TEMP_PREFIX, ColdStore

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    import pyarrow.fs as pafs

S3_SCHEMES = ("s3://", "s3a://", "s3n://")
# A concurrent conditional PUT on the same key answers 409 ConditionalRequestConflict;
# AWS asks to retry it, and the retry then learns who won (412) or creates the object.
CONDITIONAL_CONFLICT_RETRIES = 5


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEMES)


class S3ColdStore(ColdStore):
    def __init__(
        self,
        fs: pafs.FileSystem,
        *,
        bucket: str,
        prefix: str,
        create_bucket: bool,
        client_options: Mapping[str, Any],
    ) -> None:
        """The lake under ``bucket/prefix`` of ``fs``; boto3 is made from ``client_options``."""
        self.fs = fs
        self.bucket = bucket
        self.root = f"{bucket}/{prefix}" if prefix else bucket
        self.uri = f"s3://{self.root}"
        self._create_bucket = create_bucket
        self._ready = False
        self._client_options = {k: v for k, v in client_options.items() if v is not None}
        self._client: Any = None

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        endpoint_url: str | None = None,
        create_bucket: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> S3ColdStore:
        """The lake at ``s3://bucket/prefix`` (also ``s3a://``, ``s3n://``), reached with
        the AWS variables of ``environ`` (the process's environment by default)."""
        env = os.environ if environ is None else environ
        parsed = urlparse("s3://" + uri.split("://", 1)[1])
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not bucket:
            raise StoreError(f"cold.uri {uri!r} names no bucket")
        endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        options: dict[str, object] = {
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            "connect_timeout": 5,
            "request_timeout": 30,
            "allow_bucket_creation": create_bucket,
        }
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options["endpoint_override"] = host or scheme
            options["scheme"] = scheme if host else "https"
        if env.get("AWS_ACCESS_KEY_ID"):
            options["access_key"] = env["AWS_ACCESS_KEY_ID"]
            options["secret_key"] = env.get("AWS_SECRET_ACCESS_KEY", "")
            if env.get("AWS_SESSION_TOKEN"):
                options["session_token"] = env["AWS_SESSION_TOKEN"]
        import pyarrow.fs as pafs

        try:
            fs = pafs.S3FileSystem(**options)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot use the lake at {uri}: {exc}") from exc
        return cls(
            fs,
            bucket=bucket,
            prefix=prefix,
            create_bucket=create_bucket,
            client_options={
                "region_name": options["region"],
                "endpoint_url": endpoint or None,
                "aws_access_key_id": options.get("access_key"),
                "aws_secret_access_key": options.get("secret_key"),
                "aws_session_token": options.get("session_token"),
            },
        )

    def path(self, relative: str) -> str:
        """``bucket/key``, as pyarrow's file system names it."""
        return f"{self.root}/{relative}"

    def ensure_ready(self) -> None:
        if self._ready:
            return
        import pyarrow.fs as pafs

        try:
            info = self.fs.get_file_info(self.bucket)
            if info.type == pafs.FileType.NotFound:
                if not self._create_bucket:
                    raise StoreError(
                        f"bucket {self.bucket!r} does not exist and cold.create_bucket is false"
                    )
                self.fs.create_dir(self.bucket)
        except OSError as exc:
            raise StoreError(f"cannot reach the lake at {self.uri}: {exc}") from exc
        self._ready = True

    def put(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        try:
            with self.fs.open_output_stream(target) as out:
                out.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc}") from exc

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        client = self._s3()
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.path(relative)[len(self.bucket) + 1 :]
        for attempt in range(CONDITIONAL_CONFLICT_RETRIES + 1):
            try:
                client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return False
                retryable = code == "ConditionalRequestConflict" or status == 409
                if not retryable or attempt == CONDITIONAL_CONFLICT_RETRIES:
                    raise StoreError(f"cannot create {relative}: {exc}") from exc
                time.sleep(0.05 * 2**attempt)
            except (BotoCoreError, OSError) as exc:
                raise StoreError(f"cannot create {relative}: {exc}") from exc
        raise AssertionError("unreachable")

    def _s3(self) -> Any:
        """The boto3 client for conditional creates, made on first use."""
        if self._client is None:
            # boto3 sends the conditional PUT (If-None-Match) that pyarrow cannot.
            boto3 = S3_CLIENT.require()
            self._client = boto3.client("s3", **self._client_options)
        return self._client

    def read(self, relative: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(relative)) as stream:
                data: bytes = stream.read()
                return data
        except OSError as exc:
            raise StoreError(f"cannot read {relative}: {exc}") from exc

    def list(self, relative_dir: str) -> list[str]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(relative_dir), allow_not_found=True, recursive=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise StoreError(f"cannot list {relative_dir}: {exc}") from exc
        prefix = self.root + "/"
        return sorted(
            info.path[len(prefix) :]
            for info in infos
            if info.type == pafs.FileType.File and not info.base_name.startswith(TEMP_PREFIX)
        )

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.path(relative))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete {relative}: {exc}") from exc

    def create_view(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        files: Sequence[str],
        schema: Callable[[], pa.Schema],
    ) -> None:
        import pyarrow.dataset as pads

        dataset = pads.dataset(
            [self.path(f) for f in files], schema=schema(), format="parquet", filesystem=self.fs
        )
        con.register(f"_{view}_dataset", dataset)
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_dataset")
