"""After an upstream's 101: the client's connection and the upstream's carry bytes both ways, unread, until
either side closes or both stay silent for read_timeout (WebSocket, or any Upgrade). Backpressure both
ways: a side that does not take what the other sends stops the reading from the other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ring3.events import Channel
from ring3.observe.ledger import LEDGER
from ring3.proxy.upstream_conn import UpstreamGone

if TYPE_CHECKING:
    from ring3.proxy.upstream_conn import UpstreamConnection

logger = logging.getLogger("ring3.error")


class Tunnel:
    """events.Upgrade that relays to an upstream connection."""

    __slots__ = ("_channel", "_conn", "_drainers", "_finish", "_last", "_loop", "_pending", "_timeout",
                 "_timer")

    def __init__(self, conn: UpstreamConnection, pending: bytes, finish: Callable[[bool], None],
                 timeout: float) -> None:
        self._conn = conn
        self._pending = pending  # the upstream's bytes that came with its 101
        self._finish = finish
        self._timeout = timeout
        self._channel: Channel | None = None
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._drainers: set[asyncio.Future[None]] = set()  # held, so they are not collected mid-wait
        conn.sink = self._held

    def _held(self, data: bytes) -> None:
        if data:
            self._pending += data
        else:
            self._conn.pause_reading()  # the close is read again once the tunnel starts

    def start(self, channel: Channel, data: bytes) -> None:
        self._channel = channel
        conn = self._conn
        conn.sink = self._from_upstream
        self._timer = self._loop.call_at(self._last + self._timeout, self._on_timer)
        if self._pending:
            pending, self._pending = self._pending, b""
            self._from_upstream(pending)
        if data:
            self.data_received(data)
        conn.resume_reading()

    # -- upstream -> client -----------------------------------------------------------------------

    def _from_upstream(self, data: bytes) -> None:
        channel = self._channel
        if channel is None:
            return
        self._last = self._loop.time()
        if not data:
            channel.close()  # once what was written has left
            return
        channel.write(data)
        if channel.blocked:
            self._conn.pause_reading()
            self._drainers.add(self._loop.create_task(self._client_drained(channel)))

    async def _client_drained(self, channel: Channel) -> None:
        try:
            await channel.drain()
        except Exception:
            channel.abort()
            return
        finally:
            self._drainers.difference_update([f for f in self._drainers if f.done()])
        self._conn.resume_reading()

    # -- client -> upstream -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        try:
            sent = self._conn.send(data)
        except UpstreamGone:
            if self._channel is not None:
                self._channel.abort()
            return
        if not sent and self._channel is not None:
            self._channel.pause_reading()
            self._drainers.add(self._loop.create_task(self._upstream_drained(self._channel)))

    async def _upstream_drained(self, channel: Channel) -> None:
        try:
            await self._conn.drain()
        except UpstreamGone:
            channel.abort()
            return
        channel.resume_reading()

    def eof_received(self) -> None:
        conn = self._conn
        if not conn.closed:
            LEDGER.shutdown += 1
            try:
                conn.sock.shutdown(socket.SHUT_WR)  # the client is done sending: so is the tunnel
            except OSError:
                pass

    # -- the end ----------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        due = self._last + self._timeout
        if self._loop.time() >= due:
            logger.info("proxy: tunnel to %s idle for %gs; closed", self._conn.upstream.name, self._timeout)
            if self._channel is not None:
                self._channel.abort()
            return
        self._timer = self._loop.call_at(due, self._on_timer)

    def connection_lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._channel = None
        self._finish(False)

    def shutdown(self) -> None:
        if self._channel is not None:
            self._channel.close()
