#!/usr/bin/env python3
"""Set-up and everyday commands; needs only Python 3.11+.

    python3 dev.py serve [convtrack serve options]   install, then run the pipeline
    python3 dev.py test [pytest options]             install test tools, lint, type-check, test
    python3 dev.py build-sdk                         build the browser SDK (needs Node.js and npm)

Everything is installed into ./.venv from the package registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


SDK_DIR = ROOT / "sdk" / "js"
SDK_BUILT = ROOT / "src" / "convtrack" / "collect" / "sdk" / "convtrack.js"


def build_sdk(required: bool) -> None:
    """Build sdk/js into the file the collector serves (never committed: see .gitignore).

    Without Node.js and npm the server still runs; /sdk/v1/convtrack.js then
    answers 404 sdk_not_built with this command."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        message = "Node.js and npm are needed to build the browser SDK (apt-get install nodejs npm)"
        if required:
            sys.exit(message)
        print(f"note: {message}; /sdk/v1/convtrack.js will answer 404 until it is built")
        return
    lock = SDK_DIR / "package-lock.json"
    stamp = SDK_DIR / "node_modules" / ".convtrack-installed"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        # Exactly the locked versions (esbuild, typescript: build and check tools only).
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SDK_DIR, check=False
        )
        if result.returncode != 0:
            sys.exit(result.returncode)
        stamp.write_text(digest)
    result = subprocess.run([node, "build.mjs", str(SDK_BUILT)], cwd=SDK_DIR, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "serve":
        ensure_env("")
        build_sdk(required=False)
        os.execv(BIN / "convtrack", [str(BIN / "convtrack"), "serve", *rest])
    elif command == "test":
        ensure_env("test")
        build_sdk(required=False)
        paths = [p for p in ("src", "tests", "bench", "sdk", "dev.py") if (ROOT / p).exists()]
        run(BIN / "ruff", "check", *paths)
        run(BIN / "ruff", "format", "--check", *paths)
        run(BIN / "mypy")
        run(PY, "-m", "pytest", "-q", *rest)
    elif command == "build-sdk":
        build_sdk(required=True)
    else:
        print(__doc__)
        sys.exit(0 if command == "help" else 2)


if __name__ == "__main__":
    main()
