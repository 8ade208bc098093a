"""ring3's benchmark against nginx, granian, uvicorn and gunicorn (and HAProxy as a reverse proxy):
`python3 bench/run.py` (or `--quick`: ring3 alone).

Installs what it needs (wrk, h2load, strace, nginx, gcc, openssl, haproxy from apt; the Python peers and
matplotlib in bench/.venv), runs every scenario (static files, then applications hosted over ASGI, WSGI and
WebSocket, then TLS, HTTP/2, virtual hosts, compression, the reverse proxy and worker processes) with
interleaved repetitions, counts syscalls per request with strace (and, for ring3, with its own ledger), and
writes Markdown, JSON and a chart under bench/results/. With --baseline PATH, ring3 is also run from another
checkout (ring3-base) beside every ring3.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from benchkit import baseline, figures, handshakes, idle, lineups, load, report, servers, syscalls, tls, tools
from benchkit.pages import add_encoding, await_encoded, make_pages
from benchkit.procs import cpu_seconds, peak_rss_kib, rss_kib
from benchkit.proxy import add_body_check, servers_running
from benchkit.reloads import measure as measure_reloads
from benchkit.scenarios import GROUPS, IDLE, SCENARIOS, STATIC, WEBSOCKET, Scenario, chosen, make_site
from benchkit.servers import Server, ServerSpec
from benchkit.sites import make_sites
from benchkit.workers import add_balance, balance_start

import ring3
from ring3 import compiled

REPO = tools.BENCH_DIR.parent
RESULTS = tools.BENCH_DIR / "results"
QUICK_RESULTS = RESULTS / "tmp"
PROBE_FILE = "1k.bin"
STRACE_TIMEOUT = 180  # seconds for the fixed request count under strace (Python peers slow down most)
QUICK_IDLE = 500  # idle connections held with --quick (a full run holds the scenario's count)
IDLE_TIMEOUT = 60.0  # seconds allowed to open and answer them all
IDLE_SETTLE = 0.5  # seconds between the last response and reading the server's memory
Record = figures.Record


@dataclass(frozen=True)
class Settings:
    quick: bool
    duration_s: int
    repetitions: int
    warmup_s: int
    strace_scale: float
    wanted: frozenset[str] | None  # --servers: names or families (granian picks granian-rsgi too)
    scenarios: tuple[Scenario, ...]
    skipped: dict[str, str]  # scenario -> why ring3 cannot run it here (--quick leaves it out)
    with_admin: bool
    out: Path
    baseline: baseline.Baseline | None  # --baseline: ring3-base beside every ring3
    pure: bool  # --pure: ring3-pure (RING3_PURE=1) beside every ring3

    def specs_for(self, scenario: Scenario) -> list[ServerSpec]:
        """The scenario's servers: ring3's alone with --quick (ring3-static and ring3-base too), those
        named with --servers."""
        specs = list(lineups.lineup(scenario))
        if self.baseline is not None:
            specs = self.baseline.beside(specs)
        if self.pure:
            specs = baseline.with_pure(specs)
        if self.wanted is not None:
            return [spec for spec in specs if spec.name in self.wanted or spec.family in self.wanted]
        return [spec for spec in specs if not self.quick or spec.family == "ring3"]

    def all_specs(self) -> list[ServerSpec]:
        return list({spec.name: spec for s in self.scenarios for spec in self.specs_for(s)}.values())

    def strace_requests(self, scenario: Scenario, spec: ServerSpec) -> int:
        scaled = round(scenario.strace_requests * self.strace_scale * spec.strace_share)
        return max(scenario.connections * scenario.in_flight, scaled)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="ring3 only, about a second per scenario, no installs (a smoke test)")
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results, "
                        "bench/results/tmp with --quick)")
    parser.add_argument("--duration", type=int, help="seconds per run (default 5, 1 with --quick)")
    parser.add_argument("--repetitions", type=int, help="interleaved repetitions (default 3, 1 with --quick)")
    parser.add_argument("--servers", help="comma-separated subset of ring3,nginx,granian,uvicorn,gunicorn,"
                        "hypercorn,haproxy (a name picks its variants too: granian-rsgi, uvicorn-wsproto, "
                        "ring3-static, ring3-base, nginx-proxy, ...)")
    parser.add_argument("--scenario", action="append", choices=[*GROUPS, *(s.name for s in SCENARIOS)],
                        help="run only this scenario (repeatable; 'tls': the HTTP/1.1 ones over TLS, "
                        "'h2': the HTTP/2 ones, 'sites': the virtual hosts' ones, 'compress': the "
                        "compressed answers' ones, 'proxy': the reverse proxy's, 'workers': 1 and 2 worker "
                        "processes and reloads)")
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="another ring3 checkout (a git worktree): every scenario that runs ring3 also "
                        "runs ring3-base, the same command with PATH/src first on PYTHONPATH")
    parser.add_argument("--pure", action="store_true",
                        help="every scenario that runs ring3 also runs ring3-pure, the same command with "
                        "RING3_PURE=1 (its .py files, not the compiled modules)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    wanted = frozenset(args.servers.split(",")) if args.servers else None
    names = set(args.scenario or ())
    scenarios = tuple(s for s in SCENARIOS if not names or chosen(s, names))
    skipped: dict[str, str] = {}
    if args.quick:  # a full run installs a C compiler; ring3 without an interface fails in its row
        skipped = {s.name: reason for s in scenarios if (reason := lineups.missing_for(s)) is not None}
        scenarios = tuple(s for s in scenarios if s.name not in skipped)
    return Settings(
        quick=args.quick, duration_s=args.duration or (1 if args.quick else 5),
        repetitions=args.repetitions or (1 if args.quick else 3), warmup_s=0 if args.quick else 1,
        strace_scale=0.1 if args.quick else 1.0, wanted=wanted, scenarios=scenarios, skipped=skipped,
        with_admin=servers.ring3_has_admin(), out=args.out or (QUICK_RESULTS if args.quick else RESULTS),
        baseline=baseline.load(args.baseline) if args.baseline else None, pure=args.pure)


def prepare(settings: Settings, work: Path) -> None:
    """Tools and peers (none with --quick), then the WebSocket load generator, built into `work`, and the
    TLS certificate, made there."""
    peers = any(spec.family != "ring3" for spec in settings.all_specs())
    websocket = any(s.kind == WEBSOCKET for s in settings.scenarios)
    with_tls = any(s.tls for s in settings.scenarios)
    with_upstream = any(s.proxy for s in settings.scenarios)  # --quick without nginx: ring3 is the upstream
    with_haproxy = any(spec.family == "haproxy" for spec in settings.all_specs())
    if settings.quick and not peers:
        tools.require_load_tools()
    else:
        tools.ensure_system_tools(with_peers=peers, with_websocket=websocket, with_tls=with_tls,
                                  with_upstream=with_upstream, with_haproxy=with_haproxy)
        tools.ensure_venv()
    if websocket:
        load.build_wsload(work)
    if with_tls:
        tls.make_certificate(work, servers.HOST)


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def measure_once(server: Server, scenario: Scenario, seconds: int) -> tuple[load.WrkResult, float]:
    """One rate run (wrk, or wsload) and the server's CPU time per request (message) during it (µs)."""
    before = cpu_seconds(server.pid)
    result = load.run_rate(server.url(scenario.file), scenario, seconds, server.spec.host, server.targets)
    spent = cpu_seconds(server.pid) - before
    if result.requests == 0:  # a stalled server is a failure, not a rate of 0
        raise RuntimeError(f"no {scenario.unit} answered in {seconds} s ({spent:.2f} s of server CPU)")
    return result, spent / result.requests * 1e6


def check_status(server: Server, scenario: Scenario) -> None:
    """One request answered with the expected status (WebSocket: one echo on every connection)."""
    count = scenario.connections if scenario.kind == WEBSOCKET else scenario.pipeline
    result = load.run_count(server.url(scenario.file), scenario, count, timeout=30, host=server.spec.host)
    wanted = f"{scenario.expect_status // 100}xx"
    if result.status.get(wanted, 0) != result.requests or result.requests == 0:
        raise RuntimeError(f"{server.spec.name}: expected {scenario.expect_status}, got {result.status}")


def measure_rates(running: list[Server], scenario: Scenario, settings: Settings) -> dict[str, Record]:
    """Warm-up, then repetitions interleaved across servers (A B C A B C ...)."""
    runs: dict[str, list[tuple[load.WrkResult, float]]] = {s.spec.name: [] for s in running}
    errors: dict[str, str] = {}
    for server in running if settings.warmup_s else []:
        try:
            load.run_rate(server.url(scenario.file), scenario, settings.warmup_s, server.spec.host,
                          server.targets)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            errors[server.spec.name] = f"warm-up: {exc}"
    before = handshake_counts(running, scenario)
    for rep in range(settings.repetitions):
        for server in running:
            try:
                runs[server.spec.name].append(measure_once(server, scenario, settings.duration_s))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors[server.spec.name] = str(exc)
        log(f"  {scenario.name} repetition {rep + 1}/{settings.repetitions} done")
    records = {name: rate_record(samples, errors.get(name), scenario) for name, samples in runs.items()}
    after = handshake_counts(running, scenario)
    for name, first in before.items():
        requests = sum(result.requests for result, _ in runs[name])
        slack = scenario.connections * settings.repetitions  # per wrk run: its first (or cut) handshakes
        add_handshakes(records[name], "rates", handshakes.window(first, after[name], requests,
                                                                 scenario.handshake, slack))
    return records


def handshake_counts(running: list[Server], scenario: Scenario) -> dict[str, handshakes.Counts]:
    """Each server's TLS handshakes so far, in the handshake scenarios (none elsewhere)."""
    found = {s.spec.name: handshakes.counts(s) for s in running} if scenario.handshake else {}
    return {name: count for name, count in found.items() if count is not None}


def add_handshakes(record: Record, window: str, counted: Record) -> None:
    """A window's handshakes beside its requests; a server that does not do one handshake of the
    scenario's kind per request gets an error (its CPU per request is not per handshake)."""
    record.setdefault("handshakes", {})[window] = counted
    if not counted["agree"] and not record.get("error"):
        record["error"] = (f"handshake check ({window}): {counted['full']} full and {counted['resumed']} "
                           f"resumed handshakes for {counted['requests']} requests")


def rate_record(samples: list[tuple[load.WrkResult, float]], error: str | None,
                scenario: Scenario) -> Record:
    wrk = [result for result, _ in samples]
    unexpected = sum(r.requests - r.non_2xx_3xx if scenario.expect_status >= 400 else r.non_2xx_3xx
                     for r in wrk)
    return {
        "requests_per_s": figures.stat([r.requests_per_s for r in wrk]),
        "mb_per_s": figures.stat([r.mb_per_s for r in wrk]),
        "cpu_us_per_request": figures.stat([cpu for _, cpu in samples]),
        "p50_ms": figures.stat([r.p50_ms for r in wrk if r.p50_ms is not None]),
        "p99_ms": figures.stat([r.p99_ms for r in wrk if r.p99_ms is not None]),
        "bytes_per_request": figures.stat([r.bytes / r.requests for r in wrk if r.requests]),
        "load_cpu_share": figures.stat([r.load_cpu_share for r in wrk if r.load_cpu_share is not None]),
        "socket_errors": sum(r.socket_errors for r in wrk),
        "unexpected_status": unexpected,
        "error": error,
    }


def count_syscalls(server: Server, scenario: Scenario, settings: Settings, work: Path) -> Record:
    """strace -f -c attached while h2load sends a fixed number of requests (wsload: messages); ring3's
    ledger beside it."""
    requests = settings.strace_requests(scenario, server.spec)
    admin = server.launch.admin_port
    before = syscalls.scrape(admin) if admin else None
    shakes_before = handshakes.counts(server, before) if scenario.handshake else None
    out_file = work / f"strace-{server.spec.name}-{scenario.name}.txt"
    started = time.monotonic()
    with syscalls.strace_attached(server.pid, out_file):
        result = load.run_count(server.url(scenario.file), scenario, requests, timeout=STRACE_TIMEOUT,
                                host=server.spec.host)
    elapsed = time.monotonic() - started
    after = syscalls.scrape(admin) if admin else None
    shakes_after = handshakes.counts(server, after) if scenario.handshake else None
    done = max(result.requests, 1)
    calls = syscalls.parse_strace_summary(out_file.read_text())
    record: Record = {
        "requests": result.requests, "status": result.status, "seconds_under_strace": round(elapsed, 1),
        "per_request": {name: count / done for name, count in sorted(calls.items(), key=lambda i: -i[1])},
        "total_per_request": sum(calls.values()) / done,
    }
    ledger = ledger_record(calls, before, after, done) if before is not None and after is not None else None
    found: Record = {"syscalls": record, "ledger": ledger}
    if shakes_before is not None and shakes_after is not None:  # h2load: its first on each connection
        found["strace_handshakes"] = handshakes.window(shakes_before, shakes_after, result.succeeded,
                                                       scenario.handshake, scenario.connections)
    return found


def ledger_record(calls: dict[str, int], before: dict[str, float], after: dict[str, float],
                  done: int) -> Record:
    delta = syscalls.ledger_delta(before, after)
    rows = syscalls.compare(calls, syscalls.ledger_syscalls(delta))
    verdict = all(row.agree for row in rows if row.in_verdict)
    return {
        "per_request": {key: value / done for key, value in delta.items() if value},
        "comparison": [{"kind": r.kind, "strace": r.strace_names, "strace_per_request": r.strace_calls / done,
                        "ledger_per_request": r.ledger_calls / done, "strace_calls": r.strace_calls,
                        "ledger_calls": r.ledger_calls, "agree": r.agree, "in_verdict": r.in_verdict}
                       for r in rows],
        "agree": verdict,
        "unledgered_per_request": {name: count / done for name, count in syscalls.unledgered(calls).items()},
    }


def drop_unverified(running: list[Server], scenario: Scenario, failed: dict[str, str]) -> dict[str, Record]:
    """Servers that do not answer the scenario's request with the expected status leave the scenario, and
    in the compress scenarios those that do not answer it compressed (ring3 once it has compressed the
    page: the measured runs come after); each one's encoding check (benchkit.pages), by name."""
    encoded: dict[str, Record] = {}
    for server in list(running):
        try:
            check_status(server, scenario)
            if scenario.accept_encoding:
                encoded[server.spec.name] = await_encoded(server, scenario)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, zlib.error) as exc:
            failed[server.spec.name] = str(exc)
            running.remove(server)
    return encoded


def add_costs(record: Record, server: Server, scenario: Scenario, settings: Settings, work: Path) -> None:
    """Peak memory after the rate runs, then the syscall count under strace."""
    record["peer"] = server.spec.peer
    record["peak_rss_mib"] = peak_rss_kib(server.pid) / 1024
    if server.spec.tls:
        record["tls"] = tls_session(server)
    try:
        counted = count_syscalls(server, scenario, settings, work)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        record["error"] = f"syscall count: {exc}"
        return
    if "strace_handshakes" in counted:
        add_handshakes(record, "strace", counted.pop("strace_handshakes"))
    record.update(counted)


def tls_session(server: Server) -> Record:
    """The protocol, suite and ALPN the server settles on with the harness's own client (offering h2
    first in the HTTP/2 scenarios, as h2load does)."""
    alpn = tls.ALPN_H2 if server.spec.http2 else tls.ALPN
    try:
        return tls.session_record(servers.HOST, server.launch.port, tls.files(server.launch.work), alpn)
    except OSError as exc:
        return {"error": str(exc)}


def measure_idle(server: Server, scenario: Scenario, settings: Settings) -> Record:
    """Resident memory before and while the client (pinned to the load CPU) holds the scenario's
    connections open, each idle after one answered request."""
    count = QUICK_IDLE if settings.quick else scenario.connections
    before = rss_kib(server.pid)
    own_cpus = os.sched_getaffinity(0)
    if servers.pinning_available():
        os.sched_setaffinity(0, {servers.LOAD_CPU})
    try:
        path = urllib.parse.urlsplit(server.url(scenario.file)).path.lstrip("/")
        with idle.held_open(servers.HOST, server.launch.port, path, count, IDLE_TIMEOUT) as held:
            time.sleep(IDLE_SETTLE)
            during = rss_kib(server.pid)
    finally:
        os.sched_setaffinity(0, own_cpus)
    added = during - before
    record: Record = {
        "peer": server.spec.peer, "wanted": count, "connections": held.connections,
        "failures": held.failures, "open_s": round(held.seconds, 2), "rss_before_mib": before / 1024,
        "rss_held_mib": during / 1024, "added_mib": added / 1024,
        "kib_per_connection": added / held.connections if held.connections else None,
        "peak_rss_mib": peak_rss_kib(server.pid) / 1024, "error": None,
    }
    if held.connections < count:
        record["error"] = f"held {held.connections} of {count} connections ({held.failures} failed)"
    return record


def run_scenario(scenario: Scenario, settings: Settings, root: Path, work: Path) -> Record:
    log(f"scenario {scenario.name}: {scenario.title}")
    specs = settings.specs_for(scenario)
    probe = PROBE_FILE if scenario.kind in (STATIC, IDLE) else scenario.file
    with servers_running(specs, root, work, probe, settings.with_admin,
                         scenario.proxy) as (running, failed, upstream):
        encoded = drop_unverified(running, scenario, failed)
        if scenario.kind == IDLE:
            results = {server.spec.name: measure_idle(server, scenario, settings) for server in running}
        elif scenario.reloading:
            results = measure_reloads(running, scenario, settings.quick, settings.repetitions)
        else:
            window = balance_start(running)  # the 2-worker servers' split of the load
            results = measure_rates(running, scenario, settings)
            add_balance(results, running, window)
            for server in running:
                if server.spec.name in encoded:
                    add_encoding(results[server.spec.name], encoded[server.spec.name], server, scenario)
                add_costs(results[server.spec.name], server, scenario, settings, work)
                if upstream is not None and server.launch.admin_port is not None:
                    add_body_check(results[server.spec.name], server, upstream, scenario.file, settings.quick)
    for spec in specs:
        if spec.name in failed:
            results[spec.name] = {"error": failed[spec.name], "peer": spec.peer}
        if error := results.get(spec.name, {}).get("error"):
            log(f"  {scenario.name}: {spec.name} failed: {' '.join(error.split())[:300]}")
    record = scenario.settings_record()
    record.update(upstream=upstream.record() if upstream is not None else None,
                  goals=[asdict(goal) for goal in scenario.goals],
                  results={spec.name: results[spec.name] for spec in specs if spec.name in results})
    record["ratios"] = report.ratios(record)
    return record


# Versions of bench/.venv's packages shown when a server of this family ran.
VENV_VERSIONS = {"granian": ("granian",), "gunicorn": ("gunicorn",), "hypercorn": ("hypercorn",),
                 "uvicorn": ("uvicorn", "uvloop", "httptools", "websockets", "wsproto")}


def versions(settings: Settings) -> dict[str, str]:
    found = {"ring3": f"{ring3.__version__} ({report.git_commit(REPO)}, {compiled.describe()})"}
    base = settings.baseline
    if base is not None:
        found[baseline.NAME] = f"{base.version} ({report.git_commit(base.checkout)})"
    families = {spec.family for spec in settings.all_specs()}
    nginx = tools.find_tool("nginx")
    if "nginx" in families or (nginx and any(s.proxy for s in settings.scenarios)):  # a proxy's upstream
        found["nginx"] = tools.tool_version([nginx or "nginx", "-v"]).split("/")[-1]
    if "haproxy" in families:
        found["haproxy"] = tools.tool_version([tools.find_tool("haproxy") or "haproxy", "-v"]).split()[2]
    venv = tools.venv_versions() if families - {"ring3", "nginx", "haproxy"} else {}
    wanted = {name for family in families for name in VENV_VERSIONS.get(family, ())}
    if families & {"granian", "uvicorn"}:
        wanted.add("starlette")  # the static scenarios' uvicorn app and the starlette-file app
    for name in (*VENV_VERSIONS["uvicorn"], "granian", "gunicorn", "hypercorn", "starlette"):
        if name in venv and name in wanted:
            found[name] = venv[name]
    found["wrk"] = tools.tool_version(["wrk", "-v"]).split()[1]
    found["h2load"] = tools.tool_version(["h2load", "--version"]).split("/")[-1]
    if any(s.kind == WEBSOCKET for s in settings.scenarios):
        found["wsload"] = f"bench/wsload ({tools.tool_version(['cc', '--version'])})"
    found["strace"] = tools.tool_version(["strace", "-V"]).split()[-1]
    if any(s.tls for s in settings.scenarios):
        found["openssl"] = tools.tool_version(["openssl", "version"]).split()[1]  # nginx's, wrk's, h2load's
        found["python ssl"] = ssl.OPENSSL_VERSION  # ring3's and uvicorn's
    return found


def build_report(settings: Settings, scenarios: list[Record], started: float,
                 load_before: list[float]) -> Record:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**report.machine(), "loadavg_before": load_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"mode": "quick" if settings.quick else "full", "duration_s": settings.duration_s,
                     "repetitions": settings.repetitions, "warmup_s": settings.warmup_s,
                     "server_cpu": servers.SERVER_CPU if servers.pinning_available() else None,
                     "load_cpu": servers.LOAD_CPU if servers.pinning_available() else None,
                     "servers": [spec.name for spec in settings.all_specs()],
                     "strace_scale": settings.strace_scale},
        "skipped": settings.skipped,
        "versions": versions(settings),
        "ledger_available": settings.with_admin,
        "ledger_verdict_kinds": list(syscalls.VERDICT_KINDS),
        "ledger_tolerance": syscalls.TOLERANCE,
        "ledger_slack": syscalls.ABSOLUTE_SLACK,
        "elapsed_s": round(time.monotonic() - started, 1),
        "scenarios": scenarios,
    }


def draw_chart(json_path: Path, png_path: Path) -> bool:
    """The chart is drawn by bench/.venv's matplotlib; skipped where that venv is not there."""
    if not tools.venv_ready():
        log("no bench/.venv with matplotlib: chart skipped")
        return False
    out = subprocess.run([str(tools.VENV_PYTHON), str(tools.BENCH_DIR / "chart.py"), str(json_path),
                          str(png_path)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        log(f"chart failed: {out.stderr[-1000:]}")
    return out.returncode == 0


def write_outputs(data: Record, settings: Settings) -> None:
    settings.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M")
    text = report.markdown(data)
    # Only a whole run (every scenario, every server) stands for the project: it alone rewrites latest.*
    # and the README's section; a part of one is kept under its date.
    whole = (settings.wanted is None and settings.baseline is None and not settings.pure
             and {s.name for s in settings.scenarios} == {s.name for s in SCENARIOS})
    for name in (stamp, "latest") if whole else (stamp,):
        (settings.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (settings.out / f"{name}.md").write_text(text)
    charted = whole and draw_chart(settings.out / "latest.json", settings.out / "latest.png")
    if whole and settings.out.resolve() == RESULTS.resolve() and not settings.quick:
        section = report.readme_section(data, "bench/results/latest.png" if charted else None)
        if report.update_readme(REPO / "README.md", section):
            log("README.md bench section updated")
    sys.stdout.write(text)
    log(f"results in {settings.out} ({data['elapsed_s']} s)")


def raise_open_files_limit() -> None:
    """The idle scenario holds 10,000 connections: as many descriptors here and in each server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    raise_open_files_limit()
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on a shared machine shows here
    settings = settings_from(parse_args(argv))
    for name, reason in settings.skipped.items():
        log(f"scenario {name} left out: {reason}")
    if settings.baseline is not None:
        log(f"ring3 imports {ring3.__file__}; {baseline.NAME} imports {settings.baseline.package} "
            f"({settings.baseline.version})")
    if not servers.pinning_available():
        log("fewer than 2 CPUs: servers and load generators are not pinned")
    with tempfile.TemporaryDirectory(prefix="ring3-bench-") as tmp:
        work = Path(tmp)
        prepare(settings, work)
        make_site(work / "site")
        if any(s.sites for s in settings.scenarios):
            make_sites(work)
        if any(s.accept_encoding for s in settings.scenarios):
            for missing in make_pages(work / "site"):
                log(f"compress scenarios: not made: {missing}")
        scenarios = [run_scenario(s, settings, work / "site", work) for s in settings.scenarios]
    write_outputs(build_report(settings, scenarios, started, load_before), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
