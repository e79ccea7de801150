"""The README's quickstart, run as written against a real ``convtrack serve``: the keys
set by ``convtrack keys show`` from the data dir, the curl track (with curl's own user agent and no
context.user_agent), and the stats call, whose answer is the README's, counted."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerFactory

ROOT = Path(__file__).resolve().parents[1]
CURL_USER_AGENT = "curl/8.5.0"
README_BASE = "http://127.0.0.1:8080"


class Step:
    """One command of the quickstart and the answer the README shows under it."""

    def __init__(self, command: str, answer: str | None) -> None:
        self.command = command
        self.answer = answer


def quickstart() -> list[Step]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Send an event\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the quickstart has no sh block"
    steps: list[Step] = []
    for chunk in block.group(1).strip().split("\n\n"):
        lines = chunk.splitlines()
        answers = [line[2:] for line in lines if line.startswith("# ")]
        command = "\n".join(line for line in lines if not line.startswith("#"))
        steps.append(Step(command.replace("\\\n", " "), answers[0] if answers else None))
    return steps


class Curl:
    """The parts of a curl command line this quickstart uses."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        words = shlex.split(command)
        assert words[0] == "curl", command
        self.method, self.headers, self.body, self.url = "GET", {}, None, ""
        at = 1
        while at < len(words):
            word = words[at]
            if word == "-X":
                self.method, at = words[at + 1], at + 1
            elif word == "-H":
                name, value = words[at + 1].split(":", 1)
                self.headers[name.strip()] = _expand(value.strip(), env)
                at += 1
            elif word == "-d":
                self.body, self.method, at = words[at + 1], "POST", at + 1
            elif word.startswith("http"):
                self.url = word
            else:
                assert word in ("-s", "-sS"), f"a curl option this test does not know: {word}"
            at += 1

    def send(self, base: str) -> httpx.Response:
        assert self.url.startswith(README_BASE), self.url
        headers = {"User-Agent": CURL_USER_AGENT, **self.headers}
        return httpx.request(
            self.method,
            base + self.url[len(README_BASE) :],
            content=None if self.body is None else self.body.encode(),
            headers=headers,
            timeout=10,
        )


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], text)


def test_the_readme_quickstart_counts_its_conversion(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # As a new user: no keys given, so serve creates them in ./convtrack-data/keys.json.
    server = server_factory(name="convtrack-data")
    for name in ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY"):
        server.env.pop(name)
    server.start()
    export, track, stats = quickstart()

    # The export step, run by a shell in the directory serve was started in, where
    # .venv/bin/convtrack is this test's own console script.
    assert ".venv/bin/convtrack keys show" in export.command
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "convtrack").symlink_to(Path(sys.executable).parent / "convtrack")
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    shown = subprocess.run(
        ["bash", "-c", f'{export.command}\nprintf "%s %s" "$WRITE_KEY" "$SERVER_KEY"'],
        cwd=tmp_path, env=shell_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    write_key, server_key = shown.stdout.split()
    printed = server.log_path.read_text()
    assert f"write  {write_key}" in printed and f"server {server_key}" in printed
    env = {"WRITE_KEY": write_key, "SERVER_KEY": server_key}

    sent = Curl(track.command, env)
    assert "user_agent" not in (sent.body or "")  # the request's own user agent decides
    answer = sent.send(server.url)
    assert answer.status_code == 202, answer.text
    assert track.answer is not None and answer.json() == json.loads(track.answer)

    today = datetime.now(tz=UTC).strftime("%Y-%m-%d")
    assert stats.answer is not None
    expected = json.loads(stats.answer.replace("<today, UTC>", today))
    read = Curl(stats.command, env)
    got = _counted(read, server.url, expected["conversions"])
    assert got == expected


def _counted(read: Curl, base: str, conversions: int, timeout: float = 10.0) -> Any:
    """The stats answer once the processor has counted the event (it runs beside ingest)."""
    deadline = time.monotonic() + timeout
    while True:
        response = read.send(base)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["conversions"] >= conversions or time.monotonic() > deadline:
            return body
        time.sleep(0.02)
