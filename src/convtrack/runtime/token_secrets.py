"""The secrets that sign conversion tokens: from the environment, else the data dir, else new.

``CONVTRACK_TOKEN_SECRET`` signs (and verifies); ``CONVTRACK_TOKEN_SECRET_PREVIOUS``,
when set, is still accepted for verification, so a rotation does not refuse the
tokens already handed out. Without ``CONVTRACK_TOKEN_SECRET`` the secret is read
from ``DATA_DIR/token-secret`` (mode 0600), created on first start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from convtrack.config import Settings
from convtrack.errors import ConfigError

SECRET_ENV = "CONVTRACK_TOKEN_SECRET"
PREVIOUS_ENV = "CONVTRACK_TOKEN_SECRET_PREVIOUS"
FILE_NAME = "token-secret"
MIN_CHARS = 32
MAX_CHARS = 1024


def _check(text: str, where: str) -> bytes:
    if not (MIN_CHARS <= len(text) <= MAX_CHARS and text.isascii() and text.isprintable()):
        raise ConfigError(f"{where} must be {MIN_CHARS} to {MAX_CHARS} printable ASCII characters")
    return text.encode("ascii")


def _read(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token secret at {path}: {exc}") from exc
    return _check(text, f"the token secret in {path}")


def _create(path: Path) -> bytes:
    """Write a new secret durably, never replacing one another process wrote first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # like a rename, but fails instead of replacing
        except FileExistsError:
            return _read(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return text.encode("ascii")


def provision_token_secrets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[bytes, ...]:
    """The secrets to verify with, the signing one first."""
    env = os.environ if environ is None else environ
    from_env = env.get(SECRET_ENV)
    if from_env:
        current = _check(from_env, SECRET_ENV)
    else:
        path = settings.data_dir / FILE_NAME
        current = _read(path) if path.exists() else _create(path)
    previous = env.get(PREVIOUS_ENV)
    if previous:
        old = _check(previous, PREVIOUS_ENV)
        if old != current:
            return (current, old)
    return (current,)
