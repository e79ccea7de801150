"""``convtrack``: serve the pipeline, inspect configuration."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import msgspec

from convtrack import __version__
from convtrack.cli.destinations import destinations_group
from convtrack.cli.flush import flush_command
from convtrack.cli.output import listing_options, render
from convtrack.cli.quarantine import quarantine_group
from convtrack.cli.secrets import secrets_group
from convtrack.config import Settings, ignored_env_hints, load_settings, settings_as_dict
from convtrack.errors import ConvtrackError
from convtrack.store.cold.attribution import MODELS

if TYPE_CHECKING:
    from convtrack.store.deadletters.base import DeadLetterStore


def _settings(config: str | None, **flags: Any) -> Settings:
    server = {k: v for k, v in flags.items() if v is not None}
    for hint in ignored_env_hints(os.environ):
        click.echo(f"convtrack: warning: {hint}", err=True)
    return load_settings(config, overrides={"server": server} if server else None)


@click.group()
@click.version_option(__version__, prog_name="convtrack")
def cli() -> None:
    """convtrack: real-time conversion tracking."""


@cli.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--host", default=None, help="Address to listen on (server.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (server.port).")
@click.option("--data-dir", "data_dir", default=None, help="Where data lives (server.data_dir).")
@click.option(
    "--roles", "roles", default=None, metavar="ROLE[,ROLE...]",
    help="Run only these roles: collect, process, store, deliver (default: all).",
)  # fmt: skip
def serve(
    config: str | None, host: str | None, port: int | None, data_dir: str | None,
    roles: str | None,
) -> None:  # fmt: skip
    """Run the pipeline in this process: every role (the default) or those of --roles.

    Without collect, the process serves only /healthz, /readyz and /metrics.
    """
    from convtrack.runtime.roles import parse_roles
    from convtrack.runtime.serve import serve as run

    try:
        chosen = parse_roles(roles)
    except ConvtrackError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from exc
    settings = _settings(config, host=host, port=port, data_dir=data_dir)
    sys.exit(run(settings, chosen))


def _verbose_option(command: Any) -> Any:
    return click.option(
        "--verbose", "-v", is_flag=True,
        help="Also say what the lake holds when the answer has rows (on stderr).",
    )(command)  # fmt: skip


@cli.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", default=None, help="The data dir (its lake is used).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True, help="Output format.",
)  # fmt: skip
@_verbose_option
@click.argument("sql")
def query(config: str | None, data_dir: str | None, fmt: str, verbose: bool, sql: str) -> None:
    """Run SQL over the lake: tables events and rejects.

    The lake is written at each flush of the running server (every
    cold.flush_interval_secs, 300 s by default, at stop, and by convtrack
    flush). When the answer has no rows (or with --verbose) lines on stderr
    say which dates the lake holds, when it was last flushed and how many
    processed events wait for the next flush.
    """
    import duckdb

    from convtrack.cli.lakehint import lake_hint
    from convtrack.runtime.backends import open_lake
    from convtrack.store.cold.query import connect

    settings = _settings(config, data_dir=data_dir)
    lake = open_lake(settings, create_bucket=False)
    con = connect(lake)
    try:
        result = con.execute(sql)
    except duckdb.Error as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from exc
    columns = [d[0] for d in result.description or []]
    rows = result.fetchall()
    click.echo(render(columns, rows, fmt))
    if verbose or not rows:
        _hint(lake_hint(settings, lake))


def _hint(lines: list[str]) -> None:
    """On stderr, so that CSV and JSON on stdout stay what they are."""
    for line in lines:
        click.echo(f"convtrack: {line}", err=True)


@cli.command()
@click.option(
    "--date", "day", required=True,
    help="The UTC event date: YYYY-MM-DD, today, yesterday or Nd (N days ago).",
)  # fmt: skip
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", default=None, help="The data dir (hot store and lake).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table",
    show_default=True, help="Output format (json: one object, with the same verdict).",
)  # fmt: skip
def reconcile(day: str, config: str | None, data_dir: str | None, fmt: str) -> None:
    """Compare the hot counters with the lake, per campaign, for one UTC date.

    Counted conversions and value per currency of every campaign on both
    sides, and what is still in flight between the event log and the lake
    (accepted but not yet counted; counted but not yet in the lake). Exit
    codes: 0 "no difference" (and nothing in flight can change that date);
    1 a difference that nothing in flight explains; 3 behind: events in
    flight may still change that date, so it cannot be judged yet (run again
    once the pipeline caught up); 4 empty: no conversions on that date on
    either side and none in flight, nothing to compare; 2 a side cannot be
    read, or bad usage.
    """
    from convtrack.cli.dates import day_option
    from convtrack.cli.reconcile import reconcile as run

    settings = _settings(config, data_dir=data_dir)
    result = run(settings, day_option(day, "--date").isoformat())
    click.echo(msgspec.json.encode(result).decode() if fmt == "json" else result.text)
    if result.status == "empty" and fmt != "json":  # JSON: the summary says it
        from convtrack.cli.lakehint import lake_hint
        from convtrack.runtime.backends import open_lake

        _hint(lake_hint(settings, open_lake(settings, create_bucket=False)))
    sys.exit(result.exit_code)


@cli.command()
@click.option("--model", required=True, type=click.Choice(MODELS), help="The attribution model.")
@click.option(
    "--from", "first", required=True,
    help="The first UTC event date: YYYY-MM-DD, today, yesterday or Nd (N days ago).",
)  # fmt: skip
@click.option("--to", "last", default="today", show_default=True,
              help="The last UTC event date, in the same forms.")  # fmt: skip
@click.option(
    "--lookback-days", "lookback_days", type=click.IntRange(1, 365), default=30,
    show_default=True, help="How far back before a conversion touches count.",
)  # fmt: skip
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", default=None, help="The data dir (its lake is used).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True, help="Output format.",
)  # fmt: skip
@_verbose_option
def attribution(
    model: str, first: str, last: str, lookback_days: int, config: str | None,
    data_dir: str | None, fmt: str, verbose: bool,
) -> None:  # fmt: skip
    """Credit conversions to campaigns under an attribution model, from the lake.

    Conversions with UTC event dates --from to --to (inclusive) and the touches
    of their journeys up to --lookback-days before them; one row per campaign,
    most conversions first (see docs/http-api.md for the models). Value is in
    major units in the table and CSV, minor units in JSON. With no row (or
    --verbose), lines on stderr say what the lake holds, as for query.
    """
    from convtrack.cli.attribution import report, rows
    from convtrack.cli.dates import day_option
    from convtrack.cli.lakehint import lake_hint
    from convtrack.runtime.backends import open_lake

    start, end = day_option(first, "--from"), day_option(last, "--to")
    if start > end:
        raise click.BadParameter("must not be after --to", param_hint="--from")
    settings = _settings(config, data_dir=data_dir)
    found = rows(settings, model, start, end, lookback_days)
    click.echo(report(found, fmt))
    if verbose or not found:
        lines = lake_hint(settings, open_lake(settings, create_bucket=False))
        if not found:
            lines.insert(0, f"no conversion dated {start} to {end} in the lake")
        _hint(lines)


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
def config_show(config: str | None) -> None:
    """Print the effective settings (file, then environment) as JSON."""
    settings = _settings(config)
    click.echo(msgspec.json.format(msgspec.json.encode(settings_as_dict(settings))))


@cli.group("keys")
def keys_group() -> None:
    """The API keys of a data dir."""


@keys_group.command("show")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", default=None, help="The data dir (server.data_dir).")
@click.option(
    "--format", "fmt", type=click.Choice(["export", "json"]), default="export",
    show_default=True, help="export: one shell line for eval; json: one object by role.",
)  # fmt: skip
def keys_show(config: str | None, data_dir: str | None, fmt: str) -> None:
    """Print the keys serve uses: CONVTRACK_*_KEY from the environment, else keys.json.

    eval "$(convtrack keys show)" sets WRITE_KEY, SERVER_KEY and ADMIN_KEY.
    """
    import shlex

    from convtrack.runtime.api_keys import stored_keys

    found = stored_keys(_settings(config, data_dir=data_dir))
    if fmt == "json":
        click.echo(msgspec.json.encode(found).decode())
        return
    words = [f"{role.upper()}_KEY={shlex.quote(secret)}" for role, secret in found.items()]
    click.echo("export " + " ".join(words))


@cli.group("dlq")
def dlq_group() -> None:
    """Dead letters: deliveries that failed for good (read, replay, purge)."""


def _dlq_options(command: Any) -> Any:
    command = click.option("--data-dir", "data_dir", default=None,
                           help="The data dir (server.data_dir).")(command)  # fmt: skip
    command = click.option("--config", "config", type=click.Path(dir_okay=False),
                           help="TOML settings file.")(command)  # fmt: skip
    return click.option("--destination", default=None,
                        help="Only this destination (default: all).")(command)  # fmt: skip


@contextmanager
def _dead_letter_store(config: str | None, data_dir: str | None) -> Iterator[DeadLetterStore]:
    from convtrack.runtime.backends import open_dead_letter_store

    # Where the server keeps them: the data dir's SQLite file, or the shared Redis.
    store = open_dead_letter_store(_settings(config, data_dir=data_dir))
    try:
        yield store
    finally:
        store.close()


@dlq_group.command("list")
@_dlq_options
@listing_options
def dlq_list(
    destination: str | None, config: str | None, data_dir: str | None, limit: int, fmt: str
) -> None:
    """Print the dead letters, oldest first, with each destination's last answer."""
    with _dead_letter_store(config, data_dir) as store:
        total = store.total(destination)
        rows = [
            (d.id, d.destination, d.event.event_id, d.last_status, d.attempts,
             d.as_json()["last_attempt_at"], d.replay, d.last_answer)
            for d in store.items(destination, limit)
        ]  # fmt: skip
    columns = ["id", "destination", "event_id", "last_status", "attempts", "last_attempt_at",
               "replay_pending", "last_answer"]  # fmt: skip
    click.echo(render(columns, rows, fmt))
    click.echo(f"{total} dead letter(s)", err=True)


@dlq_group.command("replay")
@_dlq_options
def dlq_replay(destination: str | None, config: str | None, data_dir: str | None) -> None:
    """Queue the dead letters for sending again; the running server sends them."""
    with _dead_letter_store(config, data_dir) as store:
        click.echo(f"replayed {store.mark_replay(destination)}")


@dlq_group.command("purge")
@_dlq_options
def dlq_purge(destination: str | None, config: str | None, data_dir: str | None) -> None:
    """Delete the dead letters for good."""
    with _dead_letter_store(config, data_dir) as store:
        click.echo(f"purged {store.purge(destination)}")


cli.add_command(destinations_group)
cli.add_command(flush_command)
cli.add_command(quarantine_group)
cli.add_command(secrets_group)


@cli.group("dev")
def dev_group() -> None:
    """Tools for development on one machine."""


@dev_group.group("services")
def services_group() -> None:
    """Local Kafka, Redis and S3 for trying distributed mode (no containers)."""


@services_group.command("up")
@click.option("--dir", "root", required=True, type=click.Path(file_okay=False),
              help="Where the services keep their data, ports, logs and pids.")  # fmt: skip
@click.option("--skip-missing", is_flag=True,
              help="Start the services that can start; leave out those that cannot.")  # fmt: skip
def services_up(root: str, skip_missing: bool) -> None:
    """Start Kafka, Redis and S3 in the background; print the environment as KEY=value."""
    from pathlib import Path

    from convtrack.devservices.manager import services_up as run

    def progress(text: str, *, end: str = "\n") -> None:
        click.echo(text + end, nl=False, err=True)  # stdout carries only the KEY=value lines

    result = run(Path(root), skip_missing=skip_missing, progress=progress)
    for name, why in result.skipped.items():
        click.echo(f"convtrack: skipped {name}: {why}", err=True)
    for line in result.lines():
        click.echo(line)


@services_group.command("down")
@click.option("--dir", "root", required=True, type=click.Path(file_okay=False),
              help="The folder given to 'convtrack dev services up'.")  # fmt: skip
def services_down(root: str) -> None:
    """Stop the services started by 'convtrack dev services up --dir DIR'."""
    from pathlib import Path

    from convtrack.devservices.manager import services_down as run

    stopped = run(Path(root))
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", err=True)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConvtrackError as exc:
        click.echo(f"convtrack: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
