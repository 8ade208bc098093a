"""Sans-IO HTTP/1.1 response serialisation: status line and header block to bytes."""

from __future__ import annotations

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
    """
    parts = [status_line(status), common]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(header_block)
    if content_length is not None:
        parts.append(b"content-length: %d\r\n" % content_length)
    parts.append(connection)
    parts.append(b"\r\n")
    head = b"".join(parts)
    # Response splitting guard, three C-level scans of a short string: every line ends where we ended
    # it, so no header name or value carried a CR, LF or NUL of its own.
    lines = (2 + common.count(b"\n") + len(headers) + header_block.count(b"\n")
             + (content_length is not None) + bool(connection))
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise LocalProtocolError("CR, LF or NUL in a response header")
    return head


def check_header(name: bytes, value: bytes) -> None:
    """Refuse a header an application or the config supplies that would split the response."""
    if not name or any(c in name for c in b" \t\r\n:\0") or any(c in value for c in b"\r\n\0"):
        raise LocalProtocolError(f"invalid response header {name!r}")
