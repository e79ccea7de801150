"""Settings errors that name the setting, where its value came from, and what it takes.

One line each, for a person fixing a file or an environment: ``server.port:
cannot use 'abc' from environment variable CONVTRACK_SERVER_PORT: expected an
integer from 0 to 65535``; an unknown key gets the closest known ones
(``did you mean `cold.flush_interval_secs`?``).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

from convtrack.deliver.destinations import DESTINATION_KINDS
from convtrack.errors import ConfigError

Sections = Mapping[str, type[msgspec.Struct]]
# Where each value in the merged settings came from, for the errors: (section, key) -> source.
Sources = dict[tuple[str, str], str]


def closest(name: str, known: Iterable[str]) -> list[str]:
    """The known names most like ``name``: the same key in other sections (a key put in the
    wrong one), else the closest spelling of the key, in its own section first.

    Keys are compared without their section: ``server.zzzzz`` shares ``server.`` with
    every server setting and is like none of them."""
    section, _, leaf = name.rpartition(".")
    names = list(known)
    same_leaf = [n for n in names if n.rpartition(".")[2] == leaf]
    if same_leaf:
        return same_leaf[:3]
    scored = []
    for known_name in names:
        known_section, _, known_leaf = known_name.rpartition(".")
        ratio = difflib.SequenceMatcher(None, leaf, known_leaf).ratio()
        if ratio >= 0.6:
            scored.append((ratio, known_section == section, known_name))
    return [max(scored)[2]] if scored else []


def did_you_mean(
    name: str, known: Iterable[str], show: Callable[[str], str] = "`{}`".format
) -> str:
    """``; did you mean `a` or `b`?`` with the known names closest to ``name``, or ``""``."""
    found = closest(name, known)
    if not found:
        return ""
    return "; did you mean " + " or ".join(show(n) for n in found) + "?"


def _number(value: float) -> str:
    """``1000000``, ``0.5``: a bound as written, never in exponent form (``1e+06``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(meta: list[msgspec.Meta]) -> str:
    low = next((f"from {_number(m.ge)}" for m in meta if m.ge is not None), None)
    low = low or next((f"over {_number(m.gt)}" for m in meta if m.gt is not None), None)
    high = next((m.le for m in meta if m.le is not None), None)
    if low is not None and low.startswith("from") and high is not None:
        return f" {low} to {_number(high)}"
    parts = [part for part in (low, None if high is None else f"at most {_number(high)}") if part]
    return (" " + ", ".join(parts)) if parts else ""


def expected(field_type: Any) -> str:
    """What a setting of this (annotated) type takes, in words: ``an integer from 0 to 65535``."""
    meta: list[msgspec.Meta] = []
    while get_origin(field_type) is Annotated:
        field_type, *extras = get_args(field_type)
        meta.extend(extra for extra in extras if isinstance(extra, msgspec.Meta))
    origin = get_origin(field_type)
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(field_type))
    if origin in (Union, types.UnionType):
        options = [expected(arg) for arg in get_args(field_type) if arg is not type(None)]
        return " or ".join(options) + " (or none)"
    if origin is list:
        return "a list (environment: comma-separated)"
    if origin is dict:
        return "a table of names to text (environment: name=value,name=value)"
    if field_type is bool:
        return "true or false"
    if field_type is int:
        return "an integer" + _bounds(meta)
    if field_type is float:
        return "a number" + _bounds(meta)
    if field_type is str:
        pattern = next((m.pattern for m in meta if m.pattern is not None), None)
        return "text" if pattern is None else f"text matching `{pattern}`"
    return getattr(field_type, "__name__", str(field_type))


def invalid_value(setting: str, value: Any, source: str, field_type: Any) -> str:
    """``setting: cannot use VALUE from SOURCE: expected …``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{setting}: cannot use {shown} from {source}: expected {expected(field_type)}"


def setting_names(sections: Sections) -> list[str]:
    return [f"{name}.{key}" for name, cls in sections.items() for key in cls.__struct_fields__]


def with_env_name(setting: str) -> str:
    """```cold.uri` (CONVTRACK_COLD_URI)``: a setting as both its names."""
    section, _, key = setting.partition(".")
    return f"`{setting}` (CONVTRACK_{section.upper()}_{key.upper()})"


def check_sections(
    data: Mapping[str, Any],
    sources: Sources,
    file_source: str,
    sections: Sections,
    table_lists: Collection[str],
) -> None:
    """Unknown sections and keys, and values of the wrong type, named with their source."""
    known = setting_names(sections)
    for section, values in data.items():
        if section in table_lists:
            continue
        cls = sections.get(section)
        if cls is None:
            what = "section" if isinstance(values, dict) else "setting"
            hint = did_you_mean(section, [*sections, *table_lists, *known])
            raise ConfigError(f"unknown {what} {section} in {file_source}{hint}")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table [{section}] in {file_source}")
        hints = get_type_hints(cls, include_extras=True)
        for key, value in values.items():
            source = sources.get((section, key), f"{file_source} ([{section}] {key})")
            if key not in cls.__struct_fields__:
                hint = did_you_mean(f"{section}.{key}", known)
                raise ConfigError(f"unknown setting {section}.{key} in {source}{hint}")
            try:
                msgspec.convert(value, hints[key])
            except msgspec.ValidationError as exc:
                message = invalid_value(f"{section}.{key}", value, source, hints[key])
                raise ConfigError(message) from exc


def table_fields(data: Mapping[str, Any], where: str, keys: type[msgspec.Struct]) -> list[str]:
    """The settings a ``keys.N`` or ``destinations.N`` table may have (by its ``kind``)."""
    table_list, _, index = where.partition(".")
    tables = data.get(table_list)
    if not index.isdigit() or not isinstance(tables, list) or int(index) >= len(tables):
        return []
    if table_list == "keys":
        return list(keys.__struct_fields__)
    table = tables[int(index)]
    kind = table.get("kind") if isinstance(table, dict) else None
    for cls in DESTINATION_KINDS:
        if cls.__struct_config__.tag == kind:
            return list(cls.__struct_fields__)
    return []


def unsectioned_env_hints(
    environ: Mapping[str, str], sections: Sections, reserved: Collection[str]
) -> list[str]:
    """Warnings for ``CONVTRACK_*`` variables that name no section but look like a setting.

    Only a near miss is named (``CONVTRACK_FLUSH_INTERVAL_SECS``, the section left out;
    ``CONVTRACK_COLDD_URI``): other tools' variables share the prefix (``CONVTRACK_URL``
    in the docs' examples), so an unknown one is no error."""
    by_suffix = {setting.replace(".", "_", 1): setting for setting in setting_names(sections)}
    hints = []
    for name in sorted(environ):
        rest = name.removeprefix("CONVTRACK_").lower()
        if not name.startswith("CONVTRACK_") or name in reserved:
            continue
        if any(rest.startswith(f"{section}_") for section in sections):
            continue  # a known section's variable: an unknown key there is an error
        meant = [setting for suffix, setting in by_suffix.items()
                 if setting.partition(".")[2] == rest
                 or difflib.SequenceMatcher(None, rest, suffix).ratio() >= 0.9]  # fmt: skip
        if meant:
            shown = " or ".join(with_env_name(setting) for setting in meant[:3])
            hints.append(f"{name} is not a setting and is ignored; did you mean {shown}?")
    return hints
