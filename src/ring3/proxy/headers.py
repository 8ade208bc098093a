"""The heads the proxy writes: the request it sends upstream, the response fields it passes back.

Hop-by-hop fields are removed both ways (RFC 9110 7.6.1): Connection and every field it names,
Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade (unless the request upgrades) and
Proxy-*. Framing is the proxy's own on each side: Content-Length or chunked, as the body it sends.
The client's X-Forwarded-* and Forwarded are replaced, unless it is a trusted proxy
(server.trusted_proxies): then its X-Forwarded-For and Forwarded chains go on with its address appended.
Via gains '1.1 ring3'. Date and Server are ring3's on the way back, as nginx's are.
"""

from __future__ import annotations

import re
from operator import itemgetter

from ring3.errors import LocalProtocolError
from ring3.events import Headers, Request

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate"))
# Request fields the proxy writes itself (or, for Expect, relays only when it relays the 100 too).
_REQUEST_OWN = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_FORWARDED = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"))
# Response fields dropped on the way back: framing, hop-by-hop, and what ring3 writes itself.
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"date", b"server"}
VIA = b"via: 1.1 ring3\r\n"


class HeaderEdits:
    """A proxy's request_headers: fields set (replacing the client's), added, removed."""

    __slots__ = ("add", "drop")

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        add: list[bytes] = []
        drop: set[bytes] = set()
        for name, value in pairs:
            bare = name.lstrip("+-").lower().encode("ascii")
            if name.startswith("-"):
                drop.add(bare)
                continue
            if not name.startswith("+"):
                drop.add(bare)
            add.append(b"%s: %s\r\n" % (bare, value.encode("ascii")))
        self.add = b"".join(add)
        self.drop = frozenset(drop)


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """The field names a Connection field lists (besides close, keep-alive and upgrade)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def request_drop(forwarded: bool, edits: HeaderEdits | None) -> frozenset[bytes]:
    """The client's fields a proxy never passes on (made once per proxy)."""
    drop = _REQUEST_OWN | (_FORWARDED if forwarded else frozenset())
    return drop | edits.drop if edits is not None else drop


def request_head(request: Request, target: bytes, host: bytes, framing: bytes, drop: frozenset[bytes], *,
                 forwarded: bool, edits: HeaderEdits | None, expect: bool, upgrade: bytes | None) -> bytes:
    """The head sent upstream. `framing` is a whole Content-Length or Transfer-Encoding line (or b"");
    `drop` is request_drop()'s."""
    if b"connection" in map(_NAME, request.headers):
        drop = drop | connection_tokens(request.headers)
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (request.method, target, host)]
    lines += [b"%s: %s\r\n" % pair for pair in request.headers
              if pair[0] not in drop and not pair[0].startswith(b"proxy-")]
    if forwarded:
        lines.append(forwarded_fields(request))
    lines.append(VIA)
    if edits is not None:
        lines.append(edits.add)
    if expect:
        lines.append(b"expect: 100-continue\r\n")
    if upgrade is not None:
        lines.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade)
    lines.append(framing)
    lines.append(b"\r\n")
    head = b"".join(lines)
    if b"\0" in head or head.count(b"\n") != head.count(b"\r\n"):
        raise LocalProtocolError("CR, LF or NUL in a request header")
    return head


def forwarded_fields(request: Request) -> bytes:
    """X-Forwarded-For/-Proto/-Host and Forwarded for the client as this connection sees it. From a
    trusted proxy (its fields set the request's client: `via`), X-Forwarded-For and Forwarded carry its
    chain on, with that proxy's address appended, as nginx's $proxy_add_x_forwarded_for does."""
    conn = request.conn
    if conn.via is not None:
        return _chained_fields(request, conn.via[0])
    client = conn.client[0] if conn.client else "unix"
    scheme = conn.scheme.encode()
    host = request.host
    return (b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n"
            b"forwarded: for=%s;host=%s;proto=%s\r\n") % (
        client.encode(), scheme, host, _node(client), _quoted(host), scheme)


def _chained_fields(request: Request, via: str) -> bytes:
    conn = request.conn
    client = conn.client[0] if conn.client else "unix"
    chain = b", ".join(value for name, value in request.headers if name == b"x-forwarded-for")
    elements = b", ".join(value for name, value in request.headers if name == b"forwarded")
    if client != via:  # the client came from the fields: it heads the chain where a field left it out
        chain = chain or client.encode()
        elements = elements or b"for=%s" % _node(client)
    hop = b"https" if conn.tls is not None else b"http"  # how the proxy reached ring3
    host = request.host
    last = b"for=%s;host=%s;proto=%s" % (_node(via), _quoted(host), hop)
    return (b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n"
            b"forwarded: %s\r\n") % (
        b"%s, %s" % (chain, via.encode()) if chain else via.encode(), conn.scheme.encode(), host,
        b"%s, %s" % (elements, last) if elements else last)


def _node(address: str) -> bytes:
    """An address as a Forwarded node: an IPv6 one bracketed and quoted."""
    return (f'"[{address}]"' if ":" in address else address).encode()


def _quoted(host: bytes) -> bytes:
    return host if _TOKEN.fullmatch(host) else b'"%s"' % host.replace(b'"', b"")


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME = itemgetter(0)


def response_headers(headers: Headers, upgrade: bool) -> Headers:
    """An upstream response's fields as they go back to the client."""
    drop = _RESPONSE_DROP
    for name, _ in headers:
        if name == b"connection":
            drop = drop | connection_tokens(headers)
            break
    kept = [pair for pair in headers if pair[0] not in drop and not pair[0].startswith(b"proxy-")]
    if upgrade:
        kept += [(b"connection", b"upgrade")] + [pair for pair in headers if pair[0] == b"upgrade"]
    return kept
