#!/usr/bin/env python3
"""Set-up and everyday commands; needs only Python 3.11+.

    python3 dev.py serve [convtrack serve options]   install, then run the pipeline
    python3 dev.py install [EXTRA...]                install convtrack and extras: all (what
                                                     distributed mode uses), kafka, redis, s3,
                                                     dev (the local servers), test
    python3 dev.py test [pytest options]             install test tools, lint, type-check, test
    python3 dev.py build-sdk                         build the browser SDK (needs Node.js and npm)
    python3 dev.py docs                              rewrite the generated tables of docs/ (settings
                                                     in configuration.md, metrics in metrics.md)
    python3 dev.py help                              this text (also -h, --help)

Everything is installed into ./.venv from the package registry. Each step says
what it does; `test` ends every stage (lint, types, tests) with a summary line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".convtrack-installed.json"
PROJECTS = (ROOT / "pyproject.toml", ROOT / "sdk" / "python" / "pyproject.toml")
LINTED = ("src", "tests", "bench", "sdk", "dev.py")
# dev.py is also the pytest plugin (`-p dev`) that hands `test` the outcome counts; so no
# other name here may start with `pytest_` (pytest refuses unknown hooks).
COUNTS_ENV = "CONVTRACK_DEVPY_PYTEST_COUNTS"


class UsageError(Exception):
    """The command line asks for something dev.py does not have (exit 2)."""


def say(text: str) -> None:
    print(f"dev.py: {text}", flush=True)


def duration(secs: float) -> str:
    if secs < 60:
        return f"{secs:.1f} s"
    minutes, rest = divmod(round(secs), 60)
    return f"{minutes} min {rest:02d} s"


# -- installing -----------------------------------------------------------------------


Extras = dict[str, frozenset[str]]  # extra -> its requirements, as pyproject.toml lists them


def known_extras(pyproject: Path = PROJECTS[0]) -> Extras:
    import tomllib  # Python 3.11+, checked before any command needs it

    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    return {name: frozenset(requirements) for name, requirements in sorted(extras.items())}


def parse_extras(args: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """The extras named on the command line (spaces or commas between), each once."""
    names = [name for arg in args for name in arg.split(",") if name]
    for name in names:
        if name not in known:
            raise UsageError(f"unknown extra {name!r}; the extras are: {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def package_name(extras: Iterable[str]) -> str:
    chosen = sorted(extras)
    return f"convtrack[{','.join(chosen)}]" if chosen else "convtrack"


def project_digest() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in PROJECTS if p.exists())).hexdigest()


def read_stamp(path: Path = STAMP) -> tuple[str, frozenset[str]] | None:
    """What the last install put in ./.venv: the projects' digest and its extras."""
    try:
        stamp = json.loads(path.read_text())
        return str(stamp["digest"]), frozenset(stamp["extras"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_install(
    stamp: tuple[str, frozenset[str]] | None,
    digest: str,
    wanted: frozenset[str],
    extras: Extras,
) -> frozenset[str] | None:
    """The extras to install now, or None when ./.venv already holds what is wanted.

    An extra is held when the installed extras require all it does (`all`
    holds `kafka`). After a change to the projects, the extras installed
    before are installed again with the wanted ones, so nothing in ./.venv is
    left at old versions.
    """
    if stamp is None:
        return wanted
    installed_digest, installed = stamp

    def requirements(names: frozenset[str]) -> frozenset[str]:
        return frozenset().union(*(extras.get(name, {name}) for name in names))

    if installed_digest == digest and requirements(wanted) <= requirements(installed):
        return None
    return wanted | installed


ALREADY_THERE = "Requirement already satisfied:"
# pip lines that say nothing a person needs while waiting (where a wheel was cached).
PIP_NOISE = re.compile(rf"^\s*({ALREADY_THERE}|Created wheel for |Stored in directory: )")


def pip_install(*args: str | Path, filtered: bool = True) -> int:
    """pip install, its output as it comes but the noise; how many requirements were there.

    Unfiltered, pip writes to the terminal itself and draws its progress bars:
    for a new ./.venv, where every package is downloaded and none is there yet.
    """
    cmd = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if not filtered:
        code = subprocess.run([*cmd, *map(str, args)], cwd=ROOT, check=False).returncode
        if code != 0:
            sys.exit(code)
        return 0
    with subprocess.Popen(
        [*cmd, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        already = 0
        for line in proc.stdout:
            already += line.startswith(ALREADY_THERE)
            if not PIP_NOISE.match(line):
                print(line, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    return already


def ensure_env(wanted: Iterable[str]) -> None:
    wanted_set = frozenset(wanted)
    fresh = not PY.exists()
    if fresh:
        say(f"creating ./.venv (Python {sys.version.split()[0]})")
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except Exception as exc:  # e.g. Debian without python3-venv
            sys.exit(
                f"could not create {VENV}: {exc}\n(on Debian/Ubuntu: apt-get install python3-venv)"
            )
        say("upgrading pip in ./.venv")
        pip_install("--upgrade", "pip", filtered=False)
    digest = project_digest()
    extras = plan_install(read_stamp(), digest, wanted_set, known_extras())
    if extras is None:
        say(f"./.venv is up to date ({package_name(wanted_set)})")
        return
    started = time.monotonic()
    name = package_name(extras)
    say(f"installing {name} into ./.venv (pip{'; a few minutes the first time' if fresh else ''})")
    target = f".[{','.join(sorted(extras))}]" if extras else "."
    already = pip_install("-e", target, filtered=not fresh)
    if "test" in extras:  # the Python SDK, its own distribution, tested with the server
        say("installing the Python SDK (sdk/python) into ./.venv (pip)")
        already += pip_install("-e", ROOT / "sdk" / "python", filtered=not fresh)
    STAMP.write_text(json.dumps({"digest": digest, "extras": sorted(extras)}) + "\n")
    kept = f"; {already} requirements were already there" if already else ""
    say(f"installed {name} in {duration(time.monotonic() - started)}{kept}")


# -- the browser SDK ------------------------------------------------------------------

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
        say(f"note: {message}; /sdk/v1/convtrack.js will answer 404 until it is built")
        return
    lock = SDK_DIR / "package-lock.json"
    stamp = SDK_DIR / "node_modules" / ".convtrack-installed"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        # Exactly the locked versions (esbuild, typescript: build and check tools only).
        say("installing the browser SDK's build tools into sdk/js/node_modules (npm ci)")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SDK_DIR, check=False
        )
        if result.returncode != 0:
            sys.exit(result.returncode)
        stamp.write_text(digest)
    say(f"building the browser SDK into {SDK_BUILT.relative_to(ROOT)}")
    result = subprocess.run([node, "build.mjs", str(SDK_BUILT)], cwd=SDK_DIR, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


# -- test: the stages and their summary lines -------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of `dev.py test`: what it found, how long it took, the tool's exit code."""

    name: str
    returncode: int
    detail: str
    secs: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        return f"{self.name} {'ok' if self.ok else 'FAILED'}: {self.detail} ({duration(self.secs)})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text, re.MULTILINE)
    return sum(int(n) for n in found) if found else None


def ruff_format_files(output: str) -> int | None:
    """Files `ruff format --check` looked at: "3 files would be reformatted, 307 files
    already formatted" -> 310 (None if it said neither)."""
    return _count(r"(\d+) files? (?:would be reformatted|already formatted|left unchanged)", output)


def ruff_check_problems(output: str) -> int | None:
    return _count(r"^Found (\d+) errors?", output)


def mypy_files(output: str) -> int | None:
    """Source files mypy checked: "Success: no issues found in 183 source files" or
    "Found 2 errors in 1 file (checked 183 source files)"."""
    return _count(r"(\d+) source files?", output)


def mypy_errors(output: str) -> tuple[int, int] | None:
    found = re.search(r"^Found (\d+) errors? in (\d+) files?", output, re.MULTILINE)
    return (int(found.group(1)), int(found.group(2))) if found else None


def counts_phrase(counts: dict[str, int]) -> str:
    """pytest's outcome counts in its own order and words: "2 failed, 1830 passed, 12 skipped"."""
    order = ("failed", "error", "passed", "skipped", "xfailed", "xpassed", "deselected")
    words = {"error": "errors"}
    parts = []
    for key in order:
        n = counts.get(key, 0)
        if n:
            parts.append(f"{n} {words.get(key, key) if n != 1 else key}")
    return ", ".join(parts) or "no tests ran"


# What a tool prints when all is well, folded into the stage's summary line instead.
_SUCCESS_LINES = re.compile(
    r"^(All checks passed!|\d+ files? (already formatted|left unchanged)"
    r"|Success: no issues found in \d+ source files?)$"
)


def _tool(*args: str | Path) -> tuple[int, str]:
    """Run a tool to the end; its exit code and output (stdout and stderr, in order)."""
    result = subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return result.returncode, result.stdout


def _echo(returncode: int, output: str) -> None:
    lines = output.splitlines()
    if returncode == 0:
        lines = [line for line in lines if not _SUCCESS_LINES.match(line.strip())]
    for line in lines:
        print(line, flush=True)


def lint_stage(paths: Sequence[str | Path]) -> Stage:
    started = time.monotonic()
    # No cache: ruff's cache keeps a file's verdict while a module it imports is
    # deleted, so a checkout passed where a clean clone (CI) failed.
    code, output = _tool(BIN / "ruff", "check", "--no-cache", *paths)
    _echo(code, output)
    if code != 0:
        problems = ruff_check_problems(output)
        found = plural(problems, "problem") if problems is not None else "problems"
        return Stage("lint", code, f"ruff check found {found}", time.monotonic() - started)
    code, output = _tool(BIN / "ruff", "format", "--check", "--no-cache", *paths)
    _echo(code, output)
    files = ruff_format_files(output)
    if code != 0:
        unformatted = _count(r"(\d+) files? would be reformatted", output)
        of = f" of {files}" if files is not None else ""
        detail = (
            f"ruff format: {unformatted}{of} would be reformatted (.venv/bin/ruff format fixes it)"
            if unformatted is not None
            else f"ruff format --check exited {code}"
        )
        return Stage("lint", code, detail, time.monotonic() - started)
    counted = f", {plural(files, 'file')}" if files is not None else ""
    return Stage("lint", 0, f"ruff check and ruff format{counted}", time.monotonic() - started)


def types_stage(args: Sequence[str | Path] = ()) -> Stage:
    started = time.monotonic()
    code, output = _tool(BIN / "mypy", *args)
    _echo(code, output)
    files = mypy_files(output)
    counted = f", {plural(files, 'file')}" if files is not None else ""
    if code == 0:
        return Stage("types", 0, f"mypy --strict{counted}", time.monotonic() - started)
    errors = mypy_errors(output)
    if errors is None:
        detail = f"mypy exited {code}"
    else:
        found, where = plural(errors[0], "error"), plural(errors[1], "file")
        of = f" (of {files})" if files is not None else ""
        detail = f"mypy found {found} in {where}{of}"
    return Stage("types", code, detail, time.monotonic() - started)


def tests_stage(pytest_args: Sequence[str]) -> Stage:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="devpy-") as tmp:
        counts_file = Path(tmp) / "counts.json"
        env = {**os.environ, COUNTS_ENV: str(counts_file)}
        if env.get(
            "PYTHONSAFEPATH"
        ):  # `python -m` then leaves ROOT off sys.path: `-p dev` needs it
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        code = subprocess.run(
            [str(PY), "-m", "pytest", "-p", "dev", "-q", *pytest_args],
            cwd=ROOT,
            env=env,
            check=False,
        ).returncode
        try:
            counts: dict[str, int] | None = json.loads(counts_file.read_text())
        except (OSError, ValueError):
            counts = None
    secs = time.monotonic() - started
    if counts is None:
        return Stage("tests", code or 1, f"pytest exited {code} before its summary", secs)
    detail = counts_phrase(counts)
    if code == 5:  # pytest's "no tests were collected" (or all deselected)
        detail = f"no tests ran: {detail}"
    return Stage("tests", code, detail, secs)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The pytest hook `-p dev` adds: write the outcome counts where `dev.py test` reads them."""
    target = os.environ.get(COUNTS_ENV)
    if target:
        stats = terminalreporter.stats
        Path(target).write_text(json.dumps({k: len(v) for k, v in stats.items() if k}))


def run_stages(pytest_args: Sequence[str]) -> int:
    """lint, types, tests: a summary line each; stops at the first that fails (its exit code)."""
    started = time.monotonic()
    paths = [p for p in LINTED if (ROOT / p).exists()]
    stage_runs: dict[str, tuple[str, Callable[[], Stage]]] = {
        "lint": ("ruff check, ruff format --check", lambda: lint_stage(paths)),
        "types": ("mypy", types_stage),
        "tests": ("pytest", lambda: tests_stage(pytest_args)),
    }
    stages: list[Stage] = []
    for name, (tools, stage_run) in stage_runs.items():
        say(f"{name} ({tools})…")
        stage = stage_run()
        stages.append(stage)
        say(stage.summary())
        if not stage.ok:
            say(f"test FAILED at {stage.name} after {duration(time.monotonic() - started)}")
            return stage.returncode
    each = ", ".join(f"{s.name} {duration(s.secs)}" for s in stages)
    say(f"test ok: every stage passed in {duration(time.monotonic() - started)} ({each})")
    return 0


# -- the command line -------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    command, *rest = argv or ["help"]
    if command in {"help", "-h", "--help"}:
        print(__doc__)
        return 0
    try:
        if command not in {"serve", "install", "test", "build-sdk", "docs"}:
            raise UsageError(f"unknown command {command!r}\n{__doc__}")
        if sys.version_info < (3, 11):
            sys.exit("convtrack needs Python 3.11 or newer")
        if command == "serve":
            ensure_env(())
            build_sdk(required=False)
            os.execv(BIN / "convtrack", [str(BIN / "convtrack"), "serve", *rest])
        elif command == "install":
            ensure_env(parse_extras(rest, sorted(known_extras())))
        elif command == "test":
            ensure_env(("test",))
            build_sdk(required=False)
            return run_stages(rest)
        elif command == "docs":
            ensure_env(())
            return subprocess.run(
                [str(PY), "-m", "convtrack.docs_reference", *rest, str(ROOT)], check=False
            ).returncode
        else:
            build_sdk(required=True)
    except UsageError as exc:
        print(f"dev.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
