"""Request bodies sent with a Content-Encoding (RFC 9110 8.4): refused with 415, or decoded for the
handler as it reads, within a bound on the decoded size.

A request whose Content-Encoding lists a coding the rule does not allow (or more than MAX_CODINGS) gets
415 with an Accept-Encoding field naming those it does (RFC 7694 3), or `identity` when it allows none.
Otherwise the handler sees
the request without its Content-Encoding and Content-Length (the decoded length is unknown: a WSGI
framework would otherwise read only that many bytes) and reads a DecodingBody, which decodes as it
reads.

A compressed body is a bomb waiting to happen: 100 KB of gzip become 100 MB of zeros, and zstd reaches
a ratio of 30,000. So no decoder ever runs unbounded: each step produces at most DECODE_STEP bytes
(zlib's max_length, brotli's output_buffer_limit, zstandard's read1) from at most INPUT_SLICE bytes of
input, and the decoded total is held to `max_body_size`. Past it the read raises DecodedBodyTooLarge,
a ClientDisconnected, which every handler already takes as the end of the exchange (an ASGI application
gets http.disconnect, a WSGI one an OSError from wsgi.input); the application never receives more than
`max_body_size` bytes. If the handler then answers, the rule answers 413 instead (400 for a body that is
not in its coding), and the connection closes.

Without a Content-Encoding the rule costs one header lookup and passes the original body through.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ring3.body import RequestBody
from ring3.errors import ClientDisconnected
from ring3.events import Request, Response
from ring3.handlers import BodyReader, Handler
from ring3.handlers.status import status_response

logger = logging.getLogger("ring3.error")

DECODE_STEP = 64 * 1024  # decoded bytes one read returns at most (brotli may overshoot by up to half)
INPUT_SLICE = 16 * 1024  # encoded bytes a decoder takes at once (what zlib copies into unconsumed_tail)
# Largest zstd window a request may make the decoder allocate. RFC 9659 (zstd in HTTP) limits it to
# 8 MB; the library's default, 128 MiB per request, would be a memory attack.
ZSTD_MAX_WINDOW = 8 * 1024 * 1024
# Codings one body may stack ("gzip, br"); clients apply one. More gets 415: each is a decoder to run.
MAX_CODINGS = 2
_DROPPED_FIELDS = (b"content-encoding", b"content-length")


class BodyDecodingFailed(ClientDisconnected):
    """The request body could not be decoded for the handler; `status` is what to answer."""

    status = 400


class DecodedBodyTooLarge(BodyDecodingFailed):
    """The decoded body grew past the rule's max_body_size."""

    status = 413


class MalformedBodyEncoding(BodyDecodingFailed):
    """The body is not in the coding its Content-Encoding names (or is cut short)."""

    status = 400


# -- the decoders -----------------------------------------------------------------------------------


class _Decoder(abc.ABC):
    """One coding's decoder: fed encoded bytes, it gives decoded ones in bounded steps."""

    __slots__ = ("_ended", "_errors", "_fed", "_input", "done")

    name = ""

    def __init__(self, errors: tuple[type[Exception], ...]) -> None:
        self._errors = errors  # what its library raises for data not in the coding
        self._input: deque[memoryview] = deque()
        self._ended = False  # no more input will come
        self._fed = False
        self.done = False  # ended, all output given, and the coding checked complete

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), INPUT_SLICE):
            self._input.append(view[start:start + INPUT_SLICE])
        self._fed = self._fed or bool(data)

    def end(self) -> None:
        self._ended = True

    def output(self, size: int) -> bytes:
        """At most about `size` decoded bytes; b"" when it needs more input (or is done)."""
        if self.done:
            return b""
        try:
            piece = self._step(size)
        except self._errors as exc:
            raise MalformedBodyEncoding(f"the body is not valid {self.name}: {exc}") from None
        if not piece and self._ended and not self._input and self._drained():
            if self._fed and not self._complete():
                raise MalformedBodyEncoding(f"the {self.name} body is cut short")
            self.done = True
        return piece

    @abc.abstractmethod
    def _step(self, size: int) -> bytes:
        """At most `size` decoded bytes from what it holds (each coding supplies it)."""

    @abc.abstractmethod
    def _drained(self) -> bool:
        """Nothing it has taken in is left to give out."""

    @abc.abstractmethod
    def _complete(self) -> bool:
        """The coded stream reached its proper end."""


class _GzipDecoder(_Decoder):
    __slots__ = ("_zlib",)

    name = "gzip"

    def __init__(self) -> None:
        super().__init__((zlib.error,))
        self._zlib = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip (or zlib) header, a 32 KiB window

    def _step(self, size: int) -> bytes:
        while True:
            decoder = self._zlib
            data: bytes | memoryview
            if decoder.eof:
                # Another member follows (RFC 1952 2.2: a gzip file is a series of members).
                data = decoder.unused_data or (self._input.popleft() if self._input else b"")
                if not data:
                    return b""
                decoder = self._zlib = zlib.decompressobj(wbits=47)
            elif decoder.unconsumed_tail:
                data = decoder.unconsumed_tail
            elif self._input:
                data = self._input.popleft()
            else:
                return b""
            piece = decoder.decompress(data, size)
            if piece:
                return piece

    def _drained(self) -> bool:
        decoder = self._zlib
        return not decoder.unconsumed_tail and not (decoder.eof and decoder.unused_data)

    def _complete(self) -> bool:
        return self._zlib.eof


class _BrotliDecoder(_Decoder):
    """brotli's process() stops at output_buffer_limit and keeps the rest: after any output, the next
    step asks for more with empty input before it gives new input (can_accept_more_data() may be true
    while output is still waiting)."""

    __slots__ = ("_brotli", "_waiting")

    name = "br"

    def __init__(self, decompressor: Any, error: type[Exception]) -> None:
        super().__init__((error,))
        # Any: brotli's stubs lack output_buffer_limit and can_accept_more_data (brotli 1.1 has them).
        self._brotli = decompressor
        self._waiting = False  # output may be waiting in the decoder

    def _step(self, size: int) -> bytes:
        decoder = self._brotli
        while True:
            if self._waiting:
                piece = bytes(decoder.process(b"", output_buffer_limit=size))
                if piece:
                    return piece
                self._waiting = False
                if not decoder.can_accept_more_data():
                    raise MalformedBodyEncoding("the brotli decoder made no progress")
            if not self._input:
                return b""
            piece = bytes(decoder.process(self._input.popleft(), output_buffer_limit=size))
            if piece:
                self._waiting = True
                return piece

    def _drained(self) -> bool:
        return not self._waiting

    def _complete(self) -> bool:
        return bool(self._brotli.is_finished())


class _NeedInput(Exception):
    """zstandard's reader asked for input that has not arrived: come back once it has."""


class _ZstdDecoder(_Decoder):
    """zstandard's decompressobj has no output bound; its stream_reader has (read1(n) gives at most n
    bytes). The reader pulls its input from this decoder's read(), which raises _NeedInput when nothing
    has arrived: zstandard lets the exception through with its state intact (both of its backends), and
    the next read1, once more input came, goes on where it stopped. zstandard's reader does not tell a
    frame cut short: such a body ends where its data does."""

    __slots__ = ("_exhausted", "_reader")

    name = "zstd"

    def __init__(self, zstandard: Any) -> None:
        super().__init__((zstandard.ZstdError,))
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._reader = decompressor.stream_reader(self, read_size=INPUT_SLICE, read_across_frames=True)
        self._exhausted = False

    def read(self, size: int) -> bytes | memoryview:
        """The reader's source: the next slice of input, b"" at its end."""
        if self._input:
            data = self._input.popleft()
            if len(data) > size:
                self._input.appendleft(data[size:])
                data = data[:size]
            return data
        if self._ended:
            return b""
        raise _NeedInput

    def _step(self, size: int) -> bytes:
        try:
            piece = bytes(self._reader.read1(size))
        except _NeedInput:
            return b""
        if not piece and self._ended and not self._input:
            self._exhausted = True
        return piece

    def _drained(self) -> bool:
        return self._exhausted

    def _complete(self) -> bool:
        return True


def decoder_makers() -> dict[str, Callable[[], _Decoder]]:
    """The codings that can be decoded here, by name: gzip always; br and zstd when their packages are
    installed."""
    makers: dict[str, Callable[[], _Decoder]] = {"gzip": _GzipDecoder}
    try:
        import brotli
    except ImportError:
        pass
    else:
        makers["br"] = lambda: _BrotliDecoder(brotli.Decompressor(), brotli.error)
    try:
        import zstandard
    except ImportError:
        pass
    else:
        makers["zstd"] = lambda: _ZstdDecoder(zstandard)
    return makers


# -- the body the handler reads ---------------------------------------------------------------------


class DecodingBody(RequestBody):
    """A request body decoded as the handler reads it, at most `max_size` decoded bytes.

    It is a RequestBody only so as to be one to handlers (a BodyReader); nothing feeds it: each read pulls
    from the `source` body the connection feeds. `ended` is true once the whole body has been decoded
    and given out; `buffered` is what the source held at the last read.
    """

    __slots__ = ("_decoded", "_decoders", "_failure", "_finished", "_max_size", "_source", "_source_done")

    def __init__(self, source: RequestBody, decoders: list[_Decoder], max_size: int) -> None:
        super().__init__(asyncio.get_running_loop(), None, _nothing)
        self._source = source
        self._decoders = decoders  # in decoding order: the last coding applied comes first
        self._max_size = max_size
        self._decoded = 0
        self._source_done = False
        self._finished = False
        self._failure: BodyDecodingFailed | None = None

    @property
    def ended(self) -> bool:
        return self._finished

    @property
    def failure(self) -> BodyDecodingFailed | None:
        """Why reading failed (the body was too large or malformed), if it did."""
        return self._failure

    @property
    def decoded(self) -> int:
        """Decoded bytes given out so far."""
        return self._decoded

    def limit(self, size: int) -> None:
        """At most `size` decoded bytes (a location's max_body_size), within the rule's bound."""
        self._max_size = min(self._max_size, size)

    async def read(self) -> bytes:
        """The next piece of the decoded body, or b"" once it is complete."""
        if self._failure is not None:
            raise self._failure
        try:
            piece = await self._next_piece()
            if self._decoded + len(piece) > self._max_size:
                raise DecodedBodyTooLarge(f"the decoded request body is larger than {self._max_size} bytes")
        except BodyDecodingFailed as failure:
            self._failure = failure
            self._source.discard()  # nobody will read the rest
            raise
        self._decoded += len(piece)
        self.buffered = self._source.buffered
        return piece

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    async def _next_piece(self) -> bytes:
        decoders = self._decoders
        while True:
            piece = self._output(len(decoders) - 1)
            if piece:
                return piece
            if decoders[-1].done:
                self._finished = True
                return b""
            if self._source_done:  # every decoder has all its input and still gives nothing
                raise MalformedBodyEncoding("the body ends inside its coding")
            data = await self._source.read()
            if data:
                decoders[0].feed(data)
            else:
                self._source_done = True
                decoders[0].end()

    def _output(self, index: int) -> bytes:
        """A step of decoder `index`'s output, feeding it from the decoder before it as it needs."""
        decoder = self._decoders[index]
        while True:
            piece = decoder.output(DECODE_STEP)
            if piece or index == 0 or decoder.done:
                return piece
            upstream = self._output(index - 1)
            if upstream:
                decoder.feed(upstream)
            elif self._decoders[index - 1].done:
                decoder.end()
            else:
                return b""


def _nothing() -> None:
    return None


# -- the rule ---------------------------------------------------------------------------------------


class RequestEncodingRule:
    """Refuses (415) or decodes request bodies with a Content-Encoding (see the module's text).

    `allowed` are the codings it decodes (of gzip, br, zstd; those whose package is missing are left
    out); `max_body_size` bounds the decoded body.
    """

    __slots__ = ("_accept", "_allowed", "_inner", "_makers", "_max_body_size")

    def __init__(self, inner: Handler, *, allowed: tuple[str, ...] = (), max_body_size: int) -> None:
        makers = decoder_makers()
        unknown = [name for name in allowed if name not in ("gzip", "br", "zstd")]
        if unknown:
            raise ValueError(f"cannot decode request bodies in {', '.join(unknown)}: gzip, br or zstd")
        self._inner = inner
        self._allowed = tuple(name for name in allowed if name in makers)
        self._makers = makers
        self._max_body_size = max_body_size
        self._accept = ", ".join(self._allowed).encode("ascii") or b"identity"

    @property
    def allowed(self) -> tuple[str, ...]:
        """The codings it decodes here."""
        return self._allowed

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        if not request.has_body or request.header(b"content-encoding") is None \
                or not isinstance(body, RequestBody):
            return self._inner(request, body)  # nothing coded (or no body to decode)
        codings = _codings(request)
        if not codings:  # only identity
            return self._inner(request, body)
        if len(codings) > MAX_CODINGS or any(coding not in self._allowed for coding in codings):
            return status_response(415, [(b"accept-encoding", self._accept)])
        decoders = [self._makers[coding]() for coding in reversed(codings)]
        decoding = DecodingBody(body, decoders, self._max_body_size)
        headers = [(name, value) for name, value in request.headers if name not in _DROPPED_FIELDS]
        result = self._inner(dataclasses.replace(request, headers=headers), decoding)
        if isinstance(result, Response):
            return result  # a plain handler: it cannot have read the body (reads are awaited)
        return _settled(result, decoding)


def _codings(request: Request) -> list[str]:
    """The codings of a request's Content-Encoding fields, in the order applied, identity left out."""
    codings = []
    for name, value in request.headers:
        if name == b"content-encoding":
            for item in value.split(b","):
                coding = item.strip().lower().decode("latin-1")
                if coding == "x-gzip":
                    coding = "gzip"  # RFC 9110 8.4.1.3
                if coding and coding != "identity":
                    codings.append(coding)
    return codings


async def _settled(result: Awaitable[Response], decoding: DecodingBody) -> Response:
    """The handler's answer, or 413/400 once reading the body failed (the answer is dropped)."""
    try:
        response = await result
    except Exception:  # ClientDisconnected, as a rule: what the failed read raised
        failure = decoding.failure
        if failure is None:
            raise
        return _refusal(failure)
    failure = decoding.failure
    if failure is None:
        return response
    if response.cleanup is not None:
        try:
            response.cleanup()
        except Exception:
            logger.exception("response cleanup failed")
    return _refusal(failure)


def _refusal(failure: BodyDecodingFailed) -> Response:
    logger.info("request body refused: %s", failure)
    return status_response(failure.status, close=True)


__all__ = ["BodyDecodingFailed", "DecodedBodyTooLarge", "DecodingBody", "MalformedBodyEncoding",
           "RequestEncodingRule", "decoder_makers"]
