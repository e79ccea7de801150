"""The dependency rules of the tree, read from the imports of every module in src/.

- ``model/`` is pure data: it imports no other part of convtrack.
- Stages use ports: only ``runtime/`` (the wiring) imports a concrete backend; a
  backend's own package, and the other backends of ``log/`` or ``store/`` that share
  its client, may too.
- Only the console entry (``__main__``) imports ``cli/``; nothing imports ``testing/``.
- ``collect`` never imports ``deliver``; ``store`` never imports ``process``.

Each failure names the module, the import and the rule, so it says what to change.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "convtrack"
# A module that talks to a backend's own client or files: SQLite, Redis, Kafka, S3, a
# local directory (the lake's two stores).
CONCRETE = re.compile(r"^convtrack\.(log|store)\.(\w+\.)*(sqlite|redis|kafka|s3|local)(_\w+)?$")
BACKEND_HOMES = ("convtrack.log.", "convtrack.store.")
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("convtrack.collect", "convtrack.deliver"),
    ("convtrack.store", "convtrack.process"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) of every convtrack module ``path`` imports, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("convtrack"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("convtrack"):
                continue
            yield node.lineno, node.module
            for alias in node.names:  # `from convtrack.log import sqlite` imports a module
                if f"{node.module}.{alias.name}" in known:
                    yield node.lineno, f"{node.module}.{alias.name}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def edges() -> list[tuple[str, str, str]]:
    """(importer, imported, where) for every import between convtrack modules."""
    known = all_modules()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in imports(path, known):
            if imported in known:
                found.append((importer, imported, f"{path.relative_to(SRC.parent)}:{line}"))
    return found


def test_the_rules_see_the_imports() -> None:
    """A reader that saw nothing would pass every rule: it must see the wiring's."""
    seen = {(a, b) for a, b, _ in edges()}
    assert ("convtrack.runtime.backends", "convtrack.log.sqlite") in seen
    assert any(b == "convtrack.store.cold.s3" for _, b in seen)
    assert any(CONCRETE.match(b) for _, b in seen)


def test_model_imports_no_other_part() -> None:
    bad = [
        f"{where}: {a} imports {b}"
        for a, b, where in edges()
        if within(a, "convtrack.model") and not within(b, "convtrack.model")
    ]
    assert not bad, "model/ is pure data and imports no other part:\n" + "\n".join(bad)


def test_only_runtime_imports_a_concrete_backend() -> None:
    bad = []
    for importer, imported, where in edges():
        if not CONCRETE.match(imported) or within(importer, "convtrack.runtime"):
            continue
        home = imported.rsplit(".", 1)[0]
        if within(importer, home):
            continue  # the backend's own package
        if CONCRETE.match(importer) and importer.startswith(BACKEND_HOMES):
            continue  # a backend sharing another's client (the Redis stores)
        bad.append(f"{where}: {importer} imports {imported}")
    assert not bad, (
        "stages use ports; only runtime/ wires a concrete backend (take it as an "
        "argument, typed by its port):\n" + "\n".join(bad)
    )


def test_only_the_console_entry_imports_cli() -> None:
    bad = [
        f"{where}: {a} imports {b}"
        for a, b, where in edges()
        if within(b, "convtrack.cli") and not within(a, "convtrack.cli")
        and a != "convtrack.__main__"
    ]  # fmt: skip
    assert not bad, "nothing but the console entry imports cli/:\n" + "\n".join(bad)


def test_nothing_in_production_imports_the_test_doubles() -> None:
    bad = [
        f"{where}: {a} imports {b}"
        for a, b, where in edges()
        if within(b, "convtrack.testing") and not within(a, "convtrack.testing")
    ]
    assert not bad, "convtrack.testing is for tests only:\n" + "\n".join(bad)


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_a_stage_never_imports_a_later_or_unrelated_one(importer: str, imported: str) -> None:
    bad = [
        f"{where}: {a} imports {b}"
        for a, b, where in edges()
        if within(a, importer) and within(b, imported)
    ]
    assert not bad, f"{importer} never imports {imported}:\n" + "\n".join(bad)
