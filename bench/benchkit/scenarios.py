"""The scenarios, the files they fetch and the browser-like request headers.

Static scenarios fetch files; app scenarios call the applications of bench/apps/ over HTTP; the WebSocket
scenario echoes messages. Each speaks HTTP/1.1, in the clear or over TLS, or HTTP/2 (h2 over TLS, h2c in
the clear). Which servers run each scenario is benchkit.lineups'.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.h2load import H2, H2C, HTTP1

KIB = 1024
MIB = 1024 * KIB

FILES = {"1k.bin": KIB, "64k.bin": 64 * KIB, "10m.bin": 10 * MIB}
MISSING = "missing.bin"
# The compress scenarios' 100 KiB HTML page (benchkit.pages): alone, and with its .gz and .br beside it.
PAGE = "page.html"
PRECOMPRESSED_PAGE = "pre/page.html"
ACCEPT_ENCODING = "gzip, br"

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
RELOAD = "reload"  # latency and errors of wrk runs while the servers reload (benchkit.reloads), not rates

FULL = "full"  # a new connection per request (Connection: close), each with a full TLS handshake
RESUMED = "resumed"  # a new connection per request, each resuming the client's TLS session
MB = 1_000_000


# The scenario's settings kept in its record.
RECORDED = ("name", "title", "file", "kind", "unit", "rate_key", "static_goal", "connections", "pipeline",
            "browser_headers", "expect_status", "message_size", "tls", "handshake", "protocol", "streams",
            "accept_encoding", "workers", "pairs", "new_connections")


@dataclass(frozen=True)
class Goal:
    """A target for ring3's figure `key` (a results key: cpu_us_per_request, mb_per_s, peak_rss_mib):
    at most (or at least) `bound` times `against`'s same figure, in `scenario` (default: this one), or
    at most `bound` more than it (`difference`), or at most `bound` itself when `against` is empty."""

    key: str
    bound: float
    against: str = ""
    scenario: str = ""
    at_least: bool = False
    difference: bool = False  # at most `bound` more than `against`'s figure (in its unit), not a ratio
    if_run: bool = False  # a row only where `against` ran (ring3-base: with --baseline), else none
    note: str = ""  # shown beside the goal: the bound as the issue gave it, what the reference is
    server: str = ""  # the ring3 whose figure is held (default "ring3"; reload-latency's is ring3-w2)


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
    tls: bool = False  # HTTPS (TLS 1.3) with the run's ECDSA P-256 certificate
    http2: bool = False  # HTTP/2: h2 (by ALPN) over TLS, h2c (prior knowledge) without
    streams: int = 1  # HTTP/2: concurrent streams per connection (h2load -m)
    handshake: str = ""  # FULL or RESUMED: one TLS handshake per request, counted on the server side
    new_connections: bool = False  # Connection: close on every request: a new connection per request
    sites: bool = False  # ring3 with benchkit.sites' 100 virtual hosts, against ring3-single (one root)
    # Accept-Encoding of every request; each server must answer with Content-Encoding (benchkit.pages
    # checks it before and after the rate runs and measures the bytes per response).
    accept_encoding: str = ""
    # ring3, nginx and HAProxy as reverse proxies of one upstream nginx serving the files (benchkit.proxy)
    proxy: bool = False
    # ring3 and nginx with 1 and 2 worker processes (benchkit.workers); the 2-worker ones pinned to both CPUs
    workers: bool = False
    # (ring3's, peer's) name pairs the ratios compare, where not ring3 against every peer
    pairs: tuple[tuple[str, str], ...] = ()
    goals: tuple[Goal, ...] = ()

    @property
    def reloading(self) -> bool:
        """wrk runs while the servers reload (benchkit.reloads), not rate runs."""
        return self.kind == RELOAD

    def settings_record(self) -> dict[str, Any]:
        """The settings kept in the scenario's record (bench/run.py), read by the report."""
        return {key: getattr(self, key) for key in RECORDED}

    @property
    def unit(self) -> str:
        """What one "request" of the figures is."""
        return "message" if self.kind == WEBSOCKET else "request"

    @property
    def latency_valid(self) -> bool:
        """wrk's latency histogram is wrong with pipelining (p90 and p99 read 0)."""
        return self.pipeline == 1

    @property
    def protocol(self) -> str:
        """What the load tool must speak with every server: http/1.1, h2 or h2c."""
        if not self.http2:
            return HTTP1
        return H2 if self.tls else H2C

    @property
    def in_flight(self) -> int:
        """Requests outstanding on one connection: its streams (HTTP/2) or its pipelined requests."""
        return self.streams if self.http2 else self.pipeline


# One ring3 process's peak resident memory with TLS on: at most 35 MB (decimal megabytes, in MiB here).
TLS_MEMORY = Goal("peak_rss_mib", 35 * MB / MIB, note="35 MB")
CPU = "cpu_us_per_request"
RATE = "requests_per_s"  # requests (WebSocket: messages) per second
TLS = "ring3.transport.tls_handshake"  # a ring3 without it has no TLS
TLS_SCENARIOS = (
    Scenario("tls-1k-c64", "TLS 1 KiB, 64 conns", "1k.bin", 64, 5000, tls=True, requires=TLS,
             goals=(Goal(CPU, 1.0, "nginx"), TLS_MEMORY)),
    Scenario("tls-asgi-hello", "TLS ASGI hello (13 B), 64 conns", "", 64, 5000, kind=APP, tls=True,
             requires=TLS, goals=(Goal(CPU, 0.8, "granian"), Goal(CPU, 0.25, "uvicorn"), TLS_MEMORY)),
    Scenario("tls-handshake", "TLS full handshake per request (1 KiB), 64 conns",
             "1k.bin", 64, 2000, tls=True, requires=TLS, handshake=FULL,
             goals=(Goal(CPU, 1.1, "nginx"), TLS_MEMORY)),
    Scenario("tls-resumed", "TLS resumed handshake per request (1 KiB), 64 conns",
             "1k.bin", 64, 2000, tls=True, requires=TLS, handshake=RESUMED,
             goals=(Goal(CPU, 0.5, "ring3", scenario="tls-handshake", note="a full handshake"), TLS_MEMORY)),
    Scenario("tls-10m-c8", "TLS 10 MiB, 8 conns", "10m.bin", 8, 100, rate_key="mb_per_s", tls=True,
             requires=TLS, goals=(Goal("mb_per_s", 0.9, "nginx", at_least=True), TLS_MEMORY)),
)

HTTP2 = "ring3.http2.connection"  # a ring3 without it has no HTTP/2
H2_SCENARIOS = (
    Scenario("h2-1k-m10", "h2 1 KiB, 64 conns x 10 streams", "1k.bin", 64, 5000, tls=True, http2=True,
             streams=10, requires=HTTP2, goals=(Goal(CPU, 1.5, "nginx"),)),
    Scenario("h2c-1k-m10", "h2c 1 KiB, 64 conns x 10 streams", "1k.bin", 64, 5000, http2=True, streams=10,
             requires=HTTP2, goals=(Goal(CPU, 1.5, "nginx"),)),
    Scenario("h2-asgi-hello", "h2 ASGI hello (13 B), 64 conns x 10 streams", "", 64, 5000, kind=APP,
             tls=True, http2=True, streams=10, requires=HTTP2,
             goals=(Goal(CPU, 1.0, "granian"), Goal(CPU, 0.2, "hypercorn"))),
    Scenario("h2-10m-c8", "h2 10 MiB, 8 conns", "10m.bin", 8, 100, rate_key="mb_per_s", tls=True, http2=True,
             requires=HTTP2, goals=(Goal("mb_per_s", 0.8, "nginx", at_least=True),)),
)

# ring3 routing by Host and path over 100 sites of 20 locations (benchkit.sites), against ring3-single:
# ring3 serving one root as in 1k-c64 (hot), or the same 2000 files under one root (spread).
SINGLE = "ring3-single"
SITES_SCENARIOS = (
    Scenario("sites-hot-1k", "100x20 sites, one hot 1 KiB file, 64 conns", "1k.bin", 64, 5000, sites=True,
             goals=(Goal(CPU, 1.05, SINGLE, note="today's 1k-c64 cost, with 5% for noise"),)),
    Scenario("sites-spread-1k", "100x20 sites, 2000 1 KiB files, no replay cache, 64 conns", "1k.bin", 64,
             5000, sites=True,
             goals=(Goal(CPU, 1.0, SINGLE, difference=True, note="what routing adds, in µs"),)),
)

# Compressed answers of a 100 KiB HTML page: ring3 compressing it once (br, its first choice for
# "gzip, br") against nginx's gzip at level 1 on every request, and ring3 serving its precompressed .br
# against nginx's gzip_static (the .gz: Debian's nginx has no brotli module); then an ASGI app sending the
# same page in pieces, which ring3 (--app-compress) compresses as it streams, on every response (br 5):
# its bytes against nginx-gzip's in gzip-html-100k, its CPU per request reported.
BODY_BYTES = "body_bytes"
NGINX_GZIP = "nginx-gzip"
NGINX_GZIP_STATIC = "nginx-gzip-static"
APP_COMPRESSION = "ring3.handlers.compressing"  # a ring3 without it does not compress an app's answers
COMPRESS_SCENARIOS = (
    Scenario("gzip-html-100k", "100 KiB HTML compressed on the fly, 64 conns", PAGE, 64, 2000,
             accept_encoding=ACCEPT_ENCODING,
             goals=(Goal(CPU, 0.1, NGINX_GZIP, note="gzip on, level 1"),
                    Goal(BODY_BYTES, 1.0, NGINX_GZIP_STATIC, scenario="gzip-static-100k",
                         note="its .gz, gzip -9"))),
    Scenario("gzip-static-100k", "100 KiB HTML precompressed (.br, .gz), 64 conns", PRECOMPRESSED_PAGE, 64,
             5000, accept_encoding=ACCEPT_ENCODING,
             goals=(Goal(CPU, 1.0, NGINX_GZIP_STATIC, note="gzip_static on"),)),
    Scenario("asgi-gzip-html-100k", "ASGI app returning the same page, compressed streaming, 64 conns", "",
             64, 2000, kind=APP, requires=APP_COMPRESSION, accept_encoding=ACCEPT_ENCODING,
             goals=(Goal(BODY_BYTES, 1.0, NGINX_GZIP, scenario="gzip-html-100k", note="gzip on, level 1"),)),
)

# The reverse proxy: ring3, nginx (proxy_pass to an upstream block with keepalive 64) and HAProxy (http-reuse
# always) in front of the same upstream nginx, pinned to the load CPU (benchkit.proxy). A 1 KiB body is
# copied through ring3 (below splice_min_size), a 10 MiB one spliced: the body check counts, in ring3's
# ledger, the body bytes that went through Python.
NGINX_PROXY = "nginx-proxy"
HAPROXY = "haproxy"
SYSCALLS = "syscalls.total_per_request"  # strace's count per request, of the proxy's own processes
PYTHON_BODY = "proxy_body.python_bytes_per_response"  # body bytes read into Python, per response
PROXY_SCENARIOS = (
    Scenario("proxy-1k-c64", "proxy 1 KiB, 64 conns", "1k.bin", 64, 5000, proxy=True,
             goals=(Goal(CPU, 1.0, NGINX_PROXY), Goal(CPU, 1.2, HAPROXY), Goal(SYSCALLS, 1.0, NGINX_PROXY))),
    Scenario("proxy-10m-c8", "proxy 10 MiB, 8 conns", "10m.bin", 8, 100, rate_key="mb_per_s", proxy=True,
             goals=(Goal("mb_per_s", 1.0, NGINX_PROXY, at_least=True),
                    Goal(CPU, 1.0, NGINX_PROXY, note="CPU per 10 MiB"),
                    Goal(PYTHON_BODY, 0.0, note="~0: the body by splice"))),
)

# Worker processes: ring3 (one process, as today) and ring3-w2 (--workers 2: a master and 2 workers)
# beside nginx with worker_processes 1 and 2; then the 2-worker ones serving wrk while the bench sends
# their master SIGHUP once a second, against the same servers without reloads (benchkit.reloads).
RING3_W2 = "ring3-w2"
NGINX_W2 = "nginx-w2"
# wrk's errors (connect, read, write, timeout, non-2xx) during reloads, by connection mode (and "all")
RELOAD_ERRORS = "reload_errors"
WORKERS_SCENARIOS = (
    Scenario("workers-1k-c64", "1 KiB, 64 conns, 1 and 2 workers", "1k.bin", 64, 5000, workers=True,
             pairs=(("ring3", "nginx"), (RING3_W2, NGINX_W2))),
    Scenario("reload-latency", "1 KiB, 64 conns, 2 workers, SIGHUP every second", "1k.bin", 64, 0,
             kind=RELOAD, workers=True,
             goals=(Goal(f"{RELOAD_ERRORS}.close", 0.0, server=RING3_W2,
                         note="zero errors during reloads, a new connection per request"),
                    Goal(f"{RELOAD_ERRORS}.keep-alive", 0.0, server=RING3_W2,
                         note="zero errors during reloads, connections kept alive"))),
)

# Today's static scenarios must not get dearer: with --baseline, ring3 against ring3-base (its row is
# shown only then).
NO_REGRESSION = (Goal(CPU, 1.05, "ring3-base", if_run=True, note="no regression, 5% for noise"),)

SCENARIOS = (
    Scenario("1k-c64", "1 KiB, 64 conns", "1k.bin", 64, 5000,
             goals=(*NO_REGRESSION, Goal(CPU, 0.5, "nginx"))),
    Scenario("close-1k-c64", "1 KiB, a new connection per request, 64 conns", "1k.bin", 64, 2000,
             new_connections=True,
             goals=(Goal(CPU, 1.5, "nginx"), Goal(SYSCALLS, 1.0, "nginx", note="syscalls per connection"))),
    Scenario("1k-c1", "1 KiB, 1 conn (latency)", "1k.bin", 1, 3000),
    Scenario("1k-browser", "1 KiB, 64 conns, browser headers", "1k.bin", 64, 5000, browser_headers=True,
             goals=NO_REGRESSION),
    Scenario("64k-c64", "64 KiB, 64 conns", "64k.bin", 64, 3000, goals=NO_REGRESSION),
    Scenario("10m-c8", "10 MiB, 8 conns", "10m.bin", 8, 100, rate_key="mb_per_s"),
    Scenario("1k-pipe16", "1 KiB, 16 pipelined per write", "1k.bin", 64, 8000, pipeline=16,
             nopush_variants=True),
    Scenario("404", "404, 64 conns", MISSING, 64, 5000, expect_status=404),
    Scenario("asgi-hello", "ASGI hello (13 B), 64 conns", "", 64, 5000, kind=APP,
             goals=(Goal(CPU, 0.5, "granian"), Goal(CPU, 0.5, "uvicorn"))),
    Scenario("wsgi-hello", "WSGI hello (13 B), 64 conns", "", 64, 5000, kind=APP,
             requires="ring3.handlers.wsgi", goals=(Goal(CPU, 1.0, "granian"),)),
    Scenario("starlette-file", "Starlette FileResponse 1 KiB, 64 conns", "file", 64, 2000, kind=APP,
             goals=(Goal(RATE, 1.5, "granian", at_least=True),)),
    Scenario("asgi-stream-10m", "ASGI stream 10 MiB (64 KiB pieces, chunked), 8 conns", "", 8, 100,
             kind=APP, rate_key="mb_per_s", static_goal=0.8),
    Scenario("ws-echo", "WebSocket echo 1 KiB binary, 64 clients (per message)", "ws", 64, 10000,
             kind=WEBSOCKET, requires="ring3.websocket.asgi", message_size=KIB,
             goals=(Goal(RATE, 1.5, "uvicorn-websockets", at_least=True, note="msg/s"),
                    Goal(RATE, 1.5, "uvicorn-wsproto", at_least=True, note="msg/s"))),
    Scenario("idle-10k", "10,000 idle keep-alive connections (memory)", "1k.bin", 10000, 0, kind=IDLE),
    *TLS_SCENARIOS,
    *H2_SCENARIOS,
    *SITES_SCENARIOS,
    *COMPRESS_SCENARIOS,
    *PROXY_SCENARIOS,
    *WORKERS_SCENARIOS,
)

# --scenario GROUP: the HTTP/1.1 scenarios over TLS, the HTTP/2 ones, the virtual hosts' ones, the
# compressed answers' ones, the reverse proxy's, the worker processes' (workers-1k-c64, reload-latency).
GROUPS: dict[str, Callable[[Scenario], bool]] = {"tls": lambda s: s.tls and not s.http2,
                                                 "h2": lambda s: s.http2, "sites": lambda s: s.sites,
                                                 "compress": lambda s: bool(s.accept_encoding),
                                                 "proxy": lambda s: s.proxy,
                                                 "workers": lambda s: s.workers}


def chosen(scenario: Scenario, names: set[str]) -> bool:
    """Whether --scenario NAME (repeatable) picks the scenario, by its name or one of its GROUPS."""
    return scenario.name in names or any(GROUPS[group](scenario) for group in names & GROUPS.keys())


def make_site(root: Path) -> None:
    """The files, with random bytes (so no layer can compress them), readable by nginx's worker."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for name, size in FILES.items():
        path = root / name
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
        path.chmod(0o644)
