"""Settings errors that name the setting, where its value came from, and what it takes.

One line each, for a person fixing a file or an environment: ``server.port:
cannot use 'abc' from environment variable CONVTRACK_SERVER_PORT: expected an
integer from 0 to 65535``; an unknown key gets the closest known ones
(``did you mean `cold.flush_interval_secs`?``).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec


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


def _bounds(meta: list[msgspec.Meta]) -> str:
    low = next((f"from {m.ge:g}" for m in meta if m.ge is not None), None)
    low = low or next((f"over {m.gt:g}" for m in meta if m.gt is not None), None)
    high = next((m.le for m in meta if m.le is not None), None)
    if low is not None and low.startswith("from") and high is not None:
        return f" {low} to {high:g}"
    parts = [part for part in (low, None if high is None else f"at most {high:g}") if part]
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
