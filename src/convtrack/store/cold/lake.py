"""The lake's file system: a local directory, or an S3 bucket through pyarrow.fs.

One small surface for the rest of the cold store: put a whole object
atomically (readers never see a partial file), create one only if its name is
free (the manifest's commit point when several writers share a lake), read,
list and delete. On a local disk a put is write-to-temp, fsync, rename, fsync
the directory, and a create-if-absent links the temp file to its name (which
fails if the name exists); on S3 a single PUT is atomic by itself, and a
create-if-absent is a PUT with ``If-None-Match: *`` (sent with boto3, since
pyarrow cannot). Local lakes use the os module directly so ``convtrack query``
does not pay for importing pyarrow's file systems.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from convtrack.errors import StoreError
from convtrack.optional import S3_CLIENT

if TYPE_CHECKING:
    import pyarrow.fs as pafs

Paths = list[str]
# A concurrent conditional PUT on the same key answers 409 ConditionalRequestConflict;
# AWS asks to retry it, and the retry then learns who won (412) or creates the object.
CONDITIONAL_CONFLICT_RETRIES = 5
PROBE_DIR = "_probe"  # outside every table and the manifest: no reader lists it
PROBE_BYTES = b"\0" * 4096  # one file system block: a full disk refuses it


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://", "s3n://"))


class Lake:
    def __init__(self, fs: pafs.FileSystem | None, root: str, *, uri: str, local: bool) -> None:
        self._fs = fs
        self.root = root.rstrip("/")
        self.uri = uri
        self.local = local
        self._bucket: str | None = None
        self._create_bucket = False
        self._ready = local
        self._s3_client_options: dict[str, Any] = {}
        self._s3_client: Any = None

    @property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow file system (for datasets); made on first use for a local lake."""
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    def ensure_ready(self) -> None:
        """Check the bucket (creating it when missing and allowed); once per lake."""
        if self._ready or self._bucket is None:
            return
        import pyarrow.fs as pafs

        try:
            info = self.fs.get_file_info(self._bucket)
            if info.type == pafs.FileType.NotFound:
                if not self._create_bucket:
                    raise StoreError(
                        f"bucket {self._bucket!r} does not exist and cold.create_bucket is false"
                    )
                self.fs.create_dir(self._bucket)
        except OSError as exc:
            raise StoreError(f"cannot reach the lake at {self.uri}: {exc}") from exc
        self._ready = True

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        endpoint_url: str | None = None,
        create_bucket: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> Lake:
        env = os.environ if environ is None else environ
        if uri.startswith("s3a://") or uri.startswith("s3n://"):
            uri = "s3://" + uri.split("://", 1)[1]
        if not uri.startswith("s3://"):
            path = Path(uri).resolve()
            path.mkdir(parents=True, exist_ok=True)
            return cls(None, str(path), uri=str(path), local=True)
        parsed = urlparse(uri)
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
        root = f"{bucket}/{prefix}" if prefix else bucket
        lake = cls(fs, root, uri=uri.rstrip("/"), local=False)
        lake._bucket = bucket
        lake._create_bucket = create_bucket
        lake._s3_client_options = {
            "region_name": options["region"],
            "endpoint_url": endpoint or None,
            "aws_access_key_id": options.get("access_key"),
            "aws_secret_access_key": options.get("secret_key"),
            "aws_session_token": options.get("session_token"),
        }
        return lake

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def put(self, relative: str, data: bytes) -> None:
        """Store ``data`` at ``relative`` so that readers see all of it or nothing."""
        target = self.path(relative)
        try:
            if self.local:
                _put_local(target, data)
            else:
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc}") from exc

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        """Create ``relative`` with ``data`` unless it exists; False when it already did.

        Atomic against every other writer of the lake, in any process: of two
        creates of one name, exactly one returns True, and readers see the
        whole object or nothing.
        """
        target = self.path(relative)
        try:
            if self.local:
                return _create_local(target, data)
            return self._create_s3(relative, data)
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc}") from exc

    def _create_s3(self, relative: str, data: bytes) -> bool:
        client = self._s3()
        from botocore.exceptions import BotoCoreError, ClientError

        assert self._bucket is not None
        key = self.path(relative)[len(self._bucket) + 1 :]
        for attempt in range(CONDITIONAL_CONFLICT_RETRIES + 1):
            try:
                client.put_object(Bucket=self._bucket, Key=key, Body=data, IfNoneMatch="*")
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
            except BotoCoreError as exc:
                raise StoreError(f"cannot create {relative}: {exc}") from exc
        raise AssertionError("unreachable")

    def _s3(self) -> Any:
        """The boto3 client for conditional creates, made on first use."""
        if self._s3_client is None:
            # boto3 sends the conditional PUT (If-None-Match) that pyarrow cannot.
            boto3 = S3_CLIENT.require()
            options = {k: v for k, v in self._s3_client_options.items() if v is not None}
            self._s3_client = boto3.client("s3", **options)
        return self._s3_client

    def read(self, relative: str) -> bytes:
        try:
            if self.local:
                return Path(self.path(relative)).read_bytes()
            with self.fs.open_input_stream(self.path(relative)) as stream:
                data: bytes = stream.read()
                return data
        except OSError as exc:
            raise StoreError(f"cannot read {relative}: {exc}") from exc

    def list(self, relative_dir: str) -> list[str]:
        """Files under ``relative_dir`` (recursive), relative to the lake root; [] if absent."""
        if self.local:
            return self._list_local(relative_dir)
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
            if info.type == pafs.FileType.File and not info.base_name.startswith(".tmp-")
        )

    def _list_local(self, relative_dir: str) -> Paths:
        base = Path(self.path(relative_dir))
        found: Paths = []
        for directory, _, names in os.walk(base):
            for name in names:
                if not name.startswith(".tmp-"):
                    found.append(os.path.relpath(os.path.join(directory, name), self.root))
        return sorted(found)

    def delete(self, relative: str) -> None:
        try:
            if self.local:
                os.unlink(self.path(relative))
                return
            self.fs.delete_file(self.path(relative))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete {relative}: {exc}") from exc

    def probe(self) -> None:
        """Write a small object and delete it: raises StoreError while the lake takes no writes.

        For the cold store's health while it fails (store/cold/retry.py): a
        full disk or an unreachable bucket fails this as it fails a flush.
        """
        self.ensure_ready()
        name = f"{PROBE_DIR}/probe-{uuid.uuid4().hex}"
        self.put(name, PROBE_BYTES)
        self.delete(name)

    def full_uri(self, relative: str) -> str:
        return f"{self.uri}/{relative}"


def _write_temp(directory: str, data: bytes) -> str:
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _put_local(target: str, data: bytes) -> None:
    directory = os.path.dirname(target)
    tmp = _write_temp(directory, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _create_local(target: str, data: bytes) -> bool:
    # link(2) fails with EEXIST when the name is taken, atomically, unlike a rename;
    # the temp file is complete and synced first, so the name never shows a partial file.
    directory = os.path.dirname(target)
    tmp = _write_temp(directory, data)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
