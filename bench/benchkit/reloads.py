"""The reload-latency scenario: ring3-w2 (`--workers 2 --admin ...`) and nginx-w2 (worker_processes 2)
serve the 1 KiB file to wrk while the bench sends their master SIGHUP once a second, against the same
servers without reloads, in the same run.

Per server, repetition and connection mode (keep-alive, and `Connection: close`: a new connection per
request), a quiet wrk run, then a reloading one of the same length (RELOAD_S, QUICK_RELOAD_S with --quick):
during it SIGHUP goes to the master at 1 s, 2 s, ... before the run's end (ring3 starts new workers and
drains the old ones once they are ready; nginx's is `nginx -s reload`). The bench does not wait for a
reload to complete before the next SIGHUP (ring3 folds a SIGHUP that comes during a reload into one more
reload after it). After each run it waits for the server to settle (its workers back to 2, ring3's none
starting nor draining; bounded by SETTLE_TIMEOUT_S), then counts the reloads completed: the gain of
ring3's `ring3_generation` on /metrics. nginx publishes no such count: the worker processes that appeared
(sampled just before each SIGHUP and after the run) stand in for both.

wrk's latency (p50, p99, max) and its errors by kind (connect, read, write, timeout, non-2xx) are
reported per run kind. ring3's goal: zero errors during reloads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from benchkit import syscalls
from benchkit.figures import Record, num, stat
from benchkit.load import SLACK_S, WRK_DIR
from benchkit.procs import children
from benchkit.scenarios import RELOAD, RELOAD_ERRORS, Scenario
from benchkit.servers import LOAD_CPU, Server, pinned

RELOAD_S = 10  # seconds per wrk run in a full run
QUICK_RELOAD_S = 3  # with --quick: two SIGHUPs per reloading run
HUP_INTERVAL_S = 1.0
SETTLE_TIMEOUT_S = 30.0  # after a run, how long the old workers may take to go
SETTLE_POLL_S = 0.25
WRK_TIMEOUT = "10s"  # a response later than this is a wrk timeout
MODES: dict[str, tuple[str, ...]] = {"keep-alive": (), "close": ("-H", "Connection: close")}
PHASES = ("quiet", "reload")
ERRORS = {"connect": "connect_errors", "read": "read_errors", "write": "write_errors",
          "timeout": "timeouts", "non-2xx": "status_errors"}


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def wrk_argv(url: str, connections: int, seconds: int, mode: str) -> list[str]:
    return pinned(LOAD_CPU, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout",
                             WRK_TIMEOUT, "-s", str(WRK_DIR / "summary.lua"), *MODES[mode], url])


def ring3_state(server: Server) -> dict[str, float] | None:
    """ring3's generation, reloads by result and workers by state from /metrics (None for nginx)."""
    admin = server.launch.admin_port
    if admin is None:
        return None
    values = syscalls.scrape(admin)
    return {key: value for key, value in values.items()
            if key.startswith(("ring3_generation", "ring3_reloads_total", "ring3_workers{"))}


View = tuple[tuple[int, ...], tuple[tuple[str, float], ...]]


def _settled_view(server: Server) -> View:
    """What must hold still for a server to have settled: its worker processes (and ring3's states)."""
    return tuple(sorted(children(server.pid))), tuple(sorted((ring3_state(server) or {}).items()))


def _is_settled(server: Server, view: View) -> bool:
    workers, state = view
    states = dict(state)
    busy = [states.get(f'ring3_workers{{state="{state}"}}', 0.0) for state in ("starting", "draining")]
    return len(workers) == server.spec.workers and not any(busy)


def settle(server: Server) -> float:
    """Seconds until the server's workers are back to its count (ring3's none starting or draining) in
    two polls in a row; RuntimeError past SETTLE_TIMEOUT_S."""
    started = time.monotonic()
    last: View | None = None
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited ({server.process.returncode})")
        view = _settled_view(server)
        if view == last and _is_settled(server, view):
            return time.monotonic() - started
        last = view
        time.sleep(SETTLE_POLL_S)
    raise RuntimeError(f"{server.spec.name} did not settle in {SETTLE_TIMEOUT_S:.0f} s: {last}")


def _wrk_totals(stdout: str, stderr: str, returncode: int) -> Record:
    match = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.M)
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({returncode}): {stdout[-1500:]} {stderr[-1500:]}")
    data: Record = json.loads(match.group(1))
    return data


def one_run(server: Server, url: str, connections: int, seconds: int, mode: str, reloading: bool) -> Record:
    """One wrk run of `seconds`; while `reloading`, SIGHUP to the master every HUP_INTERVAL_S."""
    before = ring3_state(server)
    first = set(children(server.pid))
    seen = set(first)
    hups = 0
    wrk = subprocess.Popen(wrk_argv(url, connections, seconds, mode), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        for tick in range(1, seconds) if reloading else ():
            try:
                wrk.wait(max(0.0, started + tick * HUP_INTERVAL_S - time.monotonic()))
                break  # wrk ended early: no more reloads
            except subprocess.TimeoutExpired:
                pass
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.spec.name} exited ({server.process.returncode})")
            seen.update(children(server.pid))
            os.kill(server.pid, signal.SIGHUP)
            hups += 1
        stdout, stderr = wrk.communicate(timeout=seconds + SLACK_S)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.communicate()
    data = _wrk_totals(stdout, stderr, wrk.returncode)
    settled = settle(server)
    seen.update(children(server.pid))
    after = ring3_state(server)
    record: Record = {
        "requests": data["requests"], "duration_s": data["duration_us"] / 1e6,
        "requests_per_s": data["requests"] / max(data["duration_us"] / 1e6, 1e-6),
        "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000, "max_ms": data["max_us"] / 1000,
        "errors": {kind: data[key] for kind, key in ERRORS.items()}, "hups": hups,
        "new_workers": len(seen - first), "settle_s": round(settled, 2),
        "reloads_completed": None, "reloads_not_done": None,
    }
    if before is not None and after is not None:
        gain = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
        record["reloads_completed"] = int(gain.get("ring3_generation", 0))
        record["reloads_not_done"] = int(gain.get('ring3_reloads_total{result="refused"}', 0)
                                         + gain.get('ring3_reloads_total{result="failed"}', 0))
    return record


def _total(samples: list[Record], key: str) -> int | None:
    values = [sample[key] for sample in samples if sample[key] is not None]
    return sum(values) if values else None


def aggregate(samples: list[Record]) -> Record:
    """One run kind's repetitions: medians of the rates and percentiles, the worst max, summed counts."""
    return {
        "repetitions": len(samples), "requests": sum(s["requests"] for s in samples),
        "requests_per_s": stat([s["requests_per_s"] for s in samples]),
        "p50_ms": stat([s["p50_ms"] for s in samples]), "p99_ms": stat([s["p99_ms"] for s in samples]),
        "max_ms": max((s["max_ms"] for s in samples), default=None),
        "errors": {kind: sum(s["errors"][kind] for s in samples) for kind in ERRORS},
        "hups": sum(s["hups"] for s in samples), "new_workers": sum(s["new_workers"] for s in samples),
        "reloads_completed": _total(samples, "reloads_completed"),
        "reloads_not_done": _total(samples, "reloads_not_done"),
        "settle_s": max((s["settle_s"] for s in samples), default=None), "samples": samples,
    }


Runs = dict[str, dict[str, list[Record]]]  # mode -> phase -> each repetition's run


def _round(server: Server, scenario: Scenario, seconds: int, into: Runs) -> None:
    """One repetition on one server: per mode, a quiet run, then a reloading one."""
    url = server.url(scenario.file)
    for mode in MODES:
        for phase in PHASES:
            into[mode][phase].append(one_run(server, url, scenario.connections, seconds, mode,
                                             phase == "reload"))


def measure(running: list[Server], scenario: Scenario, quick: bool, repetitions: int) -> dict[str, Record]:
    """Every server's runs, repetitions interleaved across servers; a server that fails leaves the rest
    of the scenario with its error (and the figures it had)."""
    seconds = QUICK_RELOAD_S if quick else RELOAD_S
    runs: dict[str, Runs] = {s.spec.name: {mode: {phase: [] for phase in PHASES} for mode in MODES}
                             for s in running}
    errors: dict[str, str] = {}
    for rep in range(repetitions):
        for server in running:
            if server.spec.name in errors:
                continue
            try:
                _round(server, scenario, seconds, runs[server.spec.name])
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
                errors[server.spec.name] = str(exc)
        log(f"  {scenario.name} repetition {rep + 1}/{repetitions} done")
    results = {}
    for server in running:
        name = server.spec.name
        found = {mode: {phase: aggregate(samples) for phase, samples in phases.items() if samples}
                 for mode, phases in runs[name].items()}
        reloaded = {mode: sum(run["errors"].values()) for mode, phases in found.items()
                    if (run := phases.get("reload"))}
        results[name] = {"peer": server.spec.peer, "error": errors.get(name), "seconds": seconds,
                         "hup_interval_s": HUP_INTERVAL_S, "runs": found,
                         RELOAD_ERRORS: {**reloaded, "all": sum(reloaded.values())} if reloaded else None}
    return results


NOTE = ("Reload latency: ring3-w2 (`--workers 2`) and nginx-w2 (worker_processes 2), pinned to CPUs 0,1 "
        "(wrk on CPU 0 too), serve the 1 KiB file to wrk (64 connections, `--latency`, `--timeout "
        f"{WRK_TIMEOUT}`) for {{seconds}} s per run, kept alive or with `Connection: close` (a new "
        "connection per request). In the reload runs the bench sends the master SIGHUP every "
        f"{HUP_INTERVAL_S:.0f} s without waiting for a reload to end (nginx's is `nginx -s reload`); the "
        "quiet runs have none; both interleaved on the same servers. Reloads completed: the gain of ring3's "
        "`ring3_generation` on /metrics, read once the old workers have gone; nginx counts none: the new "
        "worker processes seen (sampled before each SIGHUP and after the run, 2 per reload) stand in. "
        "Latency: medians over the repetitions (max: the worst); errors (wrk's, summed): connect / read / "
        "write / timeout / non-2xx. With keep-alive wrk counts a read error each time the server closes a "
        "connection it keeps alive, whether its next request was already written or not (it then opens "
        "another): a draining worker, ring3's or nginx's, closes each of its idle ones, so up to one per "
        "connection and reload; with `Connection: close` no connection outlives its response.")


def _cell(value: Record | None, digits: int = 1) -> str:
    if not value:
        return "n/a"
    return f"{num(value['median'], digits)} ({num(value['min'], digits)}..{num(value['max'], digits)})"


def reload_table(report: Record) -> list[str]:
    """Latency and errors with and without reloads, per connection mode and server."""
    lines: list[str] = []
    for scenario in report["scenarios"]:
        if scenario.get("kind") != RELOAD:
            continue
        seconds = next((r["seconds"] for r in scenario["results"].values() if "seconds" in r), "?")
        lines += [NOTE.format(seconds=seconds), "",
                  "| connections | server | run | requests/s median (min..max) | p50 ms | p99 ms | max ms | "
                  "errors c / r / w / t / non-2xx | SIGHUPs | reloads completed | new workers |",
                  "|" + "---|" * 11]
        for name, record in scenario["results"].items():
            if record.get("error"):
                reason = " ".join(record["error"].split())[:100].replace("|", "/")
                lines.append(f"| | {name} | failed: {reason} |" + " |" * 8)
            for mode, phases in (record.get("runs") or {}).items():
                for phase, run in phases.items():
                    errors = " / ".join(str(run["errors"][kind]) for kind in ERRORS)
                    if phase == "reload" and any(run["errors"].values()):
                        errors = f"**{errors}**"
                    done = run["reloads_completed"]
                    lines.append(f"| {mode} | {name} | {phase} | {_cell(run['requests_per_s'], 0)} | "
                                 f"{_cell(run['p50_ms'], 2)} | {_cell(run['p99_ms'], 2)} | "
                                 f"{num(run['max_ms'], 1)} | {errors} | {run['hups']} | "
                                 f"{'n/a' if done is None else done} | {run['new_workers']} |")
    return lines
