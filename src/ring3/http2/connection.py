"""One HTTP/2 client connection: reads bytes into the sans-IO core (ring3.http2.protocol), runs each
stream as an exchange (ring3.http2.stream), and writes what the core and the streams produce.

Writing: the streams' bodies wait in the streams; `_flush` sends the core's frames (HEADERS, acks,
WINDOW_UPDATE, RST_STREAM) first, then DATA frames taken in turn from every stream that has data and
credit (round robin, one frame each per turn, so a large download cannot starve a page's small assets),
as one call to the output path, until the socket is full or nothing is left. A DATA frame of a file is
its 9-byte header followed by the FileRange itself: the output path sends the header with MSG_MORE and the
payload by sendfile (or pread for small ones), so file bytes are not copied on cleartext h2c.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ring3.events import ConnectionInfo, Request, Segment
from ring3.http2 import frames as f
from ring3.http2 import protocol as p
from ring3.http2.framing import send_frames
from ring3.http2.stream import H2Stream
from ring3.output import OutputPath, SendFailed
from ring3.timers import LazyTimer

if TYPE_CHECKING:
    from ring3.handlers import Handler
    from ring3.http1.connection import TLSOutputFactory
    from ring3.server import Server
    from ring3.transport.tls_stream import TLSOutputPath

logger = logging.getLogger("ring3.error")

# Below glibc's mmap threshold (128 KiB): a larger recv buffer is mmapped, shrunk with mremap and
# unmapped on every read (0.3 syscalls per request on h2c -m10, seen in the bench's strace counts).
RECV_SIZE = 64 * 1024
URGENCIES = 8  # RFC 9218 4.1: 0 (most urgent) to 7; 3 by default
TURN_BYTES = 64 * 1024  # body bytes a stream sends per turn before the next stream's turn
OUTPUT_BACKLOG = 256  # frames the core may hold for a client whose socket is full before reading stops
WRITE_BATCH = 512 * 1024  # body bytes framed per flush before the output path gets them


class H2Connection:
    """An HTTP/2 connection driven by readiness callbacks of the event loop."""

    def __init__(self, server: Server, sock: socket.socket, peer: str, info: ConnectionInfo,
                 tls_output: TLSOutputFactory | None = None, output: OutputPath | None = None,
                 handler: Handler | None = None) -> None:
        """A connection whose first bytes were read already is handed its `output` (cleartext, from
        the HTTP/1.1 connection that saw the preface); under TLS `tls_output` makes it. `handler`
        answers instead of the server's (a listener's own)."""
        self._server = server
        self._loop = loop = server.loop
        self._sock = sock
        self._fd = sock.fileno()
        self.peer = peer
        self.info = info
        self.tls: TLSOutputPath | None = None
        self._output: OutputPath
        if tls_output is not None:
            self._output = self.tls = tls_output(self._on_send_failed)
        else:
            assert output is not None
            self._output = output
            output.rebind(self._on_send_failed)
        self.protocol = p.H2Protocol(settings_for(server), loop.time)
        self._handler = handler or server.handler
        self._served = 0  # streams started: bounded by max_requests_per_connection
        # DATA frames of files: read into the frames (one preadv for many) or each payload by sendfile
        # after its 9-byte header. Under TLS the bytes are read to be encrypted anyway.
        self._read_files = self.tls is not None or server.config.http2.file_frames == "read"
        self.streams: dict[int, H2Stream] = {}
        # Streams with DATA to send, by RFC 9218 urgency (0 first); round robin within one urgency.
        self._ready: tuple[deque[H2Stream], ...] = tuple(deque() for _ in range(URGENCIES))
        self._queued = 0  # streams in those queues
        self._releases: list[Callable[[], None]] = []  # cleanups waiting for their bytes to leave
        self._closed = False
        self._closing = False
        self._flush_soon = False
        self._stalled_since = 0.0  # when streams last began waiting for the client's credit
        self._last_active = loop.time()
        self._timer = LazyTimer(loop, self._on_timer)
        self._timer.arm(self._last_active + server.config.limits.header_timeout)
        self.protocol.start()
        self._reading = True
        loop.add_reader(self._fd, self._on_readable)  # swaps the callback of the registered fd

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading ----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        tls = self.tls
        ledger = self._server.ledger
        try:
            if tls is None:
                ledger.recv += 1
                data = self._sock.recv(RECV_SIZE)
                ledger.bytes_received += len(data)
            else:
                data = tls.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()  # the client has gone: its streams are cancelled
            return
        self.receive(data)

    def read_now(self) -> None:
        """Take what the transport holds already (TLS: plaintext that came with the handshake)."""
        self._on_readable()

    def receive(self, data: bytes) -> None:
        """Bytes from the client (the first ones may have been read by the HTTP/1.1 connection)."""
        self._last_active = self._loop.time()
        for kind, stream_id, a, b in self.protocol.receive(data):
            if kind == p.REQUEST:
                self._start(stream_id, a, b)
            elif kind == p.DATA:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    stream.data_received(a, b)
                else:
                    self.protocol.consumed(stream_id, len(a))
            elif kind == p.WINDOW:
                self._window_opened(stream_id)
            elif kind == p.TRAILERS:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    stream.data_received(b"", True)
            elif kind == p.RESET:
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    stream.reset_received()
            elif kind == p.REFUSED:
                self._refuse(stream_id, a, b)
            elif kind == p.PRIORITY:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    self.reprioritize(stream, a)
            elif kind == p.GOAWAY:
                if a != f.NO_ERROR:
                    logger.info("%s: the client sent GOAWAY %s", self.peer, f.ERROR_NAMES.get(a, a))
                if not self.streams:
                    self._close_when_flushed()
            else:  # CLOSE: ring3 sent GOAWAY for a connection error
                logger.info("%s: HTTP/2 connection error %s: %s", self.peer, f.ERROR_NAMES.get(a, a), b)
                for stream in list(self.streams.values()):
                    stream.reset_received()
                self.streams.clear()
                self._clear_ready()
                self._closing = True
        self._flush()

    def _start(self, stream_id: int, request: Request, end_stream: bool) -> None:
        request.conn = self.info
        stream = self.streams[stream_id] = H2Stream(self, stream_id, request, end_stream)
        self._served += 1
        if self._served >= self._server.config.limits.max_requests_per_connection:
            # As nginx's keepalive_requests does for HTTP/2: GOAWAY names this stream as the last,
            # the streams up to it finish, and the client opens a new connection for more.
            self.protocol.goaway(f.NO_ERROR, "max_requests_per_connection")
        if not end_stream:
            self._timer.arm(stream.body_since + self._server.config.limits.body_timeout)
        stream.start(self._handler)

    def _refuse(self, stream_id: int, status: int, reason: str) -> None:
        """Answer a well-formed request ring3 refuses (413, 417, 431, 501) without a handler."""
        logger.info("%s: refused HTTP/2 request: %s", self.peer, reason)
        stream = self.streams.get(stream_id)
        if stream is not None:  # 413 while its body arrives: the handler's exchange gives way
            stream.refused(status)
            return
        request = Request(b"-", b"-", b"-", b"", "2", [], b"", True, False, False, False, False, stream_id)
        stream = self.streams[stream_id] = H2Stream(self, stream_id, request, True)
        stream.cut_body()  # the client may still send a body: the stream is reset after the answer
        stream.refused(status)

    # -- writing ----------------------------------------------------------------------------------

    def ready(self, stream: H2Stream) -> None:
        """The stream has body data to send."""
        if not stream.queued:
            stream.queued = True
            self._ready[stream.urgency].append(stream)
            self._queued += 1
        self.flush_soon()

    def flush_soon(self) -> None:
        """Flush at the end of this turn of the event loop, so the responses of many streams finished
        in one turn (their handlers' tasks) leave in one send."""
        if not self._flush_soon and not self._closed:
            self._flush_soon = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_soon = False
        self._flush()

    def _flush(self) -> None:
        if self._closed:
            return
        output = self._output
        protocol = self.protocol
        while not output.blocked:
            parts: list[Segment] = []
            control = protocol.data_to_send()
            if control:
                parts.append(control)
            self._frame_data(parts)
            if not parts:
                break
            try:
                send_frames(output, parts, self._read_files, self._server.ledger)
            except (OSError, SendFailed) as exc:
                logger.warning("%s: response aborted: %s", self.peer, exc)
                self.close()
                return
            if not protocol.has_output and not self._queued:
                break
        if output.blocked:
            # The socket is full. Reading goes on (the client's WINDOW_UPDATEs, its next requests: a
            # large download must not hide them), unless frames the client has not taken pile up (acks,
            # resets, heads of answers): then reading waits until what is queued has left.
            self._timer.arm(output.progress_at + self._server.config.limits.send_timeout)
            if self._reading and protocol.backlog > OUTPUT_BACKLOG:
                self._reading = False
                self._loop.remove_reader(self._fd)
            output.when_drained(self._flush)
            return
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)
        if self._releases:
            self._run_releases()
        if self._closing and not self.streams:
            self.close()  # everything has left (the output path is not blocked)

    def release_after_send(self, cleanup: Callable[[], None]) -> None:
        """Run a response's cleanup once what is framed has been handed to the socket."""
        self._releases.append(cleanup)

    def _run_releases(self) -> None:
        releases, self._releases = self._releases, []
        for cleanup in releases:
            try:
                cleanup()
            except Exception:
                logger.exception("%s: response cleanup failed", self.peer)

    def _frame_data(self, parts: list[Segment]) -> None:
        """Append DATA frames up to WRITE_BATCH bytes: from the most urgent streams that can send, in
        turn, one frame each per turn; a less urgent stream sends when no more urgent one can."""
        if not self._queued:
            return
        protocol = self.protocol
        budget = WRITE_BATCH
        frame_size = protocol.peer_max_frame_size
        for ready in self._ready:
            while ready and budget > 0:
                if protocol.send_window <= 0 and ready[0].pending_size:
                    # The connection's credit is spent: every stream waits, each keeping its place in
                    # turn (a stream dropped here and queued again at the end would let the one that
                    # just used the credit take all the next, and starve the rest).
                    self._stall()
                    return
                stream = ready.popleft()
                window = protocol.window(stream.stream_id)
                if window <= 0 and stream.pending_size:  # this stream's own credit is spent
                    stream.queued = False
                    self._queued -= 1
                    self._stall()
                    continue
                # One turn: up to TURN_BYTES in consecutive frames (a file's are then read at once).
                turn = 0
                while turn < TURN_BYTES and stream.has_pending:
                    room = min(protocol.window(stream.stream_id), frame_size, TURN_BYTES - turn)
                    if room <= 0 and stream.pending_size:
                        break
                    sent = stream.frame(parts, room)
                    turn += sent
                    if not sent:
                        break  # the end of the stream went (an empty frame)
                budget -= turn
                if stream.has_pending:
                    ready.append(stream)
                else:
                    stream.queued = False
                    self._queued -= 1
            if budget <= 0:
                return

    def _stall(self) -> None:
        if not self._stalled_since:
            self._stalled_since = self._loop.time()
            self._timer.arm(self._stalled_since + self._server.config.limits.send_timeout)

    def _clear_ready(self) -> None:
        for ready in self._ready:
            ready.clear()
        self._queued = 0

    def reprioritize(self, stream: H2Stream, urgency: int) -> None:
        """RFC 9218: a PRIORITY_UPDATE moved the stream (its place in the queues follows)."""
        if stream.queued:
            self._ready[stream.urgency].remove(stream)
            self._ready[urgency].append(stream)
        stream.urgency = urgency

    def _window_opened(self, stream_id: int) -> None:
        self._stalled_since = 0.0
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream.has_pending:
                self.ready(stream)
            return
        for stream in self.streams.values():
            if stream.has_pending:
                self.ready(stream)

    def stream_done(self, stream: H2Stream) -> None:
        """The stream's exchange is over (its response sent, or it was reset)."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not self.streams:
            self._last_active = self._loop.time()
            if self._server.draining or self.protocol.goaway_received or self.protocol.goaway_sent:
                self._close_when_flushed()
            else:
                self._timer.arm(self._last_active + self._server.config.limits.keepalive_timeout)

    # -- closing ----------------------------------------------------------------------------------

    def _close_when_flushed(self) -> None:
        """Close once what is queued has left: at the end of this turn's flush (never from inside
        one, which may still be framing the last stream's end)."""
        if not self._closed:
            self._closing = True
            self.flush_soon()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        if self.tls is not None:
            self.tls.close_notify()
        self._output.close()
        self._timer.close()
        streams = list(self.streams.values())
        self.streams.clear()
        self._clear_ready()
        for stream in streams:
            stream.reset_received()
        self._run_releases()
        self._server.ledger.close += 1
        self._sock.close()
        self._server.connection_closed(self)

    def drain(self) -> None:
        """Server shutdown: GOAWAY with the last stream id; the streams up to it may finish (within
        shutdown_grace, after which the server closes the connection)."""
        self.protocol.goaway(f.NO_ERROR, "shutting down")
        for stream in list(self.streams.values()):
            stream.shutdown()  # tunnels (WebSockets) end their sessions; requests finish
        if not self.streams:
            self._close_when_flushed()
        else:
            self._flush()

    def _on_send_failed(self, exc: BaseException) -> None:
        logger.debug("%s: send failed: %s", self.peer, exc)
        self.close()

    # -- timeouts ---------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        if self._closed:
            return
        limits = self._server.config.limits
        now = self._loop.time()
        output = self._output
        if output.blocked:
            deadline = output.progress_at + limits.send_timeout
            reason = "send timeout"
        elif self._stalled_since and any(s.has_pending for s in self.streams.values()):
            deadline = self._stalled_since + limits.send_timeout
            reason = "send timeout (the client gives no flow-control credit)"
        elif self.streams:
            self._check_bodies(now, limits.body_timeout)
            return  # otherwise handlers at work: their responses have their own pace
        elif self.protocol.last_stream_id == 0:
            deadline = self._last_active + limits.header_timeout
            reason = "no request in time"
        else:
            deadline = self._last_active + limits.keepalive_timeout
            reason = ""
        if now < deadline:
            self._timer.arm(deadline)
            return
        if reason:
            logger.info("%s: %s, closing the HTTP/2 connection", self.peer, reason)
        if output.blocked or self._stalled_since:
            self.close()
            return
        self.protocol.goaway(f.NO_ERROR, "idle")
        self._close_when_flushed()


    def _check_bodies(self, now: float, timeout: float) -> None:
        """Streams whose request body stopped arriving for `body_timeout` get 408 (or a reset, when
        their answer has begun); the timer is armed for the next such deadline."""
        earliest = 0.0
        for stream in list(self.streams.values()):
            if not stream.awaiting_body:
                continue
            deadline = stream.body_since + timeout
            if now >= deadline:
                logger.info("%s: request body not received in time (stream %d)", self.peer, stream.stream_id)
                self.protocol.refuse(stream.stream_id)
                stream.refused(408)
            elif not earliest or deadline < earliest:
                earliest = deadline
        if earliest:
            self._timer.arm(earliest)
        self.flush_soon()


def settings_for(server: Server) -> p.H2Settings:
    """The server's HTTP/2 settings, made when its first HTTP/2 connection comes."""
    settings = server.h2_settings
    if settings is None:
        c = server.config.http2
        settings = server.h2_settings = p.H2Settings(
            max_concurrent_streams=c.max_concurrent_streams, initial_window_size=c.initial_window_size,
            connection_window_size=c.connection_window_size, max_frame_size=c.max_frame_size,
            max_header_list_size=c.max_header_list_size, header_table_size=c.header_table_size,
            control_frame_burst=c.control_frame_burst, control_frame_rate=c.control_frame_rate,
            enable_connect_protocol=c.websockets,
            max_body_size=server.config.limits.max_body_size)
    return settings


__all__ = ["H2Connection"]
