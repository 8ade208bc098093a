"""One HTTP/1.1 client connection: feeds the sans-IO parser, runs its requests' exchanges in order
(ring3.exchange), frames their responses and hands them to the output path. Owns the connection's
timeouts (header, body, keep-alive, send, lingering close).

The exchange rule: the next request is not started before the previous response has been sent and its
request body fully received; events for it wait in `_events`, and reading pauses meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ring3.body import BODY_HIGH_WATER, EMPTY_BODY, RequestBody
from ring3.errors import LocalProtocolError
from ring3.events import (
    ConnectionInfo,
    Event,
    FileRange,
    FixedBody,
    PushedBody,
    Request,
    RequestData,
    RequestEnded,
    Response,
    Segment,
    Upgrade,
    body_length,
)
from ring3.exchange import Exchange
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.http1.closing import (
    close_after_response,
    close_now,
    drain_connection,
    fail_current,
    start_rejected,
)
from ring3.http1.handover import switch_protocols, take_h2c
from ring3.http1.parser import H1Parser
from ring3.http1.replaying import answer_from_replay
from ring3.http1.serialize import CONTINUE, NO_BODY_STATUSES, serialize_head
from ring3.http1.timeouts import connection_deadline
from ring3.http1.writers import H1BodyWriter
from ring3.output import OutputPath, SendFailed
from ring3.replay import Replay
from ring3.timers import LazyTimer

if TYPE_CHECKING:
    from ring3.handlers import Handler
    from ring3.server import Server
    from ring3.transport.tls_stream import TLSOutputPath

    TLSOutputFactory = Callable[[Callable[[BaseException], None]], TLSOutputPath]

logger = logging.getLogger("ring3.error")

RECV_SIZE = 64 * 1024
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE_10 = b"connection: keep-alive\r\n"
_OPTIONS_ALLOW = [(b"allow", b"GET, HEAD, OPTIONS")]
# Every connection's `_events` while none wait: shared, never appended to (saves an idle one 760 bytes).
_NO_EVENTS: deque[Event] = deque()


class Connection(Exchange):
    """An HTTP/1.1 connection driven by readiness callbacks of the event loop; it carries one exchange
    at a time, so it is that exchange (ring3.exchange) too."""

    __slots__ = (
        "_body",
        "_body_complete",
        "_candidate",
        "_continue_sent",
        "_eof",
        "_events",
        "_fd",
        "_handler",
        "_info",
        "_keep_alive",
        "_last_read",
        "_lingering",
        "_max_requests",
        "_output",
        "_parser",
        "_phase_since",
        "_pumping",
        "_reading",
        "_replays",
        "_response_sent",
        "_response_started",
        "_served",
        "_sock",
        "_timer",
        "_unwatched",
        "_upgrade",
        "tls",
    )

    def __init__(self, server: Server, sock: socket.socket, peer: str,
                 info: ConnectionInfo | None = None, tls_output: TLSOutputFactory | None = None,
                 handler: Handler | None = None, watch: bool = True) -> None:
        """`tls_output` makes the connection's TLS output path (it also decrypts what is read), once
        its handshake is over; `handler` answers its requests instead of the server's (a listener's
        own, such as redirect-https), and then the replay cache stays out of it. With `watch` false
        the loop does not watch the socket yet: `begin` must be called."""
        loop = server.loop
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._peer = peer
        self._info = info or ConnectionInfo(client=None, server=None)
        self._upgrade: Upgrade | None = None
        self._handler = handler or server.handler
        self._replays = None if handler is not None else server.replays_for(self._info)
        self._candidate: bytes | None = None  # the bytes of the current request, if it may be replayed
        self._parser = H1Parser(server.h1_limits)
        self.tls: TLSOutputPath | None = None
        if tls_output is None:
            self._output = OutputPath(sock, loop, server.ledger, server.config.static.sendfile_min_size,
                                      self._on_send_failed)
        else:
            self._output = self.tls = tls_output(self._on_send_failed)
        self._events = _NO_EVENTS
        self._request: Request | None = None
        self._body: RequestBody | None = None
        self._body_complete = True
        self._response_started = False
        self._response_sent = True
        self._continue_sent = False
        self._keep_alive = True
        self._cleanup: Callable[[], None] | None = None
        self._task: asyncio.Future[Any] | None = None
        self._served = 0
        self._max_requests = server.config.limits.max_requests_per_connection
        self._pumping = False
        self._closed = False
        self._eof = False
        self._lingering = False
        self._log_line = b"-"
        self._log_status = 0
        self._log_sent = 0
        now = loop.time()
        self._phase_since = now
        self._last_read = now
        self._timer = LazyTimer(loop, self._on_timer)
        self._reading = True
        self._unwatched = not watch
        if watch:
            loop.add_reader(self._fd, self._on_readable)
            self._timer.arm(now + server.config.limits.header_timeout)

    def begin(self) -> None:
        """Read at once, as the connection is accepted: a client speaks first, so its request is
        usually here already (always, on a TCP_DEFER_ACCEPT listener). A request answered at once on a
        connection that then closes never costs an epoll_ctl, a wake-up or a timer; otherwise the
        loop watches the socket from here on (unless the first read paused or closed it)."""
        self._on_readable()
        if self._unwatched:
            self._unwatched = False
            if self._reading and not self._closed:
                self._loop.add_reader(self._fd, self._on_readable)
        if self._served == 0 and not self._closed:  # no request yet (a head begun arms its own)
            self._timer.arm(self._phase_since + self._server.config.limits.header_timeout)

    # -- reading ----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        ledger = self._server.ledger
        tls = self.tls
        try:
            if tls is None:
                ledger.recv += 1
                data = self._sock.recv(RECV_SIZE)
                ledger.bytes_received += len(data)
            else:
                data = tls.recv(RECV_SIZE)  # counts its own recv and the ciphertext's bytes
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        upgrade = self._upgrade
        if upgrade is not None:
            if data:
                upgrade.data_received(data)
            else:
                self._eof = True
                self._pause_reading()
                upgrade.eof_received()
            return
        if not data:
            self._on_eof()
            return
        if self._lingering:
            return
        parser = self._parser
        was_in_head = parser.in_head
        at_boundary = self._request is None and not was_in_head and not self._events
        if self._served == 0 and at_boundary and data[:3] == b"PRI" and take_h2c(self, data):
            return
        if at_boundary and self._replays is not None:
            replay = self._replays.get(data)
            if replay is not None and answer_from_replay(self, data, replay):
                return
        events = parser.receive_data(data)
        if (at_boundary and len(events) == 2 and type(events[1]) is RequestEnded
                and self._replays is not None and not parser.in_head):
            self._candidate = data  # exactly one whole request, without a body: see _respond
        if parser.upgraded:
            self._pause_reading()  # what follows is another protocol's, if the handler switches
        if parser.in_head and not was_in_head:
            self._phase_since = now = self._loop.time()
            self._timer.arm(now + self._server.config.limits.header_timeout)
        elif not self._body_complete or parser.in_body:
            self._last_read = self._loop.time()
        if events:
            if self._events is _NO_EVENTS:
                self._events = deque(events)
            else:
                self._events.extend(events)
            self._pump()

    @property
    def closed(self) -> bool:
        return self._closed

    def read_now(self) -> None:
        """Take what the transport holds already (TLS: plaintext that came with the handshake)."""
        self._on_readable()

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            if self._unwatched:
                self._unwatched = False  # begin's first read: nothing to take back from the loop
            else:
                self._loop.remove_reader(self._fd)

    def _resume_reading(self) -> None:
        if not self._reading and not self._closed and not self._eof and not self._events:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_eof(self) -> None:
        self._eof = True
        self._pause_reading()
        if self._lingering or (self._request is None and not self._events):
            self._close_when_flushed()
        elif not self._body_complete:
            self.close()  # the body can never complete
        elif self._task is not None and not self._events:
            self.close()  # an application is at work for a client that has gone: tell it so
        # else: answer what was received, then close (see _end_exchange)

    # -- the exchange loop ------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        output = self._output
        output.cork()
        try:
            events = self._events
            while events and not self._closed:
                event = events[0]
                if isinstance(event, Request):
                    if self._request is not None:
                        self._pause_reading()  # pipelined: waits for the current exchange
                        return
                    events.popleft()
                    self._start(event)
                elif isinstance(event, RequestData):
                    events.popleft()
                    body = self._body
                    if body is not None:
                        body.feed(event.data)
                        if body.buffered >= BODY_HIGH_WATER:
                            self._pause_reading()
                elif isinstance(event, RequestEnded):
                    events.popleft()
                    self._body_complete = True
                    if self._body is not None:
                        self._body.end()
                    if self._response_sent and self._request is not None:
                        self._end_exchange()
                else:  # RequestRejected
                    if self._request is not None and self._body_complete:
                        self._pause_reading()  # it concerns the next request: answer this one first
                        return
                    events.popleft()
                    if self._request is not None:
                        fail_current(self, event.status)
                    else:
                        logger.info("%s: rejected request: %s", self._peer, event.reason)
                        start_rejected(self, event.status)
                    return
        finally:
            self._pumping = False
            if not self._events:
                self._events = _NO_EVENTS
            if not self._closed:
                output.uncork()
                if output.blocked:
                    self._watch_output()

    def _start(self, request: Request) -> None:
        request.conn = self._info
        self._request = request
        self._served += 1
        self._body_complete = False
        self._response_started = self._response_sent = self._continue_sent = False
        body: BodyReader = EMPTY_BODY
        if request.has_body:
            on_first = self._send_continue if request.expect_continue else None
            body = self._body = RequestBody(self._loop, on_first, self._resume_reading)
            body.on_overflow = lambda dropped: fail_current(self, 413)  # a location's max_body_size
            self._last_read = now = self._loop.time()
            self._timer.arm(now + self._server.config.limits.body_timeout)
        if request.path == b"*":  # OPTIONS * (the parser allows '*' for nothing else)
            self._respond(status_response(200, list(_OPTIONS_ALLOW)))
            return
        self._run_handler(self._handler, request, body)

    def _send_continue(self) -> None:
        if not self._response_started and not self._body_complete and not self._closed:
            self._continue_sent = True
            self._output.write(CONTINUE)

    # -- responding -------------------------------------------------------------------------------

    def _respond(self, response: Response, log_line: bytes | None = None) -> None:
        request = self._request
        assert request is not None
        server = self._server
        candidate, self._candidate = self._candidate, None
        self._response_started = True
        self._cleanup = response.cleanup
        status = response.status
        body = response.body
        keep = (request.keep_alive and not response.close and not server.draining
                and self._served < self._max_requests
                and not self._parser.upgraded and not self._parser.dead)
        if request.expect_continue and not self._continue_sent and not self._body_complete:
            keep = False  # the client may or may not send the body it announced: framing in doubt
        no_body = status in NO_BODY_STATUSES
        head_only = no_body or request.method == b"HEAD"
        headers = response.headers
        stream: AsyncIterator[Segment] | None = None
        fixed: FixedBody | None = None
        length: int | None = None
        declared = response.content_length
        chunked = False
        pushed: PushedBody | None = None
        if type(body) is bytes:
            fixed = body
            length = len(body)
        elif isinstance(body, bytes | FileRange | list):
            fixed = body
            length = body_length(body)
        else:
            if isinstance(body, PushedBody):
                pushed = body
            else:
                stream = body
            if declared is not None:
                length = declared
            elif request.http_version == "1.1":
                chunked = True
                headers = [*headers, (b"transfer-encoding", b"chunked")]
            else:
                keep = False  # HTTP/1.0: the end of the body is the end of the connection
        if declared is not None and request.method == b"HEAD":
            length = declared
        if no_body:
            length = None
        upgrade = response.upgrade
        if upgrade is not None:
            keep = True  # no Connection: close on a 101; the new protocol owns the connection
        self._keep_alive = keep
        if not keep and self.tls is not None and (fixed is not None or head_only):
            # A whole response, handed over in one piece: its close_notify leaves with its end.
            self.tls.closing = True
        connection = _CLOSE if not keep else b"" if request.http_version == "1.1" else _KEEP_ALIVE_10
        try:
            if upgrade is not None and (status != 101 or not request.upgrade or not self._parser.upgraded):
                raise LocalProtocolError("a protocol switch needs status 101 and a request to upgrade")
            head = serialize_head(status, server.dates.common_headers(response.sets_fields), headers, length,
                                  connection, response.header_block)
        except LocalProtocolError as exc:
            logger.error("refused an invalid response for %r: %s", request.target, exc)
            self._run_cleanup()
            fallback = status_response(500, close=True)
            self._respond(fallback, log_line)
            return
        # Remembered if it keeps the connection open, or closes it because the client asked (the same
        # bytes ask the same again): not when the server chose to close (a drain, a request limit).
        if (candidate is not None and response.replay is not None and fixed is not None
                and (keep or not request.keep_alive) and request.method == b"GET" and upgrade is None
                and self._replays is not None):
            self._replays.store(candidate, Replay(request, response.replay, connection))
        if server.access_log is not None or request.log:
            self._log_line = log_line or b"%s %s HTTP/%s" % (
                request.method, request.target, request.http_version.encode())
        self._log_status = status
        self._log_sent = 0 if head_only else (length or 0)
        try:
            if upgrade is not None:
                self._output.send(head, None, lambda: switch_protocols(self, upgrade))
            elif head_only:
                self._run_cleanup()
                self._output.send(head, None, self._on_response_sent, may_cork=keep)
            elif pushed is not None:
                pushed.start(H1BodyWriter(self, head, chunked, declared))
            elif stream is not None:
                self._task = self._loop.create_task(
                    self._send_stream(H1BodyWriter(self, head, chunked, declared), stream))
            else:
                self._output.send(head, fixed, self._on_response_sent, may_cork=keep)
        except (SendFailed, OSError) as exc:
            logger.warning("%s: response aborted: %s", self._peer, exc)
            self.close()
            return
        if self._output.blocked:
            self._watch_output()

    def _watch_output(self) -> None:
        """If the socket is full, make sure the send timeout is armed."""
        output = self._output
        if output.blocked and not self._closed:
            self._timer.arm(output.progress_at + self._server.config.limits.send_timeout)

    def _on_response_sent(self) -> None:
        self._response_sent = True
        self._account()
        if not self._keep_alive:
            close_after_response(self)
        elif self._body_complete:
            self._end_exchange()
            if self._events:
                self._pump()
        else:  # the body is still arriving and nobody will read it: RequestEnded ends the exchange
            body = self._body
            if body is not None:
                body.discard()
            self._resume_reading()

    def _end_exchange(self) -> None:
        self._request = None
        self._body = None
        if (self._eof or self._server.draining) and not self._events:
            self._close_when_flushed()
            return
        now = self._loop.time()
        self._phase_since = now
        self._timer.arm(now + self._server.config.limits.keepalive_timeout)
        if not self._reading and not self._events:
            self._resume_reading()

    # -- closing ----------------------------------------------------------------------------------

    def _close_when_flushed(self) -> None:
        """Close once responses already handed to the output path (corked ones too) have left."""
        self._output.when_drained(self.close)

    def close(self) -> None:
        """Close now, dropping anything unsent."""
        if not self._closed:
            close_now(self)

    def _abort(self) -> None:
        self.close()

    def drain(self) -> None:
        """Shutdown or reload: see closing.drain_connection."""
        drain_connection(self)

    def _on_send_failed(self, exc: BaseException) -> None:
        logger.debug("%s: send failed: %s", self._peer, exc)
        self.close()

    # -- timeouts ---------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        if self._closed:
            return
        deadline, action = connection_deadline(self)
        if deadline is None:
            return
        if self._loop.time() >= deadline:
            action()
        else:
            self._timer.arm(deadline)
