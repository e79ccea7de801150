"""A webhook receiver's answer to a delivery outcome, pure."""

from __future__ import annotations

from convtrack.deliver.answers import excerpt, retry_after_secs
from convtrack.deliver.base import Delivered, Outcome, Reject, Retry, SetupFault, Throttled

# Standard Webhooks: 429, 502 and 504 mean "slow down".
_THROTTLE = frozenset({429, 502, 504})


def read_response(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    if 200 <= status < 300:
        return Delivered()
    after = retry_after_secs(headers.get("retry-after"))
    if status in _THROTTLE:
        return Throttled(after_secs=after, reason=f"HTTP {status}: {excerpt(body)}")
    if status >= 500 or status == 408:
        return Retry(after_secs=after, reason=f"HTTP {status}: {excerpt(body)}")
    if status in (401, 403):
        return SetupFault(reason=f"HTTP {status}: {excerpt(body)}")
    return Reject(reason=f"HTTP {status}: {excerpt(body)}")
