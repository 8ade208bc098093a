"""A request body as handlers read it: pieces in order, with backpressure and 100-continue."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from mypy_extensions import mypyc_attr

from ring3.errors import ClientDisconnected

# Buffered body bytes above which the connection stops reading until the handler catches up.
BODY_HIGH_WATER = 256 * 1024
NO_LIMIT = 1 << 62  # the protocols enforce [limits] max_body_size; a location may set a lower one


@mypyc_attr(allow_interpreted_subclasses=True)  # the compiled build: see ring3.compiled
class RequestBody:
    """Fed by the connection, read by an async handler. `read()` returns b"" at the end."""

    __slots__ = ("_chunks", "_discarding", "_ended", "_gone", "_limit", "_loop", "_on_first_read",
                 "_on_resume", "_received", "_waiter", "buffered", "on_overflow")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_first_read: Callable[[], None] | None,
                 on_resume: Callable[[], None]) -> None:
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_first_read = on_first_read
        self._on_resume = on_resume
        self._discarding = False
        self._gone = False
        self.buffered = 0
        self._received = 0
        self._limit = NO_LIMIT
        # Set by the connection: called when the body passes limit(), with the bytes dropped unread.
        self.on_overflow: Callable[[int], None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def limit(self, size: int) -> None:
        """At most `size` bytes may come (a location's max_body_size); more ends the exchange with 413."""
        self._limit = size

    def feed(self, data: bytes) -> None:
        if self._discarding:
            return
        self._received += len(data)
        if self._received > self._limit:
            dropped = self.buffered + len(data)
            self.discard()
            if self.on_overflow is not None:
                self.on_overflow(dropped)
            return
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def discard(self) -> None:
        """The response is out and nobody will read the rest: drop what is buffered and what comes."""
        self._discarding = True
        self._chunks.clear()
        self.buffered = 0

    def abort(self) -> None:
        """The client is gone: a pending or later read raises ClientDisconnected."""
        self._gone = True
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the body, or b"" once it is complete."""
        if self._on_first_read is not None:
            first, self._on_first_read = self._on_first_read, None
            first()
        while not self._chunks:
            if self._ended:
                return b""
            if self._gone:
                raise ClientDisconnected("the client closed the connection")
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None
        data = self._chunks.popleft()
        before = self.buffered
        self.buffered -= len(data)
        if before >= BODY_HIGH_WATER > self.buffered:
            self._on_resume()
        return data

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)


class EmptyBody:
    """The body of a request that has none: shared, never allocated per request."""

    __slots__ = ()
    ended = True
    buffered = 0

    async def read(self) -> bytes:
        return b""

    async def read_all(self) -> bytes:
        return b""

    def limit(self, size: int) -> None:
        return None


EMPTY_BODY = EmptyBody()
