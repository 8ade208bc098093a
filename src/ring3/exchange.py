"""The protocol-neutral life of one request: run the handler, hand its Response to the protocol, pull a
stream body into the protocol's writer, release what the response holds, count it and log it.

Two protocols sit on it. An HTTP/1.1 connection carries one exchange at a time and is its own Exchange (no
object per request); an HTTP/2 stream is one. Each supplies `_respond` (frame and send the head and body),
`_abort` (give the exchange up: the HTTP/1.1 connection closes, the HTTP/2 stream is reset) and `_closed`.
A handler cannot tell which protocol carried its request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ring3.errors import ClientDisconnected, ResponseAborted
from ring3.events import BodyWriter, FileRange, FixedBody, Request, Response, Segment, body_length
from ring3.handlers.status import status_response

if TYPE_CHECKING:
    from ring3.handlers import BodyReader, Handler
    from ring3.server import Server

logger = logging.getLogger("ring3.error")


class Exchange:
    """One request's life; subclasses are the protocols' carriers of it (see the module's text)."""

    __slots__ = ("_cleanup", "_closed", "_log_line", "_log_sent", "_log_status", "_loop", "_peer",
                 "_request", "_server", "_task")

    _server: Server
    _loop: asyncio.AbstractEventLoop
    _peer: str
    _closed: bool
    _request: Request | None
    _task: asyncio.Future[Any] | None
    _cleanup: Callable[[], None] | None
    _log_line: bytes
    _log_status: int
    _log_sent: int

    # -- what a protocol supplies -----------------------------------------------------------------

    def _respond(self, response: Response, log_line: bytes | None = None) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    # -- the handler ------------------------------------------------------------------------------

    def _run_handler(self, handler: Handler, request: Request, body: BodyReader) -> None:
        try:
            result = handler(request, body)
        except Exception:
            logger.exception("handler failed for %r", request.target)
            result = status_response(500)
        if isinstance(result, Response):
            self._respond(result)
        else:
            task = self._task = asyncio.ensure_future(result, loop=self._loop)
            task.add_done_callback(self._on_handler_done)

    def _on_handler_done(self, task: asyncio.Future[Response]) -> None:
        if task is not self._task or self._closed:
            abandon(task)  # nothing to answer any more: release what the response holds
            return
        self._task = None
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, ResponseAborted):
            logger.debug("%s: the handler aborted its response", self._peer)
            self._abort()
        elif error is not None:
            request = self._request
            logger.error("handler failed for %r", request and request.target, exc_info=error)
            self._respond(status_response(500))
        else:
            self._respond(task.result())

    async def _send_stream(self, writer: BodyWriter, stream: AsyncIterator[Segment]) -> None:
        """Pull a stream body into `writer` (the protocol's framing of a pushed body)."""
        try:
            async for piece in stream:
                writer.write(piece)
                if writer.blocked:
                    await writer.drain()
        except ClientDisconnected:
            return  # the exchange is gone already
        except Exception as exc:
            if isinstance(exc, ResponseAborted):
                logger.debug("%s: the handler aborted its response", self._peer)
            else:
                logger.exception("response stream failed for %r", self._request and self._request.target)
            self._abort()  # the head may be out: the only honest signal left is to abort
            return
        self._task = None
        writer.end()

    # -- after the response -----------------------------------------------------------------------

    def _account(self) -> None:
        """The response has left: release what it held, count it and log it."""
        self._run_cleanup()
        server = self._server
        server.ledger.count_status(self._log_status)
        request = self._request
        assert request is not None
        access_log = server.access_log if request.log is None else request.log  # a site's own, or False
        if access_log:
            access_log.log(self._peer, server.dates.log_time(), self._log_line, self._log_status,
                           self._log_sent, request)

    def _run_cleanup(self) -> None:
        cleanup = self._cleanup
        if cleanup is not None:
            self._cleanup = None
            try:
                cleanup()
            except Exception:
                logger.exception("%s: response cleanup failed", self._peer)


def fixed_body(response: Response) -> tuple[FixedBody | None, int | None]:
    """A response's body and length when its length is known before sending; (None, None) for a stream
    or a pushed body."""
    body = response.body
    if type(body) is bytes:
        return body, len(body)
    if isinstance(body, bytes | FileRange | list):
        return body, body_length(body)
    return None, None


def abandon(result: asyncio.Future[Response]) -> None:
    """Run the cleanup of a Response that will never be sent."""
    if result.cancelled() or result.exception() is not None:
        return
    cleanup = result.result().cleanup
    if cleanup is not None:
        try:
            cleanup()
        except Exception:
            logger.exception("response cleanup failed")
