"""Keep-alive connections to upstreams: at most `keepalive` idle per upstream, each closed after
`keepalive_timeout` idle or `keepalive_requests` requests. An idle connection keeps its reader
registered, so the upstream's close (or a stray byte, which makes it unusable) drops it at once.
"""

from __future__ import annotations

import asyncio

from ring3.proxy.upstream_conn import UpstreamConnection
from ring3.proxy.upstreams import Upstream


class Pool:
    """The idle connections of one proxy's upstreams."""

    __slots__ = ("_loop", "_sweep", "keepalive", "requests", "timeout", "upstreams")

    def __init__(self, upstreams: list[Upstream], keepalive: int, timeout: float, requests: int) -> None:
        self.upstreams = upstreams
        self.keepalive = keepalive
        self.timeout = timeout
        self.requests = requests
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def take(self, upstream: Upstream, now: float) -> UpstreamConnection | None:
        """The most recently used idle connection still fresh, or None."""
        idle = upstream.idle
        while idle:
            conn = idle.pop()
            conn.on_idle_close = None
            if not conn.closed and now - conn.idle_since < self.timeout:
                return conn
            conn.close()
        return None

    def give_back(self, conn: UpstreamConnection, now: float) -> None:
        """A connection at a clean message boundary: kept idle, or closed if the pool is full."""
        upstream = conn.upstream
        conn.served += 1
        if conn.closed or conn.served >= self.requests or len(upstream.idle) >= self.keepalive:
            conn.close()
            return
        conn.sink = None
        conn.resume_reading()  # a relay may have held it back: idle, it must see the upstream's close
        conn.idle_since = now
        conn.on_idle_close = self._dropped
        upstream.idle.append(conn)
        if self._sweep is None:
            loop = self._loop = self._loop or asyncio.get_running_loop()
            self._sweep = loop.call_later(max(1.0, self.timeout / 2), self._on_sweep)

    @staticmethod
    def _dropped(conn: UpstreamConnection) -> None:
        try:
            conn.upstream.idle.remove(conn)
        except ValueError:
            pass

    def _on_sweep(self) -> None:
        self._sweep = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        left = False
        for upstream in self.upstreams:
            idle = upstream.idle
            while idle and now - idle[0].idle_since >= self.timeout:  # oldest first
                conn = idle.popleft()
                conn.on_idle_close = None
                conn.close()
            left = left or bool(idle)
        if left:
            self._sweep = loop.call_later(max(1.0, self.timeout / 2), self._on_sweep)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for upstream in self.upstreams:
            while upstream.idle:
                conn = upstream.idle.pop()
                conn.on_idle_close = None
                conn.close()
