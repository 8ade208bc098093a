"""From a decoded HTTP/2 header list to ring3's protocol-neutral Request (RFC 9113 8.2 and 8.3).

A malformed request is a stream error of type PROTOCOL_ERROR (8.1.1), never a request a handler sees:
upper-case or invalid names, connection-specific fields (Connection, Keep-Alive, Proxy-Connection,
Transfer-Encoding, Upgrade), TE other than "trailers", pseudo-headers unknown, repeated, missing or after
a regular field, NUL/CR/LF or surrounding whitespace in a value, a Host that differs from :authority.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ring3.events import Request
from ring3.http1.parser import HOST_SYNTAX

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_CONDITIONAL = frozenset(
    (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range", b"range"))
_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))


DEFAULT_URGENCY = 3  # RFC 9218 4.1


def parse_urgency(value: bytes | None) -> int:
    """The urgency (0 to 7) of an RFC 9218 Priority field value ("u=1, i"); the default when absent or
    not understood (an unknown or malformed member is ignored, as RFC 9218 4 asks)."""
    if not value:
        return DEFAULT_URGENCY
    for member in value.split(b","):
        key, _, rest = member.strip().partition(b"=")
        if key == b"u":
            digits = rest.partition(b";")[0].strip()
            if len(digits) == 1 and 48 <= digits[0] <= 55:  # "0" to "7"
                return digits[0] - 48
    return DEFAULT_URGENCY


class MalformedRequest(Exception):
    """A stream error of type PROTOCOL_ERROR (RFC 9113 8.1.1)."""


class RefusedRequest(Exception):
    """A well-formed request ring3 answers with `status` without a handler (413, 501)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The validated head of a request, kept per header block: everything a Request needs but the
    stream (see `request`)."""

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    host: bytes
    conditional: bool
    content_length: int  # -1: none given
    expect_continue: bool
    protocol: bytes  # RFC 8441's :protocol (extended CONNECT), or b""

    def request(self, stream_id: int, has_body: bool) -> Request:
        # Positional (see Request): method, target, path, query, http_version, headers, host, keep_alive,
        # expect_continue, has_body, conditional, upgrade, stream_id.
        request = Request(self.method, self.target, self.path, self.query, "2", list(self.headers),
                          self.host, True, self.expect_continue and has_body, has_body, self.conditional,
                          bool(self.protocol), stream_id)
        if self.protocol:
            request.protocol = self.protocol  # an extended CONNECT asks to tunnel this protocol
        return request


def parse_request(fields: list[tuple[bytes, bytes]], *, connect_protocol: bool,
                  max_body_size: int) -> RequestHead:
    """Validate a request's fields (raises MalformedRequest or RefusedRequest)."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host: bytes | None = None
    content_length = -1
    conditional = expect_continue = False
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular field")
            if name not in _PSEUDO or (name == b":protocol" and not connect_protocol):
                raise MalformedRequest(f"unknown pseudo-header {name!r}")
            if name in pseudo:
                raise MalformedRequest(f"repeated {name.decode()}")
            pseudo[name] = value
            continue
        regular = True
        if not _NAME.fullmatch(name):
            raise MalformedRequest(f"invalid field name {name!r}")
        if _BAD_VALUE.search(value):
            raise MalformedRequest(f"invalid value of {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name!r}")
        if name == b"cookie":
            cookies.append(value)  # RFC 9113 8.2.3: joined with "; " below
            continue
        if name == b"te":
            if value != b"trailers":
                raise MalformedRequest("TE other than trailers")
        elif name == b"content-length":
            if not value.isdigit() or (content_length != -1 and int(value) != content_length):
                raise MalformedRequest("invalid content-length")
            content_length = int(value)
        elif name == b"host":
            if host is not None:
                raise MalformedRequest("repeated host")
            host = value
            continue  # put first below, as ASGI asks
        elif name in _CONDITIONAL:
            conditional = True
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise RefusedRequest(417, "unsupported Expect")
            expect_continue = True
        headers.append((name, value))
    method, scheme, path = pseudo.get(b":method"), pseudo.get(b":scheme"), pseudo.get(b":path")
    authority, protocol = pseudo.get(b":authority"), pseudo.get(b":protocol")
    if method is None:
        raise MalformedRequest("no :method")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or authority is None:
            raise MalformedRequest("CONNECT with :scheme or :path, or without :authority")
        raise RefusedRequest(501, "CONNECT is not supported")
    if scheme is None or not path:
        raise MalformedRequest("no :scheme or no :path")
    if protocol is not None and (method != b"CONNECT" or authority is None):
        raise MalformedRequest(":protocol without CONNECT or :authority")
    if authority is not None:
        if host is not None and host != authority:
            raise MalformedRequest("Host differs from :authority")
        host = authority
    if host is None:
        host = b""
    elif b"@" in host or not HOST_SYNTAX.match(host):
        raise MalformedRequest("invalid :authority")
    if path[:1] == b"/":
        target = path.partition(b"#")[0]
    elif path == b"*" and method == b"OPTIONS":
        target = path
    else:
        raise MalformedRequest("a :path that is neither absolute nor * for OPTIONS")
    if content_length > max_body_size:
        raise RefusedRequest(413, "request body too large")
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if host:
        headers.insert(0, (b"host", host))
    path_part, _, query = target.partition(b"?")
    return RequestHead(method, target, path_part, query, tuple(headers), host, conditional, content_length,
                       expect_continue, protocol or b"")
