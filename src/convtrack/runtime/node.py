"""One process's share of the pipeline: any subset of the roles, on shared backends.

Stop order (``close``): the HTTP side stops accepting first (``serve`` marks
the app draining and uvicorn finishes in-flight requests), then the event
log's queued appends commit, the processor drains what the log holds, the
cold store flushes, the deliveries stop, and the backends close.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from convtrack.api.app import App
from convtrack.clock import Clock, SystemClock
from convtrack.config import Settings
from convtrack.log.base import LogLag, LogStatus
from convtrack.observe.metrics import Metrics
from convtrack.process.base import GROUP as PROCESSOR_GROUP
from convtrack.runtime.api_keys import ProvisionedKeys, store_generated
from convtrack.runtime.backends import Backends
from convtrack.runtime.children import Children
from convtrack.runtime.flush import LakeFlush
from convtrack.runtime.guarded import ReadGuardedHotStore
from convtrack.runtime.health import HealthMonitor, ProbeApp, Report, failed, waiting_for
from convtrack.runtime.locks import RoleLock, acquire_role_locks
from convtrack.runtime.roles import (
    ROLES,
    CollectRole,
    Roles,
    committed_processor_lag,
    prepare_collect,
)
from convtrack.runtime.stages import DeliverRole, ProcessRole, Stage, StoreRole

if TYPE_CHECKING:  # built (and imported) only by the processes that run those roles
    from convtrack.deliver.runner import DeliveryRunner
    from convtrack.process.runner import ProcessorRunner
    from convtrack.store.cold.runner import ColdStoreRunner


# Children drain within this of the collector's stop; serve exits at its own deadline.
CHILD_STOP_SECS = 8.0


class Node:
    """The roles this process runs. ``exclusive`` takes the per-role locks (``serve`` does)."""

    def __init__(
        self,
        settings: Settings,
        roles: Iterable[str] = ROLES,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        delivery_sleep: Callable[[float], None] | None = None,
        exclusive: bool = False,
        *,
        store_keys: bool = True,
        child_roles: Sequence[Roles] = (),
    ) -> None:
        """``roles``: names or ``Role``s, in any order (an unknown name is a ``ConfigError``);
        ``store_keys=False``: new keys stay in memory until ``store_generated_keys``;
        ``child_roles``: those of ``roles`` that run in child processes, one per entry
        (runtime/children.py), started and stopped with this one."""
        self._store_keys = store_keys
        self.clock: Clock = clock or SystemClock()
        self.settings = settings
        elsewhere = Roles(role for group in child_roles for role in group)
        self.roles = Roles(role for role in Roles(roles) if role not in elsewhere)
        self.metrics = Metrics()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        every_role = Roles([*self.roles, *elsewhere])
        self._locks: list[RoleLock] = acquire_role_locks(settings, every_role) if exclusive else []
        self.children = (
            Children(settings, list(child_roles), [lock.fd for lock in self._locks], self.metrics)
            if child_roles
            else None
        )
        self.backends = Backends(
            settings, self.clock, self.metrics, environ, split=not self.roles.full
        )
        try:
            self._assemble(environ, delivery_sleep)
        except BaseException:
            self.backends.close()
            self._release_locks()
            raise

    def _assemble(
        self, environ: Mapping[str, str] | None, delivery_sleep: Callable[[float], None] | None
    ) -> None:
        settings, backends, metrics, clock = self.settings, self.backends, self.metrics, self.clock
        roles = self.roles
        if roles.collects:
            prepare_collect(backends)
        env = os.environ if environ is None else environ
        self._process = ProcessRole(settings, backends, metrics, clock) if roles.processes else None
        self._store = StoreRole(settings, backends, metrics, clock) if roles.stores else None
        self._deliver = (
            DeliverRole(settings, backends, metrics, clock, env, delivery_sleep)
            if roles.delivers
            else None
        )
        # In pipeline order: started in it, and stopped in it (``close``).
        self._stages: tuple[Stage, ...] = tuple(
            stage for stage in (self._process, self._store, self._deliver) if stage is not None
        )
        self.monitor = HealthMonitor(self._backend_checks())
        components: dict[str, Callable[[], Report]] = {
            name: self.monitor.reporter(name) for name in self.monitor.names
        }
        for stage in self._stages:
            components.update(stage.components())
        self.collect: CollectRole | None = None
        self.app: App | ProbeApp
        if roles.collects:
            lag = self._local_lag if roles.processes else self._remote_lag
            hot = ReadGuardedHotStore(backends.hot, self._hot_down)
            self.collect = CollectRole(
                settings, backends, metrics, clock, environ, lag, hot, self._store_keys
            )
            self.app = self.collect.app
            self.app.components.update(components)
            if self._store is not None:
                self.app.lake_flush.flush_now = self._lake_flush()
            if self.children is not None:
                self.app.elsewhere = self.children
                if self.children.roles.stores:
                    self.app.lake_flush.flush_now = self.children.flush
        else:
            self.app = ProbeApp(roles, metrics, components)
            if self._store is not None:
                self.app.flush_now = self._lake_flush()

    def _lake_flush(self) -> LakeFlush:
        store = self._store
        assert store is not None

        def processed_positions() -> Mapping[int, int]:
            processor = self.processor
            if processor is not None:
                return processor.positions()  # counted and published
            return self.backends.hot.positions(PROCESSOR_GROUP)  # counted (another process)

        return LakeFlush(
            events=self.backends.events,
            processed_positions=processed_positions,
            cold=lambda: store.runner,
            cold_detail=lambda: store.detail,
            lake=self.backends.lake,
        )

    def _backend_checks(self) -> dict[str, Callable[[], Report]]:
        """Checks that may block on a backend: they run on the monitor's thread."""
        checks: dict[str, Callable[[], Report]] = {}
        backends, roles = self.backends, self.roles
        if roles.collects or roles.processes:
            checks["hot"] = self._check_hot
        in_child = self.children is not None and self.children.roles.processes
        if roles.collects and not roles.processes and not in_child:  # a child reports its own
            checks["processor"] = self._check_remote_processor
        if roles.processes or roles.stores or roles.delivers:
            checks["processed_log"] = lambda: _log_report(backends.processed.status())
        if roles.processes and not roles.collects:  # else the collect role reports the log
            checks["log"] = lambda: _log_report(backends.events.status())
        return checks

    def _hot_down(self) -> str | None:
        """Why the hot store is down, as of the last check; None when it answered."""
        if "hot" not in self.monitor.names:
            return None
        report = self.monitor.report("hot")
        return None if report.get("reachable", True) else str(report["detail"])

    def _check_hot(self) -> Report:
        kind = self.settings.hot.kind
        try:
            self.backends.hot.positions(PROCESSOR_GROUP)  # one cheap read: reachable?
        except Exception as exc:
            return {**failed(exc), "reachable": False, "kind": kind}
        return {"healthy": True, "reachable": True, "detail": "ok", "kind": kind}

    @property
    def processor(self) -> ProcessorRunner | None:
        return self._process.runner if self._process is not None else None

    @property
    def cold(self) -> ColdStoreRunner | None:
        return self._store.runner if self._store is not None else None

    @property
    def deliveries(self) -> list[DeliveryRunner]:
        return self._deliver.runners if self._deliver is not None else []

    def _local_lag(self) -> LogLag:
        processor = self.processor
        return processor.lag() if processor is not None else self._remote_lag()

    def _remote_lag(self) -> LogLag:
        return committed_processor_lag(self.backends)()

    def _check_remote_processor(self) -> Report:
        """The processor of another process, seen through the positions it committed."""
        lag = self._remote_lag()
        return {
            "healthy": True,
            "detail": "runs in another process; lag from its committed positions",
            "lag_events": lag.events,
            "lag_seconds": round(lag.seconds, 3),
        }

    @property
    def serves_all_roles(self) -> bool:
        """Every role runs in this process or in its children (the embedded default)."""
        elsewhere = self.children.roles if self.children is not None else ()
        return Roles([*self.roles, *elsewhere]).full

    @property
    def keys(self) -> ProvisionedKeys | None:
        return self.collect.keys if self.collect is not None else None

    def waiting_for(self) -> list[str]:
        """What keeps /readyz from answering 200 now (``kafka (detail)``...); empty: ready.

        The same condition as the /readyz route: a collector is ready when its log takes
        events durably; a process without collect when every component is healthy."""
        ready, body = self.app.readiness()
        if ready:
            return []
        gating = ["log"] if self.collect is not None else list(body.get("degraded", []))
        settings = self.settings
        names = {
            "log": settings.log.kind,
            "processed_log": f"the processed log ({settings.log.kind})",
            "hot": settings.hot.kind,
            "processor": "the processor",
            "cold": "the lake",
        }
        return waiting_for(body, gating, names) or ["readiness"]

    def store_generated_keys(self) -> None:
        """Store the keys created at this start (``store_keys=False``), once it is listening."""
        if self.collect is not None:
            store_generated(self.settings, self.collect.keys)

    def start(self) -> None:
        """Start the background stages of this process's roles (``children.start()`` starts
        the child processes: serve does once it listens)."""
        self.monitor.start()
        for stage in self._stages:
            stage.start()

    def close(self) -> None:
        """Finish pending appends, let the processor catch up, then close the stores."""
        self.backends.stop_event_writes()
        if self.children is not None:  # after the last appends: they drain what was accepted
            self.children.stop(CHILD_STOP_SECS)
        for stage in self._stages:  # the processor drains, the cold store flushes...
            stage.stop()
        self.monitor.stop()
        self.backends.close()
        self._release_locks()

    def _release_locks(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks = []


def _log_report(status: LogStatus) -> Report:
    return {
        "healthy": bool(status.writable),
        "writable": bool(status.writable),
        "detail": str(status.detail),
        "pending_events": int(status.pending_events),
    }
