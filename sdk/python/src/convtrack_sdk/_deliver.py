"""The send loop over one taken batch: blocking (thread worker, interpreter exit) or async."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from convtrack_sdk._dispatch import BATCH_PATH, Again, Dispatcher, batch_body
from convtrack_sdk._errors import TransportError
from convtrack_sdk._events import QueuedEvent
from convtrack_sdk._http import Answer, HttpTransport


def _post(transport: HttpTransport, chunk: list[QueuedEvent]) -> Answer | TransportError:
    try:
        return transport.post(BATCH_PATH, batch_body(chunk))
    except TransportError as exc:
        return exc


def deliver_blocking(
    dispatcher: Dispatcher,
    transport: HttpTransport,
    events: list[QueuedEvent],
    wait: Callable[[float], bool],
    aborted: Callable[[], bool],
) -> None:
    """Send ``events`` until each is settled. ``wait(secs)`` returns True when woken to
    stop early; once ``aborted()``, unsent events are dropped as ``closed``."""
    work = plan(dispatcher, events)
    while work:
        chunk, retries = work.popleft()
        if aborted():
            dispatcher.abandon(chunk)
            continue
        follow = dispatcher.after(chunk, _post(transport, chunk), retries)
        if isinstance(follow, Again):
            wait(follow.delay_secs)
            work.appendleft((follow.events, retries + 1))
        elif follow is not None:
            work.extendleft((part, retries) for part in reversed(follow))


Work = deque[tuple[list[QueuedEvent], int]]  # requests still to settle, with retries done


def plan(dispatcher: Dispatcher, events: list[QueuedEvent]) -> Work:
    return deque((chunk, 0) for chunk in dispatcher.chunks(events))


async def deliver_async(dispatcher: Dispatcher, transport: HttpTransport, work: Work) -> None:
    """The same loop for the asyncio client, on the caller's ``work``: when cancelled,
    what is left in it is unsettled. The blocking ``http.client`` call runs in a
    thread, so the event loop never waits on the network."""
    while work:
        chunk, retries = work[0]
        result = await asyncio.to_thread(_post, transport, chunk)
        work.popleft()
        follow = dispatcher.after(chunk, result, retries)
        if isinstance(follow, Again):
            work.appendleft((follow.events, retries + 1))
            await asyncio.sleep(follow.delay_secs)
        elif follow is not None:
            work.extendleft((part, retries) for part in reversed(follow))
