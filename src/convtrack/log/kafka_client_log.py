"""librdkafka's own log lines, passed on to Python logging at most once a minute each.

librdkafka logs a connection failure at every reconnect, each second per client
and broker, for as long as a broker is away. Every client of the log hands its
lines to ``client_log`` (see kafka_client); the filter lets each kind of line
through once per ``CLIENT_LOG_REPEAT_SECS``. The Kafka log installs it when it is
built, so no process gets it merely by importing a module.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from convtrack.observe.logs import RepeatFilter

CLIENT_LOG_REPEAT_SECS: Final = 60.0

client_log = logging.getLogger("convtrack.log.kafka.client")
_installing = threading.Lock()


def install_client_log_filter() -> None:
    """Put the repeat filter on ``client_log`` once per process; later calls do nothing.

    One filter for every client, so a line repeated by several clients passes once.
    """
    with _installing:  # two logs built at once must not add two filters
        if not any(isinstance(existing, RepeatFilter) for existing in client_log.filters):
            client_log.addFilter(RepeatFilter(CLIENT_LOG_REPEAT_SECS))
