"""The listening sockets of ``serve``, bound before anything else starts.

Binding first means an address that is taken fails the start in one line,
before any key is created or any role runs, and names what to change and,
when Linux lets us see it, which process holds the address.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from convtrack.config import Settings
from convtrack.errors import ConfigError

PORT_SETTING = "--port, CONVTRACK_SERVER_PORT or server.port"
BACKLOG = 4096


def listen(settings: Settings) -> list[socket.socket]:
    """Bound, listening sockets for ``server.host``:``server.port`` (every address the host
    resolves to, as asyncio would bind them)."""
    host, port = settings.server.host, settings.server.port
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (server.host)") from exc
    addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sockets.append(_bind(family, address, settings))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(family: int, address: tuple[object, ...], settings: Settings) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if settings.server.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(_bind_error(exc, settings)) from exc
    return sock


def _bind_error(exc: OSError, settings: Settings) -> str:
    host, port = settings.server.host, settings.server.port
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if exc.errno != errno.EADDRINUSE:
        return f"cannot listen on {where}: {exc.strerror or exc}"
    holder = port_holder(port)
    held = f" (held by {holder})" if holder else ""
    if settings.server.reuse_port:
        held += "; server.reuse_port shares it only with processes that set it too"
    return f"cannot listen on {where}: address already in use{held}; set another {PORT_SETTING}"


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """``pid N: COMMAND`` of a process listening on TCP ``port``, when Linux's /proc shows it.

    Best effort: the socket's inode from /proc/net/tcp{,6}, then the process with
    a descriptor on it. Processes of other users are not visible to everyone.
    """
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if entry.name.isdigit() and _holds(Path(entry.path), targets):
                return f"pid {entry.name}: {_command(Path(entry.path))}"
    return None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    listen_state = "0A"
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != listen_state:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _holds(pid_dir: Path, targets: set[str]) -> bool:
    try:
        descriptors = os.scandir(pid_dir / "fd")
    except OSError:
        return False
    with descriptors:
        for fd in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(fd.path) in targets:
                    return True
    return False


def _command(pid_dir: Path) -> str:
    try:
        argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(" ".join(part.decode(errors="replace").split()) for part in argv if part)
    return text[:200] or "?"  # one line, whatever the arguments held
