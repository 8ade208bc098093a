"""The body of a streamed ASGI response (http.response.body with more_body, zerocopysend, trailers):
the application's send() writes each piece straight to the connection's BodyWriter."""

from __future__ import annotations

import asyncio

from ring3.errors import ClientDisconnected
from ring3.events import BodyWriter, Headers, PushedBody, Segment


class PushStream(PushedBody):
    """The body of a streamed response: the application's send() writes each piece straight to the
    connection (no task or future in between) and waits only when the socket is full. Pieces sent before
    the connection takes the response (its head is still being decided) are kept until it does."""

    __slots__ = ("_ended", "_failed", "_loop", "_pending", "_trailers", "_waiter", "_writer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writer: BodyWriter | None = None
        self._pending: list[Segment] = []
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._failed = False
        self._trailers: Headers | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def start(self, writer: BodyWriter) -> None:
        self._writer = writer
        if self._failed:
            writer.abort()
            return
        try:
            for piece in self._pending:
                writer.write(piece)
        except ClientDisconnected:
            return  # the connection is closing: its cleanup tells the exchange
        self._pending = []
        if self._ended:
            writer.end(self._trailers)
        self._wake(None)

    async def put(self, piece: Segment, more: bool, trailers: Headers | None = None) -> None:
        if not more:
            self._ended = True
            self._trailers = trailers
        writer = self._writer
        if writer is None:
            if piece:
                self._pending.append(piece)
            if more:
                waiter = self._waiter = self._loop.create_future()
                await waiter  # until the connection takes the response: one piece ahead at most
                if self._writer is not None and self._writer.blocked:
                    await self._writer.drain()  # a file piece must have left before send() returns
            return
        if piece:
            writer.write(piece)
        if not more:
            writer.end(trailers)
        elif writer.blocked:
            await writer.drain()

    def fail(self) -> None:
        """The application failed mid-body: the connection must abort."""
        self._failed = True
        if self._writer is not None:
            self._writer.abort()

    def abandon(self, *, error: bool) -> None:
        """Nobody will take more pieces: a waiting send() returns, or with `error` (the client is
        gone) raises ClientDisconnected."""
        self._wake(ClientDisconnected("the client closed the connection") if error else None)

    def _wake(self, error: BaseException | None) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
