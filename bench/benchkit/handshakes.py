"""Server-side counts of TLS handshakes, full and resumed, in the handshake scenarios: ring3's /metrics
(ring3_tls_handshakes_total), nginx's handshake log (how each request's connection began).

They are set beside what the load tool counted over the same window: one handshake per request, all
full (the servers issue no tickets) or all resumed but the first of each of the tool's connections.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from benchkit import servers, syscalls
from benchkit.figures import Record
from benchkit.scenarios import FULL
from benchkit.servers import Server

RING3_METRIC = 'ring3_tls_handshakes_total{{kind="{kind}"}}'
NGINX_LINE = re.compile(r"^(r|\.) (\d+)$")  # tls.NGINX_LOG_FORMAT: "r" resumed, "." full


@dataclass(frozen=True)
class Counts:
    """Handshakes a server completed so far (nginx: those of connections that brought a request)."""

    full: int
    resumed: int
    kept: int = 0  # requests that came on a connection after its first (nginx's log; 0 when unknown)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.full - other.full, self.resumed - other.resumed, self.kept - other.kept)


def nginx_counts(log: Path) -> Counts:
    full = resumed = kept = 0
    text = log.read_text() if log.exists() else ""
    for match in map(NGINX_LINE.match, text.splitlines()):
        if match is None:
            continue
        if match.group(2) != "1":
            kept += 1
        elif match.group(1) == "r":
            resumed += 1
        else:
            full += 1
    return Counts(full, resumed, kept)


def ring3_counts(metrics: dict[str, float]) -> Counts:
    return Counts(*(int(metrics.get(RING3_METRIC.format(kind=kind), 0)) for kind in ("full", "resumed")))


def counts(server: Server, metrics: dict[str, float] | None = None) -> Counts | None:
    """The server's count now (ring3: from `metrics` when already scraped), or None where the server
    offers none."""
    if server.spec.family == "ring3" and server.launch.admin_port is not None:
        return ring3_counts(metrics if metrics is not None else syscalls.scrape(server.launch.admin_port))
    if server.spec.family == "nginx":
        time.sleep(servers.NGINX_FLUSH_S)  # the log is buffered
        return nginx_counts(servers.handshake_log(server.launch))
    return None


def window(before: Counts, after: Counts, requests: int, mode: str, slack: int) -> Record:
    """The handshakes of a window against the `requests` the load tool counted in it. `slack`: the
    handshakes the tool may have cut short of a counted response (its connections, once per run) and the
    full handshakes a resuming tool makes (its first on each connection)."""
    done = after - before
    total = done.full + done.resumed
    one_each = requests > 0 and done.kept == 0 and requests <= total <= requests + slack
    kind_ok = done.resumed == 0 if mode == FULL else done.resumed > 0 and done.full <= slack
    return {"requests": requests, "full": done.full, "resumed": done.resumed, "kept": done.kept,
            "handshakes_per_request": total / requests if requests else None, "slack": slack,
            "agree": bool(one_each and kind_ok)}
