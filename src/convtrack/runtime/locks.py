"""One process per role where a role cannot share its work: an exclusive lock file each.

On the SQLite log a consumer group has no members to share partitions among,
so two processes of the ``process``, ``store`` or ``deliver`` role on one data
dir would both handle every entry. The SQLite hot store has one writer (the
processor). The ``store`` role also copies the rejects to the lake: with
``hot.kind = "sqlite"`` they are this data dir's SQLite file, which has one
copier; with ``hot.kind = "redis"`` they are shared by every machine, and any
number of store processes may copy them (the lake's conditional manifest
commit makes each reject land once; tests/store/test_rejects_store.py). The
lock is an ``flock`` on ``DATA_DIR/locks/ROLE.lock``:
the kernel releases it when the process dies, SIGKILL included, so a restart
never finds a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable
from pathlib import Path

from convtrack.config import Settings
from convtrack.errors import ConfigError
from convtrack.runtime.roles import Role, Roles


def exclusive_roles(settings: Settings, roles: Iterable[str]) -> list[Role]:
    """The roles among ``roles`` that at most one process may run on this data dir."""
    sqlite_log = settings.log.kind == "sqlite"
    needs = {
        Role.COLLECT: False,
        Role.PROCESS: sqlite_log or settings.hot.kind == "sqlite",
        # and on Kafka, the rejects of this data dir's SQLite file: one copier
        Role.STORE: sqlite_log or settings.hot.kind == "sqlite",
        Role.DELIVER: sqlite_log,
    }
    return [role for role in Roles(roles) if needs[role]]


HANDOVER_SECS = 5.0
HANDOVER_POLL_SECS = 0.02


def _alive(pid_text: str) -> bool:
    """Whether the process that wrote the lock file lives (a zombie does not)."""
    if not pid_text.isdigit():
        return True  # unknown: do not wait for it
    try:
        with open(f"/proc/{pid_text}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RoleLock:
    """Held for the life of the process; ``release`` on a clean stop."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, role: Role) -> RoleLock:
        path = data_dir / "locks" / f"{role}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        handover = time.monotonic() + HANDOVER_SECS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                # A serve that died leaves its children (which inherit its locks) a moment
                # to die with it: wait for them rather than refuse a restart.
                if not _alive(holder) and time.monotonic() < handover:
                    time.sleep(HANDOVER_POLL_SECS)
                    continue
            os.close(fd)
            raise ConfigError(
                f"another process (pid {holder}) already runs the {role} role on {data_dir};"
                f" with this configuration only one may (see docs/operations.md,"
                f" 'Roles and scaling')"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @property
    def fd(self) -> int:
        """The locked file (a child of serve inherits it, and the lock with it)."""
        assert self._fd is not None
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def acquire_role_locks(settings: Settings, roles: Iterable[str]) -> list[RoleLock]:
    locks: list[RoleLock] = []
    try:
        for role in exclusive_roles(settings, roles):
            locks.append(RoleLock.acquire(settings.data_dir, role))
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks
