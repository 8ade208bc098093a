"""Answering a repeat of a remembered request from the replay cache (ring3.replay), on an HTTP/1.1
connection: the connection's friend, as http1/writers.py is."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ring3.errors import LocalProtocolError
from ring3.output import SendFailed

if TYPE_CHECKING:
    from ring3.http1.connection import Connection
    from ring3.replay import Replay

logger = logging.getLogger("ring3.error")


def answer_from_replay(connection: Connection, data: bytes, replay: Replay) -> bool:
    """Answer a repeat of a remembered request from the replay cache (ring3.replay); False when
    the ordinary path must take it (the connection will close, or the response no longer holds)."""
    server = connection._server
    closes = replay.closes
    if not closes and (server.draining or connection._served + 1 >= connection._max_requests):
        return False  # its answer carries Connection: close, which the remembered one does not
    replays = connection._replays
    assert replays is not None
    try:
        response = replay.renew()
    except Exception:
        logger.exception("%s: a replay failed; the request is answered the ordinary way", connection._peer)
        response = None
    if response is None:
        replays.forget(data)
        return False
    try:
        message = replays.message(replay, response, server.dates.common_headers(response.sets_fields))
    except LocalProtocolError:  # an invalid header: the ordinary path answers it with a 500
        message = None
    if message is None:  # or a body of unknown length: never remembered, but a renewal may bring one
        replays.forget(data)
        connection._cleanup = response.cleanup
        connection._run_cleanup()
        return False
    request = connection._request = replay.request
    server.ledger.responses_replayed += 1
    connection._served += 1
    connection._response_started = True
    connection._response_sent = connection._continue_sent = False
    connection._body_complete = True
    connection._keep_alive = not closes
    connection._cleanup = response.cleanup
    head, body = message.parts
    connection._log_status = response.status
    connection._log_sent = message.length
    if server.access_log is not None or request.log:
        connection._log_line = b"%s %s HTTP/%s" % (
            request.method, request.target, request.http_version.encode())
    try:
        connection._output.send(head, body, connection._on_response_sent, may_cork=not closes)
    except (SendFailed, OSError) as exc:
        logger.warning("%s: response aborted: %s", connection._peer, exc)
        connection.close()
        return True
    if connection._output.blocked:
        connection._watch_output()
    return True
