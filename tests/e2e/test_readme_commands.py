"""Every command of the README, run as written, in order, against a real ``convtrack serve``
on a free port and a fresh data dir, so the README cannot drift.

The README's code blocks are read top to bottom. A ``sh`` block is split into commands
(``\\`` continuations and quotes spanning lines joined; a ``# {...}`` line under a command
is the answer it shows). Each command is classified by its program and subcommand:

- RUN: run in bash, in the directory the server's data dir ``./convtrack-data`` is in, with
  the environment the earlier commands exported (as one user's shell would carry it), the
  README's ``http://127.0.0.1:8080`` pointed at the test server. It must exit 0 (or a code
  OTHER_EXITS allows, showing why), curl must get no HTTP error, and a shown answer must
  be the one answered.
- NOT_RUN: deliberately not run, each for the reason given (a test elsewhere may cover it).
- NOT_YET: should run, but cannot on this branch yet; each says what it waits for.

A command in none of these fails the test, so a new README command needs a decision here.
The ``python`` block runs in this process with the SDK against the same server, the
``toml`` block is written to ``convtrack.toml`` (the name the commands use) and must be
valid settings.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest

from convtrack.cli.main import cli
from convtrack.config import ServerSettings, load_settings
from tests.conftest import BROWSER_UA, ServerFactory, ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README_BASE = "http://127.0.0.1:8080"
GENERATED_KEYS = ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY")
HTTP_STATUS = "__readme_http_status__"
# Placeholders the README's answers use for what a run decides.
PLACEHOLDERS: dict[str, Callable[[], str]] = {
    "<today, UTC>": lambda: datetime.now(tz=UTC).strftime("%Y-%m-%d"),
}
ANSWER_TIMEOUT_SECS = 20.0  # a read shows an answer once the pipeline caught up

# Run as written. Keyed by program (and subcommand: "convtrack query"); the longest key
# that starts a command's words decides. Read-only ones may be re-run until their answer
# shows (the processor counts beside ingest); the others run once.
RUN: dict[str, str] = {
    "export": "sets the shell's variables (the keys) for the commands after it",
    "eval": "sets the shell's variables (the keys) for the commands after it",
    "curl": "the HTTP API, on the test server's port",
    "convtrack keys show": "prints the keys of ./convtrack-data",
    "convtrack secrets new": "prints a new secret",
    "convtrack flush": "asks the running server to flush the lake",
    "convtrack query": "reads the lake of ./convtrack-data",
    "convtrack attribution": "reads the lake of ./convtrack-data",
    "convtrack reconcile": "reads the hot store, logs and lake of ./convtrack-data",
    "convtrack dlq list": "reads the dead letters of ./convtrack-data",
    "convtrack destinations check": "checks the README's destinations with the exported secrets",
    "convtrack config show": "prints the settings",
}
READS = ("curl", "convtrack query", "convtrack attribution", "convtrack reconcile")
SENDS = ("-d", "--data", "--data-binary", "--data-raw", "-F", "POST", "PUT", "DELETE", "PATCH")

NOT_RUN: dict[str, str] = {
    "dev.py serve": (
        "the test's server stands in for it: the same `convtrack serve`, on a free port and "
        "a fresh data dir; with --config it would forward the README's purchase to the real "
        "graph.facebook.com"
    ),
    "dev.py test": "it is the test suite that runs this test (CI runs it: tests/test_docs.py)",
    "dev.py install": (
        "it installs into ./.venv, the environment this test runs in, and needs the network "
        "(python3 dev.py test, which runs this test, installs first)"
    ),
    "convtrack dev services": (
        "starts Kafka (Java 17+, Maven, tens of seconds), Redis and S3 servers; "
        "tests/devservices/test_devservices.py::"
        "test_cli_up_prints_the_environment_and_down_stops_everything runs up and down"
    ),
    "set": "sources services.env, which `dev services up` (not run here) writes",
    "convtrack serve": (
        "a server of its own: the single-process one is the test's server; the distributed "
        "roles on Kafka, Redis and S3 run in tests/e2e/test_roles_distributed.py (their ports: "
        "test_the_readme_servers_do_not_share_a_port below)"
    ),
}

NOT_YET: dict[str, str] = {}

# A RUN command may also exit with these codes, when its output says why and the
# README says it may (`# ... unreachable: 3`). Keyed as RUN: (exit code, must show, never).
OTHER_EXITS: dict[str, tuple[int, str, str]] = {
    "convtrack destinations check": (
        3,  # no internet here: the platforms' hosts do not resolve
        "unreachable from here (the settings may be right)",
        "FAIL",  # but every setting it could check is right
    ),
}

BLOCK_LANGUAGES: dict[str, str] = {
    "sh": "run command by command",
    "python": "run with the SDK against the test server",
    "toml": "written to convtrack.toml and loaded as settings",
    "html": "a page for a browser: tests/e2e/test_sdk_browser.py runs the SDK's script in one",
    "": "not code: the package layout",
}


@dataclass
class Command:
    text: str  # as in the README, continuation lines included
    line: int  # its first line in README.md
    answer: str | None = None  # the `# {...}` line under it

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text.replace("\\\n", " "), comments=True)

    @property
    def background(self) -> bool:
        return bool(self.words) and self.words[-1] == "&"


@dataclass
class Block:
    language: str
    text: str
    line: int  # the line of its first content line
    commands: list[Command] = field(default_factory=list)


def readme_blocks(readme: str | None = None) -> list[Block]:
    """The fenced code blocks of the README, in order, sh blocks split into commands."""
    lines = (readme if readme is not None else (ROOT / "README.md").read_text()).splitlines()
    blocks: list[Block] = []
    at = 0
    while at < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[at].strip())
        if fence is None:
            at += 1
            continue
        end = next(n for n in range(at + 1, len(lines)) if lines[n].strip() == "```")
        block = Block(fence.group(1), "\n".join(lines[at + 1 : end]) + "\n", at + 2)
        if block.language == "sh":
            block.commands = split_commands(lines[at + 1 : end], at + 2)
        blocks.append(block)
        at = end + 1
    return blocks


def split_commands(lines: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    pending: list[str] = []
    for number, line in enumerate(lines, first_line):
        if not pending:
            if not line.strip():
                continue
            if line.lstrip().startswith("#"):
                shown = line.lstrip()[1:].strip()
                if shown[:1] in "{[" and commands and commands[-1].answer is None:
                    commands[-1].answer = shown
                continue  # else a remark for the reader
            start = number
        pending.append(line)
        text = "\n".join(pending)
        if complete(text):
            commands.append(Command(text, start))
            pending = []
    assert not pending, f"README.md:{first_line}: a command does not end: {pending}"
    return commands


def complete(text: str) -> bool:
    """Whether bash would run ``text`` as it is (no open quote, no trailing backslash)."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation": the command goes on on the next line
        return False
    return True


def program(command: Command) -> str:
    """What a command runs, as the words the rules are keyed by: "curl", "dev.py serve",
    "convtrack query" (the subcommand from the CLI itself), "convtrack keys show"."""
    words = [w for w in command.words if w != "&"]
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value before the program: an environment for it
    assert words, f"README.md:{command.line}: no program in {command.text!r}"
    name = words[0].split(";")[0]
    if name in ("python", "python3") and words[1:2] == ["dev.py"]:
        return " ".join(["dev.py", *words[2:3]])
    if Path(name).name != "convtrack":
        return name
    path: list[str] = ["convtrack"]
    group: click.Command | None = cli  # None past a subcommand this branch does not have
    for word in words[1:]:
        if isinstance(group, click.Group) and word in group.commands:
            path.append(word)
            group = group.commands[word]
        elif (group is None or isinstance(group, click.Group)) and re.fullmatch(
            r"[a-z][a-z-]*", word
        ):
            path.append(word)  # a subcommand this branch does not have (yet)
            group = None
        else:
            break
    return " ".join(path)


def rule(command: Command) -> tuple[str, str, str]:
    """(RUN, NOT_RUN or NOT_YET; the key; its reason) for a command. Fails for one that
    no rule covers: a new README command needs a decision here."""
    words = program(command).split()
    found: list[tuple[int, str, str, str]] = []
    for kind, table in (("RUN", RUN), ("NOT_RUN", NOT_RUN), ("NOT_YET", NOT_YET)):
        for key, reason in table.items():
            if words[: len(key.split())] == key.split():
                found.append((len(key.split()), kind, key, reason))
    assert found, (
        f"README.md:{command.line}: {program(command)!r} is neither run by this test nor "
        f"listed as not run (with a reason) in tests/e2e/test_readme_commands.py:\n{command.text}"
    )
    _, kind, key, reason = max(found)
    return kind, key, reason


def every_command() -> Iterator[Command]:
    for block in readme_blocks():
        yield from block.commands


class Shell:
    """One user's shell: each command runs in bash in ``cwd``, with what the commands
    before it exported."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.exported = cwd / ".readme-shell-env"

    def run(self, text: str) -> subprocess.CompletedProcess[str]:
        script = f'{text}\n__readme_rc=$?\nenv -0 > "{self.exported}"\nexit $__readme_rc\n'
        done = subprocess.run(
            ["bash", "-c", script], check=False, cwd=self.cwd, env=self.env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        if done.returncode == 0:
            carried = dict(
                item.split("=", 1) for item in self.exported.read_text().split("\0") if item
            )
            for name in ("_", "SHLVL", "PWD", "OLDPWD", "__readme_rc"):
                carried.pop(name, None)
            self.env = carried
        return done


def expected_answer(shown: str) -> Any:
    for placeholder, value in PLACEHOLDERS.items():
        shown = shown.replace(placeholder, value())
    left = re.findall(r"<[^>\"]+>", shown)
    assert not left, f"an answer placeholder this test does not know: {left}"
    return json.loads(shown)


def http_status(stdout: str) -> tuple[str, int | None]:
    """curl's output without the status line our curlrc appends, and that status."""
    found = re.search(rf"\n?{HTTP_STATUS} (\d+)\n?$", stdout)
    if found is None:
        return stdout, None
    return stdout[: found.start()], int(found.group(1))


def allowed_exit(key: str, done: subprocess.CompletedProcess[str]) -> bool:
    if key not in OTHER_EXITS:
        return False
    code, shows, never = OTHER_EXITS[key]
    output = done.stdout + done.stderr
    return done.returncode == code and shows in output and never not in output


def rerunnable(command: Command, key: str) -> bool:
    """A read that may be run again until its answer shows (a curl that sends nothing)."""
    return key in READS and not (key == "curl" and set(command.words) & set(SENDS))


def run_command(shell: Shell, server: ServerProcess, command: Command, key: str) -> None:
    text = command.text.replace(README_BASE, server.url)
    assert not command.background, f"README.md:{command.line}: cannot run a background job"
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECS
    while True:
        done = shell.run(text)
        output, status = http_status(done.stdout)
        where = f"README.md:{command.line}: {command.text}\nexit {done.returncode}"
        where += f", HTTP {status}\n" if status is not None else "\n"
        where += f"stdout:\n{output}\nstderr:\n{done.stderr}"
        assert done.returncode == 0 or allowed_exit(key, done), where
        assert status is None or status < 400, where
        if command.answer is None:
            return
        try:
            answered = json.loads(output)
        except json.JSONDecodeError:
            answered = None
        expected = expected_answer(command.answer)
        if answered == expected:
            return
        if not rerunnable(command, key) or time.monotonic() > deadline:
            pytest.fail(f"{where}\nthe README shows: {command.answer}")
        time.sleep(0.05)


def run_python(block: Block, shell: Shell, server: ServerProcess) -> None:
    """The README's Python, with the names it leaves to the reader given."""
    from convtrack_sdk import Client

    names: dict[str, Any] = {
        "SERVER_KEY": shell.env["SERVER_KEY"],
        "WRITE_KEY": shell.env["WRITE_KEY"],
        "end_user_agent": BROWSER_UA,
    }
    exec(compile(block.text.replace(README_BASE, server.url), "README.md", "exec"), names)
    clients = [value for value in names.values() if isinstance(value, Client)]
    assert clients, f"README.md:{block.line}: the Python block makes no Client"
    for client in clients:
        assert client.close(timeout=10), f"README.md:{block.line}: events left unsent"
        stats = client.stats
        assert stats.tracked > 0 and stats.accepted == stats.tracked, stats
        assert stats.rejected == 0 and stats.dropped_total == 0, stats


def use_settings(block: Block, cwd: Path) -> None:
    config = cwd / "convtrack.toml"
    config.write_text(block.text)
    load_settings(config, environ={})  # valid settings: every key known, every value typed


def test_every_readme_command_is_run_or_listed() -> None:
    blocks = readme_blocks()
    for block in blocks:
        assert block.language in BLOCK_LANGUAGES, (
            f"README.md:{block.line}: a ```{block.language} block this test does not handle"
        )
    commands = [command for block in blocks for command in block.commands]
    assert len(commands) >= 10, commands
    used = {rule(command)[1] for command in commands}
    # NOT_RUN may name commands the README is about to get; NOT_YET must shrink.
    stale = sorted(set(NOT_YET) - used)
    assert not stale, f"NOT_YET lists what no README command runs (remove them): {stale}"


def test_the_commands_are_split_as_bash_reads_them() -> None:
    text = (
        "```sh\nexport A=1   # a remark\n\ncurl -X POST http://127.0.0.1:8080/v1/track \\\n"
        '  -d \'{"a":1,\n       "b":2}\'\n# {"status":"accepted"}\n'
        ".venv/bin/convtrack dlq list   # dead letters\n"
        "X=1 .venv/bin/convtrack keys show --export &\npython3 dev.py serve --port 9000\n```\n"
    )
    (block,) = readme_blocks(text)
    assert [program(c) for c in block.commands] == [
        "export", "curl", "convtrack dlq list", "convtrack keys show", "dev.py serve",
    ]  # fmt: skip
    assert block.commands[1].answer == '{"status":"accepted"}'
    assert block.commands[1].line == 4 and block.commands[1].text.count("\n") == 2
    assert [c.background for c in block.commands] == [False, False, False, True, False]
    with pytest.raises(AssertionError, match="neither run"):
        rule(Command("rm -rf /tmp/x", 1))


def serve_port(command: Command) -> int:
    words = command.words
    if "--port" in words:
        return int(words[words.index("--port") + 1])
    return ServerSettings().port


def test_the_readme_servers_do_not_share_a_port() -> None:
    # The quickstart's server keeps running in the first shell (the README restarts it
    # with --config later); the servers started in the background run beside it.
    servers = [c for c in every_command() if program(c) in ("dev.py serve", "convtrack serve")]
    background = [serve_port(c) for c in servers if c.background]
    foreground = {serve_port(c) for c in servers if not c.background}
    assert len(set(background)) == len(background), background
    assert not foreground & set(background), (foreground, background)


def test_every_readme_command_runs_as_written(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # As a new user: no keys given, so serve creates them in ./convtrack-data/keys.json.
    server = server_factory(name="convtrack-data")
    for name in GENERATED_KEYS:
        server.env.pop(name)
    server.start(timeout_secs=30)  # the machine is shared: allow a slow start
    venv = Path(sys.prefix)
    assert (venv / "bin" / "convtrack").exists(), f"no convtrack in {venv}: install the package"
    (tmp_path / ".venv").symlink_to(venv)  # the README runs .venv/bin/convtrack
    curlrc = tmp_path / "curl-home"
    curlrc.mkdir()
    (curlrc / ".curlrc").write_text(f'write-out = "\\n{HTTP_STATUS} %{{http_code}}\\n"\n')
    user_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    # The README's server is on the default port; this one is not: a CLI command that finds
    # the running server by the settings (as `flush` may) finds it by this one.
    user_env["CONVTRACK_SERVER_PORT"] = str(server.port)
    shell = Shell(tmp_path, {**user_env, "CURL_HOME": str(curlrc)})

    ran: list[str] = []
    for block in readme_blocks():
        if block.language == "python":
            run_python(block, shell, server)
        elif block.language == "toml":
            use_settings(block, tmp_path)
        for command in block.commands:
            kind, key, _ = rule(command)
            if kind != "RUN":
                continue
            before = {k: shell.env.get(k) for k in ("WRITE_KEY", "SERVER_KEY", "ADMIN_KEY")}
            run_command(shell, server, command, key)
            ran.append(key)
            for name, value in before.items():
                if shell.env.get(name) not in (None, value):  # keys just set: serve's own
                    assert shell.env[name] in server.log_path.read_text(), (
                        f"README.md:{command.line}: {name} is not a key serve printed"
                    )
    assert "curl" in ran and any(key.startswith("convtrack ") for key in ran), ran
