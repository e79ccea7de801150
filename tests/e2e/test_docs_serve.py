"""Docs held to a real ``convtrack serve``: the data-dir tree of docs/operations.md is what a
fresh serve creates (and its lake's files are those of docs/lake.md's layout), and the
``/readyz`` example of docs/http-api.md has every member the server answers (and no other),
down to the last nested key."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess, auth

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GENERATED_KEYS = ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY")


@dataclass(frozen=True)
class Entry:
    """One line of the documented tree: a path (``ROLE`` stands for a name; a trailing
    ``/`` covers everything below) and whether a fresh serve may leave it out."""

    path: str
    optional: bool

    def pattern(self) -> re.Pattern[str]:
        body = re.sub(r"[A-Z][A-Z_]+", "[a-z0-9_-]+", re.escape(self.path.rstrip("/")))
        if self.path.endswith("/"):
            body += "(/.*)?"
        elif self.path.endswith(".db"):
            body += "(-wal|-shm)?"  # the doc: every .db is SQLite in WAL mode
        return re.compile(body)

    def parents(self) -> set[str]:
        parts = self.path.rstrip("/").split("/")[:-1]
        return {"/".join(parts[: n + 1]) for n in range(len(parts))}


def documented_tree() -> list[Entry]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## The data dir\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\nDATA_DIR/\n(.*?)```", section, re.S)
    assert block is not None, "operations.md's data dir section has no DATA_DIR/ tree"
    entries = []
    for line in block.group(1).splitlines():
        path, _, description = line.strip().partition(" ")
        entries.append(Entry(path, optional="(optional)" in description))
    assert entries, "the data dir tree is empty"
    return entries


def lake_layout() -> list[re.Pattern[str]]:
    """The object names of docs/lake.md's layout, with their numbers and partition values
    standing for any."""
    text = (ROOT / "docs" / "lake.md").read_text()
    block = re.search(r"## Layout\n\n```\nlake/\n(.*?)```", text, re.S)
    assert block is not None, "lake.md has no lake/ layout block"
    patterns = []
    for line in block.group(1).splitlines():
        name = line.split()[0]
        values = re.sub(r"=[^/]+", "=VALUE", name)
        body = re.sub(r"\d+", lambda _: r"\d+", re.escape(values))
        patterns.append(re.compile(body.replace("VALUE", "[^/]+")))
    return patterns


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


def fresh_server(server_factory: ServerFactory, **kwargs: Any) -> ServerProcess:
    """A server started as a new user starts one: no keys given, so it generates them."""
    server = server_factory(**kwargs)
    for name in GENERATED_KEYS:
        server.env.pop(name)
    server.start(timeout_secs=30)  # the machine is shared: allow a slow start
    return server


def keys_of(server: ServerProcess) -> tuple[str, str]:
    stored = json.loads((server.data_dir / "keys.json").read_text())
    return stored["write"], stored["server"]


def wait_counted(
    server: ServerProcess, server_key: str, campaign: str, timeout: float = 20
) -> None:
    url = f"{server.url}/v1/stats/conversions?campaign_id={campaign}"
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(url, headers=auth(server_key), timeout=5).json()
        if body["conversions"] >= 1:
            return
        assert time.monotonic() < deadline, f"the event was not counted in {timeout} s: {body}"
        time.sleep(0.05)


def test_the_documented_data_dir_is_what_a_fresh_serve_creates(
    server_factory: ServerFactory,
) -> None:
    entries = documented_tree()
    server = fresh_server(server_factory)
    write_key, server_key = keys_of(server)
    purchase = {"event_name": "Purchase", "user_id": "u_1", "value": 4999, "currency": "USD",
                "campaign_id": "spring_sale"}  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/track", json=purchase, headers=auth(write_key))
    assert answer.status_code == 202, answer.text
    refused = httpx.post(f"{server.url}/v1/track", json={"value": 1}, headers=auth(write_key))
    assert refused.status_code == 400, refused.text  # so the rejects store has a row too
    wait_counted(server, server_key, "spring_sale")
    created = files_under(server.data_dir)  # running: the WAL files are there
    assert server.terminate() == 0
    created |= files_under(server.data_dir)  # stopped: the lake's flush is there

    allowed_dirs = set().union(*(entry.parents() for entry in entries))
    patterns = [entry.pattern() for entry in entries]
    undocumented = sorted(
        path for path in created
        if path not in allowed_dirs and not any(p.fullmatch(path) for p in patterns)
    )  # fmt: skip
    assert not undocumented, (
        f"a fresh serve creates what operations.md does not list: {undocumented}"
    )
    missing = [
        entry.path for entry in entries
        if not entry.optional and not any(entry.pattern().fullmatch(path) for path in created)
    ]  # fmt: skip
    assert not missing, (
        f"operations.md lists what a fresh serve does not create: {missing} "
        "(mark an entry (optional) if only some setups create it)"
    )
    layout = lake_layout()
    lake_files = [p for p in created if p.startswith("lake/") and (server.data_dir / p).is_file()]
    assert lake_files, "the stopped serve flushed nothing to the lake"
    unlisted = sorted(p for p in lake_files if not any(x.fullmatch(p[5:]) for x in layout))
    assert not unlisted, f"the lake holds what lake.md's layout does not show: {unlisted}"


def readyz_examples() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``/readyz`` answer shown in http-api.md, and its ``deliver-<name>`` member."""
    text = (ROOT / "docs" / "http-api.md").read_text()
    section = text.split("### GET /healthz, GET /readyz\n", 1)[1].split("\n### ", 1)[0]
    lines = section.split('curl -sS "$CONVTRACK_URL/readyz"\n', 1)[1].splitlines()
    shown = []
    for line in lines:
        if not line.startswith("# "):
            break
        shown.append(line[2:])
    status, _, body = " ".join(shown).partition(" ")
    assert status == "200", f"the /readyz example shows no status first: {shown}"
    member = re.search(r"```json\n(.*?)```", section, re.S)
    assert member is not None, "the /readyz section shows no deliver-<name> member"
    return json.loads(body), json.loads(member.group(1))


def same_shape(shown: Any, answered: Any, where: str = "readyz") -> list[str]:
    """Where ``shown`` and ``answered`` differ in members or kinds of value (null, the
    value of a field that may be absent, matches anything)."""
    if shown is None or answered is None:
        return []
    if isinstance(shown, dict) and isinstance(answered, dict):
        problems = []
        if extra := sorted(set(shown) - set(answered)):
            problems.append(f"{where}: shown but not answered: {extra}")
        if missing := sorted(set(answered) - set(shown)):
            problems.append(f"{where}: answered but not shown: {missing}")
        for key in set(shown) & set(answered):
            problems += same_shape(shown[key], answered[key], f"{where}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(answered, list):
        if shown and answered:
            return same_shape(shown[0], answered[0], f"{where}[0]")
        return []
    kinds = {bool: "boolean", int: "number", float: "number", str: "string"}
    if kinds.get(type(shown), "other") != kinds.get(type(answered), "other"):
        return [f"{where}: shown {shown!r}, answered {answered!r}"]
    return []


def healthy_readyz(server: ServerProcess, timeout: float = 20) -> Any:
    """The ``/readyz`` answer once every component reports (none "not checked yet" or
    waiting), as the example shows it."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{server.url}/readyz", timeout=5)
        body = answer.json()
        if answer.status_code == 200 and body["degraded"] == []:
            return body
        assert time.monotonic() < deadline, f"/readyz not healthy in {timeout} s: {body}"
        time.sleep(0.05)


def test_the_readyz_example_has_every_member_the_server_answers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    shown, shown_member = readyz_examples()
    ((member_name, member),) = shown_member.items()
    destination = member_name.removeprefix("deliver-")
    config = tmp_path / "convtrack.toml"
    config.write_text(
        f'[[destinations]]\nkind = "webhook"\nname = "{destination}"\n'
        'endpoint = "https://crm.example/hooks/convtrack"\nsecret_env = "HOOK_SECRET"\n'
    )  # no event is sent: nothing is delivered
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    server = server_factory({"HOOK_SECRET": secret}, args=["--config", str(config)])
    server.start(timeout_secs=30)
    answered = healthy_readyz(server)
    problems = same_shape({**shown, member_name: member}, answered)
    assert not problems, "docs/http-api.md's /readyz example drifted:\n" + "\n".join(problems)


def test_the_shape_check_can_fail() -> None:
    shown = {"log": {"writable": True}, "degraded": []}
    assert same_shape(shown, {"log": {"writable": True}, "degraded": ["hot"]}) == []
    assert same_shape(shown, {"log": {"writable": True, "detail": "ok"}, "degraded": []}) == [
        "readyz.log: answered but not shown: ['detail']"
    ]
    assert same_shape(shown, {"log": {"writable": "yes"}}) == [
        "readyz: shown but not answered: ['degraded']",
        "readyz.log.writable: shown True, answered 'yes'",
    ]
