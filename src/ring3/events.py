"""Protocol-neutral events between the wire protocols and the handlers.

The HTTP/1.1 layer turns bytes into these; HTTP/2 will produce the same ones with its stream ids. A
response body is one of: bytes, a FileRange, a sequence of those (multipart), or an async iterator of bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True, kw_only=True)
class Request:
    """A request head. Header names are lower-cased bytes; values are as received.

    Treat it as immutable. It is not frozen only because a frozen dataclass costs about a microsecond
    more to build, once per request.
    """

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    host: bytes
    keep_alive: bool
    expect_continue: bool = False
    has_body: bool = False
    conditional: bool = False  # it has If-* or Range fields: the answer depends on more than the path
    stream_id: int = 1

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestData:
    """A piece of a request body."""

    data: bytes
    stream_id: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEnded:
    """The request body is complete."""

    stream_id: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRejected:
    """The peer sent something the protocol refuses; answer `status` and close."""

    status: int
    reason: str
    stream_id: int = 1


Event = Request | RequestData | RequestEnded | RequestRejected


@dataclass(frozen=True, slots=True)
class FileRange:
    """`count` bytes of the open file `fd` from `offset`: sent by the output path, zero-copy."""

    fd: int
    offset: int
    count: int


Segment = bytes | FileRange
FixedBody = bytes | FileRange | list[Segment]  # its length is known before sending
Body = FixedBody | AsyncIterator[bytes]


@dataclass(slots=True, kw_only=True)
class Response:
    """What a handler wants sent. The output path alone decides how. The connection only reads it, so
    a handler may hand out the same Response (without cleanup) many times.

    `content_length` is computed from the body unless the body is a stream. `cleanup` runs once the body
    has been sent or abandoned (to close file descriptors). `header_block` holds header lines already
    serialised (each ending in CRLF), sent after `headers`: a cache keeps them prebuilt.
    """

    status: int
    headers: Headers = field(default_factory=list)
    header_block: bytes = b""
    body: Body = b""
    cleanup: Callable[[], None] | None = None
    close: bool = False


def body_length(body: FixedBody) -> int:
    """Length in bytes of a body whose length is known."""
    if isinstance(body, bytes):
        return len(body)
    if isinstance(body, FileRange):
        return body.count
    total = 0
    for segment in body:
        total += len(segment) if isinstance(segment, bytes) else segment.count
    return total
