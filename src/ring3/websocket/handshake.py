"""The opening handshake (RFC 6455 section 4.2): decide whether a request may become a WebSocket, and
build the head of the 101 that accepts it.

Plain functions over a Request that return what to answer; nothing here does I/O or keeps state. The
accept token comes from wsproto, and permessage-deflate (RFC 7692) is negotiated with wsproto's
PerMessageDeflate, whose `accept(offer)` both configures the extension and returns the parameters of the
Sec-WebSocket-Extensions answer.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Iterable
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

from ring3.events import Headers, Request, Response

WEBSOCKET_VERSION = b"13"  # RFC 6455 section 4.1; the only version in use
_KEY_SIZE = 16  # Sec-WebSocket-Key: 16 random bytes, base64-encoded (section 4.1, item 7)
_DEFLATE = "permessage-deflate"
_DEFLATE_PARAMETERS = frozenset({"server_no_context_takeover", "client_no_context_takeover",
                                 "server_max_window_bits", "client_max_window_bits"})
# Fields of the 101 (or of a denial response) that the handshake or the connection owns.
_OWNED_FIELDS = frozenset({b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions",
                           b"content-length", b"transfer-encoding", b"keep-alive"})
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


def check_request(request: Request) -> Response | None:
    """None for a valid opening handshake; else the response that refuses it (400, or 426 for a version
    other than 13), sent without calling the application."""
    problem = _problem(request)
    if problem is None:
        return None
    status, reason = problem
    headers = [*_TEXT, (b"sec-websocket-version", WEBSOCKET_VERSION)] if status == 426 else list(_TEXT)
    return Response(status=status, headers=headers, body=reason.encode() + b"\n", close=True)


def _problem(request: Request) -> tuple[int, str] | None:
    if request.http_version == "2":
        return _problem_h2(request)
    if request.method != b"GET":
        return 400, "a WebSocket handshake must be a GET"
    if request.http_version != "1.1":
        return 400, "a WebSocket handshake needs HTTP/1.1"
    if b"websocket" not in header_tokens(request, b"upgrade"):
        return 400, "Upgrade: websocket is missing"
    if b"upgrade" not in header_tokens(request, b"connection"):
        return 400, "Connection: upgrade is missing"
    keys = [value for name, value in request.headers if name == b"sec-websocket-key"]
    if len(keys) != 1 or not _valid_key(keys[0]):
        return 400, "Sec-WebSocket-Key is missing or invalid"
    return _version_problem(request)


def _problem_h2(request: Request) -> tuple[int, str] | None:
    """RFC 8441 4 and 5: an extended CONNECT with :protocol websocket; no key, no Upgrade."""
    if request.method != b"CONNECT" or request.protocol != b"websocket":
        return 400, "a WebSocket over HTTP/2 is an extended CONNECT with :protocol websocket"
    return _version_problem(request)


def _version_problem(request: Request) -> tuple[int, str] | None:
    version = request.header(b"sec-websocket-version")
    if version is None:
        return 400, "Sec-WebSocket-Version is missing"
    if version.strip() != WEBSOCKET_VERSION:
        return 426, "unsupported WebSocket version"
    return None


def accept_status(request: Request) -> int:
    """101 on HTTP/1.1; a 2xx (200) accepts an extended CONNECT on HTTP/2 (RFC 8441 5)."""
    return 200 if request.http_version == "2" else 101


def _valid_key(key: bytes) -> bool:
    try:
        return len(b64decode(key.strip(), validate=True)) == _KEY_SIZE
    except binascii.Error:
        return False


def header_tokens(request: Request, name: bytes) -> list[bytes]:
    """The comma-separated values of every `name` field, stripped and in lower case."""
    return [token.strip().lower() for key, value in request.headers if key == name
            for token in value.split(b",")]


def offered_subprotocols(request: Request) -> list[str]:
    """Sec-WebSocket-Protocol, in the client's order of preference (scope["subprotocols"])."""
    return [token.strip().decode("latin-1") for key, value in request.headers
            if key == b"sec-websocket-protocol" for token in value.split(b",") if token.strip()]


def negotiate_deflate(request: Request) -> tuple[PerMessageDeflate, bytes] | None:
    """The first permessage-deflate offer that can be accepted: the configured extension and the value
    of Sec-WebSocket-Extensions that accepts it. None when the client offers none that fits."""
    for key, value in request.headers:
        if key != b"sec-websocket-extensions":
            continue
        for offer in value.decode("latin-1").split(","):  # RFC 7692 parameters never need quotes
            accepted = _accept_deflate(offer)
            if accepted is not None:
                return accepted
    return None


def _accept_deflate(offer: str) -> tuple[PerMessageDeflate, bytes] | None:
    name, *parameters = (part.strip() for part in offer.split(";"))
    if name != _DEFLATE:
        return None
    if any(parameter.partition("=")[0].strip() not in _DEFLATE_PARAMETERS for parameter in parameters):
        return None  # RFC 7692 section 5.1: decline an offer with parameters we do not know
    extension = PerMessageDeflate()
    try:
        answer = extension.accept(offer)
    except ValueError:  # a malformed window size
        return None
    if answer is None or answer is False:
        return None
    value = _DEFLATE.encode() if answer is True or not answer else f"{_DEFLATE}; {answer}".encode()
    return extension, value


def accept_headers(request: Request, subprotocol: str | None, extension: bytes | None,
                   extra: Iterable[Any]) -> Headers:
    """The header fields of the 101 that accepts `request`, with the application's `extra` fields
    (those the handshake owns are dropped)."""
    headers: Headers = []
    if request.http_version != "2":  # HTTP/2 has neither Upgrade nor the accept token (RFC 8441 5)
        key = request.header(b"sec-websocket-key")
        assert key is not None  # check_request has passed
        headers += [(b"upgrade", b"websocket"), (b"connection", b"upgrade"),
                    (b"sec-websocket-accept", generate_accept_token(key.strip()))]
    if subprotocol is not None:
        headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
    if extension is not None:
        headers.append((b"sec-websocket-extensions", extension))
    owned = _OWNED_FIELDS | {b"sec-websocket-protocol"} if subprotocol is not None else _OWNED_FIELDS
    headers.extend(application_headers(extra, owned))
    return headers


def application_headers(extra: Iterable[Any], owned: frozenset[bytes] = _OWNED_FIELDS) -> Headers:
    """An application's [name, value] pairs as Headers: names in lower case, fields in `owned` dropped."""
    headers: Headers = []
    for name, value in extra:
        lowered = bytes(name).lower()
        if lowered not in owned:
            headers.append((lowered, bytes(value)))
    return headers
