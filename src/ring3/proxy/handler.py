"""The proxy handler: a location's `proxy`. Per request it picks an upstream, takes a pooled connection (or
makes one), sends the request head and streams the body, reads the response head, and hands back a
Response whose body streams from the upstream (ring3.proxy.relay). Failures before the response head
retry on the next upstream where that is safe (ring3.proxy.attempt says when).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import urllib.parse
from collections.abc import Awaitable
from functools import partial

from ring3.config.proxy_schema import ProxySpec
from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.proxy import RUNNING
from ring3.proxy.attempt import Attempt, Failure
from ring3.proxy.balance import balancer
from ring3.proxy.headers import HeaderEdits, request_drop
from ring3.proxy.health import HealthChecker
from ring3.proxy.pool import Pool
from ring3.proxy.upstreams import Upstream, parse_entry

logger = logging.getLogger("ring3.error")

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_SAFE_PATH = "/%!$&'()*+,;=:@-._~"


class ProxyHandler:
    """Proxies a location's requests to a pool of HTTP/1.1 upstreams."""

    def __init__(self, spec: ProxySpec, where: str, prefix: bytes = b"") -> None:
        self.spec = spec
        self.where = where
        self.upstreams = [Upstream(parse_entry(text), spec.max_fails, spec.fail_timeout)
                          for text in spec.upstreams]
        self.balancer = balancer(spec.balance, self.upstreams, spec.hash_key)
        self.pool = Pool(self.upstreams, spec.keepalive, spec.keepalive_timeout, spec.keepalive_requests)
        self.edits = HeaderEdits(spec.request_headers) if spec.request_headers else None
        self.request_drop = request_drop(spec.forwarded, self.edits)
        self.uri = spec.uri.encode()
        self.prefix = prefix  # the location's prefix, replaced by `uri`
        self.host = spec.host.encode()
        self.splice_ok = spec.splice  # off where the location compresses (its writer changes the bytes)
        # The last response had a body long enough to splice: the next head is peeked at first, so
        # that none of its body is read into Python (ring3.proxy.upstream_conn.PEEK_SIZE).
        self.expect_large = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, bound once (see _bind_loop)
        self.health: HealthChecker | None = None
        if spec.health is not None:
            self.health = HealthChecker(spec.health, self.upstreams, where, self.host
                                        if self.host and self.host != b"$proxy_host" else b"")

    def __call__(self, request: Request, body: BodyReader) -> Awaitable[Response]:
        if request.upgrade and _h2c_only(request.header(b"upgrade")):
            # An h2c upgrade (curl --http2 on http://) asks to switch this very connection to HTTP/2: it
            # is hop-by-hop (RFC 9113 3.1 retired it), so the upstream gets a plain request, never an
            # Upgrade it could take up and tunnel HTTP/2 through the proxy with.
            request = dataclasses.replace(request, upgrade=False)
        if request.has_body or request.method == b"CONNECT":
            return self._proxy(request, body)
        # The common case, a request without a body on a pooled connection: driven by callbacks, with
        # no Task (the coroutine path takes over for a new connection, and for a retry).
        loop = self.loop or self._bind_loop()
        now = loop.time()
        upstream = self.balancer.pick(request, now, ())
        if upstream is None:
            return self._proxy(request, body)
        conn = self.pool.take(upstream, now)
        if conn is None:
            return self._proxy(request, body, first=upstream, started=now)
        retry_statuses = self.spec.max_tries > 1 and request.method in IDEMPOTENT
        attempt = Attempt(self, upstream, request, body, None, retry_statuses)
        outer: asyncio.Future[Response] = loop.create_future()
        attempt.notify = partial(self._settle, loop, attempt, outer, now)
        outer.add_done_callback(attempt.abandoned)
        attempt.begin(loop, conn)
        return outer

    def _settle(self, loop: asyncio.AbstractEventLoop, attempt: Attempt, outer: asyncio.Future[Response],
                started: float) -> None:
        attempt.notify = None  # no cycle left for the collector: the try is freed when the answer is
        if outer.done():
            return
        try:
            outer.set_result(attempt.settle(loop))
        except Failure as failure:
            request = attempt.request
            upstream = attempt.upstream
            if not self._retry(upstream, failure, request, 1, 1, started, loop):
                outer.set_result(failure.response or status_response(failure.status))
                return
            again = self._proxy(request, attempt.body, first=upstream if failure.stale else None,
                                tried=[] if failure.stale else [upstream], tries=1, last=failure,
                                started=started)
            task = loop.create_task(again)
            task.add_done_callback(lambda done: _copy_result(done, outer))
            outer.add_done_callback(lambda _: task.cancel())

    def _retry(self, upstream: Upstream, failure: Failure, request: Request, tries: int, tried: int,
               started: float, loop: asyncio.AbstractEventLoop) -> bool:
        """Count and log a failed try; whether the request may be tried again: on another upstream, or on
        the same one over a new connection when a kept-alive one turned out closed (`tries` so far, on
        `tried` distinct upstreams)."""
        spec = self.spec
        if failure.passive and upstream.failed(loop.time()):
            logger.error("proxy %s: upstream %s is out for %gs after %d failures", self.where,
                         upstream.name, upstream.fail_timeout, upstream.max_fails)
        retry = (tries < spec.max_tries and loop.time() - started < spec.retry_timeout
                 and not failure.consumed and (request.method in IDEMPOTENT or not failure.body_sent)
                 and (failure.stale or tried < len(self.upstreams)))
        again = "; trying it again on a new connection" if failure.stale else "; trying another"
        logger.error("proxy %s: upstream %s: %s%s", self.where, upstream.name, failure.reason,
                     again if retry else "")
        return retry

    def target(self, request: Request) -> bytes:
        """The request target sent upstream."""
        if not self.uri:
            return request.target
        path = request.path
        rest = path[len(self.prefix):] if path.startswith(self.prefix) else path.lstrip(b"/")
        uri = self.uri
        joined = uri + rest if uri.endswith(b"/") or not rest else uri + b"/" + rest.lstrip(b"/")
        quoted = urllib.parse.quote(joined, safe=_SAFE_PATH).encode("ascii")
        return quoted + b"?" + request.query if request.query else quoted

    def host_for(self, request: Request, upstream: Upstream) -> bytes:
        if not self.host:
            return request.host or upstream.address.host.encode()
        if self.host == b"$proxy_host":
            return upstream.address.host.encode()
        return self.host

    async def _proxy(self, request: Request, body: BodyReader, *, first: Upstream | None = None,
                     tried: list[Upstream] | None = None, tries: int = 0, last: Failure | None = None,
                     started: float | None = None) -> Response:
        if request.method == b"CONNECT" and request.protocol != b"websocket":
            return status_response(501)  # CONNECT tunnels to upstreams are not built
        loop = self.loop or self._bind_loop()
        spec = self.spec
        started = loop.time() if started is None else started
        buffered: bytes | None = None
        if request.has_body and spec.request_buffering:
            buffered = await _buffer(body, spec.request_buffer_size)
        idempotent = request.method in IDEMPOTENT
        tried = tried or []
        while True:
            now = loop.time()
            upstream = first or self.balancer.pick(request, now, tried)
            first = None
            if upstream is None:
                if last is None:
                    logger.error("proxy %s: no upstream is up (%s)", self.where,
                                 ", ".join(f"{u.name} {u.state(now)}" for u in self.upstreams))
                    return status_response(502)
                return last.response or status_response(last.status)
            if upstream not in tried:
                tried.append(upstream)
            tries += 1
            may_retry = tries < spec.max_tries and now - started < spec.retry_timeout
            attempt = Attempt(self, upstream, request, body, buffered, may_retry and idempotent)
            try:
                return await attempt.run(loop)
            except Failure as failure:
                last = failure
                if not self._retry(upstream, failure, request, tries, len(tried), started, loop):
                    return failure.response or status_response(failure.status)
                if failure.stale:
                    first = upstream  # the same upstream, on another connection

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, asked once: on Python 3.11 every asyncio.get_running_loop() is a getpid system call
        (it checks for a fork), which per request would be a syscall nginx does not make."""
        loop = self.loop = asyncio.get_running_loop()
        return loop

    def start(self) -> None:
        """Begin the active health checks (at server start, in its loop); /metrics shows it from now."""
        self._bind_loop()
        RUNNING.append(self)
        if self.health is not None:
            self.health.start()

    def close(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.health is not None:
            self.health.stop()
        self.pool.close()


def _h2c_only(upgrade: bytes | None) -> bool:
    return upgrade is not None and all(token.strip().lower() == b"h2c" for token in upgrade.split(b","))


def _copy_result(done: asyncio.Future[Response], outer: asyncio.Future[Response]) -> None:
    if outer.done() or done.cancelled():
        return
    error = done.exception()
    if error is not None:
        outer.set_exception(error)
    else:
        outer.set_result(done.result())


async def _buffer(body: BodyReader, bound: int) -> bytes:
    """Up to `bound` bytes of the request body, read before any upstream is bothered (all of it when it
    fits); what is left is read as it comes."""
    parts: list[bytes] = []
    size = 0
    while size < bound:
        piece = await body.read()
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)
