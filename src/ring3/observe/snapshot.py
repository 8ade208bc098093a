"""One worker's counters as plain data: what a worker hands the master for /metrics and the status page,
and how the master adds them up.

A snapshot is a JSON-ready dict: {"worker", "pid", "started", "ready", "draining", "connections_open",
"ledger" (Ledger.snapshot(), statuses keyed by text), "upstreams" (metrics.UpstreamRow lists)}. Taking
one reads the counters at that moment; nothing is kept or counted per request for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

from ring3.observe.ledger import LEDGER, Ledger
from ring3.observe.metrics import UpstreamRow, running_proxies, upstream_rows

Snapshot = dict[str, Any]
COUNTERS = tuple(f.name for f in dataclasses.fields(Ledger) if f.name != "statuses")


def take(worker: str, started: float, *, ready: bool, draining: bool, connections_open: int) -> Snapshot:
    """This process's snapshot, under the name `worker` ("1", "2", ..., or "master")."""
    proxies = running_proxies()
    now = asyncio.get_running_loop().time() if proxies else 0.0
    snapshot = of_ledger(LEDGER, worker)
    snapshot.update(pid=os.getpid(), started=started, ready=ready, draining=draining,
                    connections_open=connections_open, upstreams=upstream_rows(proxies, now))
    return snapshot


def ledger_of(snapshot: Snapshot) -> Ledger:
    """The Ledger a snapshot holds (unknown counters, from another version of ring3, are left out)."""
    counts = snapshot["ledger"]
    ledger = Ledger()
    for name in COUNTERS:
        setattr(ledger, name, int(counts.get(name, 0)))
    ledger.statuses = {int(status): int(count) for status, count in counts.get("statuses", {}).items()}
    return ledger


def summed(snapshots: Sequence[Snapshot]) -> Ledger:
    """All the workers' ledgers added up: the cost ledger of the whole server."""
    total = Ledger()
    for snapshot in snapshots:
        ledger = ledger_of(snapshot)
        for name in COUNTERS:
            setattr(total, name, getattr(total, name) + getattr(ledger, name))
        for status, count in ledger.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + count
    return total


def upstreams_of(snapshots: Sequence[Snapshot]) -> list[tuple[str, UpstreamRow]]:
    """Every worker's upstream rows, named by their worker when there are several."""
    several = len(snapshots) > 1
    return [(snapshot["worker"] if several else "", tuple(row))
            for snapshot in snapshots for row in snapshot.get("upstreams", ())]


def of_ledger(ledger: Ledger, worker: str) -> Snapshot:
    """A snapshot that holds only counters (those of workers that have ended, added up)."""
    counts: dict[str, Any] = {name: getattr(ledger, name) for name in COUNTERS}
    counts["statuses"] = {str(status): count for status, count in ledger.statuses.items()}
    return {"worker": worker, "pid": 0, "started": 0.0, "ready": False, "draining": False,
            "connections_open": 0, "ledger": counts, "upstreams": [], "time": time.time()}
