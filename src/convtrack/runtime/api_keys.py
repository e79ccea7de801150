"""Provision API keys: from the environment (12-factor), else the data dir, else new.

New keys are written to ``DATA_DIR/keys.json`` (mode 0600) and reported once
so ``serve`` can print them on first start. ``serve`` provisions them without
storing and stores them (``store_generated``) only once it is listening: a
start that fails (a bad setting) leaves no keys behind that nobody was shown,
and the next start creates and prints them. ``stored_keys`` is what
``convtrack keys show`` prints.
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
    stored_roles: tuple[str, ...] = ()  # the roles whose key was read from keys.json

    def secret(self, role: str) -> str:
        return next(k.secret for k in self.keys if k.role == role)


def store_path(data_dir: Path) -> Path:
    return data_dir / "keys.json"


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
    """Collectors starting together on a fresh data dir agree on one set of keys (or, when
    they store keys only once listening, the later one fails its start and says why)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def provision_keys(
    settings: Settings, environ: Mapping[str, str] | None = None, store: bool = True
) -> ProvisionedKeys:
    """The keys to check; ``store=False`` leaves new ones for ``store_generated``."""
    with _provisioning(settings.data_dir):
        keys = _provision_keys(settings, environ)
        if store:
            _store(settings.data_dir, keys.generated)
        return keys


def store_generated(settings: Settings, keys: ProvisionedKeys) -> None:
    """Store the keys ``provision_keys(store=False)`` created, unless another process stored
    other keys for those roles meanwhile (then this process's keys would be unknown to it)."""
    if not keys.generated:
        return
    with _provisioning(settings.data_dir):
        stored = _read_store(store_path(settings.data_dir))
        taken = sorted(r for r, s in keys.generated.items() if stored.get(r, s) != s)
        if taken:
            raise ConfigError(
                f"another process created the {', '.join(taken)} key(s) in"
                f" {store_path(settings.data_dir)} while this one started; start again"
            )
        _store(settings.data_dir, keys.generated)


def _store(data_dir: Path, generated: dict[str, str]) -> None:
    if generated:
        path = store_path(data_dir)
        _write_store(path, {**_read_store(path), **generated})


def stored_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every role's key as ``serve`` uses it: the environment's, else keys.json's."""
    env = os.environ if environ is None else environ
    path = store_path(settings.data_dir)
    stored = _read_store(path)
    found = {role: env.get(ENV_BY_ROLE[role]) or stored.get(role, "") for role in ROLES}
    missing = [role for role, secret in found.items() if not secret]
    if missing:
        raise ConfigError(
            f"no key for {', '.join(missing)} in {path} nor in"
            f" {', '.join(ENV_BY_ROLE[role] for role in missing)}: `convtrack serve"
            f" --data-dir {settings.data_dir}` creates them on its first start"
        )
    return found


def _provision_keys(settings: Settings, environ: Mapping[str, str] | None) -> ProvisionedKeys:
    env = os.environ if environ is None else environ
    stored = _read_store(store_path(settings.data_dir))
    generated: dict[str, str] = {}
    secrets_by_role: dict[str, str] = {}
    from_store: list[str] = []
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
            from_store.append(role)
        else:
            secrets_by_role[role] = generated[role] = _PREFIX[role] + secrets.token_urlsafe(24)
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
    return ProvisionedKeys(keys=keys, generated=generated, stored_roles=tuple(from_store))
