"""A TikTok Events API answer to a delivery outcome, pure (destinations.md §5).

TikTok answers HTTP 200 with ``{"code": 0, "message": "OK", ...}`` on success
and a non-zero ``code`` on failure, even at HTTP 200, so the code decides.
The numeric codes are [UNCONFIRMED] in our reference (TikTok's own docs were
not available); we follow the commonly cited classes:

- 40100 (rate limit): throttled;
- 50000-59999 (system errors): transient, retried;
- 40001 (no permission), 40104 and 40105 (access token empty or invalid):
  a setup error, the destination pauses and keeps the events;
- any other code (40002 parameter error, ...): refused for good.

Without a code envelope the HTTP status decides: 429 throttled, 5xx and 408
transient, 401/403 setup, other 4xx refused. A 2xx without a readable code is
retried: TikTok drops a copy it already has by event + event_id (48 h).
"""

from __future__ import annotations

from collections.abc import Iterable

from convtrack.deliver.answers import by_status, excerpt, json_object, redact, retry_after_secs
from convtrack.deliver.base import Delivered, Outcome, Reject, Retry, SetupFault, Throttled

THROTTLE_CODES = frozenset({40100})
SETUP_CODES = frozenset({40001, 40104, 40105})
TRANSIENT_CODES = range(50000, 60000)


def read_response(
    status: int, headers: dict[str, str], body: bytes, *, secrets: Iterable[str] = ()
) -> Outcome:
    reason = redact(f"HTTP {status}: {excerpt(body)}", secrets)
    answer = json_object(body)
    code = answer.get("code") if answer else None
    after = retry_after_secs(headers.get("retry-after"))
    if isinstance(code, int) and not isinstance(code, bool):
        if code == 0 and 200 <= status < 300:
            return Delivered()
        if code in THROTTLE_CODES:
            return Throttled(after_secs=after, reason=reason)
        if code in TRANSIENT_CODES:
            return Retry(after_secs=after, reason=reason)
        if code in SETUP_CODES:
            return SetupFault(reason=reason)
        if code != 0 and status < 500 and status != 429:
            return Reject(reason=reason)
    by_http = by_status(status, after, reason)
    if by_http is not None:
        return by_http
    if 200 <= status < 300:
        return Retry(after_secs=after, reason=f"no code in the answer: {reason}")
    return Reject(reason=reason)
