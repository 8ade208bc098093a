"""The rules a location puts in front of its handler, each a handler wrapping the next.

Checks (a rate limit, allow/deny, basic auth, the body size) answer for themselves or pass the request on;
filters (response headers, the request id) change what comes back. Only the rules a location has are in its
chain: a location without rules calls its handler directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ring3.events import SETS_DATE, SETS_SERVER, Headers, Request, Response
from ring3.handlers import BodyReader, Handler
from ring3.handlers.status import status_response
from ring3.sites.ratelimit import RateLimiter, retry_after

if TYPE_CHECKING:
    from ring3.sites.htpasswd import Htpasswd

Result = Response | Awaitable[Response]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ADDRESS_MEMO_ENTRIES = 4096  # client addresses whose allow/deny verdict is remembered, per location
MODIFIED_ENTRIES = 512  # shared responses whose header-rewritten copy is kept, for all locations
REQUEST_ID_MAX = 128
_REQUEST_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def then(result: Result, change: Callable[[Response], Response]) -> Result:
    """`change` applied to a handler's result, now or when it is ready."""
    if isinstance(result, Response):
        return change(result)
    return _later(result, change)


async def _later(result: Awaitable[Response], change: Callable[[Response], Response]) -> Response:
    return change(await result)


class AccessRule:
    """allow/deny by client address (nginx's allow and deny): deny wins; with an allow list, an address on
    none of its networks is refused too. A client on a Unix socket has no address: it passes only where
    nothing is allowed explicitly and not everything is denied."""

    __slots__ = ("_allow", "_deny", "_deny_all", "_memo", "_next")

    def __init__(self, allow: tuple[str, ...], deny: tuple[str, ...], next_handler: Handler) -> None:
        self._allow = [ipaddress.ip_network(a, strict=False) for a in allow if a != "all"]
        self._deny = [ipaddress.ip_network(d, strict=False) for d in deny if d != "all"]
        self._deny_all = "all" in deny and "all" not in allow
        if "all" in allow:
            self._allow = []
        self._memo: dict[str, bool] = {}
        self._next = next_handler

    def _allowed(self, client: str) -> bool:
        verdict = self._memo.get(client)
        if verdict is None:
            address = ipaddress.ip_address(client)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if any(address in network for network in self._deny):
                verdict = False
            elif self._allow:
                verdict = any(address in network for network in self._allow)
            else:
                verdict = not self._deny_all
            if len(self._memo) >= ADDRESS_MEMO_ENTRIES:
                self._memo.clear()
            self._memo[client] = verdict
        return verdict

    def __call__(self, request: Request, body: BodyReader) -> Result:
        client = request.conn.client
        if not (self._allowed(client[0]) if client is not None else not self._allow and not self._deny_all):
            return status_response(403)
        return self._next(request, body)


class AuthRule:
    """HTTP basic authentication. A password is verified once (bcrypt's cost, in a worker thread so the
    event loop goes on); then the same credentials pass at the cost of one HMAC and a dict lookup."""

    __slots__ = ("_challenge", "_next", "_users")

    def __init__(self, users: Htpasswd, realm: str, next_handler: Handler) -> None:
        self._users = users
        quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
        self._challenge = f'Basic realm="{quoted}", charset="UTF-8"'.encode()
        self._next = next_handler

    def _refuse(self) -> Response:
        return status_response(401, [(b"www-authenticate", self._challenge)])

    def __call__(self, request: Request, body: BodyReader) -> Result:
        credentials = request.header(b"authorization")
        if credentials is None:
            return self._refuse()
        users = self._users
        if users.cached(credentials) is not None:
            return self._next(request, body)
        if not users.slow:
            if users.verify(credentials) is None:
                return self._refuse()
            return self._next(request, body)
        return self._verify_then(request, body, credentials)

    async def _verify_then(self, request: Request, body: BodyReader, credentials: bytes) -> Response:
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, self._users.verify, credentials)
        if user is None:
            return self._refuse()
        result = self._next(request, body)
        return result if isinstance(result, Response) else await result


class RateRule:
    """A rate limit (see ratelimit.py): past the burst, 429 with Retry-After."""

    __slots__ = ("_header", "_key", "_limiter", "_next")

    def __init__(self, limiter: RateLimiter, key: str, next_handler: Handler) -> None:
        self._limiter = limiter
        self._key = key
        self._header = key[7:].lower().encode("ascii") if key.startswith("header:") else b""
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        key = self._key
        if key == "client":
            client = request.conn.client
            bucket = client[0].encode() if client is not None else b"unix"
        elif key == "location":
            bucket = b""
        elif key == "host":
            bucket = request.host.lower()
        else:
            bucket = request.header(self._header) or b""
        wait = self._limiter.take(bucket, time.monotonic())
        if wait:
            return status_response(429, [(b"retry-after", retry_after(wait))])
        return self._next(request, body)


class BodyLimitRule:
    """The location's max_body_size: a declared length over it gets 413 at once (and the connection closes,
    as the body will not be read); a body without a declared length is cut off at the limit by its reader."""

    __slots__ = ("_limit", "_next")

    def __init__(self, limit: int, next_handler: Handler) -> None:
        self._limit = limit
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        if request.has_body:
            length = request.header(b"content-length")
            if length is not None and length.isdigit() and int(length) > self._limit:
                return status_response(413, close=True)
            body.limit(self._limit)
        return self._next(request, body)


class HeaderRule:
    """Response headers: set (replacing the handler's), add, remove. A response shared between requests
    (a cached file's) gets one rewritten copy, kept while it is in use, so the replay cache and the file
    cache still hand out one object."""

    __slots__ = ("_add", "_drop", "_next", "_sets")

    def __init__(self, pairs: tuple[tuple[str, str], ...], next_handler: Handler) -> None:
        sets: Headers = []
        add: Headers = []
        drop: set[bytes] = set()
        for name, value in pairs:
            if name.startswith("-"):
                drop.add(name[1:].lower().encode("ascii"))
            elif name.startswith("+"):
                add.append((name[1:].lower().encode("ascii"), value.encode("ascii")))
            else:
                sets.append((name.lower().encode("ascii"), value.encode("ascii")))
                drop.add(name.lower().encode("ascii"))
        self._sets = sets + add
        self._drop = frozenset(drop)
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        return then(self._next(request, body), self.apply)

    def apply(self, response: Response) -> Response:
        if response.replay is None:  # not shared between requests: rewrite this one
            return self._rewrite(response, None)
        key = (id(self), id(response))
        kept = _MODIFIED.get(key)
        if kept is not None and kept[0] is response:
            return kept[1]
        original_replay = response.replay
        modified = self._rewrite(response, original_replay)
        if len(_MODIFIED) >= MODIFIED_ENTRIES:
            _MODIFIED.clear()
        _MODIFIED[key] = (response, modified)
        return modified

    def _rewrite(self, response: Response, original_replay: Callable[[], Response | None] | None) -> Response:
        drop = self._drop
        headers = [pair for pair in response.headers if pair[0] not in drop] + self._sets
        block = response.header_block
        if block and drop:
            lines = block.split(b"\r\n")
            block = b"".join(line + b"\r\n" for line in lines
                             if line and line.partition(b":")[0].lower() not in drop)
        sets_fields = response.sets_fields
        if b"server" in drop:
            sets_fields |= SETS_SERVER  # ring3's own goes out only where none is given: none is
        if b"date" in drop:
            sets_fields |= SETS_DATE
        replay = None
        if original_replay is not None:
            def replay() -> Response | None:
                renewed = original_replay()
                return None if renewed is None else self.apply(renewed)
        return dataclasses.replace(response, headers=headers, header_block=block, replay=replay,
                                   sets_fields=sets_fields)


_MODIFIED: dict[tuple[int, int], tuple[Response, Response]] = {}


def request_id_of(request: Request) -> bytes:
    """The client's X-Request-ID if it is a plain token of at most REQUEST_ID_MAX characters, else a new
    one (128 random bits, hex)."""
    given = request.header(b"x-request-id")
    if given and len(given) <= REQUEST_ID_MAX and _REQUEST_ID_CHARS.issuperset(given):
        return given
    return secrets.token_hex(16).encode("ascii")


class RequestIdRule:
    """X-Request-ID: in the request the handler sees (and the access log), and in the response."""

    __slots__ = ("_next",)

    def __init__(self, next_handler: Handler) -> None:
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        rid = request.request_id = request_id_of(request)
        request.headers = [pair for pair in request.headers if pair[0] != b"x-request-id"]
        request.headers.append((b"x-request-id", rid))

        def stamp(response: Response) -> Response:
            headers = [pair for pair in response.headers if pair[0] != b"x-request-id"]
            headers.append((b"x-request-id", rid))
            return dataclasses.replace(response, headers=headers, replay=None)

        return then(self._next(request, body), stamp)
