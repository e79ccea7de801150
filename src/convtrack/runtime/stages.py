"""The roles that run in the background of their process: process, store, deliver.

Each is one object holding what ``Node`` does with it: build its runner (now,
or once the backend it needs answers: ``Deferred``), start it, report its
health as readiness components, and stop it. ``collect`` is the HTTP API
(``roles.CollectRole``): it has no runner of its own.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from convtrack.clock import Clock
from convtrack.config import Settings
from convtrack.errors import ConfigError, ConvtrackError
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import Backends
from convtrack.runtime.health import Report
from convtrack.runtime.roles import (
    Role,
    build_cold_store,
    build_delivery_runners,
    build_processor,
)

if TYPE_CHECKING:  # built (and imported) only by the processes that run those roles
    from convtrack.deliver.runner import DeliveryRunner
    from convtrack.process.runner import ProcessorRunner
    from convtrack.store.cold.runner import ColdStoreRunner

log = logging.getLogger("convtrack.roles")


class DeliveryGroup:
    """The deliver role's runners, built together: they share the alerts and the dead letters."""

    def __init__(self, runners: list[DeliveryRunner]) -> None:
        self.runners = runners

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()

    def health(self) -> dict[str, object]:
        healthy = all(bool(runner.health().get("healthy")) for runner in self.runners)
        return {"healthy": healthy, "detail": "ok"}


class Runner(Protocol):
    def start(self) -> None: ...

    def health(self) -> dict[str, object]: ...


R = TypeVar("R", bound=Runner)


class Deferred(Generic[R]):
    """A role's runner, built now or, while a backend it needs at start is down, later.

    The processor reads its positions from the hot store and the cold store its
    manifest from the lake before they run. A process whose backend is down
    still starts (its probes answer, naming the backend) and builds the runner
    as soon as the backend answers, retrying with backoff.
    """

    def __init__(self, name: str, build: Callable[[], R]) -> None:
        self.name = name
        self._build = build
        self.runner: R | None = None
        self.detail = "ok"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        try:
            self.runner = build()
        except ConfigError:
            raise
        except ConvtrackError as exc:
            self._waiting(exc)

    def _waiting(self, exc: ConvtrackError) -> None:
        self.detail = f"not started, waiting for a backend: {exc}"
        log.warning("role_waiting_for_backend", extra={"runner": self.name, "error": str(exc)})

    def start(self) -> None:
        if self.runner is not None:
            self.runner.start()
            return
        self._thread = threading.Thread(target=self._build_later, name=f"{self.name}-start")
        self._thread.daemon = True
        self._thread.start()

    def _build_later(self) -> None:
        delay = 0.5
        while not self._stop.wait(delay):
            try:
                runner = self._build()
            except ConfigError as exc:  # found only once the backend answered (e.g. topics)
                self.detail = f"not started: {exc}"
                log.error("role_cannot_start", extra={"runner": self.name, "error": str(exc)})
                delay = 30.0
                continue
            except ConvtrackError as exc:
                self._waiting(exc)
                delay = min(delay * 2, 5.0)
                continue
            with self._lock:
                if self._stop.is_set():
                    return  # stopping: never start a runner nobody will stop
                self.runner, self.detail = runner, "ok"
                runner.start()
            log.info("role_started", extra={"runner": self.name})
            return

    def health(self) -> dict[str, object]:
        if self.runner is not None:
            return self.runner.health()
        return {"healthy": False, "detail": self.detail}

    def stop_waiting(self) -> R | None:
        """Stop trying to build; the runner, if there is one, is the caller's to stop."""
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
        return self.runner


class Stage(Protocol):
    """What ``Node`` asks of a background role."""

    role: ClassVar[Role]

    def components(self) -> dict[str, Callable[[], Report]]:
        """Its readiness components, by name."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop trying to build it, and stop its runner if there is one."""
        ...


class BackgroundRole(ABC, Generic[R]):
    """A role's ``Deferred`` runner; subclasses say how to build, report and stop it."""

    role: ClassVar[Role]

    def __init__(self, name: str, build: Callable[[], R]) -> None:
        self.deferred = Deferred(name, build)

    @property
    def runner(self) -> R | None:
        return self.deferred.runner

    @property
    def detail(self) -> str:
        """``ok``, or why the runner is not built yet."""
        return self.deferred.detail

    def components(self) -> dict[str, Callable[[], Report]]:
        return {self.deferred.name: self.deferred.health}

    def start(self) -> None:
        self.deferred.start()

    def stop(self) -> None:
        runner = self.deferred.stop_waiting()
        if runner is not None:
            self._stop(runner)

    @abstractmethod
    def _stop(self, runner: R) -> None:
        """Stop the runner once built: drain, flush, or what the role needs."""


class ProcessRole(BackgroundRole["ProcessorRunner"]):
    """The processor; its component is ``processor``. Stopping drains what the log holds."""

    role = Role.PROCESS

    def __init__(self, settings: Settings, backends: Backends, metrics: Metrics, clock: Clock):
        super().__init__("processor", lambda: build_processor(settings, backends, metrics, clock))

    def _stop(self, runner: ProcessorRunner) -> None:
        runner.stop(drain_secs=3.0)


class StoreRole(BackgroundRole["ColdStoreRunner"]):
    """The cold store; its component is ``cold``. Stopping flushes to the lake."""

    role = Role.STORE

    def __init__(self, settings: Settings, backends: Backends, metrics: Metrics, clock: Clock):
        super().__init__("cold", lambda: build_cold_store(settings, backends, metrics, clock))

    def _stop(self, runner: ColdStoreRunner) -> None:
        runner.stop(flush=True)


class DeliverRole(BackgroundRole[DeliveryGroup]):
    """One runner per destination; a component ``deliver-NAME`` each."""

    role = Role.DELIVER

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        metrics: Metrics,
        clock: Clock,
        environ: Mapping[str, str],
        sleep: Callable[[float], None] | None,
    ) -> None:
        super().__init__(
            "deliver",
            lambda: DeliveryGroup(
                build_delivery_runners(settings, backends, metrics, clock, environ, sleep)
            ),
        )
        self._names = [destination.name for destination in settings.destinations]

    @property
    def runners(self) -> list[DeliveryRunner]:
        group = self.runner
        return group.runners if group is not None else []

    def components(self) -> dict[str, Callable[[], Report]]:
        return {f"deliver-{name}": self._health_of(name) for name in self._names}

    def _health_of(self, name: str) -> Callable[[], Report]:
        def report() -> Report:
            for runner in self.runners:
                if runner.name == name:
                    return runner.health()
            return self.deferred.health()  # not built yet: waiting for the processed log

        return report

    def _stop(self, runner: DeliveryGroup) -> None:
        runner.stop()
