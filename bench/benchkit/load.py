"""The load generators, pinned to the load CPU: wrk for rates and latency, h2load for fixed counts (and for
the rates of the HTTP/2 scenarios, which wrk does not speak), and bench/wsload (built here with cc) for
WebSocket messages, both ways. wrk and h2load speak https too; with Connection: close both open a new
connection per request, and both resume their last TLS session when the server gave them a ticket.

Each rate run also reports the CPU time the load generator itself spent: a share of its core well below
1 means it was not the bottleneck.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchkit import h2load, tools
from benchkit.h2load import HTTP1, H2loadResult
from benchkit.scenarios import BROWSER_HEADERS, WEBSOCKET, Scenario
from benchkit.servers import HOST, LOAD_CPU, pinned
from benchkit.tls import TLS13_CIPHERS

WRK_DIR = tools.BENCH_DIR / "wrk"
WSLOAD_SOURCE = tools.BENCH_DIR / "wsload" / "wsload.c"
SLACK_S = 30  # beyond its own duration, how long a load tool may run before it is killed
MB = 1_000_000


@dataclass(frozen=True)
class WrkResult:
    """wrk's exact totals for one run (from the done() hook of the Lua script)."""

    requests: int
    bytes: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None
    socket_errors: int
    non_2xx_3xx: int
    load_cpu_s: float | None = None  # the load generator's own CPU time (user+system)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def load_cpu_share(self) -> float | None:
        """The load generator's CPU time over the run's duration: the share of its core it used."""
        return None if self.load_cpu_s is None else self.load_cpu_s / self.duration_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration_s / MB


def header_args(scenario: Scenario, host: str = "", host_field: str = "Host") -> list[str]:
    """Browser-like fields, or Connection: close (a new connection, and TLS handshake, per request), or
    the compress scenarios' Accept-Encoding; a virtual host's name in `host_field` (h2load replaces its
    Host only as ":authority")."""
    headers = (*((f"{host_field}: {host}",) if host else ()),
               *(BROWSER_HEADERS if scenario.browser_headers else ()),
               *((f"Accept-Encoding: {scenario.accept_encoding}",) if scenario.accept_encoding else ()),
               *(("Connection: close",) if scenario.handshake or scenario.new_connections else ()))
    return [arg for header in headers for arg in ("-H", header)]


def wrk_argv(url: str, scenario: Scenario, seconds: int, host: str = "",
             targets: Path | None = None) -> list[str]:
    """wrk with one thread; with `targets`, cycling through that file's requests (bench/wrk/targets.lua)."""
    script = "targets.lua" if targets else "pipeline.lua" if scenario.pipeline > 1 else "summary.lua"
    argv = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(WRK_DIR / script), *header_args(scenario, host), url]
    if targets:
        argv += ["--", str(targets)]
    elif scenario.pipeline > 1:
        argv += ["--", str(scenario.pipeline)]
    return pinned(LOAD_CPU, argv)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_rate(url: str, scenario: Scenario, seconds: int, host: str = "",
             targets: Path | None = None) -> WrkResult:
    """The scenario's rate run: wrk (with a virtual host's Host, or cycling through `targets`), wsload for
    WebSocket messages, h2load over HTTP/2."""
    if scenario.kind == WEBSOCKET:
        return run_wsload(url, scenario, seconds=seconds)
    if scenario.http2:
        return run_h2load_rate(url, scenario, seconds)
    return run_wrk(url, scenario, seconds, host, targets)


def run_count(url: str, scenario: Scenario, requests: int, timeout: float, host: str = "") -> H2loadResult:
    """Exactly `requests` requests (h2load, with `host` for Host) or messages (wsload)."""
    if scenario.kind != WEBSOCKET:
        return run_h2load(url, scenario, requests, timeout, host)
    result = run_wsload(url, scenario, messages=requests, timeout=timeout)
    failed = result.socket_errors
    return H2loadResult(result.requests, result.requests, {"2xx": result.requests, "3xx": 0, "4xx": 0,
                                                           "5xx": failed}, failed)


def run_wrk(url: str, scenario: Scenario, seconds: int, host: str = "",
            targets: Path | None = None) -> WrkResult:
    """One wrk run of `seconds` (whole seconds: wrk takes no fractions)."""
    cpu_before = _children_cpu_s()
    out = subprocess.run(wrk_argv(url, scenario, seconds, host, targets), capture_output=True, text=True,
                         timeout=seconds + SLACK_S)
    load_cpu = _children_cpu_s() - cpu_before
    match = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    data = json.loads(match.group(1))
    errors = sum(data[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    latency = scenario.latency_valid
    return WrkResult(
        requests=data["requests"], bytes=data["bytes"], duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000 if latency else None,
        p99_ms=data["p99_us"] / 1000 if latency else None,
        socket_errors=errors, non_2xx_3xx=data["status_errors"], load_cpu_s=load_cpu)


_wsload: Path | None = None  # the built binary


def build_wsload(work: Path) -> Path:
    """Compiles bench/wsload/wsload.c into `work` (once per run; about a second)."""
    binary = work / "wsload"
    out = subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(WSLOAD_SOURCE)], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"building wsload failed: {out.stderr[-2000:]}")
    global _wsload
    _wsload = binary
    return binary


def wsload_argv(url: str, scenario: Scenario, seconds: int | None, messages: int | None,
                timeout: float) -> list[str]:
    if _wsload is None:
        raise RuntimeError("wsload is not built (load.build_wsload)")
    parts = urlsplit(url)
    if parts.hostname != HOST or parts.port is None:
        raise RuntimeError(f"wsload aims at {HOST} only, not {url}")
    bound = ["-d", str(seconds)] if seconds is not None else ["-n", str(messages)]
    return pinned(LOAD_CPU, [str(_wsload), "-h", HOST, "-p", str(parts.port),
                             "-u", parts.path or "/", "-c", str(scenario.connections),
                             "-s", str(scenario.message_size), *bound, "-t", str(timeout)])


def run_wsload(url: str, scenario: Scenario, seconds: int | None = None, messages: int | None = None,
               timeout: float | None = None) -> WrkResult:
    """Ping-pong over `scenario.connections` WebSockets for `seconds`, or until `messages` echoes are in.
    WrkResult's requests are messages, its bytes the echoed payload."""
    limit = timeout if timeout is not None else (seconds or 0) + SLACK_S
    argv = wsload_argv(url, scenario, seconds, messages, limit)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=limit + 10)
    match = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"wsload failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    data = json.loads(match.group(1))
    if messages is not None and data["messages"] < messages:
        raise RuntimeError(f"wsload: {data['messages']} of {messages} messages echoed in {limit} s")
    errors = sum(data[key] for key in ("connect_errors", "handshake_errors", "read_errors",
                                       "protocol_errors"))
    return WrkResult(
        requests=data["messages"], bytes=data["bytes"], duration_s=max(data["duration_us"], 1) / 1e6,
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, socket_errors=errors, non_2xx_3xx=0,
        load_cpu_s=data["cpu_us"] / 1e6)


def h2load_argv(url: str, scenario: Scenario, bound: list[str], connections: int,
                host: str = "") -> list[str]:
    ciphers = [f"--tls13-ciphers={TLS13_CIPHERS}"] if url.startswith("https:") else []
    return pinned(LOAD_CPU, h2load.argv(url, connections, scenario.in_flight, bound, scenario.protocol,
                                        (*ciphers, *header_args(scenario, host, ":authority"))))


def _h2load(argv: list[str], url: str, scenario: Scenario, timeout: float) -> H2loadResult:
    """One h2load run; over HTTP/2, RuntimeError unless it negotiated the scenario's protocol."""
    result = h2load.parse(subprocess.run(argv, capture_output=True, text=True, timeout=timeout))
    if scenario.protocol != HTTP1:
        h2load.require_protocol(result, scenario.protocol, url)
    return result


def run_h2load(url: str, scenario: Scenario, requests: int, timeout: float, host: str = "") -> H2loadResult:
    """Exactly `requests` requests (h2load's -m pipelines them over HTTP/1.1, runs them as concurrent
    streams over HTTP/2), killed past `timeout`."""
    argv = h2load_argv(url, scenario, ["-n", str(requests)], min(scenario.connections, requests), host)
    return _h2load(argv, url, scenario, timeout)


def run_h2load_rate(url: str, scenario: Scenario, seconds: int) -> WrkResult:
    """An HTTP/2 rate run of `seconds`: h2load's totals as wrk's (no latency percentiles: h2load prints
    none)."""
    cpu_before = _children_cpu_s()
    argv = h2load_argv(url, scenario, ["-D", str(seconds)], scenario.connections)
    result = _h2load(argv, url, scenario, seconds + SLACK_S)
    return WrkResult(
        requests=result.requests, bytes=result.bytes, duration_s=max(result.duration_s, 1e-6), p50_ms=None,
        p99_ms=None, socket_errors=result.failed, non_2xx_3xx=result.status["4xx"] + result.status["5xx"],
        load_cpu_s=_children_cpu_s() - cpu_before)
