"""The generated parts of the docs: the settings reference and the metrics reference.

docs/configuration.md and docs/metrics.md hold tables between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``; everything outside
them is written by hand. In such a table the rows, and every column but the
last, are made from the code: the settings structs (``config.py``,
each destination's ``settings.py``: name, environment variable, type and bounds,
default, unit) and the metrics declared in ``observe/metrics.py`` (name, type,
labels, help). The last column (a setting's meaning, a metric's notes) is
written by hand and kept from the file, matched by the row's first cell; a new
row gets ``MISSING`` there, which tests/test_docs_reference.py refuses in the
settings. ``python3 dev.py docs`` rewrites the tables; ``--check`` only says
which files differ::

    python -m convtrack.docs_reference [--check] [ROOT]
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_args, get_origin, get_type_hints

import msgspec
from prometheus_client.metrics import MetricWrapperBase

from convtrack.config import SECTIONS, KeySettings, env_name
from convtrack.config_errors import expected
from convtrack.deliver.destinations import DESTINATION_KINDS
from convtrack.deliver.destinations.base import DestinationBase
from convtrack.observe.histogram import BatchHistogram
from convtrack.observe.metrics import Metrics

REGEN_COMMAND = "python3 dev.py docs"
MISSING = "(to be written)"
REGION = re.compile(
    r"^<!-- generated: (?P<name>[a-z0-9_ -]+?) -->\n(?P<body>.*?)^<!-- end generated -->$",
    re.S | re.M,
)
# The unit of a number, read from how its name ends (CONTRACT's names carry their unit).
UNIT_SUFFIXES = (
    ("_secs", "seconds"),
    ("_ms", "milliseconds"),
    ("_msec", "milliseconds"),
    ("_minutes", "minutes"),
    ("_hours", "hours"),
    ("_days", "days"),
    ("_bytes", "bytes"),
    ("_chars", "characters"),
    ("_events", "events"),
    ("_rows", "rows"),
    ("_ratio", "fraction of 1"),
)
# The unit of each number whose name does not end in one.
UNITS = {
    "server.port": "TCP port",
    "server.max_connections": "connections",
    "log.kafka_partitions": "partitions",
    "log.kafka_replication": "replicas",
    "limits.user_burst": "events",
    "limits.max_properties": "members and items",
    "limits.max_properties_depth": "levels",
    "hot.minute_retention": "minutes",
    "process.poison_attempts": "attempts",
    "deadletters.alert_threshold": "dead letters",
    "deadletters.max_per_destination": "dead letters",
    "destinations.max_attempts": "attempts",
    "destinations.breaker_threshold": "batches",
    "destinations.min_value": "minor units",
    "destinations.max_in_flight": "requests",
    "destinations.max_lines": "lines",
}
NO_UNIT = "—"


class DocsError(Exception):
    """A doc's generated regions do not match what the code has (unknown or missing)."""


class Table(NamedTuple):
    """A generated table: the header, and each row's cells but the last, hand-written one."""

    header: tuple[str, ...]
    rows: list[list[str]]


# -- settings ---------------------------------------------------------------------------


def _numeric(field_type: Any) -> bool:
    while get_origin(field_type) is not None:
        args = [arg for arg in get_args(field_type) if arg is not type(None)]
        field_type = args[0]
    return field_type in (int, float)


def unit(setting: str, field_type: Any) -> str | None:
    """The unit of a setting: ``NO_UNIT`` for what is no number, None for a number without."""
    if not _numeric(field_type):
        return NO_UNIT
    if setting in UNITS:
        return UNITS[setting]
    key = setting.rpartition(".")[2]
    if key.endswith("_per_sec"):
        return f"{key.removesuffix('_per_sec').rpartition('_')[2]} per second"
    return next((name for suffix, name in UNIT_SUFFIXES if key.endswith(suffix)), None)


def shown(value: Any) -> str:
    """A default as TOML writes it."""
    if value is None:
        return "none"
    return f"`{msgspec.json.encode(value).decode()}`"


def default_of(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        return shown(field.default_factory())
    return shown(field.default)


def _type_cell(field_type: Any, env: bool) -> str:
    text = expected(field_type)
    if not env:
        text = re.sub(r" \(environment: [^)]*\)", "", text)
    return text.replace("|", "\\|")


def _rows(
    prefix: str, cls: type[msgspec.Struct], *, env: bool, skip: Sequence[str] = ()
) -> list[list[str]]:
    hints = get_type_hints(cls, include_extras=True)
    rows = []
    for field in msgspec.structs.fields(cls):
        if field.name in skip:
            continue
        setting = f"{prefix}.{field.name}"
        hint = hints[field.name]
        cells = [f"`{setting}`"]
        if env:
            cells.append(f"`{env_name(prefix, field.name)}`")
        cells += [_type_cell(hint, env), default_of(field), unit(setting, hint) or "?"]
        rows.append(cells)
    return rows


def _kind_defaults(field: str, base: str) -> str:
    """The base default, then each kind's own where it differs (webhook `500`, …)."""
    differs = []
    for kind in DESTINATION_KINDS:
        own = default_of(next(f for f in msgspec.structs.fields(kind) if f.name == field))
        if own != base:
            differs.append(f"`{kind.__struct_config__.tag}` {own}")
    return base if not differs else f"{base}; {', '.join(differs)}"


SECTION_HEADER = ("setting", "env", "type", "default", "unit", "meaning")
TABLE_HEADER = ("setting", "type", "default", "unit", "meaning")


def settings_tables() -> dict[str, Table]:
    """Every table of docs/configuration.md, by region name."""
    tables = {
        f"settings {section}": Table(SECTION_HEADER, _rows(section, cls, env=True))
        for section, cls in SECTIONS.items()
    }
    tables["settings keys"] = Table(TABLE_HEADER, _rows("keys", KeySettings, env=False))
    tags = [kind.__struct_config__.tag for kind in DESTINATION_KINDS]
    kind_row = ["`destinations.kind`", "one of " + ", ".join(f"`{t}`" for t in tags)]
    common = [[*kind_row, "required", NO_UNIT], *_rows("destinations", DestinationBase, env=False)]
    for row in common[1:]:
        row[2] = _kind_defaults(row[0].strip("`").partition(".")[2], row[2])
    tables["settings destinations"] = Table(TABLE_HEADER, common)
    base = tuple(DestinationBase.__struct_fields__)
    for kind in DESTINATION_KINDS:
        rows = _rows("destinations", kind, env=False, skip=base)
        tables[f"settings destinations {kind.__struct_config__.tag}"] = Table(TABLE_HEADER, rows)
    return tables


# -- metrics ----------------------------------------------------------------------------


class MetricDoc(NamedTuple):
    name: str  # as declared (a counter's series adds _total)
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


def declared_metrics() -> list[MetricDoc]:
    """Every metric on the app's registry, in the order observe/metrics.py declares them."""
    metrics = Metrics()
    found = []
    for holder in (metrics, metrics.deliver):
        for value in vars(holder).values():
            if isinstance(value, MetricWrapperBase):
                # prometheus_client keeps these without a public reader; read as declared.
                labels = tuple(value._labelnames)
                found.append(MetricDoc(value._name, str(value._type), labels, value._documentation))
            elif isinstance(value, BatchHistogram):
                found.append(MetricDoc(value.name, "histogram", value.labels, value.documentation))
    registered = sorted(family.name for family in metrics.registry.collect())
    if registered != sorted(m.name for m in found):
        missed = sorted(set(registered) - {m.name for m in found})
        raise DocsError(f"metrics on the registry that declared_metrics() does not see: {missed}")
    return found


def _series(metric: MetricDoc) -> str:
    if metric.kind == "counter":
        return f"`{metric.name}_total`"
    if metric.kind == "histogram":
        return f"`{metric.name}` (`_bucket`, `_sum`, `_count`)"
    return f"`{metric.name}`"


def metrics_tables() -> dict[str, Table]:
    rows = [
        [_series(m), m.kind, ", ".join(f"`{label}`" for label in m.labels) or NO_UNIT, m.help]
        for m in declared_metrics()
    ]
    return {"metrics": Table(("metric", "type", "labels", "help", "notes"), rows)}


# -- the regions ------------------------------------------------------------------------


DOCS: dict[str, Callable[[], dict[str, Table]]] = {
    "docs/configuration.md": settings_tables,
    "docs/metrics.md": metrics_tables,
}


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def hand_column(body: str) -> dict[str, str]:
    """A region's hand-written last column, by each row's first cell."""
    kept = {}
    for line in body.splitlines()[2:]:
        if line.startswith("|"):
            cells = _cells(line)
            kept[cells[0]] = cells[-1]
    return kept


def render(table: Table, kept: Mapping[str, str], missing: str) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + " --- |" * len(table.header)]
    for row in table.rows:
        lines.append("| " + " | ".join([*row, kept.get(row[0]) or missing]) + " |")
    return "\n".join(lines) + "\n"


def regenerate(doc: str, text: str) -> str:
    """``text`` (of the file ``doc``, a key of DOCS) with its generated regions remade."""
    tables = DOCS[doc]()
    missing = MISSING if doc == "docs/configuration.md" else ""
    seen = []

    def remade(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            raise DocsError(f"{doc}: no table is generated for the region {name!r}")
        seen.append(name)
        body = render(tables[name], hand_column(match.group("body")), missing)
        return f"<!-- generated: {name} -->\n{body}<!-- end generated -->"

    result = REGION.sub(remade, text)
    absent = [name for name in tables if name not in seen]
    if absent:
        where = ", ".join(f"<!-- generated: {name} -->" for name in absent)
        raise DocsError(f"{doc}: add the regions {where} (each closed by <!-- end generated -->)")
    return result


def main(argv: Sequence[str]) -> int:
    check = "--check" in argv
    roots = [arg for arg in argv if arg != "--check"]
    root = Path(roots[0]) if roots else Path.cwd()
    stale = []
    for doc in DOCS:
        path = root / doc
        text = path.read_text(encoding="utf-8")
        try:
            new = regenerate(doc, text)
        except DocsError as exc:
            print(f"docs_reference: {exc}", file=sys.stderr)
            return 1
        if new != text:
            stale.append(doc)
            if not check:
                path.write_text(new, encoding="utf-8")
    verb = "differ from the code (run " + REGEN_COMMAND + ")" if check else "rewritten"
    print(f"docs_reference: {', '.join(stale)} {verb}" if stale else "docs_reference: up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
