"""A response body on its way from an upstream connection to the client, with backpressure both ways: a
client that does not take the bytes stops the reading from the upstream (its TCP window then holds the
upstream back), and a silent upstream is given up after read_timeout.

Three framings: Content-Length (exact: more is cut off, with the upstream connection; less at its close
aborts the client's connection), chunked (decoded, then framed again by the client's protocol, trailers
included), and to the upstream's close. A body of known length to a cleartext HTTP/1.1 client may go by
splice(2): upstream socket -> pipe -> client socket, counted in the ledger as bytes that never entered
Python (the output path does the pipe -> socket half, as it does sendfile).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ring3.errors import ClientDisconnected
from ring3.events import BodyWriter, PipeRange, PushedBody, SplicingWriter
from ring3.observe.ledger import LEDGER
from ring3.proxy.pipes import PIPES
from ring3.proxy.response import ChunkedDecoder, UpstreamError

if TYPE_CHECKING:
    from ring3.proxy.response import ResponseHead
    from ring3.proxy.upstream_conn import UpstreamConnection

logger = logging.getLogger("ring3.error")

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
MAX_TRAILER_BYTES = 16 * 1024
HOLD_LIMIT = 256 * 1024  # bytes read ahead of a body's start, before the upstream is held back


class UpstreamBody(PushedBody):
    """The body of one upstream response; `finish(reusable)` is told once when it is over."""

    __slots__ = ("_chunked", "_conn", "_decoded", "_decoder", "_done", "_drainer", "_draining", "_eof_held",
                 "_finish", "_last_read", "_loop", "_name", "_pipe", "_read_timeout", "_remaining", "_rest",
                 "_splice_min", "_splicer", "_timer", "_writer")

    def __init__(self, conn: UpstreamConnection, head: ResponseHead, rest: bytes,
                 finish: Callable[[bool], None], *, read_timeout: float, splice_min: int | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._rest = rest
        self._finish = finish
        self._remaining = head.length  # None: chunked, or until the upstream closes
        self._chunked = head.chunked
        self._decoder = ChunkedDecoder(MAX_TRAILER_BYTES) if head.chunked else None
        self._decoded: list[bytes] = []
        if self._decoder is not None and rest:
            # What came with the head is decoded before the head goes out: a framing error in it raises
            # UpstreamError here, and the client gets a 502 rather than a head and an aborted connection.
            self._decoded, self._rest = self._decoder.feed(rest)  # the rest: bytes after the body's end
        self._read_timeout = read_timeout
        self._splice_min = splice_min
        self._writer: BodyWriter | None = None
        self._splicer: SplicingWriter | None = None  # the writer again, when it takes PipeRanges
        self._done = False
        self._draining = False
        self._eof_held = False
        self._drainer: asyncio.Future[None] | None = None
        self._pipe: tuple[int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._name = conn.upstream.name
        conn.sink = self._hold  # until the head has gone out and start() is called
        if splice_min is not None and head.length is not None and head.length - len(rest) >= splice_min:
            conn.pause_reading()  # it may be spliced: leave the body in the kernel until start()

    def _hold(self, data: bytes) -> None:
        if not data:
            self._eof_held = True
            return
        self._rest += data
        if len(self._rest) > HOLD_LIMIT:
            self._conn.pause_reading()

    def start(self, writer: BodyWriter) -> None:
        self._writer = writer
        conn = self._conn
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._on_timer)
        rest, self._rest = self._rest, b""
        remaining = self._remaining
        splice_min = self._splice_min
        if (splice_min is not None and remaining is not None and remaining - len(rest) >= splice_min
                and not self._eof_held and getattr(writer, "can_splice", False)):
            self._splicer = cast(SplicingWriter, writer)  # it has can_splice: see SplicingWriter
            if rest:
                self._remaining = remaining - len(rest)
                if not self._write(rest):
                    return
            self._pipe = PIPES.take()
            conn.sink = self._eof_while_splicing
            conn.on_readable_raw = self._splice_in
            if not self._draining:
                conn.resume_reading()
            return
        conn.sink = self._feed
        decoded, self._decoded = self._decoded, []
        for piece in decoded:
            if not self._write(piece):
                return
        decoder = self._decoder
        if decoder is not None and decoder.done:
            self._end(not rest and not self._eof_held, decoder.trailers)
            return
        if rest or remaining == 0:
            self._feed(rest)
        if self._eof_held:
            self._feed(b"")
        elif not self._done and not self._draining:
            conn.resume_reading()  # if _hold held the upstream back

    # -- copying ----------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._done:
            return
        self._last_read = self._loop.time()
        if not data:
            if self._remaining is None and not self._chunked:
                self._end(False)  # the upstream's close ends this body
            elif self._remaining != 0:
                self._fail("closed the connection in the middle of the body")
            return
        decoder = self._decoder
        if decoder is not None:
            try:
                pieces, after = decoder.feed(data)
            except UpstreamError as exc:
                self._fail(str(exc))
                return
            for piece in pieces:
                if not self._write(piece):
                    return
            if decoder.done:
                self._end(not after, decoder.trailers)
            return
        remaining = self._remaining
        if remaining is not None:
            if len(data) >= remaining:
                extra = len(data) > remaining
                if remaining and not self._write(data[:remaining] if extra else data):
                    return
                self._remaining = 0
                self._end(not extra)  # bytes beyond the body: that connection cannot be trusted again
                return
            self._remaining = remaining - len(data)
        self._write(data)

    def _write(self, piece: bytes | PipeRange) -> bool:
        writer = self._writer
        assert writer is not None
        try:
            if isinstance(piece, bytes):
                writer.write(piece)
            else:
                splicer = self._splicer
                assert splicer is not None  # PipeRanges come only after start() chose it
                splicer.write_pipe(piece)
        except ClientDisconnected:
            self._stop(False)
            return False
        if writer.blocked and not self._draining:
            self._draining = True
            self._conn.pause_reading()
            self._drainer = self._loop.create_task(self._wait_for_client(writer))
        return True

    async def _wait_for_client(self, writer: BodyWriter) -> None:
        try:
            await writer.drain()
        except ClientDisconnected:
            self._stop(False)
            return
        self._draining = False
        if self._done:
            return
        if self._pipe is not None and self._remaining == 0:
            self._end(True)  # the pipe's last bytes have left
            return
        self._last_read = self._loop.time()
        self._conn.resume_reading()

    # -- splicing ---------------------------------------------------------------------------------

    def _splice_in(self) -> None:
        """The upstream socket is readable: move what it holds into the pipe, and the pipe's content on
        to the client (the output path's half)."""
        if self._done or self._draining:
            return
        pipe = self._pipe
        remaining = self._remaining
        assert pipe is not None and remaining is not None
        LEDGER.splice += 1
        try:
            moved = os.splice(self._conn.fd, pipe[1], min(remaining, PIPES.size), flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"splice failed: {os.strerror(exc.errno or 0)}")
            return
        if moved == 0:
            self._fail("closed the connection in the middle of the body")
            return
        LEDGER.bytes_spliced += moved
        self._last_read = self._loop.time()
        self._remaining = remaining - moved
        if not self._write(PipeRange(pipe[0], moved)):
            return
        if self._remaining == 0:
            if self._draining:
                return  # _wait_for_client ends it once the pipe is empty
            self._end(True)

    def _eof_while_splicing(self, data: bytes) -> None:
        if not self._done:
            self._fail("closed the connection in the middle of the body")

    # -- the end ----------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if self._done:
            return
        if self._draining:  # the client is slow, not the upstream: its own send timeout applies
            self._timer = self._loop.call_at(self._loop.time() + self._read_timeout, self._on_timer)
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() >= due:
            self._fail(f"sent nothing for {self._read_timeout:g}s in the middle of the body")
        else:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _end(self, reusable: bool, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        writer = self._writer
        assert writer is not None
        self._stop(reusable)
        writer.end(trailers or None)

    def _fail(self, reason: str) -> None:
        logger.error("proxy: upstream %s: %s; the client's response is aborted", self._name, reason)
        writer = self._writer
        self._stop(False)
        if writer is not None:
            writer.abort()

    def _stop(self, reusable: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self._conn
        conn.on_readable_raw = None
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            PIPES.give_back(pipe, clean=reusable)
        if not reusable:
            conn.close()
        self._finish(reusable)

    def abandon(self) -> None:
        """The response will not be sent (or was cut short): the upstream connection goes."""
        self._stop(False)
