"""GA4 answers to outcomes, pure.

``/mp/collect`` answers 2xx to everything it receives, malformed or not
(validation is ``/debug/mp/collect``'s job, see ``convtrack destinations
check``). So 2xx is delivered, 5xx is transient, and any 4xx (a proxy, a
wrong host) is a permanent refusal we report with its text.
"""

from __future__ import annotations

from convtrack.deliver.answers import excerpt, json_object, retry_after_secs
from convtrack.deliver.base import Delivered, Outcome, Reject, Retry


def read_response(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    if 200 <= status < 300:
        return Delivered()
    reason = f"HTTP {status}: {excerpt(body)}"
    if status >= 500:
        return Retry(after_secs=retry_after_secs(headers.get("retry-after")), reason=reason)
    return Reject(reason=reason)


def validation_messages(body: bytes) -> list[dict[str, str]] | None:
    """The ``validationMessages`` of a ``/debug/mp/collect`` answer (None: not one)."""
    answer = json_object(body)
    if answer is None or not isinstance(answer.get("validationMessages"), list):
        return None
    return [
        {str(k): str(v) for k, v in message.items()}
        for message in answer["validationMessages"]
        if isinstance(message, dict)
    ]
