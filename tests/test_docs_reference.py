"""The generated references (settings, metrics) are what the code makes of them."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import get_type_hints

import msgspec
import pytest

from convtrack.config import SECTIONS, KeySettings
from convtrack.deliver.destinations import DESTINATION_KINDS
from convtrack.deliver.destinations.base import DestinationBase
from convtrack.docs_reference import (
    DOCS,
    MISSING,
    REGEN_COMMAND,
    REGION,
    UNITS,
    DocsError,
    declared_metrics,
    hand_column,
    main,
    regenerate,
    unit,
)

ROOT = Path(__file__).resolve().parents[1]


def regions(doc: str) -> dict[str, list[list[str]]]:
    """The rows of each generated table of a doc, as cells."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    found = {}
    for match in REGION.finditer(text):
        lines = match.group("body").splitlines()[2:]
        found[match.group("name")] = [
            [cell.strip() for cell in line.strip()[1:-1].split(" | ")] for line in lines
        ]
    return found


@pytest.mark.parametrize("doc", list(DOCS))
def test_the_generated_tables_are_what_the_code_makes(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    made = regenerate(doc, text)
    if made != text:
        diff = difflib.unified_diff(
            text.splitlines(), made.splitlines(), f"{doc} (committed)", f"{doc} (generated)",
            lineterm="", n=0,
        )  # fmt: skip
        shown = "\n".join(list(diff)[:40])
        pytest.fail(f"{doc} differs from the code: run `{REGEN_COMMAND}` and commit it\n{shown}")


def expected_settings() -> dict[str, list[tuple[str, type[msgspec.Struct]]]]:
    """Each table's settings, by region name, with the struct that declares them."""
    tables: dict[str, list[tuple[str, type[msgspec.Struct]]]] = {
        f"settings {section}": [(f"{section}.{key}", cls) for key in cls.__struct_fields__]
        for section, cls in SECTIONS.items()
    }
    tables["settings keys"] = [
        (f"keys.{key}", KeySettings) for key in KeySettings.__struct_fields__
    ]
    base = DestinationBase.__struct_fields__
    tables["settings destinations"] = [(f"destinations.{key}", DestinationBase) for key in base]
    for kind in DESTINATION_KINDS:
        own = [key for key in kind.__struct_fields__ if key not in base]
        tables[f"settings destinations {kind.__struct_config__.tag}"] = [
            (f"destinations.{key}", kind) for key in own
        ]
    return tables


def test_every_setting_has_a_row_with_its_type_default_unit_and_meaning() -> None:
    found = regions("docs/configuration.md")
    checked = 0
    for name, settings in expected_settings().items():
        assert name in found, f"docs/configuration.md has no region {name!r}"
        rows = {row[0].strip("`"): row for row in found[name]}
        for setting, _cls in settings:
            assert setting in rows, f"{setting} has no row in the region {name!r}"
            *_, type_cell, default, unit_cell, meaning = rows[setting]
            assert type_cell and default and unit_cell != "?", f"{setting}: {rows[setting]}"
            assert meaning and meaning != MISSING, (
                f"{setting}: write its meaning in docs/configuration.md (the last column)"
            )
            checked += 1
    assert checked > 100  # the regions were read


def test_every_number_setting_has_a_unit() -> None:
    named = set()
    for settings in expected_settings().values():
        for setting, cls in settings:
            named.add(setting)
            field_type = get_type_hints(cls, include_extras=True)[setting.partition(".")[2]]
            assert unit(setting, field_type) is not None, (
                f"{setting}: a number whose name ends in no unit; add it to UNITS "
                "in src/convtrack/docs_reference.py"
            )
    assert set(UNITS) <= named, f"UNITS names what is no setting: {sorted(set(UNITS) - named)}"
    assert unit("limits.user_burst", int) == "events"
    assert unit("hot.minute_retention", int) == "minutes"
    assert unit("limits.user_events_per_sec", float) == "events per second"


def test_every_metric_is_in_the_reference_with_its_labels() -> None:
    rows = {row[0].split(" ")[0].strip("`"): row for row in regions("docs/metrics.md")["metrics"]}
    metrics = declared_metrics()
    assert len(metrics) > 30
    for metric in metrics:
        series = f"{metric.name}_total" if metric.kind == "counter" else metric.name
        assert series in rows, f"{series} is not in docs/metrics.md"
        _, kind, labels, help_text, _notes = rows[series]
        assert kind == metric.kind and help_text == metric.help
        assert all(f"`{label}`" in labels for label in metric.labels), (series, labels)
    requests = next(m for m in metrics if m.name == "convtrack_http_requests")
    assert requests.labels == ("route", "status")


def test_the_metrics_reference_is_linked_from_the_docs() -> None:
    assert "(docs/metrics.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(metrics.md)" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


TEXT = """# Doc

Prose.

<!-- generated: settings tokens -->
| setting | env | type | default | unit | meaning |
| --- | --- | --- | --- | --- | --- |
| `tokens.ttl_secs` | `OLD` | old | `1` | old | How long a token lives; a \\| pipe stays. |
| `tokens.gone` | `X` | x | `1` | x | A setting that no longer exists. |
<!-- end generated -->

More prose.
"""


def test_regenerating_keeps_the_prose_and_the_meaning_and_remakes_the_rest() -> None:
    tables = DOCS["docs/configuration.md"]
    only_tokens = {"settings tokens": tables()["settings tokens"]}
    DOCS["docs/test.md"] = lambda: only_tokens
    try:
        made = regenerate("docs/test.md", TEXT)
    finally:
        del DOCS["docs/test.md"]
    assert made.startswith("# Doc\n\nProse.\n\n") and made.endswith("\n\nMore prose.\n")
    assert (
        "| `tokens.ttl_secs` | `CONVTRACK_TOKENS_TTL_SECS` | an integer from 60 to 31536000 "
        "| `604800` | seconds | How long a token lives; a \\| pipe stays. |"
    ) in made
    assert "tokens.gone" not in made
    assert hand_column(made.split("-->\n", 1)[1]) == {
        "`tokens.ttl_secs`": "How long a token lives; a \\| pipe stays."
    }


def test_an_unknown_or_a_missing_region_is_an_error() -> None:
    with pytest.raises(DocsError, match="no table is generated for the region 'settings nope'"):
        regenerate(
            "docs/configuration.md", "<!-- generated: settings nope -->\n<!-- end generated -->"
        )
    with pytest.raises(DocsError, match=r"add the regions <!-- generated: settings server -->"):
        regenerate("docs/configuration.md", TEXT)


def test_the_command_rewrites_a_stale_table_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for doc in DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, tmp_path / doc)
    path = tmp_path / "docs" / "configuration.md"
    committed = path.read_text(encoding="utf-8")
    row = "| `server.port` | `CONVTRACK_SERVER_PORT` | an integer from 0 to 65535 | `8080` |"
    assert row in committed
    path.write_text(committed.replace(row, row.replace("`8080`", "`9999`")), encoding="utf-8")
    assert main(["--check", str(tmp_path)]) == 1
    assert REGEN_COMMAND in capsys.readouterr().out
    assert main([str(tmp_path)]) == 0
    assert path.read_text(encoding="utf-8") == committed
    assert main(["--check", str(tmp_path)]) == 0
