"""Slack's answer to a delivery outcome, pure.

Success is HTTP 200 with the plain-text body ``ok``. Errors are plain-text
strings, matched on the body because their status codes differ between
sources (destinations.md §6c). The token and channel ones mean the hook is
gone or misconfigured: a setup error (the destination pauses and alerts).
A payload Slack refuses will be refused again: permanent. ``rollup_error``
is Slack's own 500: retried.
"""

from __future__ import annotations

from convtrack.deliver.answers import excerpt, retry_after_secs
from convtrack.deliver.base import Delivered, Outcome, Reject, Retry, SetupFault, Throttled

SETUP_ERRORS = frozenset({
    "invalid_token", "action_prohibited", "channel_not_found", "channel_is_archived",
    "no_service", "team_disabled", "no_active_hooks", "no_service_id", "no_team",
    "posting_to_general_channel_denied",
})  # fmt: skip
PAYLOAD_ERRORS = frozenset({"invalid_payload", "no_text"})
# Without a known string: the hook's URL is wrong or was revoked.
_SETUP_STATUSES = frozenset({401, 403, 404, 410})


def read_response(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    answer = body.decode("utf-8", errors="replace").strip()
    reason = f"HTTP {status}: {excerpt(body)}"
    if answer in SETUP_ERRORS:
        return SetupFault(reason=reason)
    if answer in PAYLOAD_ERRORS:
        return Reject(reason=reason)
    if 200 <= status < 300:
        return Delivered()
    after = retry_after_secs(headers.get("retry-after"))
    if status == 429:
        return Throttled(after_secs=after, reason=reason)
    if status >= 500 or status == 408:
        return Retry(after_secs=after, reason=reason)
    if status in _SETUP_STATUSES:
        return SetupFault(reason=reason)
    return Reject(reason=reason)
