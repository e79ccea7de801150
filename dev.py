#!/usr/bin/env python3
"""Set-up and everyday commands; needs only Python 3.11+.

    python3 dev.py serve [convtrack serve options]   install, then run the pipeline
    python3 dev.py test [pytest options]             install test tools, lint, type-check, test

Everything is installed into ./.venv from the package registry.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def run(*args: str | Path) -> None:
    result = subprocess.run([str(a) for a in args], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit("convtrack needs Python 3.11 or newer")
    if not PY.exists():
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as exc:  # e.g. Debian without python3-venv
            sys.exit(
                f"could not create {VENV}: {exc}\n(on Debian/Ubuntu: apt-get install python3-venv)"
            )
    stamp = VENV / f".installed-{extras or 'base'}"
    projects = [ROOT / "pyproject.toml", ROOT / "sdk" / "python" / "pyproject.toml"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in projects if p.exists())).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
        target = f".[{extras}]" if extras else "."
        run(PY, "-m", "pip", "install", "-q", "-e", target)
        if extras == "test":  # the Python SDK, its own distribution, tested with the server
            run(PY, "-m", "pip", "install", "-q", "-e", ROOT / "sdk" / "python")
        stamp.write_text(digest)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "serve":
        ensure_env("")
        os.execv(BIN / "convtrack", [str(BIN / "convtrack"), "serve", *rest])
    elif command == "test":
        ensure_env("test")
        paths = [p for p in ("src", "tests", "bench", "sdk", "dev.py") if (ROOT / p).exists()]
        run(BIN / "ruff", "check", *paths)
        run(BIN / "ruff", "format", "--check", *paths)
        run(BIN / "mypy")
        run(PY, "-m", "pytest", "-q", *rest)
    else:
        print(__doc__)
        sys.exit(0 if command == "help" else 2)


if __name__ == "__main__":
    main()
