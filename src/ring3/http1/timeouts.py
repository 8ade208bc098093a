"""An HTTP/1.1 connection's deadlines: header, body, keep-alive, send and lingering close, worked out
from its state when its one lazy timer fires (ring3.timers). The connection's friend, as
http1/writers.py is."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ring3.http1.closing import fail_current, start_rejected

if TYPE_CHECKING:
    from ring3.http1.connection import Connection

logger = logging.getLogger("ring3.error")

# As the server drains (a reload, a stop), how long an idle connection may wait for its next request
# (counted from its last response, or from its accepting) before it is closed: a client under load sends
# it at once, gets its answer with Connection: close and opens its next connection elsewhere, instead of
# meeting a connection closed under a request it was writing. A connection idle for longer is closed at
# once.
DRAIN_IDLE_WAIT = 1.0


def connection_deadline(connection: Connection) -> tuple[float | None, Callable[[], None]]:
    """The connection's next deadline and what to do at it, from its state (lingering, a blocked
    output, an upgrade, a request in progress, a head arriving, idle)."""
    limits = connection._server.config.limits
    if connection._lingering:
        return connection._phase_since + limits.lingering_timeout, connection.close
    if connection._output.blocked:
        return connection._output.progress_at + limits.send_timeout, lambda: _send_timed_out(connection)
    if connection._upgrade is not None:
        return None, connection.close  # the protocol that took over keeps its own time
    if connection._request is not None:
        if not connection._body_complete:
            return connection._last_read + limits.body_timeout, lambda: _body_timed_out(connection)
        return None, connection.close  # the handler is working; it has no deadline of ours
    if connection._parser.in_head:
        return connection._phase_since + limits.header_timeout, lambda: _head_timed_out(connection)
    wait = limits.header_timeout if connection._served == 0 else limits.keepalive_timeout
    if connection._server.draining:  # its next request may be on its way: a moment to arrive
        wait = min(wait, DRAIN_IDLE_WAIT)
    return connection._phase_since + wait, connection.close


def _send_timed_out(connection: Connection) -> None:
    logger.info("%s: send timeout, dropping the connection", connection._peer)
    connection.close()


def _head_timed_out(connection: Connection) -> None:
    logger.info("%s: request head not received in time", connection._peer)
    connection._parser.dead = True
    connection._events.clear()
    start_rejected(connection, 408)


def _body_timed_out(connection: Connection) -> None:
    logger.info("%s: request body not received in time", connection._peer)
    connection._parser.dead = True
    connection._events.clear()
    fail_current(connection, 408)
