"""The scenarios, the files they fetch and the browser-like request headers.

Static scenarios fetch files; app scenarios call the applications of bench/apps/ over HTTP; the WebSocket
scenario echoes messages. Which servers run each scenario is benchkit.lineups'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

FILES = {"1k.bin": KIB, "64k.bin": 64 * KIB, "10m.bin": 10 * MIB}
MISSING = "missing.bin"

# What a desktop Chrome sends for a same-origin page load: with Host, 10 fields and about 500 bytes.
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9,de;q=0.8",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Referer: http://127.0.0.1/docs/index.html",
    "Cookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
)


STATIC = "static"  # files from the bench site
APP = "app"  # an application of bench/apps/ over HTTP
WEBSOCKET = "websocket"  # WebSocket messages, echoed by an application (rates and costs per message)
IDLE = "idle"  # connections held open idle after one request each: memory, not rates


@dataclass(frozen=True)
class Scenario:
    """One load shape: which file or path, how many connections, how requests are written."""

    name: str
    title: str
    file: str  # the URL path under the server's prefix, without the leading "/"
    connections: int
    strace_requests: int  # requests (messages) sent under strace in the full run (a tenth in --quick)
    pipeline: int = 1
    browser_headers: bool = False
    expect_status: int = 200
    nopush_variants: bool = False  # also run nginx with tcp_nopush off
    kind: str = STATIC
    rate_key: str = "requests_per_s"  # the headline figure (and the one ratios compare): or "mb_per_s"
    requires: str = ""  # the ring3 module the scenario needs (an interface that a build may lack)
    message_size: int = 0  # WebSocket: bytes per message
    static_goal: float = 0.0  # an app stream's goal against ring3 serving the same size as a file

    @property
    def unit(self) -> str:
        """What one "request" of the figures is."""
        return "message" if self.kind == WEBSOCKET else "request"

    @property
    def latency_valid(self) -> bool:
        """wrk's latency histogram is wrong with pipelining (p90 and p99 read 0)."""
        return self.pipeline == 1


SCENARIOS = (
    Scenario("1k-c64", "1 KiB, 64 conns", "1k.bin", 64, 5000),
    Scenario("1k-c1", "1 KiB, 1 conn (latency)", "1k.bin", 1, 3000),
    Scenario("1k-browser", "1 KiB, 64 conns, browser headers", "1k.bin", 64, 5000, browser_headers=True),
    Scenario("64k-c64", "64 KiB, 64 conns", "64k.bin", 64, 3000),
    Scenario("10m-c8", "10 MiB, 8 conns", "10m.bin", 8, 100, rate_key="mb_per_s"),
    Scenario("1k-pipe16", "1 KiB, 16 pipelined per write", "1k.bin", 64, 8000, pipeline=16,
             nopush_variants=True),
    Scenario("404", "404, 64 conns", MISSING, 64, 5000, expect_status=404),
    Scenario("asgi-hello", "ASGI hello (13 B), 64 conns", "", 64, 5000, kind=APP),
    Scenario("wsgi-hello", "WSGI hello (13 B), 64 conns", "", 64, 5000, kind=APP,
             requires="ring3.handlers.wsgi"),
    Scenario("starlette-file", "Starlette FileResponse 1 KiB, 64 conns", "file", 64, 2000, kind=APP),
    Scenario("asgi-stream-10m", "ASGI stream 10 MiB (64 KiB pieces, chunked), 8 conns", "", 8, 100,
             kind=APP, rate_key="mb_per_s", static_goal=0.8),
    Scenario("ws-echo", "WebSocket echo 1 KiB binary, 64 clients (per message)", "ws", 64, 10000,
             kind=WEBSOCKET, requires="ring3.websocket.asgi", message_size=KIB),
    Scenario("idle-10k", "10,000 idle keep-alive connections (memory)", "1k.bin", 10000, 0, kind=IDLE),
)


def make_site(root: Path) -> None:
    """The files, with random bytes (so no layer can compress them), readable by nginx's worker."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for name, size in FILES.items():
        path = root / name
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
        path.chmod(0o644)
