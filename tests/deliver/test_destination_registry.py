"""The destination list: every package under deliver/destinations/ is registered once,
and a ``[[destinations]]`` table decodes into its kind's settings and builds its kind."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from convtrack.deliver import destinations
from convtrack.deliver.destinations import REGISTRATIONS, DestinationSettings
from convtrack.deliver.destinations.base import DestinationBase


def test_every_destination_package_is_registered_once() -> None:
    packages = {
        path.parent.name for path in Path(destinations.__file__).parent.glob("*/__init__.py")
    }
    kinds = [registration.kind for registration in REGISTRATIONS]
    assert sorted(kinds) == sorted(packages)
    assert len(set(kinds)) == len(kinds)
    for registration in REGISTRATIONS:
        package = registration.create.__module__
        assert package == f"convtrack.deliver.destinations.{registration.kind}", package


def test_a_table_decodes_into_its_kinds_settings() -> None:
    for registration in REGISTRATIONS:
        required = {f.name for f in msgspec.structs.fields(registration.settings) if f.required}
        shared = {f.name for f in msgspec.structs.fields(DestinationBase) if f.required}
        table = {"kind": registration.kind, "name": "x"}
        try:
            decoded = msgspec.convert(table, DestinationSettings)
        except msgspec.ValidationError as exc:
            # Decoded as its kind: the field it misses is one of that kind's own.
            missing = re.search(r"missing required field `(\w+)`", str(exc))
            assert missing and missing.group(1) in required - shared, (registration.kind, exc)
        else:
            assert type(decoded) is registration.settings
