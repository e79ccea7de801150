"""``convtrack secrets new KIND``: a fresh random secret, in the form its setting takes."""

from __future__ import annotations

import click

SECRET_KINDS = ("webhook", "token")


@click.group("secrets")
def secrets_group() -> None:
    """Make the secrets that settings name by environment variable."""


@secrets_group.command("new")
@click.argument("kind", type=click.Choice(SECRET_KINDS))
def secrets_new(kind: str) -> None:
    """Print a new random secret of KIND, on one line.

    webhook: a Standard Webhooks signing secret, whsec_<base64 of 32 bytes>, for
    the variable a webhook destination's secret_env names; give the receiver the
    same secret, to check the webhook-signature header.

    token: a secret for CONVTRACK_TOKEN_SECRET, which signs conversion tokens
    (every collector of one deployment needs the same one).
    """
    if kind == "webhook":
        from convtrack.deliver.destinations.webhook.config import new_secret

        click.echo(new_secret())
    else:
        import secrets

        click.echo(secrets.token_urlsafe(32))
