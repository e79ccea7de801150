"""``convtrack quarantine list|replay``: the events a stage failed on for good.

The rows live where the server keeps them (the data dir's SQLite file, or the
shared Redis with ``hot.kind = "redis"``); ``replay`` only queues them, and the
running server's stage that owns each row re-submits it once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from convtrack.cli.output import listing_options, render
from convtrack.config import load_settings
from convtrack.store.quarantine.base import QUARANTINE_STAGES

if TYPE_CHECKING:
    from convtrack.store.quarantine.base import QuarantineStore


@click.group("quarantine")
def quarantine_group() -> None:
    """Quarantined events: those a stage failed on for good (list, replay)."""


def _options(command: Any) -> Any:
    command = click.option("--data-dir", "data_dir", default=None,
                           help="The data dir (server.data_dir).")(command)  # fmt: skip
    command = click.option("--config", "config", type=click.Path(dir_okay=False),
                           help="TOML settings file.")(command)  # fmt: skip
    return click.option("--stage", type=click.Choice(QUARANTINE_STAGES), default=None,
                        help="Only this stage (default: all).")(command)  # fmt: skip


@contextmanager
def _store(config: str | None, data_dir: str | None) -> Iterator[QuarantineStore]:
    from convtrack.runtime.backends import open_quarantine_store

    overrides = {"server": {"data_dir": data_dir}} if data_dir else None
    store = open_quarantine_store(load_settings(config, overrides=overrides))
    try:
        yield store
    finally:
        store.close()


@quarantine_group.command("list")
@_options
@listing_options
def quarantine_list(
    stage: str | None, config: str | None, data_dir: str | None, limit: int, fmt: str
) -> None:
    """Print the quarantined events, oldest first, with the stage and the error."""
    with _store(config, data_dir) as store:
        total = store.total(stage)
        rows = [r.as_json() for r in store.items(stage, limit)]
    columns = ["id", "stage", "scope", "event_id", "log", "partition", "offset",
               "quarantined_at", "attempts", "replay_pending", "error"]  # fmt: skip
    click.echo(render(columns, [tuple(row[c] for c in columns) for row in rows], fmt))
    click.echo(f"{total} quarantined event(s)", err=True)


@quarantine_group.command("replay")
@_options
def quarantine_replay(stage: str | None, config: str | None, data_dir: str | None) -> None:
    """Queue the quarantined events for re-submission; the running server re-submits each
    once (dedup applies; one that fails again stays quarantined)."""
    with _store(config, data_dir) as store:
        click.echo(f"replayed {store.mark_replay(stage)}")
