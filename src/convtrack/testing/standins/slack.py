"""Slack incoming-webhook stand-in (destinations.md §6c and the §8 checklist).

Answers ``ok`` in plain text; checks the body is JSON with a ``text`` or
``blocks`` (``invalid_payload`` / ``no_text`` otherwise, as Slack does) and
that blocks keep Slack's limits; enforces a rate (default 1 message/s with a
small burst) with a token bucket, answering 429 with ``Retry-After`` in whole
seconds when a post comes too soon. ``now`` is injectable so the rate follows
a test's manual clock. Accepted messages are kept in ``messages``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from convtrack.testing.standins.base import Answer, Request, StandIn

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_TEXT_CHARS = 40_000


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"content-type": "text/plain", **(headers or {})}, text.encode())


def block_problem(blocks: Any) -> str | None:
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return f"blocks must be a list of at most {MAX_BLOCKS}"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in (
            "section",
            "context",
            "header",
            "divider",
        ):
            return "unknown block type"  # fmt: skip
        text = block.get("text")
        if block["type"] == "section":
            if not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text"):
                return "a section needs a text object"
            if not 1 <= len(text.get("text", "")) <= MAX_SECTION_CHARS:
                return f"section text must be 1 to {MAX_SECTION_CHARS} characters"
        if block["type"] == "context" and not block.get("elements"):
            return "a context needs elements"
    return None


class SlackStandIn(StandIn):
    def __init__(
        self,
        *,
        rate_per_sec: float = 1.0,
        burst: int = 3,
        now: Callable[[], float] | None = None,
        # Slack's shape: /services/<team>/<bot>/<token>; the token is the secret.
        path: str = "/services/T0STANDIN/B0STANDIN/standin-webhook-token",
    ) -> None:
        super().__init__()
        self.rate_per_sec = rate_per_sec
        self.burst = burst
        self.now = now or time.monotonic
        self.path = path
        self.url = self.base_url + path
        self.tokens = float(burst)
        self.refilled_at: float | None = None
        self.messages: list[dict[str, Any]] = []
        self.rate_limited = 0

    def _take_token(self) -> float | None:
        """None when a post may go now, else the seconds until it may."""
        now = self.now()
        if self.refilled_at is not None:
            elapsed = max(0.0, now - self.refilled_at)
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_sec)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate_per_sec

    def check(self, request: Request) -> Answer:
        if request.method != "POST" or request.path != self.path:
            return plain(404, "no_service")
        wait = self._take_token()
        if wait is not None:
            self.rate_limited += 1
            return plain(429, "rate_limited", {"retry-after": str(max(1, math.ceil(wait)))})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return plain(400, "invalid_payload")
        try:
            message = json.loads(request.body)
        except ValueError:
            return plain(400, "invalid_payload")
        if not isinstance(message, dict):
            return plain(400, "invalid_payload")
        text, blocks = message.get("text"), message.get("blocks")
        if not text and not blocks:
            return plain(400, "no_text")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
            return plain(400, "invalid_payload")
        if blocks is not None and block_problem(blocks) is not None:
            return plain(400, "invalid_blocks")
        self.messages.append(message)
        return plain(200, "ok")
