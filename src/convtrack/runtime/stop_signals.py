"""SIGTERM and SIGINT that come before uvicorn handles them, remembered for ``serve``.

While a process starts (imports, opening backends, building its roles) a stop
signal must neither kill it half-built nor be lost: it is remembered here and
the stop begins as soon as the server runs (``serve._announce``). uvicorn also
re-raises the signal it handled once it has shut down; this handler makes that
re-raise harmless, so the process exits 0 after draining.
"""

from __future__ import annotations

import signal
import threading

stop_asked = threading.Event()


def remember_stop_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_asked.set())
