"""The status page of the admin listener: /status, one self-contained HTML page (status.html, inline CSS
and JS, nothing fetched from elsewhere), and /status.json, what the page polls about once a second.

It leads with the toll per request (syscalls by kind, bytes sent zero-copy against bytes copied, cache
and replay hits), beside requests per second, open connections and each worker's load. Every rate
comes from the difference between two readings of the counters, never from the totals since the start.

Nothing here runs until someone asks: AdminHandler imports this module on the first /status or
/status.json, and that request starts the sampler that keeps the chart's history (a reading every
HISTORY_INTERVAL seconds, HISTORY_SPAN seconds of them, in the process that serves the admin listener).
The sampler stops by itself when nobody has asked for IDLE_STOP seconds, and the admin's shutdown
cancels it. Under a master the master's own snapshot (its admin listener and control sockets) is left
out of the totals, so the toll shown is the workers'; a process that serves alone counts its admin
requests in its one ledger, which the JSON says ("admin_counted").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from ring3.events import Request, Response
from ring3.observe.ledger import SYSCALL_KINDS, Ledger
from ring3.observe.snapshot import Snapshot, ledger_of, summed

logger = logging.getLogger("ring3.error")

HISTORY_INTERVAL = 2.0  # seconds between the sampler's readings
HISTORY_SPAN = 600.0  # seconds of history kept for the chart: 300 points
IDLE_STOP = HISTORY_SPAN  # the sampler stops when no one has asked for this long
MIN_WINDOW = 1.0  # the shortest time between two readings that a rate is taken over
MAX_GAP = 2.5 * HISTORY_INTERVAL  # two readings further apart (the sampler stopped) make no point
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
POINT_FIELDS = ("time", "requests_per_s", "syscalls_per_request", "zero_copy_share", "connections_open")
JSON_TYPE = b"application/json"
HTML_TYPE = b"text/html; charset=utf-8"

Gather = Callable[[], list[Snapshot] | Awaitable[list[Snapshot]]]
Facts = Callable[[], dict[str, Any]]
Point = tuple[float, float, float | None, float | None, int]


@dataclass(frozen=True, slots=True)
class Reading:
    """The counters at one moment: the whole server's (summed) and each worker's."""

    clock: float  # the event loop's time (monotonic), for windows
    wall: float  # Unix time, for the chart's axis
    total: Ledger
    connections_open: int
    workers: dict[int, tuple[int, int]]  # worker pid -> (requests, syscalls); names recur over reloads


def serving(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The snapshots whose counters are the server's traffic: not the master's own."""
    return [snapshot for snapshot in snapshots if snapshot["worker"] != "master"]


def read(snapshots: Sequence[Snapshot], clock: float, wall: float) -> Reading:
    counted = serving(snapshots)
    workers = {}
    for snapshot in counted:
        if snapshot["worker"] != "ended":
            ledger = ledger_of(snapshot)
            workers[int(snapshot["pid"])] = (sum(ledger.statuses.values()), sum(ledger.syscalls().values()))
    return Reading(clock, wall, summed(counted), sum(int(s["connections_open"]) for s in counted), workers)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _delta(before: Ledger, after: Ledger, name: str) -> int:
    """How much a counter grew (never less than nothing: a worker killed outright takes its counts)."""
    return max(0, int(getattr(after, name)) - int(getattr(before, name)))


def rates(before: Reading, after: Reading) -> dict[str, Any]:
    """The server's rates and its toll per request between two readings."""
    window = after.clock - before.clock
    old, new = before.total, after.total
    requests = max(0, sum(new.statuses.values()) - sum(old.statuses.values()))
    syscalls = {kind: _delta(old, new, kind) for kind in SYSCALL_KINDS}
    calls = sum(syscalls.values())
    zero_copy, copied = _delta(old, new, "bytes_zero_copy"), _delta(old, new, "bytes_copied")
    classes = dict.fromkeys(STATUS_CLASSES, 0)
    for status, count in new.statuses.items():
        key = f"{status // 100}xx"
        if key in classes:
            classes[key] += max(0, count - old.statuses.get(status, 0))
    return {
        "window": round(window, 3),
        "requests": requests,
        "requests_per_s": requests / window,
        "connections_per_s": _delta(old, new, "connections_accepted") / window,
        "bytes_sent_per_s": (zero_copy + copied) / window,
        "syscalls_per_s": calls / window,
        "syscalls_per_request": _ratio(calls, requests),
        "syscalls_per_request_by_kind": {kind: count / requests for kind, count in syscalls.items()
                                         if count and requests},
        "bytes_copied_per_request": _ratio(copied, requests),
        "bytes_zero_copy_per_request": _ratio(zero_copy, requests),
        "zero_copy_share": _ratio(zero_copy, zero_copy + copied),
        "cache_hit_rate": _ratio(_delta(old, new, "responses_from_cache"), requests),
        "replay_hit_rate": _ratio(_delta(old, new, "responses_replayed"), requests),
        "statuses_per_s": {key: count / window for key, count in classes.items()},
    }


def point(before: Reading, after: Reading) -> Point:
    """One point of the chart: the interval that ends at `after`."""
    found = rates(before, after)
    return (round(after.wall, 3), round(found["requests_per_s"], 2), _rounded(found["syscalls_per_request"]),
            _rounded(found["zero_copy_share"], 4), after.connections_open)


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def totals(reading: Reading) -> dict[str, Any]:
    ledger = reading.total
    classes = dict.fromkeys(STATUS_CLASSES, 0)
    for status, count in ledger.statuses.items():
        key = f"{status // 100}xx"
        if key in classes:
            classes[key] += count
    syscalls = ledger.syscalls()
    return {
        "requests": sum(ledger.statuses.values()),
        "statuses": classes,
        "syscalls": syscalls,
        "syscalls_total": sum(syscalls.values()),
        "bytes": {"zero_copy": ledger.bytes_zero_copy, "copied": ledger.bytes_copied,
                  "spliced": ledger.bytes_spliced, "encrypted": ledger.bytes_encrypted,
                  "received": ledger.bytes_received},
        "responses_from_cache": ledger.responses_from_cache,
        "responses_replayed": ledger.responses_replayed,
        "connections_open": reading.connections_open,
        "connections_accepted": ledger.connections_accepted,
        "tls": {"handshakes": ledger.tls_handshakes, "resumed": ledger.tls_resumed,
                "failures": ledger.tls_handshake_failures},
    }


def workers(snapshots: Sequence[Snapshot], now: Reading, reference: Reading | None,
            facts: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each worker's row: what its snapshot says, with its rates since `reference`."""
    generations = {w["pid"]: w["generation"] for w in facts.get("processes", ())} if facts else {}
    window = now.clock - reference.clock if reference is not None else 0.0
    rows = []
    for snapshot in serving(snapshots):
        name, pid = snapshot["worker"], int(snapshot["pid"])
        if name == "ended":
            continue
        requests, syscalls = now.workers[pid]
        row: dict[str, Any] = {
            "name": name, "pid": pid, "generation": generations.get(pid),
            "uptime": round(now.wall - float(snapshot["started"]), 1),
            "ready": bool(snapshot["ready"]), "draining": bool(snapshot["draining"]),
            "requests": requests, "connections_open": int(snapshot["connections_open"]),
            "syscalls": syscalls, "requests_per_s": None, "syscalls_per_request": None,
        }
        before = reference.workers.get(pid) if reference is not None else None
        if before is not None and window > 0:
            done = max(0, requests - before[0])
            row["requests_per_s"] = done / window
            row["syscalls_per_request"] = _ratio(max(0, syscalls - before[1]), done)
        rows.append(row)
    return rows


def document(snapshots: Sequence[Snapshot], now: Reading, reference: Reading | None, *,
             readiness: str, facts: dict[str, Any] | None, history: Sequence[Point],
             since: float) -> dict[str, Any]:
    """The whole of /status.json."""
    return {
        "version": 1,
        "time": round(now.wall, 3),
        "mode": "master" if facts is not None else "single",
        "readiness": readiness,
        "admin_counted": facts is None,
        "totals": totals(now),
        "rates": rates(reference, now) if reference is not None else None,
        "workers": workers(snapshots, now, reference, facts),
        "master": facts,
        "history": {"interval": HISTORY_INTERVAL, "span": HISTORY_SPAN, "fields": POINT_FIELDS,
                    "points": [p for p in history if p[0] > since]},
    }


def _since(query: bytes) -> float:
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "since":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


# -- the page -----------------------------------------------------------------------------------------


def _hash(source: str, tag: str) -> str:
    """The CSP source that allows the one inline <tag> element of `source`, by its SHA-256."""
    body = source.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return f"'sha256-{digest}'"


def _load_page() -> tuple[bytes, bytes]:
    """status.html and the Content-Security-Policy that allows it and nothing else."""
    source = resources.files("ring3.observe").joinpath("status.html").read_text("utf-8")
    policy = (f"default-src 'none'; script-src {_hash(source, 'script')}; "
              f"style-src {_hash(source, 'style')}; connect-src 'self'; img-src data:; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return source.encode(), policy.encode()


PAGE, POLICY = _load_page()
_COMMON = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer")]


# -- the state: the sampler and its history -------------------------------------------------------------


class StatusPage:
    """Answers /status and /status.json for one admin listener and keeps its history."""

    def __init__(self, gather: Gather, readiness: Callable[[], str], facts: Facts | None) -> None:
        self._gather = gather
        self._readiness = readiness
        self._facts = facts
        self._readings: deque[Reading] = deque(maxlen=3)  # the sampler's last readings
        self._points: deque[Point] = deque(maxlen=int(HISTORY_SPAN / HISTORY_INTERVAL))
        self._sampler: asyncio.Task[None] | None = None
        self._asked = 0.0
        self._closed = False

    async def respond(self, request: Request) -> Response:
        if request.path == b"/status":
            self._watched()
            return Response(status=200, headers=[(b"content-type", HTML_TYPE),
                                                 (b"content-security-policy", POLICY), *_COMMON],
                            body=PAGE)
        snapshots = await self._snapshots()
        loop = asyncio.get_running_loop()
        now = read(snapshots, loop.time(), time.time())
        if not self._readings or now.clock - self._readings[-1].clock > MAX_GAP:
            self._readings.clear()  # the first reading, or the first since the sampler stopped:
            self._readings.append(now)  # rates start with the next one
        self._watched()
        reference = next((r for r in reversed(self._readings) if now.clock - r.clock >= MIN_WINDOW), None)
        facts = self._facts() if self._facts is not None else None
        body = document(snapshots, now, reference, readiness=self._readiness(), facts=facts,
                        history=self._points, since=_since(request.query))
        return Response(status=200, headers=[(b"content-type", JSON_TYPE), *_COMMON],
                        body=json.dumps(body, separators=(",", ":")).encode())

    async def _snapshots(self) -> list[Snapshot]:
        found = self._gather()
        return await found if inspect.isawaitable(found) else found

    def _watched(self) -> None:
        """Someone asked: the sampler runs (again) if it was not running."""
        loop = asyncio.get_running_loop()
        self._asked = loop.time()
        if self._sampler is None and not self._closed:
            self._sampler = loop.create_task(self._sample())

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while loop.time() - self._asked < IDLE_STOP:
                await asyncio.sleep(HISTORY_INTERVAL)
                try:
                    snapshots = await self._snapshots()
                except Exception:
                    logger.exception("status page: a reading failed")
                    continue
                self.add(read(snapshots, loop.time(), time.time()))
        finally:
            self._sampler = None

    def add(self, reading: Reading) -> None:
        """Keep a reading of the sampler's, and the chart's point from the one before it."""
        if self._readings and reading.clock - self._readings[-1].clock <= MAX_GAP:
            self._points.append(point(self._readings[-1], reading))
        self._readings.append(reading)

    def close(self) -> None:
        """The admin listener stops: so does the sampler."""
        self._closed = True
        if self._sampler is not None:
            self._sampler.cancel()
