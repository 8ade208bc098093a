"""h2load: its command line and what it prints (the requests it got done, their status classes, the bytes,
the time, and the application protocol it negotiated).

h2load drives the fixed counts of every scenario (over HTTP/1.1 with --h1, its -m pipelining requests)
and both the counts and the rates of the HTTP/2 scenarios: without --h1 an https URL offers h2 by ALPN
(and falls back to http/1.1 if the server does not take it) and an http URL speaks h2c with prior
knowledge. What it negotiated is checked against what the scenario wants.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

HTTP1 = "http/1.1"
H2 = "h2"  # HTTP/2 over TLS, by ALPN
H2C = "h2c"  # HTTP/2 in cleartext, with prior knowledge
PROBE_TIMEOUT = 5.0
DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class H2loadResult:
    requests: int  # done
    succeeded: int
    status: dict[str, int]  # "2xx" -> count
    failed: int = 0  # failed, errored or timed out
    bytes: int = 0  # all the traffic received: headers, data and framing
    duration_s: float = 0.0
    protocol: str | None = None  # "Application protocol:" as h2load printed it


def argv(url: str, connections: int, in_flight: int, bound: list[str], protocol: str,
         options: tuple[str, ...] = ()) -> list[str]:
    """h2load with one thread; `bound` is -n COUNT or -D SECONDS, `in_flight` its -m (streams per
    connection over HTTP/2, pipelined requests over HTTP/1.1)."""
    h1 = ["--h1"] if protocol == HTTP1 else []
    return ["h2load", *h1, *bound, "-c", str(connections), "-t", "1", "-m", str(in_flight), *options, url]


def parse(out: subprocess.CompletedProcess[str]) -> H2loadResult:
    """h2load's summary; RuntimeError when it failed or printed none."""
    totals = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    traffic = re.search(r"^traffic: \S+ \((\d+)\) total", out.stdout, re.M)
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s),", out.stdout, re.M)
    protocol = re.search(r"^Application protocol: (\S+)", out.stdout, re.M)
    if out.returncode != 0 or totals is None or codes is None or traffic is None or finished is None:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    done, succeeded, failed, errored, timeout = (int(totals.group(i)) for i in range(3, 8))
    status = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(v) for v in codes.groups()), strict=True))
    return H2loadResult(done, succeeded, status, failed + errored + timeout, int(traffic.group(1)),
                        float(finished.group(1)) * DURATION_UNITS[finished.group(2)],
                        protocol.group(1) if protocol else None)


def require_protocol(result: H2loadResult, wanted: str, url: str) -> None:
    """RuntimeError unless h2load negotiated `wanted` (h2 must not fall back to HTTP/1.1 unnoticed) and
    got some answer over it (h2load says h2c before the server has answered its preface)."""
    if result.protocol != wanted:
        raise RuntimeError(f"h2load negotiated {result.protocol or 'no protocol'}, not {wanted}, with {url}")
    if result.requests == 0 and result.failed:
        raise RuntimeError(f"h2load: none of its {wanted} requests to {url} was answered ({result.failed} "
                           "failed): no HTTP/2 there?")


def answers_over(protocol: str, url: str) -> bool:
    """One request over `protocol` answered with 2xx: the readiness probe of servers that speak only
    HTTP/2 on their port (nginx's h2c listener, granian --http 2)."""
    try:
        out = subprocess.run(argv(url, 1, 1, ["-n", "1"], protocol), capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT)
        result = parse(out)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return result.protocol == protocol and result.status["2xx"] == 1
