"""What an HTTP/1.1 connection hands out: the BodyWriter of a pushed or streamed body (chunked, or exactly
its declared length) and the Channel of a protocol that took the connection over (WebSocket). They are
the connection's friends: they use its output path and its private state directly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ring3.errors import ClientDisconnected, LocalProtocolError
from ring3.events import Headers, PipeRange, Segment
from ring3.http1.serialize import NOT_IN_TRAILERS, check_header
from ring3.output import SendFailed

if TYPE_CHECKING:
    from ring3.http1.connection import Connection

logger = logging.getLogger("ring3.error")


class H1BodyWriter:
    """The BodyWriter of one pushed body: frames pieces, holds the head back to join the first piece,
    and holds the producer to the length it declared."""

    __slots__ = ("_chunked", "_connection", "_declared", "_done", "_pending", "_sent")

    def __init__(self, connection: Connection, head: bytes, chunked: bool, declared: int | None) -> None:
        self._connection = connection
        self._pending = head
        self._chunked = chunked
        self._declared = declared
        self._sent = 0
        self._done = False

    def write(self, piece: Segment) -> None:
        self._write(piece)

    def write_pipe(self, piece: PipeRange) -> None:
        """Bytes waiting in a pipe (see can_splice): spliced on to the socket."""
        self._write(piece)

    def _write(self, piece: Segment | PipeRange) -> None:
        connection = self._connection
        if connection._closed or self._done:
            raise ClientDisconnected("the connection is closed")
        size = len(piece) if isinstance(piece, bytes) else piece.count
        if not size:
            return
        self._sent += size
        declared = self._declared
        if declared is not None and self._sent > declared:
            self._fail(f"the body is longer than its Content-Length {declared}")
            raise ClientDisconnected("the response was aborted")
        pending, self._pending = self._pending, b""
        output = connection._output
        if self._chunked:
            output.write_segments([pending + b"%x\r\n" % size, piece, b"\r\n"])
        else:
            output.write_segments([pending, piece] if pending else [piece])
        if output.blocked:
            connection._watch_output()

    @property
    def blocked(self) -> bool:
        return self._connection._output.blocked

    @property
    def can_splice(self) -> bool:
        """PipeRange pieces are taken (cleartext: the output path splices them to the socket)."""
        return self._connection.tls is None and not self._chunked

    async def drain(self) -> None:
        try:
            await self._connection._output.drain()
        except SendFailed:
            raise ClientDisconnected("the client closed the connection") from None

    def end(self, trailers: Headers | None = None) -> None:
        connection = self._connection
        if connection._closed or self._done:
            return
        declared = self._declared
        if declared is not None and self._sent != declared:
            self._fail(f"the body is {declared - self._sent} bytes short of its length")
            return
        section = b""
        if trailers and self._chunked:  # RFC 9112 7.1.2; a body of declared length has no place for them
            try:
                for name, value in trailers:
                    check_header(name, value)
            except LocalProtocolError as exc:
                self._fail(str(exc))
                return
            section = b"".join([b"%s: %s\r\n" % (name.lower(), value) for name, value in trailers
                                if name.lower() not in NOT_IN_TRAILERS])
        self._done = True
        connection._log_sent = self._sent
        tail = self._pending + b"0\r\n" + section + b"\r\n" if self._chunked else self._pending
        try:
            connection._output.send(tail, None, connection._on_response_sent)
        except (SendFailed, OSError) as exc:
            logger.warning("%s: response aborted: %s", connection._peer, exc)
            connection.close()
            return
        connection._watch_output()

    def abort(self) -> None:
        self._done = True
        self._connection.close()

    def _fail(self, reason: str) -> None:
        request = self._connection._request
        logger.error("response for %r aborted: %s", request and request.target, reason)
        self.abort()


class UpgradeChannel:
    """The connection as a protocol that took it over (WebSocket) sees it."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def write(self, data: bytes) -> None:
        connection = self._connection
        if not connection._closed:
            output = connection._output
            output.write(data)
            if output.blocked:
                connection._watch_output()

    @property
    def blocked(self) -> bool:
        return self._connection._output.blocked

    async def drain(self) -> None:
        await self._connection._output.drain()

    def pause_reading(self) -> None:
        self._connection._pause_reading()

    def resume_reading(self) -> None:
        self._connection._resume_reading()

    def close(self) -> None:
        connection = self._connection
        if not connection._closed:
            connection._close_when_flushed()

    def abort(self) -> None:
        self._connection.close()
