"""The browser SDK's file, served to any page: no key, CORS-open, cached well.

``/sdk/v1/convtrack.js`` is the current build, cached for 5 minutes so that a
new build reaches pages soon. ``/sdk/v1/convtrack.<hash>.js`` names one build
by its content, cached for a year as immutable (what a page that pins a build,
with Subresource Integrity, loads). ``/sdk/v1/manifest.json`` says which build
is current, its hashed path and its ``integrity`` value.

The file is built from ``sdk/js/`` by the project's set-up (``python3 dev.py
build-sdk``) into this package's ``sdk/`` folder; it is never committed. It is
read on the first request and again whenever it changes on disk, so a rebuild
needs no restart. Unbuilt, the paths answer 404 ``sdk_not_built`` with the
command that builds it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from pathlib import Path

import msgspec

from convtrack.collect.http import Request, Response, error, json_response
from convtrack.model import codes

PREFIX = "/sdk/"
CURRENT_PATH = "/sdk/v1/convtrack.js"
MANIFEST_PATH = "/sdk/v1/manifest.json"
HASHED_TEMPLATE = "/sdk/v1/convtrack.{hash}.js"
BUILT_FILE = Path(__file__).resolve().parent / "sdk" / "convtrack.js"
BUILD_HINT = (
    "the browser SDK is not built: run `python3 dev.py build-sdk` in the repository"
    " (needs Node.js 18+ and npm); it is picked up without a restart"
)

_HASHED = re.compile(r"/sdk/v1/convtrack\.([0-9a-f]{16})\.js")
_VERSION = re.compile(rb"^/\* convtrack\.js (\S+) ")
SHORT_CACHE = b"public, max-age=300"
LONG_CACHE = b"public, max-age=31536000, immutable"
# Any page may load the file: it is public, carries no secret and is fetched without
# credentials; CORS-open so that <script crossorigin integrity=…> works too.
_COMMON_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"vary", b"Accept-Encoding"),
]


class Build(msgspec.Struct, frozen=True):
    """One build of the file, with what its answers need."""

    body: bytes
    gzipped: bytes
    digest: str  # 16 hex characters of its SHA-256: the hashed name
    integrity: str  # Subresource Integrity: sha384-<base64>
    version: str

    @property
    def hashed_path(self) -> str:
        return HASHED_TEMPLATE.replace("{hash}", self.digest)

    @classmethod
    def of(cls, body: bytes) -> Build:
        match = _VERSION.match(body)
        return cls(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            digest=hashlib.sha256(body).hexdigest()[:16],
            integrity="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
            version=match.group(1).decode() if match else "unknown",
        )


class BrowserSdk:
    """Answers every request under ``/sdk/``."""

    def __init__(self, path: Path = BUILT_FILE) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._build: Build | None = None

    def current_build(self) -> Build | None:
        """The file as it is on disk now (re-read only when it changed), or None: not built."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._build = None, None
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp or self._build is None:
            self._build = Build.of(self.path.read_bytes())
            self._stamp = stamp
        return self._build

    async def serve(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            refused = error(405, codes.ERR_METHOD_NOT_ALLOWED)
            refused.headers.append((b"allow", b"GET, HEAD"))  # RFC 9110, 15.5.6
            return refused
        path = request.path
        hashed = _HASHED.fullmatch(path)
        if path not in (CURRENT_PATH, MANIFEST_PATH) and hashed is None:
            return error(404, codes.ERR_NOT_FOUND)
        build = self.current_build()
        if build is None:
            return error(404, codes.ERR_SDK_NOT_BUILT, message=BUILD_HINT)
        if path == MANIFEST_PATH:
            return self._manifest(build)
        if hashed is not None and hashed.group(1) != build.digest:
            # An immutable name must never answer other bytes than its own.
            return error(
                404, codes.ERR_NOT_FOUND, message=f"no such build; current: {build.hashed_path}"
            )
        return self._script(request, build, LONG_CACHE if hashed else SHORT_CACHE)

    def _script(self, request: Request, build: Build, cache: bytes) -> Response:
        etag = f'"{build.digest}"'.encode()
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", cache),
            (b"etag", etag),
            (b"link", f'<{build.hashed_path}>; rel="canonical"'.encode()),
            *_COMMON_HEADERS,
        ]
        if_none_match = request.headers.get("if-none-match", "")
        if etag.decode() in (tag.strip().removeprefix("W/") for tag in if_none_match.split(",")):
            return Response(304, b"", headers)
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            headers.append((b"content-encoding", b"gzip"))
            return Response(200, build.gzipped, headers)
        return Response(200, build.body, headers)

    def _manifest(self, build: Build) -> Response:
        body = {
            "version": build.version,
            "path": CURRENT_PATH,
            "hashed_path": build.hashed_path,
            "integrity": build.integrity,
            "bytes": len(build.body),
            "gzip_bytes": len(build.gzipped),
        }
        headers = [(b"cache-control", SHORT_CACHE), *_COMMON_HEADERS[:3]]
        return json_response(200, body, headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
