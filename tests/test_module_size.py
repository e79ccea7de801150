"""No module of the package over 400 lines: past that, a module holds more than one job.

Split by job when one grows past it (``deliver/reading.py`` and ``deliver/progress.py``
left the delivery runner that way), not by moving lines around to pass.
"""

from __future__ import annotations

from pathlib import Path

LIMIT = 400
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "convtrack"


def test_no_module_is_over_the_limit() -> None:
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert len(sizes) > 100  # the package was found
    over = {name: lines for name, lines in sorted(sizes.items()) if lines > LIMIT}
    assert not over, f"modules over {LIMIT} lines: {over}"
