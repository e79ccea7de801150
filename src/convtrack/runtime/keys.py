"""Provision API keys: from the environment (12-factor), else the data dir, else new.

New keys are written to ``DATA_DIR/keys.json`` (mode 0600) and reported once
so ``serve`` can print them on first start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec

from convtrack.collect.auth import ApiKey, valid_secret
from convtrack.config import Settings
from convtrack.errors import ConfigError

ROLES = ("write", "server", "admin")
ENV_BY_ROLE = {role: f"CONVTRACK_{role.upper()}_KEY" for role in ROLES}
_PREFIX = {"write": "ctw_", "server": "cts_", "admin": "cta_"}


class ProvisionedKeys(msgspec.Struct, frozen=True):
    keys: list[ApiKey]
    generated: dict[str, str]  # role -> secret, only for keys created just now

    def secret(self, role: str) -> str:
        return next(k.secret for k in self.keys if k.role == role)


def _read_store(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read stored keys at {path}: {exc}") from exc
    return {role: str(data[role]) for role in ROLES if isinstance(data, dict) and role in data}


def _write_store(path: Path, stored: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(stored, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _provisioning(data_dir: Path) -> Iterator[None]:
    """Collectors starting together on a fresh data dir agree on one set of keys."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def provision_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> ProvisionedKeys:
    with _provisioning(settings.data_dir):
        return _provision_keys(settings, environ)


def _provision_keys(settings: Settings, environ: Mapping[str, str] | None) -> ProvisionedKeys:
    env = os.environ if environ is None else environ
    store_path = settings.data_dir / "keys.json"
    stored = _read_store(store_path)
    generated: dict[str, str] = {}
    secrets_by_role: dict[str, str] = {}
    for role in ROLES:
        from_env = env.get(ENV_BY_ROLE[role])
        if from_env:
            if not valid_secret(from_env):
                raise ConfigError(
                    f"{ENV_BY_ROLE[role]} must be 16 to 128 printable ASCII characters"
                )
            secrets_by_role[role] = from_env
        elif role in stored:
            secrets_by_role[role] = stored[role]
        else:
            secrets_by_role[role] = generated[role] = _PREFIX[role] + secrets.token_urlsafe(24)
    if generated:
        _write_store(store_path, {**stored, **generated})
    origins = frozenset(settings.collect.allowed_origins)
    source = settings.collect.source
    keys = [
        ApiKey(
            secret=secrets_by_role[role],
            role=role,
            source=source,
            allowed_origins=origins if role == "write" else frozenset({"*"}),
        )
        for role in ROLES
    ]
    for extra in settings.keys:
        secret = env.get(extra.key_env)
        if not secret:
            raise ConfigError(f"keys: environment variable {extra.key_env} is not set")
        if not valid_secret(secret):
            raise ConfigError(f"keys: {extra.key_env} must be 16 to 128 printable ASCII characters")
        keys.append(
            ApiKey(
                secret=secret,
                role=extra.role,
                source=extra.source,
                allowed_origins=frozenset(extra.allowed_origins),
            )
        )
    if len({k.secret for k in keys}) != len(keys):
        raise ConfigError("the same key is configured twice")
    return ProvisionedKeys(keys=keys, generated=generated)
