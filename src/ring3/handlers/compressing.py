"""Compression of application responses as the application sends them (nginx's `gzip on` in front of an
upstream, and brotli and zstd too).

`CompressingHandler` wraps an application's handler (ASGI or WSGI) and changes the Response it returns,
never the application: when the request's Accept-Encoding takes one of its encodings and the response is
worth compressing, the body is compressed on its way out.

- A body given whole (bytes) is compressed whole; it keeps an exact Content-Length, of the compressed
  bytes.
- A streamed body (an AsyncIterator, which WSGI iterables become) or a pushed one (an ASGI application's
  send() with more_body) is compressed piece by piece, each piece flushed (gzip's Z_SYNC_FLUSH, brotli's
  flush, zstd's block flush) so that what the application has sent is decodable by the client at once:
  server-sent events and long polls still stream. Its length is unknown: no Content-Length, and
  HTTP/1.1 sends it chunked.
- Files the application hands over (ASGI pathsend and zerocopysend, WSGI's file_wrapper: a FileRange or
  a list of segments) go out as they are, by sendfile; compressing them would cost reading them.

Streaming levels are lower than the static files' (gzip 6, brotli 4, zstd 3 against 9, 11, 19) and the
windows smaller (512 KiB, as nginx's brotli module): static files are compressed once per version, an
application's answer once per response.

Eligible is a 200 (not 206, not a protocol switch) without a Content-Encoding of its own, without
`Cache-Control: no-transform`, of a compressible Content-Type (`text/event-stream` only when asked:
compressing it buffers nothing, but an intermediary that does not know the coding may), and of at least
`min_size` bytes when its length is known. A compressed response gains `content-encoding` and
`vary: accept-encoding`, and its strong ETag turns weak (its bytes differ from the identity's); an
eligible response sent as it is still gains the Vary, as another Accept-Encoding would have changed it.

HEAD gets the head GET would: a whole body (a HEAD answer's bytes are the GET's, which ASGI frameworks
send anyway) is compressed to announce the same Content-Length. When the application sent no body but
announced its length (WSGI applications do for HEAD), the compressed length cannot be known: the head
announces none, as RFC 9110 9.3.2 allows for fields only known while generating the content.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ring3.errors import ClientDisconnected, ResponseAborted
from ring3.events import Body, BodyWriter, FileRange, Headers, PushedBody, Request, Response, Segment
from ring3.files.compress import COMPRESSIBLE_TYPES, codecs
from ring3.files.encoding import ENCODINGS, choose
from ring3.handlers import BodyReader, Handler
from ring3.observe.ledger import LEDGER

logger = logging.getLogger("ring3.error")

# Levels for compressing as the application answers (nginx gzip_comp_level 1 by default, brotli 6 in
# ngx_brotli; Caddy's encode: gzip 5, zstd "default" = 3). The static files' are higher: paid once.
STREAM_LEVELS = {"gzip": 6, "br": 4, "zstd": 3}
# Window of the streaming brotli and zstd encoders, as a power of two: 512 KiB (ngx_brotli's
# brotli_window 512k) bounds what each response in flight holds, where the libraries' defaults would
# take 4 MiB (brotli) and 2 MiB (zstd at level 3).
STREAM_WINDOW_LOG = 19
FILE_READ_STEP = 256 * 1024  # a file piece inside a compressed stream is read this much at a time

_EVENT_STREAM = b"text/event-stream"


class Encoder(Protocol):
    """One response's compressor."""

    def piece(self, data: bytes) -> bytes:
        """`data` compressed and flushed: with what came before, decodable up to its end."""

    def finish(self) -> bytes:
        """The end of the compressed stream."""


class _GzipEncoder:
    __slots__ = ("_zlib",)

    def __init__(self, level: int) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header, mtime 0

    def piece(self, data: bytes) -> bytes:
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._zlib.flush()


class _BrotliEncoder:
    __slots__ = ("_brotli",)

    def __init__(self, compressor: Any) -> None:
        # Any: brotli's stubs lack Compressor.flush, which the library has had since 1.0.
        self._brotli = compressor

    def piece(self, data: bytes) -> bytes:
        return bytes(self._brotli.process(data)) + bytes(self._brotli.flush())

    def finish(self) -> bytes:
        return bytes(self._brotli.finish())


class _ZstdEncoder:
    __slots__ = ("_flush_block", "_zstd")

    def __init__(self, compressobj: Any, flush_block: int) -> None:
        self._zstd = compressobj
        self._flush_block = flush_block

    def piece(self, data: bytes) -> bytes:
        return bytes(self._zstd.compress(data)) + bytes(self._zstd.flush(self._flush_block))

    def finish(self) -> bytes:
        return bytes(self._zstd.flush())


class _Finished:
    """The encoder of a finished response. Responses sit in reference cycles until the garbage
    collector runs, which native memory does not prompt; dropping the real encoder at the end frees its
    state (a megabyte or more for brotli and zstd) at once, so memory follows the responses in flight."""

    __slots__ = ()

    def piece(self, data: bytes) -> bytes:
        raise ClientDisconnected("the response is complete")

    def finish(self) -> bytes:
        return b""


_FINISHED = _Finished()


def stream_encoders(levels: dict[str, int]) -> dict[str, Callable[[], Encoder]]:
    """Makers of a streaming encoder per encoding that can run here (brotli and zstd only when their
    packages are installed), at `levels` (STREAM_LEVELS for those missing)."""
    gzip_level = levels.get("gzip", STREAM_LEVELS["gzip"])
    found: dict[str, Callable[[], Encoder]] = {"gzip": lambda: _GzipEncoder(gzip_level)}
    try:
        import brotli
    except ImportError:
        pass
    else:
        brotli_level = levels.get("br", STREAM_LEVELS["br"])
        found["br"] = lambda: _BrotliEncoder(brotli.Compressor(quality=brotli_level, lgwin=STREAM_WINDOW_LOG))
    try:
        import zstandard
    except ImportError:
        pass
    else:
        params = zstandard.ZstdCompressionParameters.from_level(
            levels.get("zstd", STREAM_LEVELS["zstd"]), window_log=STREAM_WINDOW_LOG)
        flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        # A ZstdCompressor runs one operation at a time: each response gets its own.
        found["zstd"] = lambda: _ZstdEncoder(
            zstandard.ZstdCompressor(compression_params=params).compressobj(), flush_block)
    return found


class CompressingHandler:
    """An application's handler whose responses are compressed per the request's Accept-Encoding (see
    the module's text)."""

    __slots__ = ("_available", "_event_stream", "_inner", "_min_size", "_streams", "_types", "_whole")

    def __init__(self, inner: Handler, *, encodings: tuple[str, ...] = ("br", "zstd", "gzip"),
                 levels: dict[str, int] | None = None, min_size: int = 256,
                 types: tuple[str, ...] = COMPRESSIBLE_TYPES, event_stream: bool = False) -> None:
        self._inner = inner
        chosen = {**STREAM_LEVELS, **(levels or {})}
        self._whole = codecs(chosen)
        self._streams = stream_encoders(chosen)
        # In the server's order of preference (what files.encoding.choose expects), those that run here.
        self._available = tuple(name for name, _ in ENCODINGS if name in encodings and name in self._streams)
        self._min_size = min_size
        self._types = tuple(t.lower().encode("ascii") for t in types)
        self._event_stream = event_stream

    @property
    def encodings(self) -> tuple[str, ...]:
        """The encodings it may answer with, best first."""
        return self._available

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        result = self._inner(request, body)
        if request.upgrade or request.protocol or not self._available:
            return result  # a protocol switch (WebSocket, also over HTTP/2): nothing to compress
        encoding = choose(request.header(b"accept-encoding"), self._available)
        head = request.method == b"HEAD"
        if isinstance(result, Response):
            return self.apply(result, encoding, head)
        return self._later(result, encoding, head)

    async def _later(self, result: Awaitable[Response], encoding: str | None, head: bool) -> Response:
        return self.apply(await result, encoding, head)

    def apply(self, response: Response, encoding: str | None, head: bool) -> Response:
        """The response to send for one the application gave: compressed in `encoding` if it is eligible
        (None: the client takes none of ours), else as it is."""
        if response.status != 200 or response.upgrade is not None:
            return response
        body = response.body
        if isinstance(body, FileRange | list):
            return response  # a file the application handed over: sent by sendfile, as it is
        headers = response.headers
        if response.header_block:
            headers = headers + _parse_block(response.header_block)
        declared = response.content_length
        if isinstance(body, bytes):
            size = declared if head and declared is not None else len(body)
            if size < self._min_size:
                return response
        elif declared is not None and declared < self._min_size:
            return response
        if not self._eligible(headers):
            return response
        if encoding is None:
            return dataclasses.replace(response, headers=_with_vary(headers), header_block=b"", replay=None)
        new_body: Body
        if isinstance(body, bytes):
            if head and declared is not None and len(body) != declared:
                new_body = _Unsent()  # the application sent no body to HEAD: its compressed length is unknown
            else:
                new_body = self._whole[encoding](body)
        elif isinstance(body, PushedBody):
            new_body = _CompressedPush(body, self._streams[encoding], declared)
        else:
            new_body = _CompressedStream(body, self._streams[encoding], declared)
        return dataclasses.replace(response, headers=_encoded_headers(headers, encoding), header_block=b"",
                                   body=new_body, content_length=None, replay=None)

    def _eligible(self, headers: Headers) -> bool:
        """Whether the response's fields let it be compressed: a compressible type, no coding of its
        own, no no-transform."""
        media: bytes | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-type":
                if media is None:
                    media = value.split(b";", 1)[0].strip().lower()
            elif lowered == b"content-encoding" or (
                    lowered == b"cache-control" and b"no-transform" in _tokens(value)):
                return False  # coded by the application already, or it forbids changing the coding
        if media is None or not media.startswith(self._types):
            return False
        return self._event_stream or media != _EVENT_STREAM


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def _parse_block(block: bytes) -> Headers:
    """The fields of a Response's header_block (lines ring3 serialised, each ending in CRLF)."""
    fields: Headers = []
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _varies(headers: Headers) -> bool:
    """Whether a Vary field names Accept-Encoding already (or is `*`)."""
    for name, value in headers:
        if name.lower() == b"vary":
            tokens = _tokens(value)
            if b"accept-encoding" in tokens or b"*" in tokens:
                return True
    return False


def _with_vary(headers: Headers, *, drop_length: bool = False, encoding: bytes = b"") -> Headers:
    """`headers` with Accept-Encoding in their Vary (added to the first Vary, or a Vary of its own)."""
    varies = _varies(headers)
    result: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"vary" and not varies:
            value = value + b", accept-encoding" if value.strip() else b"accept-encoding"
            varies = True
        elif drop_length and lowered == b"content-length":
            continue
        elif encoding and lowered == b"etag" and value.startswith(b'"'):
            value = b"W/" + value  # the compressed bytes are not the identity's: only weakly the same
        result.append((name, value))
    if not varies:
        result.append((b"vary", b"accept-encoding"))
    return result


def _encoded_headers(headers: Headers, encoding: str) -> Headers:
    """The fields of the compressed response: Vary, a weak ETag, no Content-Length, its Content-Encoding."""
    coding = encoding.encode("ascii")
    result = _with_vary(headers, drop_length=True, encoding=coding)
    result.append((b"content-encoding", coding))
    return result


class _Unsent:
    """The body of a HEAD answer whose length is unknown: never sent (an empty AsyncIterator)."""

    __slots__ = ()

    def __aiter__(self) -> _Unsent:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


class _Counter:
    """What a compressed body's producer has sent, held to the Content-Length it declared (which the
    connection would have checked, had the body gone as it is)."""

    __slots__ = ("_declared", "_sent")

    def __init__(self, declared: int | None) -> None:
        self._declared = declared
        self._sent = 0

    def take(self, piece: Segment) -> bytes:
        """The bytes of a piece (a file piece is read); past the declared length, ResponseAborted."""
        data = piece if isinstance(piece, bytes) else _read_file(piece)
        self._sent += len(data)
        declared = self._declared
        if declared is not None and self._sent > declared:
            raise _refused(f"the body is longer than its Content-Length {declared}")
        return data

    def check_complete(self) -> None:
        declared = self._declared
        if declared is not None and self._sent != declared:
            raise _refused(f"the body is {declared - self._sent} bytes short of its Content-Length")


def _refused(reason: str) -> ResponseAborted:
    logger.error("compressed response aborted: %s", reason)
    return ResponseAborted(reason)


def _read_file(span: FileRange) -> bytes:
    """A file piece of a stream, read to be compressed (pieces of a stream are rare: ASGI's
    zerocopysend with more_body)."""
    parts = []
    offset, left = span.offset, span.count
    while left:
        LEDGER.pread += 1
        data = os.pread(span.fd, min(left, FILE_READ_STEP), offset)
        if not data:
            raise _refused("the file of a body piece is shorter than the piece")
        parts.append(data)
        offset += len(data)
        left -= len(data)
    return b"".join(parts)


class _CompressedStream:
    """A stream body (an AsyncIterator the connection pulls), compressed piece by piece."""

    __slots__ = ("_counter", "_encoder", "_ended", "_inner", "_make")

    def __init__(self, inner: AsyncIterator[Segment], make: Callable[[], Encoder],
                 declared: int | None) -> None:
        self._inner = inner
        self._make = make
        self._encoder: Encoder | None = None  # made at the first pull: a HEAD answer never pulls
        self._counter = _Counter(declared)
        self._ended = False

    def __aiter__(self) -> _CompressedStream:
        return self

    async def __anext__(self) -> bytes:
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._make()
        while not self._ended:
            try:
                piece = await anext(self._inner)
            except StopAsyncIteration:
                self._ended = True
                self._counter.check_complete()
                tail = encoder.finish()
                self._encoder = _FINISHED  # its native state goes now, not at the next gc of a cycle
                if tail:
                    return tail
                break
            data = self._counter.take(piece)
            if data:
                compressed = encoder.piece(data)
                if compressed:
                    return compressed
        raise StopAsyncIteration


class _CompressedPush(PushedBody):
    """A pushed body (an ASGI application's streamed send()), compressed as it writes."""

    __slots__ = ("_declared", "_inner", "_make")

    def __init__(self, inner: PushedBody, make: Callable[[], Encoder], declared: int | None) -> None:
        self._inner = inner
        self._make = make
        self._declared = declared

    def start(self, writer: BodyWriter) -> None:
        self._inner.start(CompressingWriter(writer, self._make(), self._declared))


class CompressingWriter:
    """A BodyWriter that compresses each piece (flushed) before the connection's writer frames it."""

    __slots__ = ("_counter", "_done", "_encoder", "_writer")

    def __init__(self, writer: BodyWriter, encoder: Encoder, declared: int | None = None) -> None:
        self._writer = writer
        self._encoder = encoder
        self._counter = _Counter(declared)
        self._done = False

    def write(self, piece: Segment) -> None:
        if self._done:
            raise ClientDisconnected("the response is complete")
        try:
            data = self._counter.take(piece)
        except ResponseAborted:
            self.abort()
            raise ClientDisconnected("the response was aborted") from None
        if data:
            compressed = self._encoder.piece(data)
            if compressed:
                self._writer.write(compressed)

    @property
    def blocked(self) -> bool:
        return self._writer.blocked

    async def drain(self) -> None:
        await self._writer.drain()

    def end(self, trailers: Headers | None = None) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._counter.check_complete()
        except ResponseAborted:
            self._writer.abort()
            return
        encoder, self._encoder = self._encoder, _FINISHED
        try:
            self._writer.write(encoder.finish())
        except ClientDisconnected:
            return  # the connection is closing: its cleanup tells the exchange
        self._writer.end(trailers)

    def abort(self) -> None:
        self._done = True
        self._encoder = _FINISHED
        self._writer.abort()


__all__ = ["STREAM_LEVELS", "CompressingHandler", "CompressingWriter", "Encoder", "stream_encoders"]
