"""Webhook options: the settings table plus the signing secret read from the environment."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from convtrack.deliver.destinations.webhook.settings import WebhookSettings
from convtrack.errors import ConfigError

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


NEW_SECRET_BYTES = 32  # an HMAC-SHA256 key as long as its hash


def new_secret() -> str:
    """A fresh random signing secret, ``whsec_<base64>`` (``convtrack secrets new webhook``)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def decode_secret(text: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret: the decoded bytes after the prefix."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"does not start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not valid base64 after whsec_") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    endpoint: str
    secret: bytes

    @classmethod
    def build(cls, settings: WebhookSettings, environ: Mapping[str, str]) -> WebhookConfig:
        raw = environ.get(settings.secret_env, "").strip()
        if not raw:
            raise ConfigError(
                f"destination {settings.name}: environment variable {settings.secret_env} "
                "is not set (it must hold the webhook secret whsec_<base64>)"
            )
        try:
            secret = decode_secret(raw)
        except ValueError as exc:
            raise ConfigError(
                f"destination {settings.name}: environment variable {settings.secret_env} {exc}"
            ) from exc
        return cls(name=settings.name, endpoint=settings.endpoint, secret=secret)
