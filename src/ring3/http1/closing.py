"""How an HTTP/1.1 connection ends: after a response that closes it (at once when nothing of the
client's is unread, else by a lingering close), by a drain (shutdown or reload), or at once; and how a
request that broke the framing is answered. The connection's friend, as http1/writers.py is."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from ring3.events import Request, RequestEnded
from ring3.handlers.status import status_response

if TYPE_CHECKING:
    from ring3.http1.connection import Connection

logger = logging.getLogger("ring3.error")


def close_after_response(connection: Connection) -> None:
    """The response that ends the connection has left: close now, or linger if input may be unread."""
    parser = connection._parser
    events = connection._events
    if events and not connection._body_complete and type(events[0]) is RequestEnded:
        # A response sent while its request was being taken apart: that request's end is read
        # already, so only what follows it would be unread.
        unread = len(events) > 1
    else:
        unread = bool(events) or not connection._body_complete
    unread = unread or parser.in_head or parser.in_body or parser.dead
    if unread and not connection._eof:
        linger(connection)
    else:
        connection.close()


def linger(connection: Connection) -> None:
    """Stop sending, then read and drop what the client still sends for a while (nginx's
    lingering close), so our last response is not destroyed by a reset."""
    connection._lingering = True
    connection._events.clear()
    if connection.tls is not None:
        connection.tls.close_notify()
    connection._server.ledger.shutdown += 1
    try:
        connection._sock.shutdown(socket.SHUT_WR)
    except OSError:
        connection.close()
        return
    now = connection._loop.time()
    connection._phase_since = now
    connection._timer.arm(now + connection._server.config.limits.lingering_timeout)
    if not connection._reading:
        connection._reading = True
        connection._loop.add_reader(connection._fd, connection._on_readable)


def start_rejected(connection: Connection, status: int) -> None:
    """Answer a request the parser refused; the connection closes after it."""
    connection._request = Request(method=b"-", target=b"-", path=b"-", query=b"", http_version="1.1",
                                  headers=[], host=b"", keep_alive=False)
    connection._body_complete = True
    connection._response_started = connection._response_sent = False
    connection._respond(status_response(status, close=True), log_line=b"-")


def fail_current(connection: Connection, status: int) -> None:
    """The current request's body broke the framing: answer `status` if we still can, then close."""
    connection._body_complete = True
    if connection._task is not None:
        connection._task.cancel()
        connection._task = None
    if connection._response_started:
        connection._keep_alive = False
        if connection._response_sent:
            close_after_response(connection)
    else:
        connection._respond(status_response(status, close=True))


def close_now(connection: Connection) -> None:
    """Close an open connection now, dropping anything unsent (Connection.close)."""
    connection._closed = True
    if connection._reading:
        connection._reading = False
        if not connection._unwatched:
            connection._loop.remove_reader(connection._fd)
    if connection.tls is not None:
        connection.tls.close_notify()
    connection._output.close()
    connection._timer.close()
    task = connection._task
    if task is not None:
        task.cancel()
        connection._task = None
    if connection._body is not None:
        connection._body.abort()
    connection._run_cleanup()
    upgrade = connection._upgrade
    if upgrade is not None:
        connection._upgrade = None
        try:
            upgrade.connection_lost()
        except Exception:
            logger.exception("%s: the upgraded protocol failed while closing", connection._peer)
    connection._server.ledger.close += 1
    connection._sock.close()
    connection._server.connection_closed(connection)


def drain_connection(connection: Connection) -> None:
    """Shutdown or reload: an upgrade ends its session, a response ends with close, an idle connection
    closes if no request comes within DRAIN_IDLE_WAIT (at once if its client is gone)."""
    if connection._upgrade is not None:
        connection._upgrade.shutdown()
    elif connection._request is None and not connection._events and not connection._parser.in_head:
        if connection._eof:
            connection._close_when_flushed()
        else:
            connection._on_timer()
