"""The admin listener's handler: /metrics (every worker's ledger summed, and per-worker series),
/healthz (the process answers), /readyz (serving: not while starting or draining), and the status page,
/status and /status.json (status_page.py, imported on the first request for either).

With one process it reads its own counters; under a master it asks every worker for a snapshot at the
scrape (see supervisor/), so no worker counts anything per request for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.observe.metrics import CONTENT_TYPE, ledger_lines, page, upstream_lines
from ring3.observe.snapshot import Snapshot, ledger_of, summed, upstreams_of

if TYPE_CHECKING:
    from ring3.observe.status_page import StatusPage

# Every worker's snapshot: at once in a process that serves alone, awaited from the workers by a master.
Gather = Callable[[], list[Snapshot] | Awaitable[list[Snapshot]]]
TEXT = b"text/plain; charset=utf-8"
PATHS = (b"/metrics", b"/healthz", b"/readyz", b"/status", b"/status.json")
STATUS_PATHS = (b"/status", b"/status.json")


class AdminHandler:
    """Answers GET (and HEAD) on the admin paths; anything else is 404, another method 405."""

    __slots__ = ("_extra", "_facts", "_gather", "_readiness", "_status")

    def __init__(self, gather: Gather, readiness: Callable[[], str],
                 extra: Callable[[], list[str]] | None = None,
                 facts: Callable[[], dict[str, Any]] | None = None) -> None:
        """`readiness` says "ready", or why not ("starting", "draining", ...); `extra` gives the
        master's own series (restarts, reloads), and `facts` the same as data, for the status page."""
        self._gather = gather
        self._readiness = readiness
        self._extra = extra
        self._facts = facts
        self._status: StatusPage | None = None  # made by the first request for the status page

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        path = request.path
        if path not in PATHS:
            return status_response(404)
        if request.method not in (b"GET", b"HEAD"):
            return status_response(405, [(b"allow", b"GET, HEAD")])
        if path == b"/healthz":
            return _text(200, b"alive\n")
        if path == b"/readyz":
            state = self._readiness()
            return _text(200 if state == "ready" else 503, state.encode() + b"\n")
        if path in STATUS_PATHS:
            if self._status is None:
                from ring3.observe.status_page import StatusPage

                self._status = StatusPage(self._gather, self._readiness, self._facts)
            return self._status.respond(request)
        snapshots = self._gather()
        if inspect.isawaitable(snapshots):
            return self._metrics_later(snapshots)
        return self._metrics(snapshots)

    async def _metrics_later(self, snapshots: Awaitable[list[Snapshot]]) -> Response:
        return self._metrics(await snapshots)

    def close(self) -> None:
        """The admin listener stops: the status page's sampler, if it runs, stops too."""
        if self._status is not None:
            self._status.close()

    def _metrics(self, snapshots: list[Snapshot]) -> Response:
        lines = render_snapshots(snapshots)
        if self._extra is not None:
            lines += self._extra()
        return Response(status=200, headers=[(b"content-type", CONTENT_TYPE)], body=page(lines))


def _text(status: int, text: bytes) -> Response:
    return Response(status=status, headers=[(b"content-type", TEXT), (b"cache-control", b"no-store")],
                    body=text)


_PER_WORKER = (
    ("requests_total", "counter", "Responses sent by each worker."),
    ("connections_open", "gauge", "Client connections each worker holds open now."),
    ("connections_accepted_total", "counter", "Client connections each worker accepted."),
    ("syscalls_total", "counter", "System calls each worker made, all kinds together."),
    ("start_time_seconds", "gauge", "When each worker started (Unix time)."),
)


def render_snapshots(snapshots: Sequence[Snapshot]) -> list[str]:
    """The whole server's series (the ledgers summed) and each worker's own."""
    lines = ledger_lines(summed(snapshots), sum(int(s["connections_open"]) for s in snapshots))
    upstreams = upstreams_of(snapshots)
    if upstreams:
        lines += upstream_lines(upstreams)
    values: dict[str, list[str]] = {name: [] for name, _, _ in _PER_WORKER}
    for snapshot in snapshots:
        ledger = ledger_of(snapshot)
        worker = f'{{worker="{snapshot["worker"]}"}}'
        values["requests_total"].append(f"{worker} {sum(ledger.statuses.values())}")
        values["connections_open"].append(f"{worker} {snapshot['connections_open']}")
        values["connections_accepted_total"].append(f"{worker} {ledger.connections_accepted}")
        values["syscalls_total"].append(f"{worker} {sum(ledger.syscalls().values())}")
        values["start_time_seconds"].append(f"{worker} {snapshot['started']:.3f}")
    for name, kind, help_text in _PER_WORKER:
        metric = f"ring3_worker_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [metric + value for value in values[name]]
    return lines
