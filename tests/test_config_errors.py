"""A bad setting is named with where it came from and what it takes; a misspelt one gets the
setting that was meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from convtrack.cli.main import main
from convtrack.config import SECTIONS, ignored_env_hints, known_settings, load_settings
from convtrack.config_errors import closest, expected
from convtrack.errors import ConfigError


def refusal(environ: dict[str, str], config_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(config_file, environ=environ)
    message = str(refused.value)
    assert "\n" not in message  # one line
    return message


def test_a_bad_environment_value_names_the_setting_its_variable_and_the_type() -> None:
    message = refusal({"CONVTRACK_SERVER_PORT": "abc"})
    assert message == (
        "server.port: cannot use 'abc' from environment variable CONVTRACK_SERVER_PORT:"
        " expected an integer from 0 to 65535"
    )
    assert "expected a number over 0, at most 300" in refusal(
        {"CONVTRACK_SERVER_HEADER_TIMEOUT_SECS": "0"}
    )
    assert "expected one of `debug`, `info`, `warning`, `error`" in refusal(
        {"CONVTRACK_SERVER_LOG_LEVEL": "loud"}
    )
    assert "expected true or false" in refusal({"CONVTRACK_SERVER_REUSE_PORT": "maybe"})


def test_a_bad_file_value_names_the_file_and_its_key(tmp_path: Path) -> None:
    path = tmp_path / "convtrack.toml"
    path.write_text('[server]\nport = "abc"\n')
    assert refusal({}, path) == (
        f"server.port: cannot use 'abc' from config file {path} ([server] port):"
        " expected an integer from 0 to 65535"
    )
    # The environment wins over the file: a good value there hides the file's bad one,
    # and a bad one there is the one named.
    assert load_settings(path, environ={"CONVTRACK_SERVER_PORT": "9000"}).server.port == 9000
    assert "environment variable CONVTRACK_SERVER_PORT" in refusal(
        {"CONVTRACK_SERVER_PORT": "-1"}, path
    )
    path.write_text("[cold]\nflush_interval_secs = 0\n")
    assert "cold.flush_interval_secs: cannot use 0 from config file" in refusal({}, path)
    assert "expected a number over 0" in refusal({}, path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[cold]\nflush_interval = 60\n", "did you mean `cold.flush_interval_secs`?"),
        ("[server]\nhots = 'x'\n", "did you mean `server.host`?"),
        # A key put in the wrong section: the section it belongs to.
        ("[server]\nflush_interval_secs = 60\n", "did you mean `cold.flush_interval_secs`?"),
        ("port = 8080\n", "did you mean `server.port`?"),
        ("[clod]\nuri = 'x'\n", "unknown section clod"),
        ("[clod]\nuri = 'x'\n", "did you mean `cold`?"),
        (
            "[[destinations]]\nkind = 'webhook'\nname = 'crm'\nendpoint = 'https://crm.example'\n"
            "secret = 'X'\n",
            "did you mean `destinations.0.secret_env`?",
        ),
        ("[[keys]]\nrole = 'write'\nkey = 'X'\n", "did you mean `keys.0.key_env`?"),
    ],
)
def test_an_unknown_file_key_gets_what_was_meant(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "convtrack.toml"
    path.write_text(text)
    message = refusal({}, path)
    assert "unknown" in message and says in message, message


def test_an_unknown_key_like_no_setting_gets_no_guess(tmp_path: Path) -> None:
    path = tmp_path / "convtrack.toml"
    path.write_text("[server]\nzzzzz = 1\n")
    assert (
        refusal({}, path) == f"unknown setting server.zzzzz in config file {path} ([server] zzzzz)"
    )


def test_an_unknown_environment_variable_gets_the_variable_meant() -> None:
    message = refusal({"CONVTRACK_COLD_FLUSH_INTERVAL": "60"})
    assert message == (
        "unknown setting cold.flush_interval (from environment CONVTRACK_COLD_FLUSH_INTERVAL);"
        " did you mean `cold.flush_interval_secs` (CONVTRACK_COLD_FLUSH_INTERVAL_SECS)?"
    )


def test_every_setting_has_words_for_what_it_takes() -> None:
    from typing import get_type_hints

    for section, cls in SECTIONS.items():
        for key, hint in get_type_hints(cls, include_extras=True).items():
            words = expected(hint)
            assert words and "<" not in words and "Annotated" not in words, (section, key, words)
    assert closest("cold.flush_interval", known_settings()) == ["cold.flush_interval_secs"]


def test_the_cli_prints_the_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVTRACK_SERVER_PORT", "abc")
    monkeypatch.setattr("sys.argv", ["convtrack", "config", "show"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "convtrack: server.port: cannot use 'abc' from environment variable"
        " CONVTRACK_SERVER_PORT: expected an integer from 0 to 65535\n"
    )


def test_a_variable_with_its_section_left_out_is_warned_about() -> None:
    # Not an error: other tools' variables share the prefix (CONVTRACK_URL in the docs).
    environ = {"CONVTRACK_FLUSH_INTERVAL_SECS": "60", "CONVTRACK_COLDD_URI": "/tmp/lake",
               "CONVTRACK_URL": "http://127.0.0.1:8080", "CONVTRACK_WRITE_KEY": "k" * 16,
               "CONVTRACK_KAFKA_LIB": "/opt/kafka/lib"}  # fmt: skip
    assert load_settings(environ=environ).cold.flush_interval_secs == 300  # ignored
    assert ignored_env_hints(environ) == [
        "CONVTRACK_COLDD_URI is not a setting and is ignored; did you mean `cold.uri`"
        " (CONVTRACK_COLD_URI)?",
        "CONVTRACK_FLUSH_INTERVAL_SECS is not a setting and is ignored; did you mean"
        " `cold.flush_interval_secs` (CONVTRACK_COLD_FLUSH_INTERVAL_SECS)?",
    ]


def test_the_cli_prints_the_warning() -> None:
    from click.testing import CliRunner

    from convtrack.cli.main import cli

    result = CliRunner().invoke(cli, ["config", "show"], env={"CONVTRACK_PORT": "9000"})
    assert result.exit_code == 0
    assert (
        "convtrack: warning: CONVTRACK_PORT is not a setting and is ignored; did you mean"
        " `server.port` (CONVTRACK_SERVER_PORT)?"
    ) in result.stderr
