"""One HTTP/2 stream as an exchange (ring3.exchange): its request body with flow control, its response
framed into HEADERS and DATA, and what a client's RST_STREAM does to the handler.

A response's body waits here as segments (bytes or FileRange) until the connection takes DATA frames
from it in turn with the other streams (see H2Connection._frame_data). A pushed or streamed body writes
into the same queue through H2BodyWriter, which reports `blocked` while a window's worth waits, so an app
that produces faster than the client reads is held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ring3.body import EMPTY_BODY
from ring3.errors import ClientDisconnected, LocalProtocolError
from ring3.events import FileRange, PushedBody, Request, Response, Segment, Upgrade
from ring3.exchange import Exchange, abandon, fixed_body
from ring3.handlers.status import status_response
from ring3.http1.serialize import NO_BODY_STATUSES
from ring3.http2 import frames as f
from ring3.http2.body import WRITER_HIGH_WATER, H2BodyWriter, H2RequestBody
from ring3.http2.hpack import encode_status
from ring3.http2.request import parse_urgency
from ring3.http2.response import response_block
from ring3.http2.tunnel import StreamChannel

if TYPE_CHECKING:
    from ring3.handlers import BodyReader, Handler
    from ring3.http2.connection import H2Connection

logger = logging.getLogger("ring3.error")

_CONTINUE = encode_status(100)


class H2Stream(Exchange):
    """One request and its response on an HTTP/2 connection."""

    __slots__ = (
        "_body",
        "_body_done",
        "_conn",
        "_continue_sent",
        "_credit_paused",
        "_cut_body",
        "_drain_waiter",
        "_early",
        "_early_end",
        "_end_pending",
        "_pending",
        "_response_done",
        "_response_started",
        "_trailers",
        "_upgrade",
        "_withheld",
        "body_since",
        "pending_size",
        "queued",
        "stream_id",
        "urgency",
    )

    def __init__(self, conn: H2Connection, stream_id: int, request: Request, end_stream: bool) -> None:
        self._conn = conn
        self._server = conn._server
        self._loop = conn._loop
        self._peer = conn.peer
        self._closed = False
        self._request = request
        self._task = None
        self._cleanup = None
        self._log_line = b"-"
        self._log_status = 0
        self._log_sent = 0
        self.stream_id = stream_id
        self._body: H2RequestBody | None = None
        self._body_done = end_stream
        self._cut_body = False
        self._continue_sent = False
        self._response_started = False
        self._response_done = False
        self._pending: deque[Segment] = deque()
        self.pending_size = 0
        self._end_pending = False  # END_STREAM goes with the last queued segment
        self.queued = False  # in the connection's ready queue
        self._drain_waiter: asyncio.Future[None] | None = None
        self._upgrade: Upgrade | None = None  # the protocol tunnelled after an extended CONNECT
        self._credit_paused = False
        self._withheld = 0  # tunnel bytes taken while paused: credit given back on resume
        self._early: list[bytes] | None = None  # tunnel bytes that came before the protocol started
        self._early_end = False
        self._trailers: bytes | None = None  # an HPACK block to end the stream with, after the body
        self.body_since = self._loop.time()  # the last piece of the request body (or the head)
        self.urgency = parse_urgency(request.header(b"priority"))  # RFC 9218: 0 is sent first

    @property
    def awaiting_body(self) -> bool:
        return not self._body_done and not self._closed

    # -- the request ------------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        request = self._request
        assert request is not None
        body: BodyReader = EMPTY_BODY
        if request.protocol:
            self._early = []  # a tunnel's DATA is not a body: it waits for the protocol's start
        elif not self._body_done:
            on_first = self._send_continue if request.expect_continue else None
            body = self._body = H2RequestBody(self, on_first)
            body.on_overflow = self._body_too_large
        self._run_handler(handler, request, body)

    def data_received(self, data: bytes, end: bool) -> None:
        self.body_since = self._loop.time()
        if self._upgrade is not None:
            self._tunnel_received(data, end)
            return
        if self._early is not None:  # a tunnel asked for, not accepted yet: its first bytes wait
            self._early.append(data)
            self._early_end = self._early_end or end
            return
        body = self._body
        if body is None or self._closed:
            if data:
                self._conn.protocol.consumed(self.stream_id, len(data))
        else:
            if data:
                body.feed(data)
            if end:
                body.end()
        if end:
            self._body_done = True
            if self._response_done:
                self._finish()

    def _body_too_large(self, dropped: int) -> None:
        """The body passed the location's max_body_size: 413, and what comes is dropped, credited."""
        self.refused(413)
        self._body = None
        self.consumed(dropped)

    def consumed(self, size: int) -> None:
        if not self._closed:
            self._conn.protocol.consumed(self.stream_id, size)
            self._conn.flush_soon()

    def _send_continue(self) -> None:
        if not self._response_started and not self._body_done and not self._closed:
            self._continue_sent = True
            self._conn.protocol.send_headers(self.stream_id, _CONTINUE, False)
            self._conn.flush_soon()

    def cut_body(self) -> None:
        self._cut_body = True

    def refused(self, status: int) -> None:
        """The core refused the request (413, 417, 431, 501): answer it, unless already answering."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._body is not None:
            self._body.abort()
        if not self._body_done:
            self._body_done = True  # the core drops the rest of the body
            self._cut_body = True  # and the stream is reset once the answer is out
        if not self._response_started:
            self._respond(status_response(status))
        elif self._response_done:
            self._finish()

    # -- the response -----------------------------------------------------------------------------

    def _respond(self, response: Response, log_line: bytes | None = None) -> None:
        if self._closed:
            self._cleanup = response.cleanup
            self._run_cleanup()
            return
        request = self._request
        assert request is not None
        self._response_started = True
        self._cleanup = response.cleanup
        status = response.status
        fixed, length = fixed_body(response)
        no_body = status in NO_BODY_STATUSES
        head_only = no_body or request.method == b"HEAD"
        declared = response.content_length
        if fixed is None or (declared is not None and request.method == b"HEAD"):
            length = declared
        if no_body:
            length = None
        try:
            if response.upgrade is not None:
                if not request.protocol or not 200 <= status < 300:
                    raise LocalProtocolError("a switch over HTTP/2 needs an extended CONNECT and a 2xx")
                length = None
            block = response_block(status, self._server.dates.common_headers(response.sets_fields),
                                   response.headers, response.header_block, length)
        except LocalProtocolError as exc:
            logger.error("refused an invalid response for %r: %s", request.target, exc)
            self._run_cleanup()
            self._respond(status_response(500), log_line)
            return
        if self._server.access_log is not None or request.log:
            self._log_line = log_line or b"%s %s HTTP/2.0" % (request.method, request.target)
        self._log_status = status
        self._log_sent = 0 if head_only else (length or 0)
        protocol = self._conn.protocol
        body = response.body
        if response.upgrade is not None:
            protocol.send_headers(self.stream_id, block, False)
            self._open_tunnel(response.upgrade)
            return
        if head_only or (fixed is not None and not length):
            protocol.send_headers(self.stream_id, block, True)
            self._run_cleanup()
            self._conn.flush_soon()
            self._finish()
            return
        protocol.send_headers(self.stream_id, block, False)
        if fixed is not None:
            if isinstance(fixed, list):
                self._pending.extend(fixed)
            else:
                self._pending.append(fixed)
            self.pending_size = length or 0
            self._end_pending = True
            self._conn.ready(self)
        elif isinstance(body, PushedBody):
            self._conn.flush_soon()
            body.start(H2BodyWriter(self, declared))
        else:
            assert not isinstance(body, bytes | FileRange | list)
            self._conn.flush_soon()
            self._task = self._loop.create_task(self._stream_body(body, declared))

    async def _stream_body(self, stream: AsyncIterator[Segment], declared: int | None) -> None:
        await self._send_stream(H2BodyWriter(self, declared), stream)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or self._end_pending

    def frame(self, parts: list[Segment], room: int) -> int:
        """Append one DATA frame of at most `room` bytes to `parts`; the bytes it carries."""
        pending = self._pending
        protocol = self._conn.protocol
        if not pending:  # only the end is left (a pushed body ended after its last piece had gone)
            self._end_pending = False
            if self._trailers is not None:
                parts.extend(protocol.header_frames(self.stream_id, self._trailers, True))
            else:
                parts.append(protocol.data_header(self.stream_id, 0, True))
            self._sent_all()
            return 0
        piece = pending[0]
        size = len(piece) if isinstance(piece, bytes) else piece.count
        if size > room:
            if isinstance(piece, bytes):
                piece, pending[0] = piece[:room], piece[room:]
            else:
                pending[0] = FileRange(piece.fd, piece.offset + room, piece.count - room)
                piece = FileRange(piece.fd, piece.offset, room)
            size = room
        else:
            pending.popleft()
        self.pending_size -= size
        last = not pending and self._end_pending
        trailers = self._trailers if last else None
        parts.append(protocol.data_header(self.stream_id, size, last and trailers is None))
        parts.append(piece)
        if last:
            if trailers is not None:
                parts.extend(protocol.header_frames(self.stream_id, trailers, True))
            self._end_pending = False
            self._sent_all()
        elif self._drain_waiter is not None and self.pending_size < WRITER_HIGH_WATER:
            self._wake_writer(None)
        return size

    def _sent_all(self) -> None:
        """END_STREAM is framed (it leaves with this flush): what the response holds is released once
        the output path has sent it (its file ranges are read or sent then)."""
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            self._conn.release_after_send(cleanup)
        self._wake_writer(None)
        self._finish()

    def _finish(self) -> None:
        """The response is complete; the exchange ends once the request is complete too. A body still
        arriving that nobody will read is dropped by the core as it comes (its Content-Length still
        checked, its credit granted back); refusals (408, 413, 431) reset the stream with NO_ERROR
        instead (RFC 9113 8.1), to stop the upload."""
        if self._closed:
            return
        self._response_done = True
        if not self._body_done:
            body = self._body
            if body is not None and not body.ended and self._task is None:
                self._conn.protocol.refuse(self.stream_id)
                body.discard()
                self._body_done = True
            else:
                return  # the handler still reads; data_received calls again at the end
        elif self._cut_body:
            self._conn.protocol.reset(self.stream_id, f.NO_ERROR)
        self._closed = True
        if self._upgrade is None:
            self._account()
        else:
            self._close_tunnel()
        self._conn.stream_done(self)

    # -- giving up --------------------------------------------------------------------------------

    def _abort(self) -> None:
        """The handler gave up on its response: reset the stream."""
        self._abort_with(f.INTERNAL_ERROR)

    def _abort_with(self, code: int) -> None:
        if self._closed:
            return
        self._conn.protocol.reset(self.stream_id, code)
        self._conn.flush_soon()
        self.reset_received()
        self._conn.stream_done(self)

    def reset_received(self) -> None:
        """The client reset the stream, or the connection is going: the handler sees a disconnect and
        what the response holds (file descriptors) is released."""
        if self._closed and self._task is None:
            return
        self._closed = True
        self._pending.clear()
        self.pending_size = 0
        self._end_pending = False
        if self._body is not None:
            self._body.abort()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if task.done() and not task.cancelled():
                abandon(task)
        self._run_cleanup()
        self._wake_writer(ClientDisconnected("the client reset the stream"))
        self._close_tunnel()

    # -- a tunnel (RFC 8441) ----------------------------------------------------------------------

    def _open_tunnel(self, upgrade: Upgrade) -> None:
        """The 2xx that accepts an extended CONNECT is queued: from now on the stream's DATA belongs to
        `upgrade` (a WebSocket), both ways."""
        self._upgrade = upgrade
        self._account()  # logged at the switch, as HTTP/1.1 logs its 101
        early, self._early = self._early or [], None
        data = b"".join(early)
        upgrade.start(StreamChannel(self), b"")
        if data or self._early_end:
            self._tunnel_received(data, self._early_end)  # credited as the protocol takes it
        self._conn.flush_soon()

    def _tunnel_received(self, data: bytes, end: bool) -> None:
        upgrade = self._upgrade
        assert upgrade is not None
        if data:
            if self._credit_paused:
                self._withheld += len(data)
            else:
                self.consumed(len(data))
            if not self._closed:
                upgrade.data_received(data)
        if end:
            self._body_done = True
            upgrade.eof_received()
            if self._response_done:
                self._finish()

    def pause_credit(self) -> None:
        self._credit_paused = True

    def resume_credit(self) -> None:
        self._credit_paused = False
        withheld, self._withheld = self._withheld, 0
        if withheld:
            self.consumed(withheld)

    @property
    def writer_blocked(self) -> bool:
        return self.pending_size >= WRITER_HIGH_WATER

    @property
    def closed(self) -> bool:
        return self._closed

    def abort_tunnel(self) -> None:
        self._abort_with(f.CANCEL)

    def shutdown(self) -> None:
        """The server stops: a tunnel's protocol ends its session (a WebSocket closes with 1001)."""
        if self._upgrade is not None and not self._closed:
            self._upgrade.shutdown()

    def _close_tunnel(self) -> None:
        upgrade, self._upgrade = self._upgrade, None
        if upgrade is not None:
            try:
                upgrade.connection_lost()
            except Exception:
                logger.exception("%s: the tunnelled protocol failed while closing", self._peer)

    # -- pushed bodies ----------------------------------------------------------------------------

    def push(self, piece: Segment, size: int) -> None:
        self._pending.append(piece)
        self.pending_size += size
        self._conn.ready(self)

    def end_push(self, trailers: bytes | None = None) -> None:
        """The body is complete (`trailers`: an HPACK block sent after it with END_STREAM)."""
        self._trailers = trailers
        self._end_pending = True
        self._conn.ready(self)

    async def wait_writable(self) -> None:
        if self.pending_size < WRITER_HIGH_WATER or self._closed:
            if self._closed:
                raise ClientDisconnected("the client reset the stream")
            return
        waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    def _wake_writer(self, error: BaseException | None) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
