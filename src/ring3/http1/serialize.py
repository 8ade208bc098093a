"""Sans-IO HTTP/1.1 response serialisation: status line and header block to bytes."""

from __future__ import annotations

import re
from http import HTTPStatus

from ring3.errors import LocalProtocolError
from ring3.events import Headers


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("ascii")


STATUS_LINES: dict[int, bytes] = {status.value: _status_line(status.value) for status in HTTPStatus}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Statuses whose responses never carry a body (RFC 9110 6.4.1).
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    if line is None:
        if not 100 <= code <= 999:
            raise LocalProtocolError(f"invalid status code {code}")
        line = _status_line(code)
    return line


def serialize_head(status: int, common: bytes, headers: Headers, content_length: int | None,
                   connection: bytes, header_block: bytes = b"") -> bytes:
    """The response head as one bytes object.

    `common` is the prebuilt Date/Server block; `connection` is a whole `Connection:` line or b"".
    `content_length` None means the body is chunked (a stream on HTTP/1.1) or absent (1xx/204/304).
    `header_block` is header lines ring3 serialised itself (a cache's); `headers` may come from an
    application and are checked: a CR, LF or NUL in a name or value is refused (response splitting).
    """
    if headers:
        fields = b"".join([b"%s: %s\r\n" % pair for pair in headers])
        lines = len(headers)
        if fields.count(b"\n") != lines or fields.count(b"\r") != lines or fields.find(b"\0") >= 0:
            raise LocalProtocolError("CR, LF or NUL in a response header")
    else:
        fields = b""
    length = b"content-length: %d\r\n" % content_length if content_length is not None else b""
    return b"".join((status_line(status), common, fields, header_block, length, connection, b"\r\n"))


# Fields that frame, route or authenticate a message: never sent as trailers (RFC 9110 6.5.1).
NOT_IN_TRAILERS = frozenset((b"content-length", b"content-type", b"content-encoding", b"host", b"trailer",
                             b"te", b"transfer-encoding", b"authorization", b"set-cookie", b"cache-control"))

_BAD_NAME = re.compile(rb"[ \t\r\n:\0]")
_BAD_VALUE = re.compile(rb"[\r\n\0]")


def check_header(name: bytes, value: bytes) -> None:
    """Refuse a header an application or the config supplies that would split the response."""
    if not name or _BAD_NAME.search(name) or _BAD_VALUE.search(value):
        raise LocalProtocolError(f"invalid response header {name!r}")
