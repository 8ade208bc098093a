"""One WebSocket after its 101: the glue between a connection's Channel and wsproto's sans-IO framing.

The connection owns the socket and calls the Upgrade methods (`start`, `data_received`, `eof_received`,
`connection_lost`); wsproto turns bytes into events and events into bytes; this class decides what each
event means and offers the other side, protocol-neutral, to whatever runs the application:
`receive()` returns a whole message (str or bytes) or, once, and from then on forever, `Closed`;
`send()` and `close()` write frames.

- Messages are reassembled from wsproto's pieces (`message_finished`); one larger than `max_message`
  closes with 1009 as soon as the pieces cross the limit, decompressed size counted.
- Backpressure both ways: `send()` waits while the socket is full; complete messages the application has
  not read queue up to MAX_QUEUED_MESSAGES or MAX_QUEUED_BYTES, then reading pauses until it has read
  most of them.
- Pings are answered at once. One timer per session (re-armed lazily, like the connection's) covers every
  deadline: the 101 head leaving (OPENING_TIMEOUT), an idle ping every `ping_interval`, the answer to it
  (any bytes count), and the client's answer to our close frame (both `ping_timeout`).
- The disconnect code follows RFC 6455 section 7.1.5: that of the close frame received, 1006 if none.
  After the closing handshake (or on a broken stream) the session closes the TCP connection, and it lets
  go of the channel at `connection_lost`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.extensions import Extension

from ring3.errors import ClientDisconnected
from ring3.events import Channel
from ring3.output import SendFailed
from ring3.timers import LazyTimer

# Complete messages held for an application that has not read them: past this many, or this many bytes,
# reading pauses until it has read the queue down to a quarter of both. (websockets' max_queue is 16
# messages; uvicorn's ws_max_queue 32; neither bounds bytes, so 32 messages of 16 MiB could wait.)
MAX_QUEUED_MESSAGES = 16
MAX_QUEUED_BYTES = 1024 * 1024

# Bytes handed to wsproto at a time when permessage-deflate is on (see data_received).
COMPRESSED_SLICE = 4096
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006  # no close frame was received (RFC 6455 section 7.1.5); never on the wire
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
# The 101 head is queued as soon as the application accepts. A connection that drops it calls neither
# start nor connection_lost; head_settled (the Response's cleanup) notices that at once, and this timeout
# in case even the cleanup never runs.
OPENING_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """The WebSocket is closed: the code and reason of the close frame received (1006: none was)."""

    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not 1000 <= self.code <= 4999:
            raise ValueError(f"invalid WebSocket close code {self.code}")


Incoming = str | bytes | Closed
_Deadline = tuple[float, Callable[[], None]] | None


class WebSocketSession:
    """A server-side WebSocket on a connection taken over after a 101 (implements events.Upgrade)."""

    __slots__ = (
        "_awaiting_pong",
        "_binary",
        "_channel",
        "_close_code",
        "_closed",
        "_closing_since",
        "_compressed",
        "_created_at",
        "_drain_lock",
        "_dropping",
        "_inbox",
        "_interval",
        "_last_seen",
        "_loop",
        "_max_message",
        "_opened",
        "_paused",
        "_ping_at",
        "_queued",
        "_size",
        "_text",
        "_timeout",
        "_timer",
        "_waiter",
        "_ws",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, extensions: list[Extension], *, max_message: int,
                 ping_interval: float, ping_timeout: float) -> None:
        self._loop = loop
        self._ws = Connection(ConnectionType.SERVER, extensions=extensions)
        self._compressed = bool(extensions)
        self._max_message = max_message
        self._interval = ping_interval
        self._timeout = ping_timeout
        self._channel: Channel | None = None
        self._closed: Closed | None = None  # the end, once known: receive() returns it forever
        self._dropping = False  # nobody will read (the application is done, or we are closing)
        self._close_code: tuple[int, str] | None = None  # close frame to send once started
        self._inbox: deque[tuple[str | bytes, int]] = deque()  # messages and their sizes in bytes
        self._queued = 0  # bytes in the inbox
        self._text: list[str] = []  # the pieces of the message being received
        self._binary: list[bytes | bytearray] = []
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None  # receive() waits for a message or the end
        self._opened = asyncio.Event()  # start() came, or the session ended first
        self._drain_lock = asyncio.Lock()  # the channel has one drain waiter: senders take turns
        self._created_at = self._last_seen = self._closing_since = self._ping_at = loop.time()
        self._awaiting_pong = False
        self._timer = LazyTimer(loop, self._on_timer)
        self._schedule()

    @property
    def closed(self) -> Closed | None:
        """How the WebSocket ended, or None while it is open."""
        return self._closed

    # -- the connection's side (events.Upgrade) -----------------------------------------------------

    def head_settled(self) -> None:
        """The Response.cleanup of the 101: the connection has sent the head (start follows at once) or
        dropped it (then start and connection_lost never come: end the session on the next turn)."""
        self._loop.call_soon(self._check_started)

    def _check_started(self) -> None:
        if self._channel is None:
            self._never_started()

    def start(self, channel: Channel, data: bytes) -> None:
        if self._closed is not None:  # given up on while the 101 head waited
            channel.abort()
            return
        self._channel = channel
        self._last_seen = self._loop.time()
        self._opened.set()
        if self._close_code is not None:
            self._close_locally(*self._close_code)
        if data:
            self.data_received(data)
        self._schedule()

    def data_received(self, data: bytes) -> None:
        if self._closed is not None:
            return  # the closing handshake is over, or the stream is broken: nothing left to read
        self._last_seen = self._loop.time()
        self._awaiting_pong = False  # any bytes prove the client alive
        if self._compressed and len(data) > COMPRESSED_SLICE:
            # wsproto inflates what it is given at once: in slices, a deflate bomb grows at most about
            # 1000 times a slice before the size check closes the socket (1009).
            view = memoryview(data)
            for start in range(0, len(data), COMPRESSED_SLICE):
                self._receive(view[start:start + COMPRESSED_SLICE])
                if self._closed is not None or self._ws.state is not ConnectionState.OPEN:
                    return
            return
        self._receive(data)

    def _receive(self, data: bytes | memoryview) -> None:
        ws = self._ws
        ws.receive_data(bytes(data) if type(data) is memoryview else data)
        for event in ws.events():
            self._handle(event)

    def eof_received(self) -> None:
        self._finish(Closed(code=ABNORMAL_CLOSURE, reason="the client closed the connection"))

    def connection_lost(self) -> None:
        self._channel = None
        self._end(Closed(code=ABNORMAL_CLOSURE, reason="connection lost"))

    def shutdown(self) -> None:
        """The server is stopping: close with 1001 (going away); the closing handshake then ends the
        connection within the shutdown grace period."""
        if self._closed is None and self._channel is not None:
            self._close_locally(GOING_AWAY, "the server is shutting down")

    # -- the application's side -------------------------------------------------------------------

    async def receive(self) -> Incoming:
        """The next whole message; once the WebSocket has closed, its Closed (every time)."""
        inbox = self._inbox
        while not inbox:
            if self._closed is not None:
                return self._closed
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message, size = inbox.popleft()
        self._queued -= size
        if (self._paused and len(inbox) <= MAX_QUEUED_MESSAGES // 4
                and self._queued <= MAX_QUEUED_BYTES // 4):
            self._resume()
        return message

    async def send(self, data: str | bytes) -> None:
        """Send one message; waits while the socket is full. ClientDisconnected once closed."""
        channel = self._channel
        if channel is None or self._closed is not None or self._ws.state is not ConnectionState.OPEN:
            channel = await self._open_channel()
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        channel.write(self._ws.send(event))
        if channel.blocked:
            async with self._drain_lock:
                try:
                    await channel.drain()
                except SendFailed as exc:
                    raise ClientDisconnected("the WebSocket connection is gone") from exc

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake. ClientDisconnected if the WebSocket is already closed."""
        await self._open_channel()
        self._close_locally(code, reason)

    def application_done(self, code: int) -> None:
        """The application has returned (or failed): close with `code` unless closing already, and drop
        what it will never read."""
        self._dropping = True
        self._inbox.clear()
        self._queued = 0
        if self._paused:
            self._resume()
        if self._channel is None:
            if self._closed is None:
                self._close_code = (code, "")
        elif self._closed is None and self._ws.state is ConnectionState.OPEN:
            self._close_locally(code, "")

    async def _open_channel(self) -> Channel:
        if self._channel is None and self._closed is None:
            await self._opened.wait()
        channel = self._channel
        if channel is None or self._closed is not None or self._ws.state is not ConnectionState.OPEN:
            raise ClientDisconnected("the WebSocket is closed")
        return channel

    # -- events from the client -------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            self._on_data(event)
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:
                self._write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._on_close_frame(event)
        # Pong: the read itself showed the client alive

    def _on_data(self, event: TextMessage | BytesMessage) -> None:
        if self._dropping or self._closed is not None:
            return  # we are closing, or nobody reads: the message goes nowhere
        if isinstance(event, TextMessage):
            text = event.data
            self._size += len(text) if text.isascii() else len(text.encode())
            self._text.append(text)
        else:
            self._size += len(event.data)
            self._binary.append(event.data)
        if self._size > self._max_message:
            self._reset_message()
            self._close_locally(MESSAGE_TOO_BIG, "message too big")
        elif event.message_finished:
            # join() hands back a lone str or bytes part without copying it
            message = "".join(self._text) if isinstance(event, TextMessage) else b"".join(self._binary)
            size = self._size
            self._reset_message()
            self._deliver(message, size)

    def _reset_message(self) -> None:
        self._text.clear()
        self._binary.clear()
        self._size = 0

    def _deliver(self, message: str | bytes, size: int) -> None:
        inbox = self._inbox
        inbox.append((message, size))
        self._queued += size
        self._wake()
        full = len(inbox) >= MAX_QUEUED_MESSAGES or self._queued >= MAX_QUEUED_BYTES
        if full and not self._paused and self._channel is not None:
            self._paused = True
            self._channel.pause_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        self._last_seen = self._loop.time()  # the client's bytes waited in the kernel, not on the client
        self._awaiting_pong = False
        if self._channel is not None:
            self._channel.resume_reading()
        self._schedule()

    def _on_close_frame(self, event: CloseConnection) -> None:
        closed = Closed(code=event.code, reason=event.reason or "")
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer, then hang up
            self._write(self._ws.send(event.response()))
            self._finish(closed)
        elif state is ConnectionState.CLOSED:  # the client's answer to our close frame
            self._finish(closed)
        else:  # wsproto could not parse the client's bytes and names the code to close with
            self._close_locally(event.code, event.reason or "")
            self._finish(Closed(code=ABNORMAL_CLOSURE, reason=event.reason or "protocol error"))

    # -- closing ----------------------------------------------------------------------------------

    def _close_locally(self, code: int, reason: str) -> None:
        """Send our close frame and wait (up to the timeout) for the client's."""
        if self._ws.state is not ConnectionState.OPEN:
            return
        self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._closing_since = self._loop.time()
        self._dropping = True  # messages after our close frame go nowhere, so reading never pauses
        if self._paused:
            self._resume()
        self._schedule()

    def _finish(self, closed: Closed) -> None:
        """The WebSocket is over: close the TCP connection once what was written has left."""
        self._end(closed)
        if self._channel is not None:
            self._channel.close()

    def _end(self, closed: Closed) -> None:
        if self._closed is None:
            self._closed = closed
        self._wake()
        self._opened.set()
        self._timer.close()

    def _write(self, data: bytes) -> None:
        if self._channel is not None:
            self._channel.write(data)

    # -- the one timer ----------------------------------------------------------------------------

    def _deadline(self) -> _Deadline:
        """The next thing that happens unless the client acts first, and when."""
        if self._closed is not None:
            return None
        if self._channel is None:
            return self._created_at + OPENING_TIMEOUT, self._never_started
        if self._ws.state is not ConnectionState.OPEN:
            return self._closing_since + self._timeout, self._close_timed_out
        if self._paused or not self._interval:
            return None  # while paused, the client's answers wait unread in the kernel
        if self._awaiting_pong:
            return self._ping_at + self._timeout, self._ping_timed_out
        return self._last_seen + self._interval, self._ping

    def _schedule(self) -> None:
        deadline = self._deadline()
        if deadline is not None:
            self._timer.arm(deadline[0])

    def _on_timer(self) -> None:
        deadline = self._deadline()
        if deadline is None:
            return
        when, action = deadline
        if self._loop.time() >= when:
            action()
        self._schedule()

    def _ping(self) -> None:
        self._write(self._ws.send(Ping(payload=b"ring3")))
        self._ping_at = self._loop.time()
        self._awaiting_pong = True

    def _ping_timed_out(self) -> None:
        self._close_locally(INTERNAL_ERROR, "ping timeout")
        self._finish(Closed(code=ABNORMAL_CLOSURE, reason="ping timeout"))

    def _close_timed_out(self) -> None:
        self._finish(Closed(code=ABNORMAL_CLOSURE, reason="close timeout"))

    def _never_started(self) -> None:
        self._end(Closed(code=ABNORMAL_CLOSURE, reason="the 101 response was never sent"))
