"""The scenarios, the files they fetch and the browser-like request headers."""

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


@dataclass(frozen=True)
class Scenario:
    """One load shape: which file, how many connections, how requests are written."""

    name: str
    title: str
    file: str
    connections: int
    strace_requests: int  # requests sent under strace in the full run (a tenth in --quick)
    pipeline: int = 1
    browser_headers: bool = False
    expect_status: int = 200
    nopush_variants: bool = False  # also run nginx with tcp_nopush off

    @property
    def latency_valid(self) -> bool:
        """wrk's latency histogram is wrong with pipelining (p90 and p99 read 0)."""
        return self.pipeline == 1


SCENARIOS = (
    Scenario("1k-c64", "1 KiB, 64 conns", "1k.bin", 64, 5000),
    Scenario("1k-c1", "1 KiB, 1 conn (latency)", "1k.bin", 1, 3000),
    Scenario("1k-browser", "1 KiB, 64 conns, browser headers", "1k.bin", 64, 5000, browser_headers=True),
    Scenario("64k-c64", "64 KiB, 64 conns", "64k.bin", 64, 3000),
    Scenario("10m-c8", "10 MiB, 8 conns", "10m.bin", 8, 100),
    Scenario("1k-pipe16", "1 KiB, 16 pipelined per write", "1k.bin", 64, 8000, pipeline=16,
             nopush_variants=True),
    Scenario("404", "404, 64 conns", MISSING, 64, 5000, expect_status=404),
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
