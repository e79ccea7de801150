"""dev.py, the set-up script: its command line, its install plan, its stage summaries.

The stage functions run the real tools (ruff, mypy, pytest from ./.venv) on
small files made here; nothing creates a virtual environment.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_devpy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("devpy_under_test", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


dev = load_devpy()


def run_devpy(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "dev.py"), *args],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["help", "-h", "--help"])
def test_help_prints_the_usage_and_exits_0(flag: str) -> None:
    result = run_devpy(flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == dev.__doc__.strip()
    for command in ("serve", "install", "test", "build-sdk", "docs"):
        assert f"python3 dev.py {command}" in result.stdout


def test_an_unknown_command_prints_the_usage_to_stderr_and_exits_2() -> None:
    result = run_devpy("sevre")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("dev.py: unknown command 'sevre'\n")
    assert "python3 dev.py install [EXTRA...]" in result.stderr


def test_install_of_an_unknown_extra_names_the_known_ones_and_installs_nothing(
    tmp_path: Path,
) -> None:
    # A copy of dev.py beside a copy of pyproject.toml and no .venv: a bad extra
    # must be refused before anything is created.
    shutil.copy(ROOT / "dev.py", tmp_path / "dev.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = run_devpy("install", "kafka", "kafak", root=tmp_path)
    assert result.returncode == 2
    known = ", ".join(sorted(dev.known_extras(ROOT / "pyproject.toml")))
    assert result.stderr == f"dev.py: unknown extra 'kafak'; the extras are: {known}\n"
    assert not (tmp_path / ".venv").exists()


def test_extras_are_named_with_spaces_or_commas_each_once() -> None:
    known = ["all", "kafka", "redis"]
    assert dev.parse_extras(["kafka,redis", "kafka"], known) == ("kafka", "redis")
    assert dev.parse_extras([], known) == ()
    with pytest.raises(dev.UsageError, match="unknown extra 'bogus'; the extras are: all, kafka"):
        dev.parse_extras(["kafka", "bogus"], known)


# -- the extras and the install plan ----------------------------------------------------


def test_all_is_what_distributed_mode_uses_and_the_others_stay() -> None:
    extras = dev.known_extras(ROOT / "pyproject.toml")
    assert {"all", "kafka", "redis", "s3", "dev", "test"} <= set(extras)
    parts = extras["kafka"] | extras["redis"] | extras["s3"] | extras["dev"]
    assert extras["all"] == parts
    assert extras["all"] <= extras["test"]  # the tests use everything distributed mode does


def test_the_install_plan() -> None:
    extras = {"all": frozenset({"k", "r"}), "kafka": frozenset({"k"}), "test": frozenset({"t"})}
    fresh = dev.plan_install(None, "d1", frozenset({"kafka"}), extras)
    assert fresh == {"kafka"}
    installed = ("d1", frozenset({"all"}))
    assert dev.plan_install(installed, "d1", frozenset(), extras) is None  # the base: held
    assert dev.plan_install(installed, "d1", frozenset({"kafka"}), extras) is None  # in all
    assert dev.plan_install(installed, "d1", frozenset({"test"}), extras) == {"all", "test"}
    # The projects changed: what was installed is installed again with what is wanted.
    assert dev.plan_install(installed, "d2", frozenset(), extras) == {"all"}


def test_the_stamp_round_trips_and_a_bad_one_means_install(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp.json"
    assert dev.read_stamp(stamp) is None
    stamp.write_text('{"digest": "abc", "extras": ["kafka", "all"]}')
    assert dev.read_stamp(stamp) == ("abc", frozenset({"kafka", "all"}))
    stamp.write_text("{not json")
    assert dev.read_stamp(stamp) is None


# -- the stages of `dev.py test`, on the real tools ---------------------------------------


def test_the_lint_stage_counts_files_and_names_what_failed(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("X = 1\n")
    (tmp_path / "other.py").write_text("Y = 2\n")
    ok = dev.lint_stage([tmp_path / "good.py", tmp_path / "other.py"])
    assert ok.ok and ok.name == "lint"
    assert ok.detail == "ruff check and ruff format, 2 files"
    assert re.fullmatch(r"lint ok: ruff check and ruff format, 2 files \(\d+\.\d s\)", ok.summary())

    (tmp_path / "ugly.py").write_text("X=1\n")
    unformatted = dev.lint_stage([tmp_path / "good.py", tmp_path / "ugly.py"])
    assert not unformatted.ok and unformatted.returncode != 0
    assert unformatted.detail.startswith("ruff format: 1 of 2 would be reformatted")
    assert unformatted.summary().startswith("lint FAILED: ruff format: 1 of 2 would")

    (tmp_path / "unused.py").write_text("import os\n")
    unused = dev.lint_stage([tmp_path / "unused.py"])
    assert not unused.ok
    assert unused.detail == "ruff check found 1 problem"


def test_the_types_stage_counts_files_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "typed.py"
    good.write_text("def double(x: int) -> int:\n    return 2 * x\n")
    bad = tmp_path / "untyped.py"
    bad.write_text("def half(x: int) -> str:\n    return x // 2\n")
    ok = dev.types_stage([good])
    assert ok.ok and ok.detail == "mypy --strict, 1 file"
    failed = dev.types_stage([good, bad])
    assert not failed.ok
    assert failed.detail == "mypy found 1 error in 1 file (of 2)"


def test_the_tests_stage_counts_what_pytest_ran(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    pass\n\n"
        "def test_passes_too():\n    pass\n\n"
        "def test_fails():\n    assert False\n\n"
        "@pytest.mark.skip(reason='here')\ndef test_skipped():\n    pass\n"
    )
    args = ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)]
    failed = dev.tests_stage(args)
    assert failed.returncode == 1
    assert failed.detail == "1 failed, 2 passed, 1 skipped"

    passed = dev.tests_stage([*args, "-k", "passes"])
    assert passed.ok
    assert passed.detail == "2 passed, 2 deselected"


def test_counts_read_as_pytest_words_them() -> None:
    phrase = dev.counts_phrase
    assert (
        phrase({"passed": 1830, "failed": 2, "skipped": 12}) == "2 failed, 1830 passed, 12 skipped"
    )
    assert phrase({"error": 1, "passed": 1}) == "1 error, 1 passed"
    assert phrase({"error": 3, "warnings": 4}) == "3 errors"
    assert phrase({}) == "no tests ran"


def test_tool_summaries_are_parsed() -> None:
    assert dev.ruff_format_files("310 files already formatted\n") == 310
    assert (
        dev.ruff_format_files(
            "Would reformat: a.py\n1 file would be reformatted, 9 files already formatted\n"
        )
        == 10
    )
    assert dev.ruff_format_files("error: something else\n") is None
    assert dev.mypy_files("Success: no issues found in 183 source files\n") == 183
    text = "a.py:1: error: x  [misc]\nFound 2 errors in 1 file (checked 183 source files)\n"
    assert dev.mypy_files(text) == 183 and dev.mypy_errors(text) == (2, 1)
    assert dev.duration(3.25) == "3.2 s" and dev.duration(725) == "12 min 05 s"


# -- .gitignore -------------------------------------------------------------------------


def readme_created_paths() -> list[str]:
    """What the README's shell commands create in the checkout (dirs end in /)."""
    readme = (ROOT / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", readme, re.DOTALL))
    dirs = re.findall(r"--(?:data-)?dir\s+(\S+)", blocks)
    files = re.findall(r"(?<![0-9&])>\s*([\w./-]+)", blocks)  # redirections
    files += re.findall(r"--config\s+(\S+)", blocks)
    paths = [d.rstrip("/") + "/" for d in dirs] + files
    # What `python3 dev.py serve` and `test` make: the venv and the default data dir.
    paths += [".venv/", "convtrack-data/"]
    return sorted({p.removeprefix("./") for p in paths if not p.startswith(("/", "$", "~"))})


def test_every_path_the_readme_creates_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = readme_created_paths()
    assert {"services/", "services.env", "collector/", "worker/", "convtrack.toml"} <= set(paths)
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = set(result.stdout.split())
    assert ignored == set(paths), f"not in .gitignore: {sorted(set(paths) - ignored)}"


def test_the_distributed_recipe_installs_what_it_uses_first() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Distributed mode\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None
    recipe = found.group(1)
    assert recipe.index("python3 dev.py install all") < recipe.index("dev services up")
    assert "all" in dev.known_extras(ROOT / "pyproject.toml")
