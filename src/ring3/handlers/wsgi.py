"""The WSGI (PEP 3333) handler: a synchronous application served from a thread pool.

Threads. Application code never runs on the event loop thread (unless `app.wsgi_threads` is 0: then
inline, after the whole body has arrived). Each request is one job for a BatchingPool (workers.py) of
`app.wsgi_threads` threads, woken once per turn of the loop rather than once per job; a request that
finds them all busy waits in the pool's queue. The handler answers with a plain asyncio Future that the
job's done-callback settles on the loop thread (through a mailbox that wakes the loop once per batch),
so no Task is made per request. `wsgi.input` fetches the body from the loop thread as the
application reads it, one piece per hop; a request without a body reads b"" without crossing threads.

One send for one-chunk responses. The worker runs the application and pulls its first non-empty chunk.
When that is the whole body (a one-item list, or as many bytes as the application's Content-Length),
the answer is a Response with a bytes body: the head and the body leave in one send, and the iterable is
closed in the worker. Only a longer body becomes a stream, each further chunk fetched by one pool job.

sendfile for file_wrapper. An application that returns `wsgi.file_wrapper(file)` over a regular file is
answered with a FileRange from the file's current position, which the output path sends zero-copy; any
other file-like is read in blocks.

close(). The iterable's close() runs exactly once, in a pool thread: in the worker when the iteration
ends or fails, else from Response.cleanup once the connection has sent or abandoned the stream (after
the chunk being fetched, if any, so that close() never races next()).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import logging
import os
import re
import stat
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sized
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ring3.body import EmptyBody, RequestBody
from ring3.config import AppSection
from ring3.errors import ClientDisconnected, LocalProtocolError, ResponseAborted
from ring3.events import FileRange, Headers, Request, Response, fields_set
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.handlers.tls_facts import wsgi_tls_environ
from ring3.handlers.workers import BatchingPool
from ring3.http1.serialize import NO_BODY_STATUSES, check_header

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication

logger = logging.getLogger("ring3.error")

Job = concurrent.futures.Future[Response]

_STATUS = re.compile(r"[1-9][0-9][0-9] [^\x00-\x1f\x7f]*\Z")
# Framing is the connection's business; an application's hop-by-hop fields are dropped (PEP 3333 forbids
# them; gunicorn drops them too).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"transfer-encoding", b"upgrade"})
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
_DEFAULT_PORTS = {"https": "443"}
_ENVIRON_KEYS: dict[bytes, str] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_ENVIRON_KEYS.update((name, "HTTP_" + name.decode().upper().replace("-", "_")) for name in (
    b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language", b"cookie", b"connection",
    b"referer", b"origin", b"authorization", b"cache-control", b"pragma", b"if-none-match",
    b"if-modified-since", b"x-forwarded-for", b"x-forwarded-proto", b"x-requested-with", b"upgrade",
    b"transfer-encoding", b"expect", b"range", b"dnt", b"sec-fetch-mode", b"sec-fetch-site"))


# -- wsgi.errors, wsgi.input, wsgi.file_wrapper ---------------------------------------------------


class _ErrorStream:
    """wsgi.errors: what applications write goes to the ring3.error log, one record per line."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = threading.local()  # each thread's unfinished line

    def write(self, text: str) -> None:
        *lines, rest = (getattr(self._pending, "text", "") + text).split("\n")
        for line in lines:
            logger.error("%s", line)
        self._pending.text = rest

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        text = getattr(self._pending, "text", "")
        if text:
            self._pending.text = ""
            logger.error("%s", text)


class _Input:
    """wsgi.input: the request body, fetched from the event loop thread as the application reads."""

    __slots__ = ("_body", "_buffer", "_ended", "_loop")

    def __init__(self, body: RequestBody, loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop
        self._buffer = bytearray()
        self._ended = False

    def _fetch(self) -> bytes:
        """The next piece of the body (b"" at the end); raises ClientDisconnected if the client left."""
        if self._ended:
            return b""
        loop = self._loop
        if not loop.is_running():
            raise ClientDisconnected("the server has stopped")
        try:
            data = asyncio.run_coroutine_threadsafe(self._body.read(), loop).result()
        except concurrent.futures.CancelledError:
            raise ClientDisconnected("the server has stopped") from None
        if not data:
            self._ended = True
        return data

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        if size is None or size < 0:
            parts = [bytes(buffer)]
            buffer.clear()
            while data := self._fetch():
                parts.append(data)
            return b"".join(parts)
        while len(buffer) < size and (data := self._fetch()):
            if not buffer and len(data) == size:
                return data  # the common case: no copy
            buffer += data
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        limit = -1 if size is None else size
        searched = 0
        while True:
            end = buffer.find(b"\n", searched)
            if end >= 0:
                return self._take(end + 1 if limit < 0 else min(end + 1, limit))
            if 0 <= limit <= len(buffer):
                return self._take(limit)
            searched = len(buffer)
            data = self._fetch()
            if not data:
                return self._take(len(buffer))
            buffer += data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _NoInput:
    """wsgi.input of a request without a body: shared, and never crosses threads."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


_NO_INPUT = _NoInput()


class FileWrapper:
    """wsgi.file_wrapper: a file the application wants sent. Over a regular file it becomes a FileRange
    (sendfile); otherwise it is read in blocks of `blksize`."""

    __slots__ = ("_closed", "blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        blksize = self.blksize
        while data := read(blksize):
            yield data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def file_range(self, limit: int | None) -> FileRange | None:
        """The rest of the file from its current position (at most `limit` bytes), or None if it is not
        a regular file with a descriptor."""
        filelike = self.filelike
        if isinstance(filelike, io.TextIOBase):
            return None
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            offset = filelike.tell()
        except (AttributeError, OSError, TypeError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode) or not isinstance(offset, int):
            return None
        count = max(info.st_size - offset, 0)
        if limit is not None:
            count = min(count, limit)
        return FileRange(fd, offset, count)


_ERRORS = _ErrorStream()


# -- start_response --------------------------------------------------------------------------------


class _Reply:
    """What the application said through start_response() and write() for one request."""

    __slots__ = ("close", "committed", "content_length", "headers", "sealed", "sets_fields", "status",
                 "written")

    def __init__(self) -> None:
        self.status = 0  # 0 until start_response() is called
        self.headers: Headers = []
        self.sets_fields = 0  # the application's own Date or Server (Response.sets_fields)
        self.content_length: int | None = None
        self.close = False
        self.committed = False  # the headers count as sent: a first non-empty chunk exists
        self.sealed = False  # the Response is built: write() can no longer add to it
        self.written: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: OptExcInfo | None = None, /) -> Callable[[bytes], object]:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback (PEP 3333)
        elif self.status:
            raise LocalProtocolError("start_response() called twice without exc_info")
        code = _status_code(status)
        self.headers, self.content_length, self.close = _response_headers(headers)
        self.sets_fields = fields_set(self.headers)
        self.status = code
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write(): the data is kept and sent ahead of what the returned iterable yields."""
        if self.sealed:
            raise LocalProtocolError("write() called after the application returned its response")
        chunk = _as_bytes(data)
        if chunk:
            self.committed = True
            self.written.append(chunk)


def _status_code(status: object) -> int:
    if not isinstance(status, str):
        raise LocalProtocolError(f"the status must be a str, not {type(status).__name__}")
    if _STATUS.match(status) is None:
        raise LocalProtocolError(f"invalid status {status!r}: give it as '200 OK'")
    code = int(status[:3])
    if code < 200:
        raise LocalProtocolError(f"status {code}: a WSGI application cannot send an interim response")
    return code


def _response_headers(headers: object) -> tuple[Headers, int | None, bool]:
    """The headers as the connection takes them: (headers, Content-Length, whether to close after)."""
    if not isinstance(headers, list | tuple):
        raise LocalProtocolError(f"the headers must be a list of (name, value), not {type(headers).__name__}")
    result: Headers = []
    length: int | None = None
    close = False
    for item in headers:
        name, value = _header(item)
        if name == b"content-length":
            length = _content_length(value, length)
        elif name in _HOP_BY_HOP:
            if name == b"connection":
                close = close or b"close" in (token.strip() for token in value.lower().split(b","))
        else:
            result.append((name, value))
    return result, length, close


def _header(item: object) -> tuple[bytes, bytes]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise LocalProtocolError(f"a header must be a (name, value) tuple, not {item!r}")
    name, value = item
    if not isinstance(name, str) or not isinstance(value, str):
        raise LocalProtocolError(f"a header name and value must be str: {item!r}")
    try:
        pair = name.lower().encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"a header must be latin-1 text: {item!r}") from None
    check_header(*pair)
    return pair


def _content_length(value: bytes, previous: int | None) -> int:
    value = value.strip()
    if not value.isdigit() or (previous is not None and int(value) != previous):
        raise LocalProtocolError(f"invalid Content-Length {value!r}")
    return int(value)


def _as_bytes(chunk: object) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a WSGI application must produce bytes, not {type(chunk).__name__}")


def _close_iterable(iterable: object) -> None:
    close = getattr(iterable, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        logger.exception("close() of a WSGI response failed")


def _clip(chunk: bytes, limit: int) -> bytes:
    """At most `limit` bytes: PEP 3333 has the server stop at the application's Content-Length."""
    if len(chunk) > limit:
        logger.warning("a WSGI application sent more than its Content-Length; the rest is dropped")
        return chunk[:limit]
    return chunk


# -- the response body ------------------------------------------------------------------------------


class _Stream:
    """A response body after its first chunk: each next chunk is one pool job (an AsyncIterator).

    `cleanup` is the Response's: the connection calls it once the body has been sent or abandoned.
    """

    __slots__ = ("_abandoned", "_closed", "_context", "_fetch", "_finished", "_first", "_iterable",
                 "_iterator", "_loop", "_pool", "_remaining")

    def __init__(self, iterable: Iterable[bytes], iterator: Iterator[bytes], first: bytes,
                 remaining: int | None, loop: asyncio.AbstractEventLoop, pool: BatchingPool | None,
                 context: contextvars.Context) -> None:
        self._context = context  # the request's: each chunk may be pulled in another thread
        self._iterable = iterable
        self._iterator = iterator
        self._first = first
        self._remaining = remaining  # bytes still allowed by the application's Content-Length
        self._loop = loop
        self._pool = pool
        self._fetch: concurrent.futures.Future[bytes] | None = None
        self._finished = remaining == 0
        self._abandoned = False
        self._closed = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        first = self._first
        if first:
            self._first = b""
            return first
        if self._finished:
            raise StopAsyncIteration
        if self._pool is None:  # inline: the application runs on the loop's thread
            chunk = self._context.run(self._next_chunk)
            if not chunk:
                raise StopAsyncIteration
            return chunk
        try:
            fetch = self._fetch = self._pool.submit(self._context.run, self._next_chunk)
        except RuntimeError:  # the pool was shut down under the stream
            raise ResponseAborted("the WSGI thread pool has stopped") from None
        chunk = await asyncio.wrap_future(fetch, loop=self._loop)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def _next_chunk(self) -> bytes:
        """In a pool thread: the next non-empty chunk, or b"" once the iterable has ended (and is
        closed). An application error closes it and aborts the response."""
        try:
            for chunk in self._iterator:
                if self._abandoned:
                    break
                if chunk:
                    return self._count(_as_bytes(chunk))
        except Exception:
            logger.exception("WSGI application failed while streaming its response")
            self._close()
            raise ResponseAborted("the application failed mid-response") from None
        self._finished = True
        self._close()
        return b""

    def _count(self, chunk: bytes) -> bytes:
        remaining = self._remaining
        if remaining is not None:
            chunk = _clip(chunk, remaining)
            self._remaining = remaining = remaining - len(chunk)
            if remaining == 0:  # all the application announced: stop iterating
                self._finished = True
                self._close()
        return chunk

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_iterable(self._iterable)

    def cleanup(self) -> None:
        """On the loop thread: close the iterable in the pool, after the chunk in flight if any."""
        if self._closed:
            return
        self._abandoned = True
        fetch = self._fetch
        if fetch is not None and not fetch.done():
            fetch.add_done_callback(self._close_after_fetch)
        else:
            _run_in(self._pool, partial(self._context.run, self._close))

    def _close_after_fetch(self, fetch: concurrent.futures.Future[bytes]) -> None:
        _run_in(self._pool, partial(self._context.run, self._close))

    def __del__(self) -> None:
        # Last resort for a Response dropped unsent (the connection closed as it was handed over).
        if not self._closed and not self._abandoned:
            self.cleanup()


async def _single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def _run_in(pool: BatchingPool | None, function: Callable[[], None]) -> None:
    """Run `function` in a thread of `pool`, or here if there is none (inline) or it has been shut
    down."""
    if pool is None:
        function()
        return
    try:
        pool.submit(function)
    except RuntimeError:
        function()


# -- the handler ------------------------------------------------------------------------------------


class WSGIHandler:
    """Serves one WSGI application (a ring3 Handler)."""

    __slots__ = ("_app", "_base", "_inline", "_loop", "_mail", "_pool", "_prefix", "_threads")

    def __init__(self, app: WSGIApplication, settings: AppSection,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._app = app
        self._threads = settings.wsgi_threads
        self._inline = settings.wsgi_threads == 0  # run on the loop's thread: one request at a time
        self._loop = loop
        self._pool: BatchingPool | None = None
        self._mail: _Mailbox | None = None
        self._prefix = settings.mount.rstrip("/").encode("ascii")  # b"" when mounted at '/'
        script_name = unquote_to_bytes(settings.root_path.encode("ascii") + self._prefix).decode("latin-1")
        self._base: dict[str, Any] = {
            "SCRIPT_NAME": script_name,
            "wsgi.version": (1, 0),
            "wsgi.errors": _ERRORS,
            "wsgi.multithread": not self._inline,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }

    async def startup(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if not self._inline:
            self.executor()

    async def shutdown(self) -> None:
        """Stop the pool once the requests it runs or holds have finished (the loop keeps serving
        their body reads meanwhile)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        mailbox = self._mail
        if mailbox is None:
            mailbox = self._mail = _Mailbox(loop)
        return mailbox

    def executor(self) -> BatchingPool:
        """The thread pool, made on first use (on the loop's thread)."""
        pool = self._pool
        if pool is None:
            loop = self._loop or asyncio.get_running_loop()
            pool = self._pool = BatchingPool(self._threads, loop, thread_name_prefix="ring3-wsgi")
        return pool

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._inline:
            if isinstance(body, EmptyBody):
                context = contextvars.Context()
                return context.run(self._answer, request, body, loop, None, context, _NO_INPUT)
            return self._read_then_answer(request, body, loop)
        answer: asyncio.Future[Response] = loop.create_future()
        pool = self.executor()
        # One context per request, entered by every job of the request (they never overlap): a response
        # streamed from several pool threads keeps its context variables (Flask's stream_with_context),
        # and no request sees what another left in a thread's context.
        context = contextvars.Context()
        job = pool.submit(context.run, self._answer, request, body, loop, pool, context)
        job.add_done_callback(partial(_hand_over, self._mailbox(loop), answer))
        answer.add_done_callback(partial(_cancel_job, job))
        return answer

    async def _read_then_answer(self, request: Request, body: RequestBody,
                                loop: asyncio.AbstractEventLoop) -> Response:
        """Inline: the whole body first (within max_body_size), so the application never blocks the loop
        on a read."""
        data = await body.read_all()
        context = contextvars.Context()
        return context.run(self._answer, request, body, loop, None, context, io.BytesIO(data))

    # -- in a pool thread (or inline, on the loop's) --------------------------------------------------

    def _answer(self, request: Request, body: BodyReader, loop: asyncio.AbstractEventLoop,
                pool: BatchingPool | None, context: contextvars.Context,
                wsgi_input: Any = None) -> Response:
        """Run the application and work out the Response (500 if it fails before its headers are out)."""
        reply = _Reply()
        result: Iterable[bytes] | None = None
        try:
            environ = self._environ(request, body, loop)
            if wsgi_input is not None:
                environ["wsgi.input"] = wsgi_input
            result = self._app(environ, reply.start_response)
            response, finished = _response(request, result, reply, loop, pool, context)
        except ClientDisconnected:
            logger.info("client gone while the WSGI application read %r", request.target)
            _close_iterable(result)
            return status_response(500)
        except Exception:
            logger.exception("WSGI application failed for %r", request.target)
            _close_iterable(result)
            return status_response(500)
        reply.sealed = True
        if finished:
            _close_iterable(result)
        return response

    def _environ(self, request: Request, body: BodyReader,
                 loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        environ = self._base.copy()
        path = request.path
        prefix = self._prefix
        if prefix and path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in (b"", b"/"):
            path = path[len(prefix):]
        if b"%" in path:
            path = unquote_to_bytes(path)
        conn = request.conn
        environ["REQUEST_METHOD"] = request.method.decode("latin-1")
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = request.query.decode("latin-1")
        environ["RAW_URI"] = request.target.decode("latin-1")
        environ["SERVER_PROTOCOL"] = _PROTOCOLS.get(request.http_version) or "HTTP/" + request.http_version
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_address(request)
        if conn.client is not None:
            environ["REMOTE_ADDR"] = conn.client[0]
            environ["REMOTE_PORT"] = str(conn.client[1])
        environ["wsgi.url_scheme"] = conn.scheme
        if conn.tls is not None:
            environ.update(wsgi_tls_environ(conn.tls))
        environ["wsgi.input"] = _NO_INPUT if isinstance(body, EmptyBody) else _Input(body, loop)
        _add_headers(environ, request.headers)
        return environ


def _response(request: Request, result: Iterable[bytes], reply: _Reply, loop: asyncio.AbstractEventLoop,
              pool: BatchingPool | None, context: contextvars.Context) -> tuple[Response, bool]:
    """The Response for what the application returned, and whether its iterable is done with."""
    if isinstance(result, FileWrapper) and reply.status and not reply.written:
        span = result.file_range(reply.content_length)
        if span is not None:
            reply.committed = True
            return Response(status=reply.status, headers=reply.headers, body=span, close=reply.close,
                            cleanup=partial(_close_iterable, result),
                            sets_fields=reply.sets_fields), False
    iterator = iter(result)
    first, finished = _first_chunk(result, iterator, reply)
    if not reply.status:
        raise LocalProtocolError("the application did not call start_response()")
    declared = reply.content_length
    if declared is not None and len(first) >= declared:
        first = _clip(first, declared)
        finished = True
    if finished:
        return _whole_response(request, reply, first), True
    stream = _Stream(result, iterator, first, None if declared is None else declared - len(first), loop, pool,
                     context)
    return Response(status=reply.status, headers=reply.headers, body=stream, cleanup=stream.cleanup,
                    close=reply.close, content_length=declared, sets_fields=reply.sets_fields), False


def _first_chunk(result: Iterable[bytes], iterator: Iterator[bytes], reply: _Reply) -> tuple[bytes, bool]:
    """The body's first non-empty chunk (what write() got, if anything) and whether nothing follows it,
    as far as can be told without waiting for more: the iterable ended, or its len() says so."""
    if reply.written:
        first = b"".join(reply.written)
        reply.written.clear()
        return first, _length(result) == 0
    for pulled, chunk in enumerate(iterator, 1):
        if chunk:
            reply.committed = True
            return _as_bytes(chunk), _length(result) == pulled
    return b"", True


def _length(result: Iterable[bytes]) -> int | None:
    return len(result) if isinstance(result, Sized) else None


def _whole_response(request: Request, reply: _Reply, body: bytes) -> Response:
    declared = reply.content_length
    if (declared is not None and len(body) < declared and request.method != b"HEAD"
            and reply.status not in NO_BODY_STATUSES):
        # Shorter than announced: the connection sends what there is, then closes (PEP 3333).
        return Response(status=reply.status, headers=reply.headers, body=_single(body),
                        content_length=declared, sets_fields=reply.sets_fields)
    return Response(status=reply.status, headers=reply.headers, body=body, close=reply.close,
                    content_length=declared, sets_fields=reply.sets_fields)


def _server_address(request: Request) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT: the listener's address, or on a Unix socket the Host header's."""
    server = request.conn.server
    if server is not None and server[1] is not None:
        return server[0], str(server[1])
    host = request.host.decode("latin-1")
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not name.endswith(":"):
        return name, port
    return host or "localhost", _DEFAULT_PORTS.get(request.conn.scheme, "80")


def _add_headers(environ: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """HTTP_* (and CONTENT_*) entries; repeated fields are joined. A name with '_' is dropped: it
    would pass for the '-' spelling (as gunicorn and uvicorn do)."""
    for name, value in headers:
        key = _ENVIRON_KEYS.get(name)
        if key is None:
            if b"_" in name:
                continue
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        previous = environ.get(key)
        if previous is None:
            environ[key] = text
        else:
            environ[key] = previous + ("; " if key == "HTTP_COOKIE" else ", ") + text


# -- handing the answer to the loop thread ------------------------------------------------------------


class _Mailbox:
    """Calls from pool threads to the loop's thread, delivered in batches: the loop is woken (a byte on
    its self-pipe, and the thread switch that follows) once per batch, not once per request."""

    __slots__ = ("_calls", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._pending = False  # a delivery is scheduled and has not started draining

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """From any thread: run `function(*args)` on the loop's thread soon."""
        self._calls.append((function, args))
        if not self._pending:
            self._pending = True
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:
                self._pending = False
                raise

    def _deliver(self) -> None:
        self._pending = False  # calls posted from now on schedule another delivery, or join this one
        calls = self._calls
        while calls:
            function, args = calls.popleft()
            function(*args)


def _hand_over(mailbox: _Mailbox, answer: asyncio.Future[Response], job: Job) -> None:
    """The job's done-callback (in its thread): settle the answer on the loop thread."""
    try:
        mailbox.post(_settle, answer, job)
    except RuntimeError:  # the loop is closed: nobody will send this response
        if not job.cancelled() and job.exception() is None:
            _release(job.result())


def _settle(answer: asyncio.Future[Response], job: Job) -> None:
    if job.cancelled():
        answer.cancel()
        return
    error = job.exception()
    if answer.done():  # the connection gave up while the application ran
        if error is None:
            _release(job.result())
    elif error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(job.result())


def _cancel_job(job: Job, answer: asyncio.Future[Response]) -> None:
    """The connection gave up on the request: it does not start if it still waits for a thread."""
    if answer.cancelled():
        job.cancel()


def _release(response: Response) -> None:
    """Let go of a Response nobody will send."""
    if response.cleanup is not None:
        response.cleanup()


__all__ = ["FileWrapper", "WSGIHandler"]
