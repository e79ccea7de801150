"""The destinations, one package each: its settings table, its factory and the pure
``Destination`` (request building, response reading). Adding one means writing
its package and naming its ``REGISTRATION`` here; the settings union that
``[[destinations]]`` tables decode into and the factory lookup are built from
this list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from convtrack.deliver.destinations import (
    ga4,
    google_ads,
    linkedin,
    meta_capi,
    slack,
    tiktok,
    webhook,
)
from convtrack.deliver.destinations.base import DestinationBase, DestinationKind

if TYPE_CHECKING:
    from convtrack.deliver.base import Destination

REGISTRATIONS: tuple[DestinationKind[Any], ...] = (
    webhook.REGISTRATION,
    slack.REGISTRATION,
    meta_capi.REGISTRATION,
    google_ads.REGISTRATION,
    ga4.REGISTRATION,
    linkedin.REGISTRATION,
    tiktok.REGISTRATION,
)
DESTINATION_KINDS: tuple[type[DestinationBase], ...] = tuple(r.settings for r in REGISTRATIONS)
_BY_SETTINGS = {registration.settings: registration for registration in REGISTRATIONS}

if TYPE_CHECKING:
    DestinationSettings = DestinationBase  # narrowed by isinstance or match where it matters
else:
    # The tagged union msgspec decodes a table into, picked by its ``kind``.
    DestinationSettings = Union[DESTINATION_KINDS]  # noqa: UP007 (built at run time)


def create_destination(settings: DestinationBase, environ: Mapping[str, str]) -> Destination:
    """The destination of one ``[[destinations]]`` table."""
    return _BY_SETTINGS[type(settings)].build(settings, environ)
