"""Docs that tests keep true: every setting and every CLI command is documented."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from convtrack.cli.main import cli
from convtrack.config import SECTIONS, KeySettings, env_name
from convtrack.deliver.destinations import DESTINATION_KINDS
from convtrack.deliver.destinations.base import DestinationBase

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section, cls in SECTIONS.items():
        for key in cls.__struct_fields__:
            assert f"`{section}.{key}`" in text, f"{section}.{key} is not documented"
            assert f"`{env_name(section, key)}`" in text
    for key in KeySettings.__struct_fields__:
        assert f"`keys.{key}`" in text
    for key in DestinationBase.__struct_fields__:
        assert f"`destinations.{key}`" in text, f"destinations.{key} is not documented"
    for kind in DESTINATION_KINDS:
        tag = kind.__struct_config__.tag
        heading = f'### `kind = "{tag}"`'
        assert heading in text, f"destination kind {tag} has no section"
        section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
        for key in set(kind.__struct_fields__) - set(DestinationBase.__struct_fields__):
            assert f"`destinations.{key}`" in section, (
                f"{tag}: destinations.{key} is not documented"
            )


def cli_commands(group: object = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words after ``convtrack``."""
    paths = []
    for name, command in getattr(group, "commands", {}).items():
        paths.append((*path, name))
        paths.extend(cli_commands(command, (*path, name)))
    return paths


def test_every_cli_command_is_in_the_operations_guide() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for path in cli_commands():
        command = " ".join(("convtrack", *path))
        assert f"`{command}" in text, f"{command} is not documented"


def test_no_cli_help_shows_markup() -> None:
    # click prints docstrings and option help as they are: RST's ``literal`` or
    # markdown's `code` would reach the terminal as backticks.
    for path in [(), *cli_commands()]:
        result = CliRunner().invoke(cli, [*path, "--help"], prog_name="convtrack")
        assert result.exit_code == 0, result.output
        command = " ".join(("convtrack", *path))
        assert "``" not in result.output, f"{command} --help shows RST markup:\n{result.output}"
        assert "`" not in result.output, f"{command} --help shows markdown code:\n{result.output}"
        assert "**" not in result.output, f"{command} --help shows emphasis:\n{result.output}"


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python3 dev.py serve" in readme and "python3 dev.py test" in readme
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_config_show_prints_settings() -> None:
    result = CliRunner().invoke(cli, ["config", "show"], env={"CONVTRACK_LIMITS_USER_BURST": "3"})
    assert result.exit_code == 0, result.output
    assert '"user_burst": 3' in result.output


def test_every_lake_column_is_documented() -> None:
    from convtrack.store.cold.schema import EVENTS, REJECTS

    text = (ROOT / "docs" / "lake.md").read_text()
    for schema in (EVENTS, REJECTS):
        for name in schema.names:
            assert f"| `{name}` |" in text, f"column {name} is not in docs/lake.md"
