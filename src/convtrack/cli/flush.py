"""``convtrack flush``: ask a running server to write its lake now (``POST /v1/admin/flush``)."""

from __future__ import annotations

import click
import msgspec

from convtrack.cli.server import post_admin
from convtrack.config import load_settings


@click.command("flush")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="The server (default: http://server.host:server.port of the settings).",
)
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", "data_dir", default=None,
              help="The server's data dir (its keys.json holds the admin key).")  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text",
    show_default=True, help="Output format (json: the server's answer).",
)  # fmt: skip
def flush_command(url: str | None, config: str | None, data_dir: str | None, fmt: str) -> None:
    """Ask a running server to write its lake now instead of at its next flush.

    POST /v1/admin/flush with the admin key (CONVTRACK_ADMIN_KEY, else the data
    dir's keys.json): the server lets its processor take the events accepted so
    far (up to 5 s), flushes, and answers how many rows it wrote and what the
    lake holds. The server must run the store role.
    """
    overrides = {"server": {"data_dir": data_dir}} if data_dir else None
    body = post_admin(load_settings(config, overrides=overrides), url, "/v1/admin/flush", 60.0)
    if fmt == "json":
        click.echo(msgspec.json.encode(body).decode())
        return
    flushed = body.get("flushed", {})
    lake = body.get("lake", {})
    click.echo(f"flushed {flushed.get('events', 0)} event(s) and {flushed.get('rejects', 0)}"
               " reject(s) to the lake")  # fmt: skip
    if lake.get("first_date"):
        span = lake["first_date"] if lake["first_date"] == lake["last_date"] else (
            f"{lake['first_date']} to {lake['last_date']}")  # fmt: skip
        click.echo(f"the lake holds {lake['rows']} event(s) dated {span}")
    if not body.get("processor_caught_up", True):
        click.echo("convtrack: the processor had not taken every accepted event within 5 s;"
                   " run flush again for the rest", err=True)  # fmt: skip
