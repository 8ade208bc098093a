"""How a WSGI application's answer becomes a Response (PEP 3333): start_response() and write(), the
checks on its status and headers, one Response with a bytes body when the first chunk is the whole body,
else a stream that pulls each further chunk in a pool thread; and close() of its iterable, exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from functools import partial
from typing import TYPE_CHECKING

from ring3.errors import LocalProtocolError, ResponseAborted
from ring3.events import Headers, Request, Response, fields_set
from ring3.handlers.workers import BatchingPool
from ring3.handlers.wsgi_streams import FileWrapper
from ring3.http1.serialize import NO_BODY_STATUSES, check_header

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

logger = logging.getLogger("ring3.error")

_STATUS = re.compile(r"[1-9][0-9][0-9] [^\x00-\x1f\x7f]*\Z")
# Framing is the connection's business; an application's hop-by-hop fields are dropped (PEP 3333 forbids
# them; gunicorn drops them too).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"transfer-encoding", b"upgrade"})


class Reply:
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


def close_iterable(iterable: object) -> None:
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


class ResponseStream:
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

    def __aiter__(self) -> ResponseStream:
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
            close_iterable(self._iterable)

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


def response_for(request: Request, result: Iterable[bytes], reply: Reply, loop: asyncio.AbstractEventLoop,
              pool: BatchingPool | None, context: contextvars.Context) -> tuple[Response, bool]:
    """The Response for what the application returned, and whether its iterable is done with."""
    if isinstance(result, FileWrapper) and reply.status and not reply.written:
        span = result.file_range(reply.content_length)
        if span is not None:
            reply.committed = True
            return Response(status=reply.status, headers=reply.headers, body=span, close=reply.close,
                            cleanup=partial(close_iterable, result),
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
    remaining = None if declared is None else declared - len(first)
    stream = ResponseStream(result, iterator, first, remaining, loop, pool, context)
    return Response(status=reply.status, headers=reply.headers, body=stream, cleanup=stream.cleanup,
                    close=reply.close, content_length=declared, sets_fields=reply.sets_fields), False


def _first_chunk(result: Iterable[bytes], iterator: Iterator[bytes], reply: Reply) -> tuple[bytes, bool]:
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


def _whole_response(request: Request, reply: Reply, body: bytes) -> Response:
    declared = reply.content_length
    if (declared is not None and len(body) < declared and request.method != b"HEAD"
            and reply.status not in NO_BODY_STATUSES):
        # Shorter than announced: the connection sends what there is, then closes (PEP 3333).
        return Response(status=reply.status, headers=reply.headers, body=_single(body),
                        content_length=declared, sets_fields=reply.sets_fields)
    return Response(status=reply.status, headers=reply.headers, body=body, close=reply.close,
                    content_length=declared, sets_fields=reply.sets_fields)
