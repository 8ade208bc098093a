"""Prometheus text exposition of the cost ledger and the server's counters, for the admin listener."""

from __future__ import annotations

from collections.abc import Callable

from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.observe.ledger import LEDGER, Ledger

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def render(ledger: Ledger, connections_open: int) -> bytes:
    """The metrics page in Prometheus text format 0.0.4."""
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
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


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
        page = render(LEDGER, self._connections_open())
        return Response(status=200, headers=[(b"content-type", CONTENT_TYPE)], body=page)
