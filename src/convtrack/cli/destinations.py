"""``convtrack destinations check``: is each configured destination set up to work?

For every destination: the settings build, the credentials are in the
environment, and the platform's host resolves and takes a connection. GA4
goes further, because it offers a validation endpoint that records nothing:
a sample built the way real events are (the canonical payload, the
destination's ``event_map``) is sent to ``/debug/mp/collect`` and its
``validationMessages`` printed. What could not be checked offline is said,
not implied.

Two kinds of trouble are kept apart, because they are fixed in different
places: the settings are wrong (a missing credential, a validation message, a
4xx answer: FAILED, exit 1), or the platform cannot be reached from this
machine (no DNS, a refused or timed-out connection, a 5xx answer: unreachable,
exit 3), which says nothing about the settings.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from convtrack.config import Settings, load_settings
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.destinations.ga4.settings import Ga4Settings
from convtrack.deliver.destinations.slack.settings import SlackSettings
from convtrack.errors import ConfigError

if TYPE_CHECKING:  # imported when a check runs: the CLI starts without them
    import httpx

    from convtrack.deliver.base import Destination, Forwarded

# The platforms' base URLs, for kinds whose destination does not expose its own.
DEFAULT_BASE_URLS = {
    "meta_capi": "https://graph.facebook.com",
    "linkedin": "https://api.linkedin.com",
    "tiktok": "https://business-api.tiktok.com",
}
NOT_CHECKED = {
    "google_ads": "that the OAuth token is valid and may write to the account "
    "(Google checks it only on a real call)",
    "meta_capi": "that the access token is valid for the pixel (no validation endpoint)",
    "linkedin": "that the token is valid and the conversion rule exists",
    "tiktok": "that the token is valid for the event source",
    "webhook": "that the receiver accepts our signature",
    "slack": "that the webhook URL is live (posting would send a message)",
    "ga4": "that the API secret and stream id are right (the validator ignores them)",
}

Resolve = Callable[[str, int], object]
Connect = Callable[[tuple[str, int], float], socket.socket]
CONNECT_TIMEOUT_SECS = 5.0  # as deliveries (deliver/outbound.py)
EXIT_FAILED = 1  # some settings are wrong
EXIT_UNREACHABLE = 3  # nothing is wrong that could be seen, but a platform was out of reach


@dataclass
class Report:
    name: str
    kind: str
    ok: bool = True  # no check found the settings wrong
    reachable: bool = True  # every platform host could be reached from here
    lines: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.ok = False
        self.lines.append(f"FAIL {text}")

    def unreachable(self, text: str) -> None:
        self.reachable = False
        self.lines.append(f"UNREACHABLE {text}")

    def good(self, text: str) -> None:
        self.lines.append(f"ok   {text}")

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAILED"
        return "ok" if self.reachable else "unreachable from here (the settings may be right)"

    def render(self) -> str:
        head = f"{self.name} ({self.kind}): {self.status}"
        return "\n".join([head, *(f"  {line}" for line in self.lines)])


def exit_code(reports: list[Report]) -> int:
    if not all(report.ok for report in reports):
        return EXIT_FAILED
    return 0 if all(report.reachable for report in reports) else EXIT_UNREACHABLE


def _kind(settings: DestinationSettings) -> str:
    return str(type(settings).__struct_config__.tag)


def _base_url(
    settings: DestinationSettings, destination: object, environ: Mapping[str, str]
) -> str:
    config = getattr(destination, "config", None)
    if isinstance(getattr(config, "base_url", None), str):
        return str(config.base_url)  # type: ignore[union-attr]
    if isinstance(settings, SlackSettings):  # the URL is the secret: only its host is shown
        return environ.get(settings.webhook_url_env, "")
    return settings.endpoint or DEFAULT_BASE_URLS.get(_kind(settings), "")


def _through_proxy(url: str) -> bool:
    """Whether deliveries reach this URL through a proxy (httpx reads the same variables)."""
    parts = urlsplit(url)
    return parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
        parts.hostname or ""
    )


def _check_host(report: Report, url: str, resolve: Resolve, connect: Connect) -> None:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number or out of range
        report.fail("endpoint: the port is not a number from 0 to 65535")
        return
    if not host:
        report.fail("endpoint: no host to resolve")
        return
    try:
        resolve(host, port)
    except UnicodeError:
        report.fail(f"endpoint: {host!r} is not a valid host name")
        return
    except OSError as exc:
        report.unreachable(
            f"endpoint: {host} does not resolve from here ({type(exc).__name__}): this machine"
            " may have no DNS or no internet; if it has, check the endpoint's spelling"
        )
        return
    report.good(f"endpoint: {host} resolves")
    if _through_proxy(url):
        report.lines.append(f"not checked: a connection to {host}:{port} (sent through a proxy)")
        return
    try:
        connect((host, port), CONNECT_TIMEOUT_SECS).close()
    except TimeoutError:
        report.unreachable(
            f"endpoint: {host}:{port} did not take a connection within"
            f" {CONNECT_TIMEOUT_SECS:g} s (a firewall, or no route from here?)"
        )
        return
    except OSError as exc:
        why = exc.strerror or type(exc).__name__  # refused, no route, network unreachable
        report.unreachable(f"endpoint: {host}:{port} cannot be connected to from here ({why})")
        return
    report.good(f"endpoint: {host}:{port} takes connections")


def _ga4_sample(settings: Ga4Settings, event_name: str, now_us: int) -> Forwarded:
    """One event as the pipeline would forward it: the canonical payload of a real shape."""
    from convtrack.deliver.base import Forwarded
    from convtrack.deliver.payload import forward_payload
    from convtrack.model.event import Envelope
    from convtrack.model.processed import ProcessedEvent

    event_id = "convtrack-check-" + uuid.uuid4().hex[:12]
    envelope = Envelope(event_id=event_id, source="default", event_name=event_name,
                        event_time_us=now_us, received_at_us=now_us,
                        user_id="convtrack-check", session_id="convtrack-check-session",
                        value=4999, currency="USD",
                        context={"page_url": "https://shop.example/thanks"})  # fmt: skip
    processed = ProcessedEvent(event=envelope, source_partition=0, source_offset=0,
                               campaign_id="(none)", event_date="1970-01-01",
                               is_conversion=True, logged_at_us=now_us,
                               processed_at_us=now_us, counted_at_us=now_us)  # fmt: skip
    payload = forward_payload(processed, event_map=settings.event_map)
    return Forwarded(event_id, 0, 0, payload)


def _check_ga4(
    report: Report, settings: Ga4Settings, destination: Destination, client: httpx.Client,
    now_us: int,
) -> None:  # fmt: skip
    import httpx

    from convtrack.deliver.destinations.ga4 import Ga4Destination
    from convtrack.deliver.destinations.ga4.request import debug_request
    from convtrack.deliver.destinations.ga4.response import validation_messages

    assert isinstance(destination, Ga4Destination)
    names = settings.event_names or list(settings.event_map) or ["Purchase"]
    for name in dict.fromkeys(names):
        sample = _ga4_sample(settings, name, now_us)
        mapped = sample.payload.event_name
        skip = destination.skip_reason(sample, now_us)
        if skip is not None:
            report.fail(f"{name} -> {mapped!r}: would be skipped as {skip}")
            continue
        request = debug_request(destination.config, destination.build([sample], now_us))
        try:
            answer = client.post(request.url, content=request.body, headers=request.headers)
        except httpx.TransportError as exc:  # never print the URL: it holds the API secret
            report.unreachable(f"/debug/mp/collect: no answer ({type(exc).__name__})")
            return
        except httpx.HTTPError as exc:
            report.fail(f"/debug/mp/collect: {type(exc).__name__}")
            return
        if answer.status_code >= 500:
            report.unreachable(
                f"/debug/mp/collect answered HTTP {answer.status_code} (the platform failed,"
                " not the settings; try again later)"
            )
            return
        messages = validation_messages(answer.content) if answer.status_code == 200 else None
        if messages is None:
            report.fail(f"/debug/mp/collect answered HTTP {answer.status_code}, not a validation")
            return
        if not messages:
            report.good(f"{name} -> {mapped!r}: /debug/mp/collect has no validation messages")
            continue
        report.fail(f"{name} -> {mapped!r}: /debug/mp/collect has {len(messages)} message(s)")
        for message in messages:
            report.lines.append(
                f"       {message.get('validationCode', '?')} at "
                f"{message.get('fieldPath') or '(body)'}: {message.get('description', '')}"
            )


def check_one(
    settings: DestinationSettings,
    environ: Mapping[str, str],
    client: httpx.Client,
    now_us: int,
    resolve: Resolve = socket.getaddrinfo,
    connect: Connect = socket.create_connection,
) -> Report:
    from convtrack.deliver.destinations import create_destination

    report = Report(settings.name, _kind(settings))
    try:
        destination = create_destination(settings, environ)
    except ConfigError as exc:
        report.fail(f"config and credentials: {exc}")
        return report
    report.good("config and credentials present")
    _check_host(report, _base_url(settings, destination, environ), resolve, connect)
    if isinstance(settings, Ga4Settings) and report.ok and report.reachable:
        _check_ga4(report, settings, destination, client, now_us)
    if report.kind in NOT_CHECKED:
        report.lines.append(f"not checked: {NOT_CHECKED[report.kind]}")
    return report


def run_checks(
    settings: Settings, name: str | None, environ: Mapping[str, str], now_us: int
) -> list[Report]:
    import httpx

    chosen = [d for d in settings.destinations if name is None or d.name == name]
    if name is not None and not chosen:
        raise click.BadParameter(f"no destination is named {name!r}", param_hint="--name")
    timeout = max((d.timeout_secs for d in chosen), default=20.0)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        return [check_one(d, environ, client, now_us) for d in chosen]


@click.group("destinations")
def destinations_group() -> None:
    """Configured destinations."""


@destinations_group.command("check")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--name", default=None, help="Only this destination (default: all).")
def destinations_check(config: str | None, name: str | None) -> None:
    """Check each destination: settings, credentials, endpoint; GA4 against its validator.

    Exits 1 when a check finds the settings wrong (a missing credential; GA4: any
    validation message or a 4xx answer); else 3 when a platform could not be
    reached from this machine (no DNS, a refused or timed-out connection, a 5xx),
    which says nothing about the settings; 0 otherwise.
    """
    import time

    settings = load_settings(config)
    reports = run_checks(settings, name, os.environ, time.time_ns() // 1000)
    if not reports:
        click.echo("no destinations configured")
    for report in reports:
        click.echo(report.render())
    raise SystemExit(exit_code(reports))
