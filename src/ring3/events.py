"""Protocol-neutral events between the wire protocols and the handlers.

The HTTP/1.1 layer turns bytes into these; HTTP/2 will produce the same ones with its stream ids. A
response body is one of: bytes, a FileRange, a sequence of those (multipart), or an async iterator of bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

Headers = list[tuple[bytes, bytes]]

# The fields ring3 adds to every response unless the handler's headers carry them already (an
# application's own Date or Server wins, as in uvicorn and gunicorn): bits of Response.sets_fields.
SETS_DATE = 1
SETS_SERVER = 2
DEFAULT_FIELDS = {b"date": SETS_DATE, b"server": SETS_SERVER}


def fields_set(headers: Headers) -> int:
    """Which of ring3's default fields `headers` (names in lower case) carry already."""
    sets = 0
    for name, _ in headers:
        sets |= DEFAULT_FIELDS.get(name, 0)
    return sets


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSInfo:
    """What the TLS handshake settled, for applications (ASGI's TLS extension, WSGI's HTTPS keys)."""

    version: str  # "TLSv1.3"
    version_code: int  # 0x0304, as the ASGI TLS extension gives it
    cipher: str  # OpenSSL's name of the cipher suite
    cipher_id: int  # its IANA number (0x1301: TLS_AES_128_GCM_SHA256)
    alpn: str | None
    server_name: str | None  # the SNI name the client sent
    server_cert: str | None  # the certificate ring3 answered with (PEM)
    client_cert: str | None  # the client's certificate (PEM), when it sent one
    client_cert_name: str | None  # its subject, as RFC 4514 writes it ("CN=alice,O=Example")
    resumed: bool


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Facts about the connection a request came on, made once per connection.

    `client` and `server` are (host, port); `client` is None on a Unix socket, where `server` is
    (path, None). `scheme` is "http" or "https"; `tls` holds the handshake's facts on https.
    `via` is the trusted proxy a request came through when its forwarded fields set `client` and
    `scheme` (ring3.handlers.forwarded): then the request's own ConnectionInfo, not the connection's.
    """

    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    scheme: str = "http"
    tls: TLSInfo | None = None
    via: tuple[str, int] | None = None


NO_CONNECTION_INFO = ConnectionInfo(client=None, server=None)


@dataclass(slots=True, init=False)
class Request:
    """A request head. Header names are lower-cased bytes; values are as received.

    Treat it as immutable. It is not frozen only because a frozen dataclass costs more to build, once
    per request; for the same reason the parser builds it with positional arguments (a third of the
    cost of keywords), so keep the order of the parameters. Its __init__ is written out, not generated:
    mypyc compiles a written one, and the one dataclasses generates costs twice as much again.
    """

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    host: bytes
    keep_alive: bool
    expect_continue: bool
    has_body: bool
    conditional: bool  # it has If-* or Range fields: the answer depends on more than the path
    upgrade: bool  # it asks to switch protocols (Connection: upgrade with an Upgrade field)
    stream_id: int
    conn: ConnectionInfo  # set by the connection before a handler sees it
    protocol: bytes  # HTTP/2's :protocol of an extended CONNECT (RFC 8441): b"websocket"
    redirects: int  # internal redirects so far (a rewrite, try_files, an error page), bounded
    log: Any  # the site's access log (an AccessLog, or False for none), set by the site router
    request_id: bytes  # its X-Request-ID, where a site's request_id rule gave it one
    # A proxied request's tries, in order: (upstream address, seconds from the try's start until its
    # connection was let go), set by ring3.proxy for the access log; an internal redirect's copy of the
    # request shares the list (ring3.sites.targets.internal), so the log sees it on the original.
    upstream: list[tuple[str, float]] | None

    def __init__(self, method: bytes, target: bytes, path: bytes, query: bytes, http_version: str,
                 headers: list[tuple[bytes, bytes]], host: bytes, keep_alive: bool,
                 expect_continue: bool = False, has_body: bool = False, conditional: bool = False,
                 upgrade: bool = False, stream_id: int = 1, conn: ConnectionInfo = NO_CONNECTION_INFO,
                 protocol: bytes = b"", redirects: int = 0, log: Any = None, request_id: bytes = b"",
                 upstream: list[tuple[str, float]] | None = None) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.has_body = has_body
        self.conditional = conditional
        self.upgrade = upgrade
        self.stream_id = stream_id
        self.conn = conn
        self.protocol = protocol
        self.redirects = redirects
        self.log = log
        self.request_id = request_id
        self.upstream = upstream

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


@dataclass(frozen=True, slots=True)
class PipeRange:
    """`count` bytes waiting in the pipe `fd` (the proxy spliced them there from an upstream socket): the
    output path splices them on to the client, so they never enter Python. Only a writer whose
    `can_splice` is true takes one, by its `write_pipe`."""

    fd: int
    count: int


Segment = bytes | FileRange
FixedBody = bytes | FileRange | list[Segment]  # its length is known before sending


class BodyWriter(Protocol):
    """Where a PushedBody writes: the connection frames each piece (chunked, or as is under a declared
    length) and sends it at once, without copying it."""

    def write(self, piece: Segment) -> None:
        """Send a piece (raises ClientDisconnected once the client is gone)."""

    @property
    def blocked(self) -> bool:
        """The socket is full: await drain() before writing more."""

    async def drain(self) -> None:
        """Wait until what was written has left (raises ClientDisconnected if the client goes)."""

    def end(self, trailers: Headers | None = None) -> None:
        """The body is complete; `trailers` are sent after it where the protocol carries them (HTTP/2,
        a chunked HTTP/1.1 body), and dropped where it cannot."""

    def abort(self) -> None:
        """Give the response up: the connection closes, so the client sees it cut short."""


class SplicingWriter(Protocol):
    """What a BodyWriter that can also send bytes waiting in a pipe (the cleartext HTTP/1.1 one) has
    beside BodyWriter's methods; a writer has them if its `can_splice` attribute exists. (Neither a
    subclass of BodyWriter nor runtime-checkable: mypyc compiles this module, and its protocol classes
    are plain classes at run time.)"""

    @property
    def can_splice(self) -> bool:
        """PipeRanges are taken now (false under TLS, or on a chunked body)."""

    def write_pipe(self, piece: PipeRange) -> None:
        """Send `piece` from its pipe, zero-copy (raises ClientDisconnected once the client is gone)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # the compiled build: see ring3.compiled
class PushedBody:
    """A body its producer writes as it goes (an ASGI application's send()), instead of one the
    connection pulls: `start` hands it the writer once the head is ready to leave."""

    __slots__ = ()

    def start(self, writer: BodyWriter) -> None:
        """Each kind of pushed body provides it."""
        raise NotImplementedError


Body = FixedBody | PushedBody | AsyncIterator[Segment]


class Channel(Protocol):
    """What a protocol that took over a connection (see Upgrade) may do with it."""

    def write(self, data: bytes) -> None:
        """Queue bytes and send what the socket takes now."""

    @property
    def blocked(self) -> bool:
        """The socket is full: stop producing until drain() returns."""

    async def drain(self) -> None:
        """Wait until everything written has left (raises SendFailed if the peer is gone)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Close once what was written has left."""

    def abort(self) -> None:
        """Close now, dropping anything unsent."""


class Upgrade(Protocol):
    """A protocol that takes a connection over after a 101 response (WebSocket).

    The connection calls `start` once the 101 head has been queued, with the bytes the client sent
    after its request head; then `data_received` for every read, `eof_received` at the client's
    end of stream, `shutdown` when the server stops, and `connection_lost` exactly once when the
    connection closes, whoever closes it.
    """

    def start(self, channel: Channel, data: bytes) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self) -> None: ...

    def shutdown(self) -> None:
        """The server is stopping: end the protocol's session gracefully, then close the channel."""


@dataclass(slots=True, init=False)
class Response:
    """What a handler wants sent. The output path alone decides how. The connection only reads it, so
    a handler may hand out the same Response many times.

    The Content-Length is computed from a fixed body. A stream body is sent chunked, unless
    `content_length` declares its length: then it is sent as is, and the connection is aborted if the
    stream yields more or fewer bytes. For HEAD, `content_length` is what the head announces.
    `cleanup` runs once the body has been sent or abandoned (to close file descriptors).
    `header_block` holds header lines already serialised (each ending in CRLF), sent after `headers`:
    a cache keeps them prebuilt. With `upgrade` (status 101), that protocol takes the connection over
    once the head is sent. Hot paths build it with positional arguments (a third of the cost of
    keywords): keep the order of the parameters. Its __init__ is written out, as Request's is.

    `replay` is the handler's promise that the very same request bytes get this response again for as
    long as calling it returns one (the same Response, or its successor); None once it no longer holds.
    The replay cache (ring3.replay) then answers a repeat of those bytes without parsing, routing or
    calling the handler. A handler may only offer it for a response that depends on nothing but the
    request bytes and what `replay` itself checks (not on the client's address, nor on time). A
    Response with `cleanup` may be shared too, if each hand-out (and each replay) is paid for by one
    later cleanup call.

    `sets_fields` says which of the Date and Server fields `headers` carry already (SETS_DATE,
    SETS_SERVER): ring3 then leaves its own out, so an application's never goes out twice.
    """

    status: int
    headers: Headers
    header_block: bytes
    body: Body
    cleanup: Callable[[], None] | None
    close: bool
    content_length: int | None
    upgrade: Upgrade | None
    replay: Callable[[], Response | None] | None
    sets_fields: int

    def __init__(self, status: int, headers: Headers | None = None, header_block: bytes = b"",
                 body: Body = b"", cleanup: Callable[[], None] | None = None, close: bool = False,
                 content_length: int | None = None, upgrade: Upgrade | None = None,
                 replay: Callable[[], Response | None] | None = None, sets_fields: int = 0) -> None:
        self.status = status
        self.headers = [] if headers is None else headers
        self.header_block = header_block
        self.body = body
        self.cleanup = cleanup
        self.close = close
        self.content_length = content_length
        self.upgrade = upgrade
        self.replay = replay
        self.sets_fields = sets_fields


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
