"""What every destination shares: the settings of every ``[[destinations]]`` table,
and the registration each destination package exports.

A table's ``kind`` picks its class (each destination package's ``settings.py``);
unknown keys of that kind are errors that name the key. Credentials are never
literal: each ``*_env`` names the environment variable that holds the secret,
read at start. ``endpoint`` overrides the platform's base URL (stand-ins,
proxies, EU hosts); each API version is a setting because every platform moves
them on its own schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    from convtrack.deliver.base import Destination

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Url = Annotated[str, msgspec.Meta(pattern="^https?://[^\\s]+$")]
OptionalUrl = Annotated[str, msgspec.Meta(pattern="^(https?://[^\\s]+)?$")]
EnvName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z_][A-Za-z0-9_]*$")]


class DestinationBase(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    """What every destination has: naming, batching, retry, filters, mapping, safety."""

    name: Annotated[str, msgspec.Meta(pattern="^[a-z0-9_-]+$", max_length=64)]
    endpoint: OptionalUrl = ""
    # 0: the platform's own limit. Larger values are capped to the platform's limit.
    batch_max_events: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    batch_max_wait_secs: NonNegative = 0.5
    timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=120)] = 20.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    max_elapsed_secs: NonNegative = 3600.0
    retry_base_secs: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    retry_cap_secs: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    throttle_base_secs: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    throttle_cap_secs: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    setup_pause_secs: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    breaker_failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    breaker_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3
    breaker_cooldown_secs: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    event_names: list[str] = msgspec.field(default_factory=list)
    min_value: int | None = None
    event_map: dict[str, str] = msgspec.field(default_factory=dict)
    allow_private_network: bool = False
    # Requests out at once; batches still commit in log order. 1 where a request
    # carries a whole batch; more where the platform takes one event per request.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1


S = TypeVar("S", bound=DestinationBase)


@dataclass(frozen=True)
class DestinationKind(Generic[S]):
    """What a destination package exports: its settings table and its factory, which
    reads the credentials from the environment (a missing one stops the start, naming
    the variable) and returns the pure ``Destination``."""

    settings: type[S]
    create: Callable[[S, Mapping[str, str]], Destination]

    @property
    def kind(self) -> str:
        """The table's ``kind``: its settings struct's tag."""
        tag = self.settings.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def build(self, settings: DestinationBase, environ: Mapping[str, str]) -> Destination:
        assert isinstance(settings, self.settings)
        return self.create(settings, environ)
