"""Active health checks: every `interval`, each upstream is asked GET `path` on a connection of its own
(never a pooled one, so a check cannot disturb a request). `fall` failed checks in a row take it out;
`rise` passed ones bring it back, and also end an exclusion that passive failures started (`rise` passes
counted from its start).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

from ring3.config.proxy_loader import expected_statuses
from ring3.config.proxy_schema import HealthSpec
from ring3.proxy.response import UpstreamError, parse_head
from ring3.proxy.upstream_conn import ConnectFailed, connect
from ring3.proxy.upstreams import Upstream

logger = logging.getLogger("ring3.error")

MAX_CHECK_HEAD = 16 * 1024


class HealthChecker:
    """The checks of one proxy's upstreams."""

    def __init__(self, spec: HealthSpec, upstreams: list[Upstream], where: str, host: bytes) -> None:
        self.spec = spec
        self.upstreams = upstreams
        self.where = where
        self.host = host
        self.passes = expected_statuses(spec.expect)
        # The path as a request target: a space, a CR or LF, or UTF-8 in the config is percent-encoded.
        self.target = urllib.parse.quote(spec.path, safe="/%!$&'()*+,;=:@-._~?").encode("ascii")
        self._tasks: list[asyncio.Task[None]] = []
        self.checks = 0  # checks made, for metrics and tests

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(upstream)) for upstream in self.upstreams]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _watch(self, upstream: Upstream) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        failed = passed = 0
        excluded = upstream.down_until  # the passive exclusion that the passes so far are counted against
        while True:
            try:
                ok, reason = await self.check(upstream)
            except Exception as exc:  # out of descriptors, say: a failed check, and the watch goes on
                ok, reason = False, f"check failed: {exc!r}"
            self.checks += 1
            if upstream.down_until != excluded:  # failures took it out since: `rise` passes from now on
                excluded, passed = upstream.down_until, 0
            if ok:
                failed, passed = 0, passed + 1
                out = upstream.checked_down or upstream.down_until > loop.time()
                if out and passed >= spec.rise:
                    logger.warning("proxy %s: upstream %s is back (health check passed)", self.where,
                                   upstream.name)
                    upstream.checked_down = False
                    upstream.down_until = excluded = 0.0
                    upstream.fails = 0
            else:
                failed, passed = failed + 1, 0
                if not upstream.checked_down and failed >= spec.fall:
                    upstream.checked_down = True
                    logger.error("proxy %s: upstream %s is out: health check failed %d times (%s)",
                                 self.where, upstream.name, failed, reason)
            await asyncio.sleep(spec.interval)

    async def check(self, upstream: Upstream) -> tuple[bool, str]:
        """One check, connect and answer within `timeout`: (passed, why not)."""
        spec = self.spec
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.timeout
        host = self.host or upstream.address.host.encode()
        try:
            conn = await connect(upstream.address, upstream, loop, spec.timeout)
        except ConnectFailed as exc:
            return False, f"connect failed: {exc}"
        received = bytearray()
        done: asyncio.Future[None] = loop.create_future()

        def sink(data: bytes) -> None:
            received.extend(data)
            if (not data or b"\r\n\r\n" in received or len(received) > MAX_CHECK_HEAD) and not done.done():
                done.set_result(None)

        conn.sink = sink
        try:
            conn.send(b"GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: ring3-health-check\r\n"
                      b"connection: close\r\n\r\n" % (self.target, host))
            await asyncio.wait_for(done, max(0.001, deadline - loop.time()))
        except TimeoutError:
            return False, f"no answer within {spec.timeout:g}s"
        except Exception as exc:
            return False, str(exc)
        finally:
            conn.close()
        data = bytes(received)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return False, "no complete response head"
        try:
            head = parse_head(data, end, True, 100)
        except UpstreamError as exc:
            return False, f"invalid response: {exc}"
        if not self.passes(head.status):
            return False, f"status {head.status}"
        return True, ""
