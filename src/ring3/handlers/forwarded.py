"""Forwarded fields believed from trusted proxies (server.trusted_proxies), as nginx's realip module with
real_ip_recursive on.

The server decides once per connection whether its client (after the PROXY protocol, if any) is a
trusted proxy; only then are its requests answered through `Forwarding`, so a connection from anyone
else, and every connection when trusted_proxies is empty, pays nothing per request. Per request,
Forwarding reads `Forwarded` (RFC 7239: `for=` and `proto=`) or, when there is none, `X-Forwarded-For`
and `X-Forwarded-Proto`, and gives the request a ConnectionInfo of its own: the client is the rightmost
address that is not itself a trusted proxy (the leftmost one if all are), the scheme what the proxies
say, and `via` the peer it came through. The access log then names that client too. A value that
cannot be read (a bad address, `for=unknown`, an empty list item) leaves the request as the connection
saw it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Container
from typing import TYPE_CHECKING, Any

from ring3.events import ConnectionInfo, Headers, Request, Response
from ring3.handlers import BodyReader, Handler
from ring3.transport.addresses import parse_address

if TYPE_CHECKING:
    from ring3.server import Server

Result = Response | Awaitable[Response]
Found = tuple[tuple[str, int] | None, str | None]  # the client and the scheme the fields name, if any

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rb'[ \t]*(' + _TOKEN + rb')=(' + _TOKEN + rb'|"(?:[^"\\]|\\.)*")[ \t]*')
_SCHEMES = {b"http": "http", b"https": "https"}


class Forwarding:
    """A listener's handler for the connections of trusted proxies (see the module's text)."""

    __slots__ = ("_next", "_server", "_trusted")

    def __init__(self, server: Server, trusted: Container[str], next_handler: Handler) -> None:
        self._server = server
        self._trusted = trusted
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        found = forwarded_client(request.headers, self._trusted)
        if found is None:
            return self._next(request, body)
        conn = request.conn
        client, scheme = found
        request.conn = ConnectionInfo(client or conn.client, conn.server, scheme or conn.scheme, conn.tls,
                                      conn.client)
        result = self._next(request, body)
        if client is None:
            return result
        if isinstance(result, Response):
            self._log_as(request, client[0])
            return result
        return self._later(request, client[0], result)

    async def _later(self, request: Request, client: str, result: Awaitable[Response]) -> Response:
        response = await result
        self._log_as(request, client)
        return response

    def _log_as(self, request: Request, client: str) -> None:
        """The access log names the forwarded client (the exchange passes it the connection's peer)."""
        log = self._server.access_log if request.log is None else request.log
        if log:
            request.log = ClientLog(log, client)


class ClientLog:
    """An access log that writes another client's address in the lines it is given."""

    __slots__ = ("_client", "_log")

    def __init__(self, log: Any, client: str) -> None:
        self._log = log
        self._client = client

    def log(self, _client: str, *rest: Any) -> None:
        self._log.log(self._client, *rest)


def forwarded_client(headers: Headers, trusted: Container[str]) -> Found | None:
    """What a request's forwarded fields say, or None when they say nothing usable."""
    forwarded: list[bytes] = []
    for_list: list[bytes] = []
    proto = b""
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value)
        elif name == b"x-forwarded-for":
            for_list.append(value)
        elif name == b"x-forwarded-proto":
            proto = value
    if forwarded:
        return _from_forwarded(b",".join(forwarded), trusted)
    client = _from_list(b",".join(for_list), trusted) if for_list else None
    scheme = _SCHEMES.get(proto.rpartition(b",")[2].strip().lower()) if proto else None
    return None if client is None and scheme is None else (client, scheme)


def _from_list(value: bytes, trusted: Container[str]) -> tuple[str, int] | None:
    """X-Forwarded-For: walking from the right, the first address not trusted (the leftmost if all are)."""
    found: tuple[str, int] | None = None
    for item in reversed(value.split(b",")):
        found = _node(item.strip())
        if found is None:
            return None
        if found[0] not in trusted:
            break
    return found


def _from_forwarded(value: bytes, trusted: Container[str]) -> Found | None:
    """Forwarded (RFC 7239): the same walk over its elements' for=, with the chosen element's proto=."""
    elements = _elements(value)
    if not elements:
        return None
    chosen: tuple[tuple[str, int], bytes] | None = None
    for pairs in reversed(elements):
        node = pairs.get(b"for")
        address = _node(node) if node is not None else None
        if address is None:
            return None  # unknown, obfuscated or missing: who is behind it cannot be said
        chosen = address, pairs.get(b"proto", b"")
        if address[0] not in trusted:
            break
    assert chosen is not None
    return chosen[0], _SCHEMES.get(chosen[1].lower())


def _elements(value: bytes) -> list[dict[bytes, bytes]] | None:
    """The elements of a Forwarded value, each its pairs (names lower-cased, quotes removed); None if
    it does not follow the grammar."""
    elements: list[dict[bytes, bytes]] = []
    pairs: dict[bytes, bytes] = {}
    at, end = 0, len(value)
    while True:
        match = _PAIR.match(value, at)
        if match is None:
            return None
        name, text = match.group(1).lower(), match.group(2)
        if text.startswith(b'"'):
            text = re.sub(rb"\\(.)", rb"\1", text[1:-1])
        if name in pairs:
            return None
        pairs[name] = text
        at = match.end()
        if at == end:
            elements.append(pairs)
            return elements
        separator = value[at:at + 1]
        at += 1
        if separator == b",":
            elements.append(pairs)
            pairs = {}
            while value[at:at + 1] in (b" ", b"\t"):
                at += 1
        elif separator != b";":
            return None


def _node(text: bytes) -> tuple[str, int] | None:
    """An address with an optional port: 192.0.2.1, 192.0.2.1:80, 2001:db8::1, [2001:db8::1]:80."""
    try:
        node = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    port = "0"
    if node.startswith("["):
        host, bracket, rest = node[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "0"
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host = node
    address = parse_address(host)
    if address is None or "%" in host:
        return None
    if port.startswith("_"):  # an obfuscated port (RFC 7239 6.3)
        port = "0"
    if not (port.isdigit() and port.isascii() and len(port) <= 5 and int(port) <= 0xFFFF):
        return None
    return str(address), int(port)
