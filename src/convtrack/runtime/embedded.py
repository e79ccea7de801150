"""The embedded pipeline: every role in one process, on the configured backends.

``Pipeline`` is the default of ``convtrack serve`` and what in-process tests
drive. It is a ``Node`` running all four roles, with each part reachable by
name (``pipeline.processor``, ``.cold``, ``.log``, ``.hot``...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from convtrack.api.app import App
from convtrack.clock import Clock
from convtrack.config import Settings
from convtrack.log.base import EventLog
from convtrack.runtime.api_keys import ProvisionedKeys
from convtrack.runtime.node import Node
from convtrack.runtime.roles import ROLES, build_chain, maintain_lake
from convtrack.store.cold.base import ColdStore
from convtrack.store.deadletters.base import DeadLetterStore
from convtrack.store.hot.base import HotStore
from convtrack.store.rejects.base import RejectStore

if TYPE_CHECKING:
    from convtrack.process.runner import ProcessorRunner
    from convtrack.store.cold.runner import ColdStoreRunner

__all__ = ["Pipeline", "build_chain", "maintain_lake"]


class Pipeline(Node):
    """The running parts and how to stop them in order."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        delivery_sleep: Callable[[float], None] | None = None,
        exclusive: bool = False,
        *,
        store_keys: bool = True,
    ) -> None:
        """``delivery_sleep`` waits between delivery attempts (tests move a clock instead);
        ``exclusive`` takes the role locks of the data dir (``serve`` does);
        ``store_keys=False`` keeps new keys in memory until ``store_generated_keys``."""
        super().__init__(
            settings, ROLES, clock, environ, delivery_sleep, exclusive, store_keys=store_keys
        )
        assert self.collect is not None  # every role is here
        self.app: App = self.collect.app

    @property
    def processor(self) -> ProcessorRunner:
        runner = super().processor
        if runner is None:
            raise RuntimeError(f"the processor did not start: {self._process_detail()}")
        return runner

    @property
    def cold(self) -> ColdStoreRunner:
        runner = super().cold
        if runner is None:
            raise RuntimeError("the cold store did not start: its lake is unreachable")
        return runner

    def _process_detail(self) -> str:
        return str(self._process.detail) if self._process is not None else "no process role"

    @property
    def keys(self) -> ProvisionedKeys:
        assert self.collect is not None
        return self.collect.keys

    @property
    def log(self) -> EventLog:
        return self.backends.events

    @property
    def processed(self) -> EventLog:
        return self.backends.processed

    @property
    def hot(self) -> HotStore:
        return self.backends.hot

    @property
    def lake(self) -> ColdStore:
        return self.backends.lake

    @property
    def rejects(self) -> RejectStore:
        return self.backends.rejects

    @property
    def deadletters(self) -> DeadLetterStore:
        return self.backends.deadletters
