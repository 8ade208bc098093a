"""Prometheus text exposition of the cost ledger and the server's counters, for the admin listener; and,
where the worker runs proxies, the state of their upstreams (read at the scrape, never counted per request
beyond what the proxy keeps anyway)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.observe.ledger import LEDGER, Ledger

if TYPE_CHECKING:
    from ring3.proxy.handler import ProxyHandler

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def render(ledger: Ledger, connections_open: int, proxies: Sequence[ProxyHandler] = (),
           now: float = 0.0) -> bytes:
    """The metrics page in Prometheus text format 0.0.4; `now` is the proxies' loop time."""
    lines = [
        "# HELP ring3_syscalls_total System calls made by this worker, by kind (EAGAIN included).",
        "# TYPE ring3_syscalls_total counter",
    ]
    lines += [f'ring3_syscalls_total{{kind="{kind}"}} {count}' for kind, count in ledger.syscalls().items()]
    lines += [
        "# HELP ring3_bytes_sent_total Response bytes sent, zero-copy (sendfile) or from Python memory.",
        "# TYPE ring3_bytes_sent_total counter",
        f'ring3_bytes_sent_total{{path="zero_copy"}} {ledger.bytes_zero_copy}',
        f'ring3_bytes_sent_total{{path="copied"}} {ledger.bytes_copied}',
        "# HELP ring3_bytes_encrypted_total Response bytes encrypted in user space (TLS) before they "
        "were copied out.",
        "# TYPE ring3_bytes_encrypted_total counter",
        f"ring3_bytes_encrypted_total {ledger.bytes_encrypted}",
        "# HELP ring3_bytes_received_total Request bytes received.",
        "# TYPE ring3_bytes_received_total counter",
        f"ring3_bytes_received_total {ledger.bytes_received}",
        "# HELP ring3_requests_total Responses sent, by status.",
        "# TYPE ring3_requests_total counter",
    ]
    lines += [f'ring3_requests_total{{status="{status}"}} {count}'
              for status, count in sorted(ledger.statuses.items())]
    lines += [
        "# HELP ring3_responses_from_cache_total Responses served from the in-memory cache.",
        "# TYPE ring3_responses_from_cache_total counter",
        f"ring3_responses_from_cache_total {ledger.responses_from_cache}",
        "# HELP ring3_responses_replayed_total Responses answered from the replay cache, by the exact "
        "bytes of an earlier request, without parsing or calling a handler.",
        "# TYPE ring3_responses_replayed_total counter",
        f"ring3_responses_replayed_total {ledger.responses_replayed}",
        "# HELP ring3_connections_accepted_total Client connections accepted.",
        "# TYPE ring3_connections_accepted_total counter",
        f"ring3_connections_accepted_total {ledger.connections_accepted}",
        "# HELP ring3_tls_handshakes_total TLS handshakes completed, by kind (resumed: by a session "
        "ticket or the session cache).",
        "# TYPE ring3_tls_handshakes_total counter",
        f'ring3_tls_handshakes_total{{kind="full"}} {ledger.tls_handshakes - ledger.tls_resumed}',
        f'ring3_tls_handshakes_total{{kind="resumed"}} {ledger.tls_resumed}',
        "# HELP ring3_tls_handshake_failures_total TLS handshakes refused, broken off or timed out, and "
        "connections to a TLS port that did not speak TLS.",
        "# TYPE ring3_tls_handshake_failures_total counter",
        f"ring3_tls_handshake_failures_total {ledger.tls_handshake_failures}",
        "# HELP ring3_connections_open Client connections open now.",
        "# TYPE ring3_connections_open gauge",
        f"ring3_connections_open {connections_open}",
        "# HELP ring3_proxy_bytes_spliced_total Proxied response body bytes moved upstream -> client by "
        "splice(2), never read into Python (counted in ring3_bytes_sent_total{path=\"zero_copy\"} too).",
        "# TYPE ring3_proxy_bytes_spliced_total counter",
        f"ring3_proxy_bytes_spliced_total {ledger.bytes_spliced}",
    ]
    if proxies:
        lines += upstream_lines(proxies, now)
    return ("\n".join(lines) + "\n").encode()


_UPSTREAM_METRICS = (
    ("up", "gauge", "1 while the upstream takes requests, 0 while it is out (ring3_proxy_upstream_down says "
     "why)."),
    ("down", "gauge", "Why an upstream is out, 1 while it holds: reason \"failures\" (max_fails failed tries "
     "within fail_timeout: out for fail_timeout) or \"health_check\" (health.fall failed checks in a row)."),
    ("requests_total", "counter", "Requests sent to the upstream (each try of a retried request counts)."),
    ("in_flight", "gauge", "Requests on the upstream now: sent, their response not yet read to its end."),
    ("idle_connections", "gauge", "Kept-alive connections to the upstream, idle in the pool."),
    ("failures_total", "counter", "Failed tries: refused or timed-out connects, timeouts, connections lost "
     "before the response, invalid responses."),
)


def upstream_lines(proxies: Sequence[ProxyHandler], now: float) -> list[str]:
    """Each proxy's upstreams, labelled by the proxy's location and the upstream's address."""
    rows: dict[str, list[str]] = {name: [] for name, _, _ in _UPSTREAM_METRICS}
    for proxy in sorted(proxies, key=lambda p: p.where):
        for upstream in proxy.upstreams:
            labels = f'location="{label(proxy.where)}",upstream="{label(upstream.name)}"'
            failing = now < upstream.down_until
            rows["up"].append(f"{{{labels}}} {int(not upstream.checked_down and not failing)}")
            rows["down"].append(f'{{{labels},reason="failures"}} {int(failing)}')
            rows["down"].append(f'{{{labels},reason="health_check"}} {int(upstream.checked_down)}')
            rows["requests_total"].append(f"{{{labels}}} {upstream.requests}")
            rows["in_flight"].append(f"{{{labels}}} {upstream.active}")
            rows["idle_connections"].append(f"{{{labels}}} {len(upstream.idle)}")
            rows["failures_total"].append(f"{{{labels}}} {upstream.failures}")
    lines = []
    for name, kind, help_text in _UPSTREAM_METRICS:
        metric = f"ring3_proxy_upstream_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [metric + row for row in rows[name]]
    return lines


def label(value: str) -> str:
    """A label value as the text format writes it (backslash, double quote and newline escaped)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def running_proxies() -> Sequence[ProxyHandler]:
    """The worker's started proxies; none, and nothing imported, when no proxy module was ever loaded."""
    module = sys.modules.get("ring3.proxy")
    return getattr(module, "RUNNING", ()) if module is not None else ()


class MetricsHandler:
    """Answers GET /metrics on the admin listener; everything else is 404 (or 405)."""

    __slots__ = ("_connections_open",)

    def __init__(self, connections_open: Callable[[], int]) -> None:
        self._connections_open = connections_open

    def __call__(self, request: Request, body: BodyReader) -> Response:
        if request.path != b"/metrics":
            return status_response(404)
        if request.method not in (b"GET", b"HEAD"):
            return status_response(405, [(b"allow", b"GET, HEAD")])
        proxies = running_proxies()
        now = asyncio.get_running_loop().time() if proxies else 0.0
        page = render(LEDGER, self._connections_open(), proxies, now)
        return Response(status=200, headers=[(b"content-type", CONTENT_TYPE)], body=page)
