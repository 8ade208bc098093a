"""The load generators, pinned to the load CPU: wrk for rates and latency, h2load for fixed counts."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

from benchkit import tools
from benchkit.scenarios import BROWSER_HEADERS, Scenario
from benchkit.servers import LOAD_CPU, pinned

WRK_DIR = tools.BENCH_DIR / "wrk"
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

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration_s / MB


def header_args(scenario: Scenario) -> list[str]:
    if not scenario.browser_headers:
        return []
    return [arg for header in BROWSER_HEADERS for arg in ("-H", header)]


def wrk_argv(url: str, scenario: Scenario, seconds: int) -> list[str]:
    script = "pipeline.lua" if scenario.pipeline > 1 else "summary.lua"
    argv = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(WRK_DIR / script), *header_args(scenario), url]
    if scenario.pipeline > 1:
        argv += ["--", str(scenario.pipeline)]
    return pinned(LOAD_CPU, argv)


def run_wrk(url: str, scenario: Scenario, seconds: int) -> WrkResult:
    """One wrk run of `seconds` (whole seconds: wrk takes no fractions)."""
    out = subprocess.run(wrk_argv(url, scenario, seconds), capture_output=True, text=True,
                         timeout=seconds + SLACK_S)
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
        socket_errors=errors, non_2xx_3xx=data["status_errors"])


@dataclass(frozen=True)
class H2loadResult:
    requests: int  # done
    succeeded: int
    status: dict[str, int]  # "2xx" -> count


def h2load_argv(url: str, scenario: Scenario, requests: int) -> list[str]:
    connections = min(scenario.connections, requests)
    return pinned(LOAD_CPU, ["h2load", "--h1", "-n", str(requests), "-c", str(connections), "-t", "1",
                             "-m", str(scenario.pipeline), *header_args(scenario), url])


def run_h2load(url: str, scenario: Scenario, requests: int, timeout: float) -> H2loadResult:
    """Exactly `requests` requests (h2load's -m pipelines them over HTTP/1.1), killed past `timeout`."""
    out = subprocess.run(h2load_argv(url, scenario, requests), capture_output=True, text=True,
                         timeout=timeout)
    totals = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    if out.returncode != 0 or totals is None or codes is None:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    status = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(v) for v in codes.groups()), strict=True))
    return H2loadResult(int(totals.group(3)), int(totals.group(4)), status)
