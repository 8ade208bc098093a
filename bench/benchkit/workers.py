"""The workers scenarios: ring3 and nginx with one and with two worker processes, and how the two workers
share the load.

- `workers-1k-c64`: `ring3` (one process, no master: today's server), `ring3-w2` (`--workers 2`: a master
  that binds the listener and two worker processes accepting on it), `nginx` (worker_processes 1) and
  `nginx-w2` (worker_processes 2), the 1 KiB file at 64 keep-alive connections.
- `reload-latency` (benchkit.reloads): ring3-w2 and nginx-w2 while their master gets SIGHUP once a
  second.

This machine has two CPUs and the load generator needs one. The 1-worker servers have CPU 1 to themselves
as everywhere in the bench; the 2-worker servers are pinned to CPUs 0 and 1, so one of their workers
competes with wrk on CPU 0: their figures show what two workers cost and how evenly they share the load
here, not how a server scales. CPU per request is the whole process tree's (master and workers), as
everywhere.

The balance, for each 2-worker server, over the warm-up and the rate runs: the CPU time each worker
process spent (utime+stime from /proc, the master's apart), and for ring3-w2 the requests each worker
answered (`ring3_worker_requests_total{worker="N"}` on its admin listener's /metrics). nginx counts no
requests per worker without an access log, which would change its cost: its CPU split stands in.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchkit import syscalls
from benchkit.figures import Record, num
from benchkit.procs import children, own_cpu_seconds
from benchkit.scenarios import NGINX_W2, RING3_W2
from benchkit.servers import (
    LOAD_CPU,
    NGINX,
    RING3,
    SERVER_CPU,
    Server,
    ServerSpec,
    nginx_argv,
    ring3_files_argv,
)

WORKERS = 2
BOTH_CPUS = f"{LOAD_CPU},{SERVER_CPU}"
WORKER_REQUESTS = "ring3_worker_requests_total"

RING3_2 = ServerSpec(RING3_W2, ring3_files_argv("--workers", str(WORKERS)), has_ledger=True,
                     workers=WORKERS, cpus=BOTH_CPUS)
NGINX_2 = ServerSpec(NGINX_W2, nginx_argv(nopush=True, workers=WORKERS), peer="native", workers=WORKERS,
                     cpus=BOTH_CPUS)
LINEUPS: dict[str, tuple[ServerSpec, ...]] = {
    "workers-1k-c64": (RING3, RING3_2, NGINX, NGINX_2),
    "reload-latency": (RING3_2, NGINX_2),
}


def worker_requests(values: dict[str, float]) -> dict[str, float]:
    """Each numbered worker's responses from a /metrics scrape (the master's and ended workers' left out)."""
    found = {}
    for key, value in values.items():
        name, _, labels = key.partition("{")
        worker = labels.removeprefix('worker="').removesuffix('"}')
        if name == WORKER_REQUESTS and worker.isdigit():
            found[worker] = value
    return found


@dataclass(frozen=True)
class Window:
    """What a 2-worker server had spent (and, for ring3, answered per worker) when a window opened."""

    master_cpu: float
    worker_cpu: dict[int, float]
    requests: dict[str, float] | None


def _cpu_now(server: Server) -> tuple[float, dict[int, float]]:
    workers = {pid: cpu for pid in children(server.pid) if (cpu := own_cpu_seconds(pid)) is not None}
    return own_cpu_seconds(server.pid) or 0.0, workers


def _requests_now(server: Server) -> dict[str, float] | None:
    admin = server.launch.admin_port
    if admin is None:
        return None
    try:
        return worker_requests(syscalls.scrape(admin))
    except OSError:
        return None


def balance_start(running: list[Server]) -> dict[str, Window]:
    """A window opened on every server with more than one worker."""
    found = {}
    for server in running:
        if server.spec.workers > 1:
            master, workers = _cpu_now(server)
            found[server.spec.name] = Window(master, workers, _requests_now(server))
    return found


def _shares(values: list[float]) -> list[float]:
    total = sum(values)
    return [value / total if total else 0.0 for value in values]


def balance(server: Server, window: Window) -> Record:
    """The window's CPU split between the worker processes (a worker started meanwhile counts from 0),
    the master's share of the tree's CPU, and ring3's requests per worker."""
    master, workers = _cpu_now(server)
    spent = sorted((cpu - window.worker_cpu.get(pid, 0.0) for pid, cpu in workers.items()), reverse=True)
    master_spent = master - window.master_cpu
    record: Record = {"workers": server.spec.workers, "worker_processes": len(workers),
                      "worker_cpu_s": spent, "worker_cpu_shares": _shares(spent),
                      "master_cpu_s": master_spent,
                      "master_cpu_share": master_spent / (master_spent + sum(spent)) if spent else None,
                      "requests": None, "request_shares": None}
    after = _requests_now(server)
    if window.requests is not None and after is not None:
        answered = {name: after[name] - window.requests.get(name, 0.0) for name in sorted(after)}
        record["requests"] = answered
        record["request_shares"] = dict(zip(answered, _shares(list(answered.values())), strict=True))
    return record


def add_balance(results: dict[str, Record], running: list[Server], started: dict[str, Window]) -> None:
    """Each 2-worker server's balance (over the window opened by balance_start) into its record."""
    for server in running:
        window = started.get(server.spec.name)
        if window is not None and server.spec.name in results:
            results[server.spec.name]["balance"] = balance(server, window)


NOTE = ("Workers scenarios: `ring3` is one process (no master), `ring3-w2` runs `--workers 2` (a master "
        "holding the listener, 2 worker processes accepting on it), `nginx` and `nginx-w2` run "
        "worker_processes 1 and 2. The 1-worker servers are pinned to CPU {server}; **the 2-worker ones to "
        "CPUs {both}, so one of their workers shares CPU {load} with the load generator**: on this machine "
        "their figures show what two workers cost and how evenly they share the load, not scaling. CPU per "
        "request is the whole process tree's (master and workers). The balance is measured over the "
        "warm-up and the rate runs: requests per worker from ring3's /metrics "
        "(`ring3_worker_requests_total`); nginx counts none per worker without an access log, so its "
        "workers' CPU split stands in.")


def _split(values: list[float]) -> str:
    return " / ".join(f"{value:.0%}" for value in values) or "n/a"


def balance_table(report: Record) -> list[str]:
    """The 2-worker servers' balance in each scenario that measured one, under the workers note."""
    rows = []
    workers = False
    for scenario in report["scenarios"]:
        workers = workers or bool(scenario.get("workers"))
        for name, record in scenario["results"].items():
            found = record.get("balance")
            if not found:
                continue
            answered = found.get("requests")
            shares = found.get("request_shares") or {}
            requests = ("not counted" if answered is None else
                        ", ".join(f"worker {w}: {num(n)} ({shares[w]:.0%})" for w, n in answered.items()))
            master = found.get("master_cpu_share")
            rows.append(f"| {scenario['title']} | {name} | {requests} | {_split(found['worker_cpu_shares'])} "
                        f"({found['worker_processes']} processes) | "
                        f"{'n/a' if master is None else f'{master:.1%}'} |")
    if not workers:
        return []
    lines = [NOTE.format(server=SERVER_CPU, both=BOTH_CPUS, load=LOAD_CPU)]
    if rows:
        lines += ["", "| scenario | server | requests per worker (share) | workers' CPU split | "
                  "master's share of the CPU |", "|" + "---|" * 5, *rows]
    return lines
