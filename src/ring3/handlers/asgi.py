"""The ASGI 3 handler (spec 2.4): runs an application for each HTTP request and turns what it sends into
a Response that the connection sends like any other.

How an exchange maps onto ring3's handler contract:
- The application runs in a Task of its own, started eagerly (ring3.loops): an application that answers
  without waiting has its Response returned directly, and it leaves in the same turn of the loop.
  Otherwise the handler returns a Future of the Response.
- The head the application sends waits for its first body message. A body complete in one message
  becomes a plain bytes body (head and body leave in one send); `more_body` turns it into a pushed body:
  each send() writes its piece to the socket at once (writev, no copy) and waits only while the socket
  is full (backpressure).
- `http.response.pathsend` and `http.response.zerocopysend` become FileRange bodies: sendfile, no copy.
- `receive()` reads the request body as the connection receives it (reading pauses while the application
  does not read), then waits and returns `http.disconnect` once the response is sent or the client goes.
- An application that fails before its response starts gets a 500; after, the connection is aborted.
  Errors go to the log with their traceback, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ring3.body import EmptyBody
from ring3.config.loader import mount_prefix
from ring3.config.schema import AppSection
from ring3.eager import start_task
from ring3.errors import ClientDisconnected, ResponseAborted
from ring3.events import (
    DEFAULT_FIELDS,
    FileRange,
    Headers,
    Request,
    Response,
    Segment,
)
from ring3.files.cache import CachedFile, FileCache, load_entry
from ring3.files.resolve import OpenedFile
from ring3.handlers import BodyReader
from ring3.handlers.asgi_stream import PushStream
from ring3.handlers.status import status_response
from ring3.handlers.tls_facts import asgi_tls_extension

if TYPE_CHECKING:
    from ring3.websocket.asgi import WebSocketEndpoint
from ring3.observe.ledger import LEDGER

logger = logging.getLogger("ring3.error")

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
EXTENSIONS: dict[str, dict[str, Any]] = {
    "http.response.pathsend": {},
    "http.response.zerocopysend": {},
    "http.response.trailers": {},
}
# Response header fields the connection owns: it decides the framing and the connection's fate.
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


def _disconnect_message() -> Message:
    return {"type": "http.disconnect"}


class ASGIHandler:
    """Serves every request with one ASGI 3 application."""

    __slots__ = ("_files", "_loop", "_path_prefix", "_raw_path_prefix", "_root_path", "app", "running",
                 "state", "websocket")

    def __init__(self, app: ASGIApp, settings: AppSection, files: FileCache | None = None) -> None:
        self.app = app
        self._files = files  # for http.response.pathsend: hot files answered without a syscall
        # root_path is what a proxy stripped plus where ring3 mounts the application; the paths the
        # application sees carry both (the mount is still in the request's path).
        self._root_path = settings.root_path + mount_prefix(settings.mount)
        self._path_prefix = settings.root_path
        self._raw_path_prefix = settings.root_path.encode("ascii")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state: dict[str, Any] | None = None  # lifespan state, copied into every scope
        self.websocket: WebSocketEndpoint | None = None
        self.running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if request.upgrade and self.websocket is not None and _asks_for_websocket(request):
            return self.websocket(request, self.scope(request, "websocket"))
        exchange = HTTPExchange(loop, request, body, self._files)
        task = start_task(loop, exchange.run(self.app, self.scope(request, "http")))
        if not task.done():
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return exchange.outcome()

    def scope(self, request: Request, kind: str) -> Scope:
        """The scope of a request: what the application knows of it (ASGI 2.4 'http'/'websocket')."""
        path = request.path
        decoded = unquote_to_bytes(path) if path.find(b"%") >= 0 else path  # find: see http1/parser
        conn = request.conn
        scope: Scope = {
            "type": kind,
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "scheme": conn.scheme if kind == "http" else ("wss" if conn.scheme == "https" else "ws"),
            "path": self._path_prefix + decoded.decode("utf-8", "surrogateescape"),
            "raw_path": self._raw_path_prefix + path if self._raw_path_prefix else path,
            "query_string": request.query,
            "root_path": self._root_path,
            "headers": request.headers,
            "client": conn.client,
            "server": conn.server,
            "extensions": EXTENSIONS,
        }
        if kind == "http":
            scope["method"] = request.method.decode("ascii")
        if conn.tls is not None:
            scope["extensions"] = {**EXTENSIONS, "tls": asgi_tls_extension(conn.tls)}
        if self.state is not None:
            scope["state"] = dict(self.state)
        return scope


def _asks_for_websocket(request: Request) -> bool:
    """An HTTP/1.1 Upgrade to websocket, or HTTP/2's extended CONNECT for it (RFC 8441)."""
    if request.protocol:
        return request.protocol == b"websocket"
    value = request.header(b"upgrade")
    return request.method == b"GET" and value is not None and value.lower() == b"websocket"


class AppExchange:
    """What every ASGI exchange does: run the application and tell how it ended."""

    __slots__ = ()

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            self._failed(exc)
        except asyncio.CancelledError:
            self._failed(None)
            raise
        else:
            self._returned()

    # -- what each kind of exchange provides -----------------------------------------------------

    async def receive(self) -> Message:
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        raise NotImplementedError

    def _failed(self, error: BaseException | None) -> None:
        """The application raised `error` (None: it was cancelled)."""
        raise NotImplementedError

    def _returned(self) -> None:
        raise NotImplementedError


class HTTPExchange(AppExchange):
    """One HTTP request as an ASGI application sees it: receive(), send(), and the Response that
    results."""

    __slots__ = (
        "_body",
        "_body_done",
        "_complete",
        "_declared",
        "_disconnected",
        "_files",
        "_finished",
        "_future",
        "_head_request",
        "_headers",
        "_loop",
        "_outcome",
        "_sent",
        "_sets_fields",
        "_settled",
        "_status",
        "_stream",
        "_trailers",
        "_waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, request: Request, body: BodyReader,
                 files: FileCache | None = None) -> None:
        self._loop = loop
        self._files = files
        self._body = body
        self._body_done = False
        self._head_request = request.method == b"HEAD"
        self._status = 0  # 0 until http.response.start
        self._headers: Headers = []
        self._declared: int | None = None
        self._sets_fields = 0  # the application's own Date or Server (Response.sets_fields)
        self._stream: PushStream | None = None
        self._trailers: Headers | None = None  # announced by http.response.start: collected here
        self._complete = False  # the application has sent its whole response
        self._finished = False  # the connection is done with the response (sent or abandoned)
        self._disconnected = False
        self._waiter: asyncio.Future[None] | None = None
        self._sent: asyncio.Future[None] | None = None
        self._settled = False  # the outcome (a Response or ResponseAborted) is decided
        self._outcome: Response | ResponseAborted | None = None
        self._future: asyncio.Future[Response] | None = None

    def outcome(self) -> Response | asyncio.Future[Response]:
        """The Response if the application has decided it already, else a Future of it."""
        outcome = self._outcome
        if type(outcome) is Response:
            return outcome
        future = self._future = self._loop.create_future()
        if isinstance(outcome, ResponseAborted):
            future.set_exception(outcome)
        else:
            future.add_done_callback(self._on_response_taken)
        return future

    def _settle(self, outcome: Response | ResponseAborted) -> None:
        self._settled = True
        future = self._future
        if future is None:
            self._outcome = outcome
        elif not future.done():
            if isinstance(outcome, Response):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    # -- receive ----------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._body_done:
            return await self._next_body_message()
        if not self._disconnected and not self._finished:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return _disconnect_message()

    async def _next_body_message(self) -> Message:
        body = self._body
        if isinstance(body, EmptyBody):
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        try:
            data = await body.read()
        except ClientDisconnected:
            self._body_done = True
            self._disconnected = True
            return _disconnect_message()
        more = bool(data) and not (body.ended and body.buffered == 0)
        if not more:
            self._body_done = True
        return {"type": "http.request", "body": data, "more_body": more}

    def _wake_receiver(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- send -------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self._disconnected:
            raise ClientDisconnected("the client closed the connection")
        if kind == "http.response.start":
            if self._status:
                raise RuntimeError("http.response.start sent twice")
            self._start(message)
            return
        if not self._status:
            raise RuntimeError(f"{kind} sent before http.response.start")
        if self._finished and self._head_request:
            return  # HEAD: the body an application sends anyway goes nowhere
        if self._complete:
            raise RuntimeError(f"{kind} sent after the response was complete")
        if self._trailers is not None and kind != "http.response.trailers":
            # The body never ends the response: the trailers do (ASGI's HTTP Trailers extension).
            if kind != "http.response.body":
                raise RuntimeError(f"{kind} with trailers announced")
            await self._send_piece(bytes(message.get("body", b"")), True)
        elif kind == "http.response.body":
            await self._send_piece(bytes(message.get("body", b"")), bool(message.get("more_body", False)))
        elif kind == "http.response.trailers":
            await self._send_trailers(message)
        elif kind == "http.response.pathsend":
            self._send_path(message["path"])
        elif kind == "http.response.zerocopysend":
            await self._send_file(message)
        else:
            raise RuntimeError(f"unknown message type {kind!r}")

    def _start(self, message: Message) -> None:
        status = message["status"]
        if type(status) is not int or not 100 <= status <= 599:
            raise RuntimeError(f"invalid status {status!r}")
        self._headers = headers = []
        for name, value in message.get("headers", ()):
            lowered = name.lower()
            if lowered in _FRAMING_FIELDS:
                if lowered == b"content-length":
                    if not value.isdigit():  # int() would take " 1", "-1" and "1_0"
                        raise RuntimeError(f"invalid Content-Length {value!r}")
                    self._declared = int(value)
                continue
            if lowered in DEFAULT_FIELDS:
                self._sets_fields |= DEFAULT_FIELDS[lowered]
            if type(name) is bytes and type(value) is bytes:
                headers.append((name, value))
            else:  # ASGI allows any byte strings: make them bytes for the serialiser's checks
                headers.append((bytes(name), bytes(value)))
        if message.get("trailers"):
            self._trailers = []
        self._status = status  # started only once the head is known to be valid: else a 500

    async def _send_piece(self, piece: Segment, more: bool) -> None:
        stream = self._stream
        if stream is None:
            if not more:
                self._complete = True
                self._commit(piece)
                return
            stream = self._stream = PushStream(self._loop)
            self._commit(stream)
        if not more:
            self._complete = True
        await stream.put(piece, more)

    async def _send_trailers(self, message: Message) -> None:
        trailers = self._trailers
        if trailers is None:
            raise RuntimeError("http.response.trailers without trailers in http.response.start")
        trailers.extend((bytes(name).lower(), bytes(value)) for name, value in message.get("headers", ()))
        if message.get("more_trailers"):
            return
        self._complete = True
        stream = self._stream
        if stream is None:
            stream = self._stream = PushStream(self._loop)
            self._commit(stream)
        await stream.put(b"", False, trailers)

    def _send_path(self, path: str) -> None:
        """pathsend: the file by sendfile, or from the file cache once it is hot (no syscall at all)."""
        if self._stream is not None:
            raise RuntimeError("http.response.pathsend after a streamed body")
        cache = self._files
        now = 0.0
        key = os.fsencode(path)
        if cache is not None:
            now = time.monotonic()
            entry = cache.get(key, now)
            if entry is not None:
                self._send_entry(entry)
                return
        LEDGER.open += 1
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            LEDGER.fstat += 1
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RuntimeError(f"http.response.pathsend of {path!r}, which is not a regular file")
        except BaseException:
            _close(fd)
            raise
        if cache is not None and cache.wants(key, info.st_size, now):
            opened = OpenedFile(fd=fd, stat=info, name=os.path.basename(path), path=path)
            entry = load_entry(opened, now, keep_open=info.st_size > cache.max_file_size)
            if entry is not None:
                cache.store(key, entry)
                self._send_entry(entry)
                return
        self._complete = True
        self._commit(FileRange(fd, 0, info.st_size), lambda: _close(fd))

    def _send_entry(self, entry: CachedFile) -> None:
        self._complete = True
        LEDGER.responses_from_cache += 1
        if entry.body is not None:
            self._commit(entry.body)
        else:
            entry.acquire()
            self._commit(FileRange(entry.fd, 0, entry.size), entry.release)

    async def _send_file(self, message: Message) -> None:
        """zerocopysend: the application's open file, sent with sendfile; send() returns once the
        bytes have left, so the application may close the file then."""
        fd = message["file"].fileno()
        offset = message.get("offset")
        count = message.get("count")
        if offset is None:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        if count is None:
            count = os.fstat(fd).st_size - offset
        more = bool(message.get("more_body", False))
        await self._send_piece(FileRange(fd, offset, count), more)
        if not more and not self._finished:
            sent = self._sent = self._loop.create_future()
            await sent

    def _commit(self, body: Segment | PushStream, cleanup: Callable[[], None] | None = None) -> None:
        """Hand the response to the connection."""
        if cleanup is None:
            done = self._on_finished
        else:
            def done() -> None:
                cleanup()
                self._on_finished()

        if self._future is not None and self._future.cancelled():  # the client left meanwhile
            done()
            raise ClientDisconnected("the client closed the connection")
        # Positional (see Response): status, headers, header_block, body, cleanup, close, content_length.
        self._settle(Response(self._status, self._headers, b"", body, done, False, self._declared, None, None,
                              self._sets_fields))

    # -- endings ----------------------------------------------------------------------------------

    def _on_response_taken(self, future: asyncio.Future[Response]) -> None:
        if future.cancelled():  # the connection closed before the response was ready
            self._gone()

    def _on_finished(self) -> None:
        """The connection is done with the response: sent, or abandoned because the client left."""
        self._finished = True
        stream = self._stream
        if stream is not None and not stream.ended:
            self._gone()
        sent = self._sent
        if sent is not None and not sent.done():
            sent.set_result(None)
        self._wake_receiver()

    def _gone(self) -> None:
        head_done = self._head_request and self._finished
        if not head_done:
            self._disconnected = True
        if self._stream is not None:
            self._stream.abandon(error=not head_done)
        self._wake_receiver()

    def _failed(self, error: BaseException | None) -> None:
        if error is not None and not (isinstance(error, ClientDisconnected) and self._disconnected):
            logger.error("ASGI application failed", exc_info=error)
        if self._settled:
            if self._stream is not None:
                self._stream.fail()
        elif self._status:
            self._settle(ResponseAborted())
        else:
            self._settle(status_response(500))

    def _returned(self) -> None:
        if self._complete:
            return
        if not self._status:
            logger.error("ASGI application returned without sending a response")
            if not self._settled:
                self._settle(status_response(500))
            return
        logger.error("ASGI application returned before completing its response")
        self._failed(None)


def _close(fd: int) -> None:
    LEDGER.close += 1
    os.close(fd)

