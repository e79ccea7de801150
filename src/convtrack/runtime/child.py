"""A child process of ``convtrack serve``: some roles of the embedded default, on the
serving process's data dir (``runtime/children.py`` starts it).

It reads its spec (settings, roles, a token, where to say its port) as JSON on
stdin, dies with the serving process, serves /healthz, /readyz, /metrics and the
serving process's flush requests on a loopback port of its own, and stops like
``serve`` on SIGTERM: the processor drains, the lake flushes, exit 0.

    python -m convtrack.runtime.child < spec.json
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

# Nothing else of convtrack at the top: the stop signals are caught before the imports.
from convtrack.runtime.stop_signals import remember_stop_signals

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_WATCH_SECS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the serving process dies, SIGKILL included: a child left
    behind would keep the role locks and go on writing the data dir."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the line above
        os._exit(1)
    # Elsewhere (and should the thread that started this process end before the process
    # does, which the signal above follows): the parent changes when it dies.
    watch = threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True)
    watch.start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_WATCH_SECS)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    remember_stop_signals()  # a stop while it imports and builds its roles waits for them
    import msgspec

    from convtrack.errors import ConfigError
    from convtrack.runtime.children import ChildSpec
    from convtrack.runtime.serve import serve_child

    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=ChildSpec)
    die_with_parent(spec.parent_pid)
    try:
        return serve_child(spec)
    except ConfigError as exc:  # one line, as serve says it; the serving process restarts it
        print(f"convtrack ({' '.join(sys.argv[1:])}): {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
