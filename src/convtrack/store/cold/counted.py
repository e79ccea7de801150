"""What a counted conversion is, for every reader of the lake: one definition.

The processor decides once, per event, whether it counts as a conversion: its
event name (``conversions.event_names``, else anything but a session event),
and for a bot only when ``conversions.count_bots`` is on (``RouteStep``). The
hot store counts exactly the events with that verdict, and the same verdict
is the lake row's ``is_conversion``. So every reader of the lake (reports,
reconcile, attribution) filters on that column and nothing else: the lake
then counts what the hot counters counted, whatever the setting was when each
event was processed. ``is_bot`` is a description of the event, not a filter.
"""

from __future__ import annotations

from typing import Final

# The SQL condition, on a row of ``events``, of a counted conversion.
COUNTED: Final = "is_conversion"
