"""``server.child_roles`` and the role locks a serve's children inherit (runtime/children.py,
runtime/locks.py). The children themselves run in tests/e2e/test_children.py."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from convtrack.config import ServerSettings, Settings
from convtrack.deliver.destinations.webhook.settings import WebhookSettings
from convtrack.errors import ConfigError
from convtrack.runtime import locks
from convtrack.runtime.children import child_groups, component_names
from convtrack.runtime.health import ProbeApp
from convtrack.runtime.locks import RoleLock
from convtrack.runtime.node import Node
from convtrack.runtime.roles import Role, Roles


def with_children(*entries: str) -> Settings:
    return Settings(server=ServerSettings(child_roles=list(entries)))


def test_by_default_the_processor_and_the_lake_writer_each_get_a_process() -> None:
    assert child_groups(Settings()) == [("process",), ("store", "deliver")]


def test_entries_name_roles_joined_by_plus_in_any_order_and_case() -> None:
    assert child_groups(with_children("Deliver+store", " process ")) == [
        ("store", "deliver"),
        ("process",),
    ]
    assert child_groups(with_children()) == []


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        (["collect"], "collect always runs in the serving process"),
        (["process+collect"], "collect always runs in the serving process"),
        (["procss"], "unknown role(s): procss"),
        (["process", "store+process"], "process is already in another entry"),
        (["+"], "names no role"),
    ],
)
def test_a_wrong_entry_is_a_config_error_that_names_it(entries: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        child_groups(with_children(*entries))
    assert says in str(caught.value)


HOLDER = """
import os, subprocess, sys
from pathlib import Path
from convtrack.runtime.locks import RoleLock
from convtrack.runtime.roles import Role
lock = RoleLock.acquire(Path(sys.argv[1]), Role.PROCESS)
inheritor = subprocess.Popen(
    [sys.executable, "-c", "import os, sys, time\\nwhile not os.path.exists(sys.argv[1]):"
     " time.sleep(0.01)", sys.argv[2]],
    pass_fds=(lock.fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(inheritor.pid, flush=True)
os._exit(0)  # dies holding the lock, as a SIGKILLed serve would: its child keeps it
"""


def dead_holder(data_dir: Path, release: Path) -> int:
    """A process that took the process role's lock and died, leaving a child that holds it
    until ``release`` exists; returns the child's pid."""
    holder = subprocess.run(
        [sys.executable, "-c", HOLDER, str(data_dir), str(release)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return int(holder.stdout)


def test_a_dead_serves_lock_is_taken_once_its_children_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = tmp_path / "release"
    inheritor = dead_holder(tmp_path, release)
    waits: list[float] = []
    real_sleep = locks.time.sleep

    def wait(secs: float) -> None:
        waits.append(secs)
        release.touch()  # the child exits only once acquire has found the lock held
        real_sleep(secs)

    monkeypatch.setattr(locks.time, "sleep", wait)
    try:
        lock = RoleLock.acquire(tmp_path, Role.PROCESS)
    finally:
        release.touch()  # never leave the child behind, whatever happened
    try:
        assert waits, "the lock was free at once: the test did not test the handover"
        assert not locks._alive(str(inheritor))
    finally:
        lock.release()


def test_a_lock_still_held_past_the_handover_is_refused_and_names_the_dead_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = tmp_path / "release"
    dead_holder(tmp_path, release)
    monkeypatch.setattr(locks, "HANDOVER_SECS", 0.2)
    try:
        with pytest.raises(ConfigError) as caught:
            RoleLock.acquire(tmp_path, Role.PROCESS)
        assert "already runs the process role" in str(caught.value)
    finally:
        release.touch()


def test_a_live_holder_is_refused_at_once(tmp_path: Path) -> None:
    held = RoleLock.acquire(tmp_path, Role.PROCESS)
    try:
        with pytest.raises(ConfigError):
            RoleLock.acquire(tmp_path, Role.PROCESS)  # this very process: alive
    finally:
        held.release()


SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize("group", [["process"], ["store", "deliver"], ["deliver"], ["store"]])
def test_a_childs_components_are_named_before_it_answers_as_it_will_answer(
    tmp_path: Path, group: list[str]
) -> None:
    webhook = WebhookSettings(
        name="crm", endpoint="https://crm.example/hook", secret_env="CRM_SECRET"
    )
    settings = Settings(server=ServerSettings(data_dir=str(tmp_path)), destinations=[webhook])
    node = Node(settings, group, environ={"CRM_SECRET": SECRET})
    try:
        assert isinstance(node.app, ProbeApp)
        assert sorted(component_names(settings, Roles(group))) == sorted(node.app.components)
    finally:
        node.close()
