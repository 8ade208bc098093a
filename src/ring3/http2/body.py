"""The two bodies of an HTTP/2 stream: the request body a handler reads (whose reads give the client
its flow-control credit back) and the writer a pushed or streamed response body writes into (which holds
the producer to its declared length and back while a window's worth waits)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ring3.body import RequestBody
from ring3.errors import ClientDisconnected, LocalProtocolError
from ring3.events import Headers, Segment
from ring3.http2.response import encode_headers

if TYPE_CHECKING:
    from ring3.http2.stream import H2Stream

logger = logging.getLogger("ring3.error")

WRITER_HIGH_WATER = 64 * 1024  # bytes a pushed body may queue on its stream before it must drain


class H2RequestBody(RequestBody):
    """A request body whose reads give the client flow-control credit back."""

    __slots__ = ("_stream",)

    def __init__(self, stream: H2Stream, on_first_read: Callable[[], None] | None) -> None:
        super().__init__(stream._loop, on_first_read, _nothing)
        self._stream = stream

    async def read(self) -> bytes:
        data = await super().read()
        if data:
            self._stream.consumed(len(data))
        return data


class H2BodyWriter:
    """The BodyWriter of a pushed or streamed body on one stream; it holds the producer to the length
    it declared."""

    __slots__ = ("_declared", "_done", "_sent", "_stream")

    def __init__(self, stream: H2Stream, declared: int | None) -> None:
        self._stream = stream
        self._declared = declared
        self._sent = 0
        self._done = False

    def write(self, piece: Segment) -> None:
        stream = self._stream
        if stream._closed or self._done:
            raise ClientDisconnected("the stream is closed")
        size = len(piece) if isinstance(piece, bytes) else piece.count
        if not size:
            return
        self._sent += size
        if self._declared is not None and self._sent > self._declared:
            self._fail(f"the body is longer than its Content-Length {self._declared}")
            raise ClientDisconnected("the response was aborted")
        stream.push(piece, size)

    @property
    def blocked(self) -> bool:
        return self._stream.pending_size >= WRITER_HIGH_WATER

    async def drain(self) -> None:
        await self._stream.wait_writable()

    def end(self, trailers: Headers | None = None) -> None:
        stream = self._stream
        if stream._closed or self._done:
            return
        if self._declared is not None and self._sent != self._declared:
            self._fail(f"the body is {self._declared - self._sent} bytes short of its length")
            return
        block = None
        if trailers:
            try:
                block = encode_headers(trailers, trailers=True)
            except LocalProtocolError as exc:
                self._fail(str(exc))
                return
        self._done = True
        stream._log_sent = self._sent
        stream.end_push(block)

    def abort(self) -> None:
        self._done = True
        self._stream._abort()

    def _fail(self, reason: str) -> None:
        request = self._stream._request
        logger.error("response for %r aborted: %s", request and request.target, reason)
        self.abort()


def _nothing() -> None:
    pass
