"""Which servers run each scenario, and what a scenario needs that ring3 or the machine may lack.

Static scenarios: ring3 beside nginx, granian (its Rust static files) and uvicorn (Starlette's StaticFiles);
over TLS and over HTTP/2, ring3 beside nginx. App scenarios: every server hosts the same application from
bench/apps/, with one worker. Sites scenarios: ring3 alone, with 100 virtual hosts and with one root.
Compress scenarios: ring3 (its default config) beside nginx with `gzip on` or with `gzip_static on`, and
ring3 alone hosting an ASGI app with --app-compress (the other ASGI servers do not compress). Proxy
scenarios: ring3, nginx and HAProxy as reverse proxies of one upstream nginx (benchkit.proxy). Workers
scenarios: ring3 and nginx with one and two worker processes (benchkit.workers), the 2-worker ones alone
while they reload.
"""

from __future__ import annotations

import importlib.util
import shutil

from benchkit import proxy, servers, sites, workers
from benchkit.scenarios import FULL, IDLE, NGINX_GZIP, NGINX_GZIP_STATIC, SINGLE, STATIC, WEBSOCKET, Scenario
from benchkit.servers import ServerSpec

PYTHON = "python"
REFERENCE = "reference"
SLOW_UNDER_STRACE = 0.2  # uvicorn and gunicorn: a fifth of the count under strace (see ServerSpec)


def ring3_app(app: str, interface: str = "asgi", tls: bool = False, http2: bool = False) -> ServerSpec:
    return ServerSpec("ring3", servers.ring3_app_argv(app, interface), has_ledger=True, tls=tls, http2=http2)


def ring3_variant(name: str, app: str, interface: str, *flags: str) -> ServerSpec:
    """ring3 with non-default settings, shown for scale beside the default."""
    return ServerSpec(name, servers.ring3_app_argv(app, interface, *flags), has_ledger=True, peer=REFERENCE)


def uvicorn_app(app: str, ws: str = "auto", name: str = "uvicorn", tls: bool = False) -> ServerSpec:
    return ServerSpec(name, servers.uvicorn_app_argv(app, ws), peer=PYTHON, strace_share=SLOW_UNDER_STRACE,
                      tls=tls)


def granian_app(app: str, interface: str = "asgi", name: str = "granian", peer: str = PYTHON,
                tls: bool = False, http2: bool = False) -> ServerSpec:
    """granian hosting `app`; with `http2`, `--http 2` (it then answers HTTP/2 alone)."""
    flags = ("--http", "2") if http2 else ()
    return ServerSpec(name, servers.granian_app_argv(app, interface, *flags), peer=peer, tls=tls, http2=http2)


def hypercorn_app(app: str) -> ServerSpec:
    """hypercorn over TLS, where it offers h2 by ALPN."""
    return ServerSpec("hypercorn", servers.hypercorn_app_argv(app), peer=PYTHON,
                      strace_share=SLOW_UNDER_STRACE, tls=True, http2=True)


def gunicorn_app(app: str) -> ServerSpec:
    return ServerSpec("gunicorn", servers.gunicorn_app_argv(app), peer=PYTHON,
                      strace_share=SLOW_UNDER_STRACE)


# ring3 serving the 10 MiB file of the static scenarios, beside its ASGI stream of the same size.
RING3_STATIC_10M = ServerSpec("ring3-static", servers.ring3_argv, has_ledger=True, peer=REFERENCE,
                              path="10m.bin")

APP_LINEUPS: dict[str, tuple[ServerSpec, ...]] = {
    "asgi-hello": (ring3_app("hello_asgi:app"),
                   ring3_variant("ring3-uvloop", "hello_asgi:app", "asgi", "--loop", "uvloop"),
                   uvicorn_app("hello_asgi:app"), granian_app("hello_asgi:app"),
                   granian_app("hello_rsgi:app", "rsgi", name="granian-rsgi", peer=REFERENCE)),
    "wsgi-hello": (ring3_app("hello_wsgi:app", "wsgi"),
                   ring3_variant("ring3-inline", "hello_wsgi:app", "wsgi", "--wsgi-threads", "0"),
                   granian_app("hello_wsgi:app", "wsgi"), gunicorn_app("hello_wsgi:app")),
    "starlette-file": (ring3_app("starlette_file:app"), granian_app("starlette_file:app"),
                       uvicorn_app("starlette_file:app")),
    "asgi-stream-10m": (ring3_app("stream_asgi:app"), RING3_STATIC_10M, uvicorn_app("stream_asgi:app"),
                        granian_app("stream_asgi:app")),
    "ws-echo": (ring3_app("ws_echo:app"), uvicorn_app("ws_echo:app", "websockets", name="uvicorn-websockets"),
                uvicorn_app("ws_echo:app", "wsproto", name="uvicorn-wsproto"), granian_app("ws_echo:app")),
    "tls-asgi-hello": (ring3_app("hello_asgi:app", tls=True), granian_app("hello_asgi:app", tls=True),
                       uvicorn_app("hello_asgi:app", tls=True)),
    "h2-asgi-hello": (ring3_app("hello_asgi:app", tls=True, http2=True),
                      granian_app("hello_asgi:app", tls=True, http2=True), hypercorn_app("hello_asgi:app")),
}


NO_REPLAY = ("--replay-cache-entries", "0")  # every request routed, none answered from remembered bytes
HOT_HOST = sites.host(sites.HOT_SITE)
# ring3 (named so: the goals and ratios take its figures) with benchkit.sites' config, beside ring3-single
# serving one root: the bench site, as in 1k-c64 (hot), or the sites' files, each a path under it
# (spread). In the spread scenario's rate runs wrk sends each server its list of the 2000 files in turn
# (Host and path, or path alone); its other requests (readiness, status, strace) fetch site 50's hot file.
SITES_LINEUPS: dict[str, tuple[ServerSpec, ...]] = {
    "sites-hot-1k": (ServerSpec("ring3", servers.ring3_sites_argv(), has_ledger=True, path=sites.HOT_PATH,
                                host=HOT_HOST),
                     ServerSpec(SINGLE, servers.ring3_argv, has_ledger=True, peer=REFERENCE)),
    "sites-spread-1k": (ServerSpec("ring3", servers.ring3_sites_argv(*NO_REPLAY), has_ledger=True,
                                   path=sites.HOT_PATH, host=HOT_HOST, targets=sites.SITES_TARGETS),
                        ServerSpec(SINGLE, servers.ring3_tree_argv(*NO_REPLAY), has_ledger=True,
                                   peer=REFERENCE, path=f"s{sites.HOT_SITE}/{sites.HOT_PATH}",
                                   targets=sites.SINGLE_TARGETS)),
}


# ring3 with its defaults (on-the-fly compression and precompressed variants are on) against nginx
# compressing every answer at gzip level 1, or serving the page's .gz (gzip_static); ring3 hosting the
# page's ASGI app with its streamed compression on (gzip 6, br 5, zstd 3), alone: its bytes are held to
# nginx-gzip's in gzip-html-100k.
NGINX_GZIP_ON = servers.nginx_argv(nopush=True, gzip=servers.GZIP_ON)
NGINX_GZIP_STATIC_ON = servers.nginx_argv(nopush=True, gzip=servers.GZIP_STATIC)
RING3_APP_COMPRESS = ServerSpec("ring3", servers.ring3_app_argv("page_asgi:app", "asgi", "--app-compress"),
                                has_ledger=True)
COMPRESS_LINEUPS: dict[str, tuple[ServerSpec, ...]] = {
    "gzip-html-100k": (servers.RING3, ServerSpec(NGINX_GZIP, NGINX_GZIP_ON, peer="native")),
    "gzip-static-100k": (servers.RING3, ServerSpec(NGINX_GZIP_STATIC, NGINX_GZIP_STATIC_ON, peer="native")),
    "asgi-gzip-html-100k": (RING3_APP_COMPRESS,),
}


def tls_files_lineup(scenario: Scenario) -> tuple[ServerSpec, ...]:
    """ring3 and nginx serving the site over TLS; in the full-handshake scenario neither issues session
    tickets (nor keeps a session cache), and nginx logs how each request's connection was set up."""
    resumption = scenario.handshake != FULL
    ring3_flags = () if resumption else ("--no-tls-session-tickets",)
    nginx = servers.nginx_argv(nopush=True, resumption=resumption, log_handshakes=bool(scenario.handshake))
    return (ServerSpec("ring3", servers.ring3_files_argv(*ring3_flags), has_ledger=True, tls=True),
            ServerSpec("nginx", nginx, peer="native", tls=True))


def h2_files_lineup(scenario: Scenario) -> tuple[ServerSpec, ...]:
    """ring3 and nginx serving the site over HTTP/2: h2 over TLS (both also take HTTP/1.1 there), or h2c
    with prior knowledge on a plain listener (ring3's default; nginx 1.22's `listen ... http2` without
    ssl)."""
    nginx = servers.nginx_argv(nopush=True, http2=True)
    return (ServerSpec("ring3", servers.ring3_argv, has_ledger=True, tls=scenario.tls, http2=True),
            ServerSpec("nginx", nginx, peer="native", tls=scenario.tls, http2=True))


def lineup(scenario: Scenario) -> tuple[ServerSpec, ...]:
    """Every server of the scenario, ring3 first."""
    if scenario.kind == IDLE:
        # uvicorn closes idle connections after 5 s, too soon to hold 10,000; granian, with its
        # default backpressure, held 2,247 of them after 60 s here (9.1 KiB each).
        return (servers.RING3, servers.NGINX)
    if scenario.workers:
        return workers.LINEUPS[scenario.name]
    if scenario.accept_encoding:
        return COMPRESS_LINEUPS[scenario.name]
    if scenario.proxy:
        return proxy.LINEUP
    if scenario.kind != STATIC:
        return APP_LINEUPS[scenario.name]
    if scenario.sites:
        return SITES_LINEUPS[scenario.name]
    if scenario.http2:
        return h2_files_lineup(scenario)
    if scenario.tls:
        return tls_files_lineup(scenario)
    if scenario.new_connections:
        return (servers.RING3, servers.NGINX)
    nginx = (servers.NGINX, servers.NGINX_NOPUSH_OFF) if scenario.nopush_variants else (servers.NGINX,)
    return (servers.RING3, *nginx, servers.GRANIAN, servers.UVICORN)


def missing_for(scenario: Scenario) -> str | None:
    """Why ring3 cannot run the scenario here (an interface not built yet, no C compiler for the
    WebSocket load generator, no openssl for the TLS certificate), or None."""
    if scenario.requires and importlib.util.find_spec(scenario.requires) is None:
        return f"this ring3 has no {scenario.requires}"
    if scenario.kind == WEBSOCKET and shutil.which("cc") is None:
        return "no C compiler (cc) to build bench/wsload"
    if scenario.tls and shutil.which("openssl") is None:
        return "no openssl command to make the certificate"
    return None
