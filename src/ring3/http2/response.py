"""A Response's head as an HPACK block (RFC 9113 8.3.2): `:status`, then ring3's Date and Server, then the
handler's fields, then Content-Length.

Blocks ring3 serialises itself for HTTP/1.1 (a cached file's validators and type, the Date line of this
second) are turned into HPACK once and remembered by their bytes; the handler's own fields are checked
(a CR, LF or NUL is refused, names are lower-cased as HTTP/2 requires) and connection-specific fields are
left out, since HTTP/2 forbids them (8.2.2).
"""

from __future__ import annotations

from ring3.errors import LocalProtocolError
from ring3.events import Headers
from ring3.http1.serialize import NOT_IN_TRAILERS
from ring3.http2.hpack import encode_field, encode_integer, encode_status

_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_CONVERTED_MAX = 512
_converted: dict[bytes, bytes] = {}


def convert_lines(lines: bytes) -> bytes:
    """HTTP/1.1 header lines ("name: value\\r\\n" each, made by ring3) as HPACK fields, remembered."""
    block = _converted.get(lines)
    if block is None:
        fields = []
        for line in lines.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                fields.append(encode_field(name.lower(), value))
        block = b"".join(fields)
        if len(_converted) >= _CONVERTED_MAX:
            _converted.clear()
        _converted[lines] = block
    return block


def encode_headers(headers: Headers, *, trailers: bool = False) -> bytes:
    """A handler's fields as HPACK (raises LocalProtocolError for one that would be malformed). In
    trailers the fields that frame or route a message are left out too (RFC 9110 6.5.1)."""
    parts = []
    for name, value in headers:
        if b"\r" in value or b"\n" in value or b"\0" in value or not name or b"\0" in name:
            raise LocalProtocolError(f"invalid response header {name!r}")
        name = name.lower()
        if name in _CONNECTION_SPECIFIC or name[:1] == b":" or (trailers and name in NOT_IN_TRAILERS):
            continue
        parts.append(encode_field(name, value))
    return b"".join(parts)


_LENGTH_PREFIX = encode_integer(28, 4, 0)  # content-length, by its static index


def response_block(status: int, common: bytes, headers: Headers, header_block: bytes,
                   content_length: int | None) -> bytes:
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"invalid status code {status}")
    parts = [encode_status(status), convert_lines(common) if common else b""]
    if headers:
        parts.append(encode_headers(headers))
    if header_block:
        parts.append(convert_lines(header_block))
    if content_length is not None:
        digits = b"%d" % content_length
        parts.append(_LENGTH_PREFIX + bytes((len(digits),)) + digits)
    return b"".join(parts)
