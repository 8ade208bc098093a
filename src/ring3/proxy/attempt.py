"""One try of a proxied request on one upstream: a connection (pooled or new), the request sent (the body
streamed with backpressure, or relayed after the upstream's 100 Continue), the response head read within
the timeouts, and the Response built. A failure before the head raises Failure, which says whether the
request may go to another upstream: not once the client's body stream has been read (it cannot be sent
again), and for non-idempotent methods not once any of their body left.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ring3.errors import ClientDisconnected, LocalProtocolError
from ring3.events import Request, Response, Segment
from ring3.handlers import BodyReader
from ring3.proxy.headers import request_head, response_headers
from ring3.proxy.relay import UpstreamBody
from ring3.proxy.response import BARE_LF, NO_BODY, ResponseHead, UpstreamError, parse_head
from ring3.proxy.tunnel import Tunnel
from ring3.proxy.upstream_conn import ConnectFailed, UpstreamConnection, UpstreamGone, connect

if TYPE_CHECKING:
    from ring3.proxy.handler import ProxyHandler
    from ring3.proxy.upstreams import Upstream

logger = logging.getLogger("ring3.error")

CONTINUE_WAIT = 1.0  # seconds to wait for the upstream's 100 Continue before the body goes anyway (curl's)
RETRY_STATUSES = frozenset((502, 503, 504))
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 4.2.2


class _UnknownLength(AsyncIterator[Segment]):
    """The body of a HEAD answer whose GET would have no Content-Length: empty, never read."""

    async def __anext__(self) -> Segment:
        raise StopAsyncIteration


_NO_LENGTH = _UnknownLength()


class Failure(Exception):
    """This try failed before anything reached the client."""

    def __init__(self, status: int, reason: str, *, passive: bool, body_sent: bool = False,
                 consumed: bool = False, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale  # a kept-alive connection the upstream had closed: the same upstream may retry
        self.status = status
        self.reason = reason
        self.passive = passive  # counts against the upstream's health
        self.body_sent = body_sent  # request bytes left (the body's; for a non-idempotent method, any)
        self.consumed = consumed  # the client's body stream was read: it cannot be sent again
        self.response: Response | None = None


class Attempt:
    __slots__ = ("_body", "_body_done", "_body_sent", "_body_task", "_buffered", "_conn", "_consumed",
                 "_continue", "_finished", "_head", "_informational", "_proxy", "_received", "_request",
                 "_retry_statuses", "_reused", "_started", "_timer", "_upstream", "_ws_key", "notify")

    def __init__(self, proxy: ProxyHandler, upstream: Upstream, request: Request, body: BodyReader,
                 buffered: bytes | None, retry_statuses: bool) -> None:
        self._proxy = proxy
        self._upstream = upstream
        self._request = request
        self._body = body
        self._buffered = buffered
        self._retry_statuses = retry_statuses
        self._conn: UpstreamConnection | None = None
        self._body_done = not request.has_body
        self._body_sent = False
        self._consumed = False
        self._body_task: asyncio.Task[None] | None = None
        self._head: asyncio.Future[tuple[ResponseHead, bytes]] | None = None
        self._received = b""
        self._informational = 0
        self._continue: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._finished = False
        self._reused = True  # run() says otherwise when it connects
        self._started = time.monotonic()  # for the access log's upstream_time; -1 once recorded
        self.notify: Callable[[], None] | None = None  # told when the head is in or the try failed
        self._ws_key = b""  # the Sec-WebSocket-Key sent for an HTTP/2 client's WebSocket

    async def run(self, loop: asyncio.AbstractEventLoop) -> Response:
        """The whole try; raises Failure."""
        proxy, upstream = self._proxy, self._upstream
        conn = proxy.pool.take(upstream, loop.time())
        if conn is None:
            try:
                conn = await connect(upstream.address, upstream, loop, proxy.spec.connect_timeout)
            except ConnectFailed as exc:
                self._record()
                raise Failure(502, f"connect failed: {exc}", passive=True) from None
            self._reused = False
        head = self.begin(loop, conn)
        try:
            await head
        except Exception:
            pass  # settle() tells what it was
        except BaseException:
            self.finish(False)  # the client is gone (the exchange was cancelled)
            raise
        return self.settle(loop)

    def begin(self, loop: asyncio.AbstractEventLoop, conn: UpstreamConnection) -> asyncio.Future[Any]:
        """Send the request on `conn`; the future is done once the response head is in (or the try
        failed), and settle() then says which."""
        proxy, upstream = self._proxy, self._upstream
        self._conn = conn
        upstream.active += 1
        upstream.requests += 1
        head_future = self._head = loop.create_future()
        conn.sink = self._on_head_data
        if proxy.expect_large and self._may_splice():
            conn.peek = self._peek
        try:
            self._send_request(loop, conn)
        except (UpstreamGone, LocalProtocolError) as exc:
            self._fail_head(exc)
        return head_future

    def settle(self, loop: asyncio.AbstractEventLoop) -> Response:
        """The Response, once begin()'s future is done; raises Failure."""
        head_future = self._head
        assert head_future is not None and head_future.done()
        error = head_future.exception()
        if error is not None:
            self.finish(False)
            raise self._failure(error) from None
        head, rest = head_future.result()
        if head.status in RETRY_STATUSES and self._retry_statuses and not self._consumed:
            self.finish(False)
            raise Failure(head.status, f"answered {head.status}", passive=False, body_sent=self._body_sent)
        try:
            response = self._response(head, rest, loop)
        except UpstreamError as exc:  # in the body bytes that came with the head: none has gone out yet
            self.finish(False)
            raise self._failure(exc) from None
        self._upstream.succeeded()
        return response

    def _failure(self, error: BaseException) -> Failure:
        sent, consumed = self._body_sent, self._consumed
        if isinstance(error, UpstreamGone):
            stale = self._reused and not self._received  # a kept-alive connection the upstream just closed
            return Failure(502, f"connection lost before the response: {error}", passive=not stale,
                           body_sent=sent, consumed=consumed, stale=stale)
        if isinstance(error, UpstreamError):
            return Failure(502, f"invalid response: {error}", passive=True, body_sent=sent, consumed=consumed)
        if isinstance(error, TimeoutError):
            return Failure(504, str(error) or "timed out", passive=True, body_sent=sent, consumed=consumed)
        if isinstance(error, LocalProtocolError):
            return Failure(400, f"refused to send the request: {error}", passive=False)
        return Failure(502, f"failed: {error!r}", passive=True, body_sent=sent, consumed=consumed)

    # -- sending ----------------------------------------------------------------------------------

    def _send_request(self, loop: asyncio.AbstractEventLoop, conn: UpstreamConnection) -> None:
        proxy, request = self._proxy, self._request
        spec = proxy.spec
        framing = b""
        expect = False
        body_now = b""
        upgrade = request.header(b"upgrade") if request.upgrade else None
        if request.protocol == b"websocket":  # RFC 8441's extended CONNECT: an HTTP/1.1 Upgrade upstream
            request, upgrade = self._websocket_upgrade(request), b"websocket"
            self._body_done = True  # what the stream carries after the answer is the tunnel's
        elif request.has_body:
            buffered = self._buffered
            length = request.header(b"content-length")
            if buffered is not None and self._body.ended:
                framing = b"content-length: %d\r\n" % len(buffered)
                body_now = buffered
                self._body_done = True
            else:
                chunked = length is None or request.header(b"transfer-encoding") is not None
                framing = b"transfer-encoding: chunked\r\n" if chunked else b"content-length: %s\r\n" % length
                expect = request.expect_continue and buffered is None
        head = request_head(request, proxy.target(request), proxy.host_for(request, self._upstream), framing,
                            proxy.request_drop, forwarded=spec.forwarded, edits=proxy.edits, expect=expect,
                            upgrade=upgrade)
        data = head + body_now if len(body_now) <= 65536 else head
        if body_now:
            self._body_sent = True
        all_sent = conn.send(data)
        if request.method not in _IDEMPOTENT:
            self._body_sent = True  # the request itself has left: a POST is never sent twice, body or not
        if data is head and body_now:
            all_sent = conn.send(body_now)
        if self._body_done:
            if all_sent:
                self._arm_first_byte(loop)
            else:
                self._body_task = loop.create_task(self._drain_then_wait(loop, conn))
        elif expect:
            self._continue = loop.call_later(CONTINUE_WAIT, self._start_body)
        else:
            self._start_body(framing.startswith(b"transfer"))

    def _websocket_upgrade(self, request: Request) -> Request:
        """An HTTP/2 WebSocket's CONNECT as the GET with Upgrade an HTTP/1.1 upstream expects (its own
        Sec-WebSocket-Key, checked in the 101's Sec-WebSocket-Accept)."""
        key = self._ws_key = base64.b64encode(os.urandom(16))
        headers = [pair for pair in request.headers if pair[0] != b"sec-websocket-key"]
        headers.append((b"sec-websocket-key", key))
        return dataclasses.replace(request, method=b"GET", headers=headers, has_body=False)

    def _start_body(self, chunked: bool | None = None) -> None:
        if self._continue is not None:
            self._continue.cancel()
            self._continue = None
        if self._body_task is not None or self._finished or self._body_done:
            return
        if chunked is None:
            request = self._request
            chunked = (request.header(b"content-length") is None
                       or request.header(b"transfer-encoding") is not None)
        loop = self._proxy.loop or asyncio.get_running_loop()
        self._body_task = loop.create_task(self._send_body(loop, chunked))

    async def _drain_then_wait(self, loop: asyncio.AbstractEventLoop, conn: UpstreamConnection) -> None:
        try:
            await asyncio.wait_for(conn.drain(), self._proxy.spec.send_timeout)
        except (UpstreamGone, TimeoutError) as exc:
            self._fail_head(exc if isinstance(exc, UpstreamGone) else TimeoutError("send timed out"))
            return
        self._arm_first_byte(loop)

    async def _send_body(self, loop: asyncio.AbstractEventLoop, chunked: bool) -> None:
        conn = self._conn
        assert conn is not None
        timeout = self._proxy.spec.send_timeout
        try:
            if self._buffered:
                self._body_sent = True
                piece = self._buffered
                if not conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece):
                    await asyncio.wait_for(conn.drain(), timeout)
            while True:
                self._consumed = True
                piece = await self._body.read()
                if not piece:
                    break
                self._body_sent = True
                if not conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece):
                    await asyncio.wait_for(conn.drain(), timeout)
            if chunked and not conn.send(b"0\r\n\r\n"):
                await asyncio.wait_for(conn.drain(), timeout)
        except ClientDisconnected:
            self._fail_head(UpstreamGone("the client went away during its upload"))
            conn.close()
            return
        except UpstreamGone:
            # An upstream that stopped reading may have answered already (a 413, say): its response, or
            # its close, or the first-byte timeout settles the head.
            if self._head is not None and not self._head.done() and self._timer is None:
                self._arm_first_byte(loop)
            return
        except TimeoutError:
            self._fail_head(TimeoutError(f"the upstream took no request bytes for {timeout:g}s"))
            conn.close()
            return
        self._body_done = True
        if self._head is not None and not self._head.done():
            self._arm_first_byte(loop)

    def _arm_first_byte(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self._proxy.spec.first_byte_timeout
        self._timer = loop.call_later(timeout, self._fail_head,
                                      TimeoutError(f"no response within {timeout:g}s"))

    # -- the response head ------------------------------------------------------------------------

    def _on_head_data(self, data: bytes) -> None:
        head_future = self._head
        if head_future is None or head_future.done():
            self._received += data  # after the head, before the body's reader takes over
            if len(self._received) > 4 * 65536 and self._conn is not None:
                self._conn.pause_reading()
            return
        if not data:
            self._fail_head(UpstreamGone("the upstream closed the connection"))
            return
        received = self._received = self._received + data if self._received else data
        spec = self._proxy.spec
        while True:
            end = received.find(b"\r\n\r\n", 0, spec.max_header_bytes)
            if end < 0:
                if len(received) >= spec.max_header_bytes:
                    self._fail_head(UpstreamError(f"a response head over {spec.max_header_bytes} bytes"))
                elif BARE_LF.search(received) is not None:
                    self._fail_head(UpstreamError("bare LF in the response head"))
                return
            try:
                head = parse_head(received, end, self._request.method == b"HEAD", spec.max_header_count)
            except UpstreamError as exc:
                self._fail_head(exc)
                return
            if head.status >= 200 or head.status == 101:
                break
            self._informational += 1
            if self._informational > spec.max_informational:
                self._fail_head(UpstreamError(f"more than {spec.max_informational} 1xx responses"))
                return
            if head.status == 100:
                self._start_body()  # the client's body is read now: ring3 sends it its own 100 Continue
            received = self._received = received[head.size:]
        if head.status == 101 and not self._request.upgrade:
            self._fail_head(UpstreamError("101 to a request that did not ask to switch protocols"))
            return
        if head.status == 101 and self._ws_key:
            accept = base64.b64encode(hashlib.sha1(self._ws_key + _WS_GUID).digest())
            if (b"sec-websocket-accept", accept) not in head.headers:
                self._fail_head(UpstreamError("a 101 without the Sec-WebSocket-Accept of its key"))
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None:
            self._conn.peek = None
        rest = received[head.size:]
        self._received = b""
        head_future.set_result((head, rest))
        if self.notify is not None:
            self.notify()

    def _may_splice(self) -> bool:
        request = self._request
        return (self._proxy.splice_ok and request.http_version != "2" and request.conn.tls is None
                and request.method != b"HEAD")

    def _peek(self, waiting: bytes) -> int:
        """How much of `waiting` to read now: exactly the head, if it is a final one whose body is long
        enough to splice (then no byte of the body enters Python); else 0."""
        spec = self._proxy.spec
        end = waiting.find(b"\r\n\r\n")
        if end < 0 or self._received:
            return 0
        try:
            head = parse_head(waiting, end, False, spec.max_header_count)
        except UpstreamError:
            return 0  # read as usual: the head reader says what is wrong
        if head.status < 200 or head.length is None or head.length < spec.splice_min_size:
            return 0
        return head.size

    def _fail_head(self, error: BaseException) -> None:
        head_future = self._head
        if head_future is not None and not head_future.done():
            head_future.set_exception(error)
            if self.notify is not None:
                self.notify()

    @property
    def request(self) -> Request:
        return self._request

    @property
    def body(self) -> BodyReader:
        return self._body

    @property
    def upstream(self) -> Upstream:
        return self._upstream

    def abandoned(self, outer: asyncio.Future[Response]) -> None:
        """The exchange gave up waiting (the client went): let the connection go."""
        if outer.cancelled():
            self.finish(False)

    # -- the response -----------------------------------------------------------------------------

    def _response(self, head: ResponseHead, rest: bytes, loop: asyncio.AbstractEventLoop) -> Response:
        conn = self._conn
        assert conn is not None
        spec = self._proxy.spec
        status = head.status
        if status == 101:
            self._record()  # the access log is written at the switch, long before the tunnel ends
            tunnel = Tunnel(conn, rest, self.finish, spec.read_timeout)
            if self._ws_key:  # to an HTTP/2 client: a 200 opens its CONNECT stream's tunnel
                headers = [pair for pair in response_headers(head.headers, upgrade=False)
                           if pair[0] != b"sec-websocket-accept"]
                return Response(200, headers, upgrade=tunnel)
            return Response(101, response_headers(head.headers, upgrade=True), upgrade=tunnel)
        headers = response_headers(head.headers, upgrade=False)
        rest = rest + self._received if self._received else rest
        self._received = b""
        if self._request.method == b"HEAD" or status in NO_BODY:
            self.finish(head.keep_alive and not rest)
            if status not in NO_BODY and head.length is None:
                # A length the upstream did not know (its GET would be chunked): announce none, not 0
                # (RFC 9110 8.6); a stream body says so, and no byte of it is asked for.
                return Response(status, headers, body=_NO_LENGTH)
            return Response(status, headers, content_length=head.length if status not in NO_BODY else None)
        length = head.length
        self._proxy.expect_large = length is not None and length >= spec.splice_min_size and spec.splice
        if length is not None and len(rest) >= length:
            self.finish(head.keep_alive and len(rest) == length)
            return Response(status, headers, body=rest if len(rest) == length else rest[:length])
        conn.resume_reading()
        splice_min = spec.splice_min_size if spec.splice else None
        relay = UpstreamBody(conn, head, rest, lambda reusable: self.finish(reusable and head.keep_alive),
                             read_timeout=spec.read_timeout, splice_min=splice_min, loop=loop)
        return Response(status, headers, body=relay, content_length=length, cleanup=relay.abandon)

    def finish(self, reusable: bool) -> None:
        """The upstream connection is done with: back to the pool at a clean boundary, else closed."""
        if self._finished:
            return
        self._finished = True
        self._record()
        for handle in (self._timer, self._continue):
            if handle is not None:
                handle.cancel()
        self._upstream.active -= 1
        conn = self._conn
        if conn is None:
            return
        task = self._body_task
        if task is not None and not task.done():
            task.cancel()
            reusable = False  # the request was not wholly sent
        if reusable and self._body_done and not conn.closed:
            self._proxy.pool.give_back(conn, (self._proxy.loop or asyncio.get_running_loop()).time())
        else:
            conn.close()

    def _record(self) -> None:
        """This try's upstream and its time so far, on the request for the access log (once a try)."""
        started = self._started
        if started < 0:
            return
        self._started = -1.0
        entry = (self._upstream.name, time.monotonic() - started)
        request = self._request
        if request.upstream is None:
            request.upstream = [entry]
        else:
            request.upstream.append(entry)
