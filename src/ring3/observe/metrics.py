"""Prometheus text exposition of the cost ledger and the server's counters, for the admin listener; and,
where the worker runs proxies, the state of their upstreams (read at the scrape, never counted per request
beyond what the proxy keeps anyway)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ring3.observe.ledger import Ledger

if TYPE_CHECKING:
    from ring3.proxy.handler import ProxyHandler

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def render(ledger: Ledger, connections_open: int, proxies: Sequence[ProxyHandler] = (),
           now: float = 0.0) -> bytes:
    """The metrics page of one process in Prometheus text format 0.0.4; `now` is the proxies' loop
    time."""
    lines = ledger_lines(ledger, connections_open)
    if proxies:
        lines += upstream_lines([("", row) for row in upstream_rows(proxies, now)])
    return page(lines)


def page(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def ledger_lines(ledger: Ledger, connections_open: int) -> list[str]:
    """The ledger's series and the open connections (of one worker, or summed over all)."""
    lines = [
        "# HELP ring3_syscalls_total System calls made, by kind (EAGAIN included); under a master, "
        "summed over the workers and the master.",
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
    return lines


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


# One upstream as one worker sees it: location, address, up, failing, health-check down, requests,
# in flight, idle connections, failures (plain values, so that a worker can hand them to the master).
UpstreamRow = tuple[str, str, int, int, int, int, int, int, int]


def upstream_rows(proxies: Sequence[ProxyHandler], now: float) -> list[UpstreamRow]:
    """Each proxy's upstreams, read at `now` (the proxies' loop time)."""
    rows: list[UpstreamRow] = []
    for proxy in sorted(proxies, key=lambda p: p.where):
        for upstream in proxy.upstreams:
            failing = now < upstream.down_until
            rows.append((proxy.where, upstream.name, int(not upstream.checked_down and not failing),
                         int(failing), int(upstream.checked_down), upstream.requests, upstream.active,
                         len(upstream.idle), upstream.failures))
    return rows


def upstream_lines(rows: Sequence[tuple[str, UpstreamRow]]) -> list[str]:
    """The upstream series, labelled by the proxy's location and the upstream's address, and by the
    worker when one is named beside the row (with several workers: each keeps its own view of an
    upstream's health)."""
    series: dict[str, list[str]] = {name: [] for name, _, _ in _UPSTREAM_METRICS}
    for worker, (where, name, up, failing, checked_down, requests, active, idle, failures) in rows:
        labels = f'location="{label(where)}",upstream="{label(name)}"'
        if worker:
            labels += f',worker="{worker}"'
        series["up"].append(f"{{{labels}}} {up}")
        series["down"].append(f'{{{labels},reason="failures"}} {failing}')
        series["down"].append(f'{{{labels},reason="health_check"}} {checked_down}')
        series["requests_total"].append(f"{{{labels}}} {requests}")
        series["in_flight"].append(f"{{{labels}}} {active}")
        series["idle_connections"].append(f"{{{labels}}} {idle}")
        series["failures_total"].append(f"{{{labels}}} {failures}")
    return [line for name, _, _ in _UPSTREAM_METRICS for line in _headed(name, series[name])]


def _headed(name: str, rows: list[str]) -> list[str]:
    kind, help_text = next((k, h) for n, k, h in _UPSTREAM_METRICS if n == name)
    metric = f"ring3_proxy_upstream_{name}"
    return [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"] + [metric + row for row in rows]


def label(value: str) -> str:
    """A label value as the text format writes it (backslash, double quote and newline escaped)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def running_proxies() -> Sequence[ProxyHandler]:
    """The worker's started proxies; none, and nothing imported, when no proxy module was ever loaded."""
    module = sys.modules.get("ring3.proxy")
    return getattr(module, "RUNNING", ()) if module is not None else ()
