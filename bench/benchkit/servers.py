"""The servers under test: how each is started (one worker, pinned to the server CPU; the workers
scenarios' 2-worker servers pinned to both CPUs), awaited and stopped."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import h2load, sites, tls, tools

HOST = "127.0.0.1"
SERVER_CPU = 1
LOAD_CPU = 0
PEERS_DIR = tools.BENCH_DIR / "peers"
APPS_DIR = tools.BENCH_DIR / "apps"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
KEEPALIVE_REQUESTS = 1_000_000  # no server closes a benchmark connection part-way


@dataclass(frozen=True)
class Launch:
    """Where one server instance listens and keeps its files."""

    port: int
    root: Path
    work: Path
    admin_port: int | None
    tls: tls.TlsFiles | None = None  # the certificate and key of a TLS server (ServerSpec.tls)


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: Callable[[Launch], list[str]]
    prefix: str = ""  # URL path under which the files are served
    # "" (ring3 itself), "native", "python" (what ring3 is compared with), "native-variant" or
    # "reference" (shown for scale: another interface or ring3 serving a file)
    peer: str = ""
    has_ledger: bool = False
    # Share of the scenario's request count sent under strace: uvicorn makes ~270 syscalls per request,
    # and strace stops the server at each one (5000 requests would take minutes).
    strace_share: float = 1.0
    path: str | None = None  # fetched instead of the scenario's path (ring3-static in asgi-stream-10m)
    tls: bool = False  # HTTPS with the run's certificate (benchkit.tls)
    # Probed for readiness over HTTP/2 (h2 over TLS, h2c without): granian --http 2 and nginx's h2c
    # listener answer nothing else on their port.
    http2: bool = False
    env: dict[str, str] = field(default_factory=dict)  # added to its environment (ring3-base: PYTHONPATH)
    host: str = ""  # the Host header of every request to it instead of the URL's (a virtual host)
    # A file of the run's work folder whose requests (HOST PATH or PATH lines) wrk cycles through in the
    # rate runs (bench/wrk/targets.lua) instead of the URL's; the other requests take the URL (and `host`).
    targets: str = ""
    workers: int = 1  # worker processes (a master beside them when more than 1: ring3 --workers, nginx)
    cpus: str = ""  # taskset's CPU list instead of SERVER_CPU ("0,1": the 2-worker servers, load CPU shared)

    @property
    def family(self) -> str:
        """What --servers names: granian-rsgi is granian's, nginx-nopush-off nginx's."""
        return self.name.split("-")[0]


@dataclass
class Server:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    launch: Launch
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def origin(self) -> str:
        """scheme://host:port, without a path."""
        return f"{'https' if self.spec.tls else 'http'}://{HOST}:{self.launch.port}"

    def url(self, file: str) -> str:
        return f"{self.origin}{self.spec.prefix}/{self.spec.path or file}"

    @property
    def targets(self) -> Path | None:
        """The requests that wrk cycles through (ServerSpec.targets), or None: the URL's alone."""
        return self.launch.work / self.spec.targets if self.spec.targets else None


def pinning_available() -> bool:
    return {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)


def pinned(cpu: int | str, argv: Sequence[str]) -> list[str]:
    """`taskset -c CPU argv` (CPU: one, or a list such as "0,1") where the machine has the bench's two
    CPUs, else argv as is."""
    return ["taskset", "-c", str(cpu), *argv] if pinning_available() else list(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ring3_has_admin(env: dict[str, str] | None = None) -> bool:
    """The admin listener (/metrics) is the ledger's window; older ring3 builds lack it (`env`: the
    environment that picks the build, as ServerSpec.env)."""
    out = subprocess.run([sys.executable, "-m", "ring3", "serve", "--help"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **(env or {})})
    return "--admin" in out.stdout


def _ring3_argv(launch: Launch, what: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "ring3", "serve", *what, "--listen", f"{HOST}:{launch.port}",
            "--access-log", "off", "--log-level", "warning",
            "--max-requests-per-connection", str(KEEPALIVE_REQUESTS)]
    if launch.admin_port is not None:
        argv += ["--admin", f"{HOST}:{launch.admin_port}"]
    return argv + tls_flags(launch, "--tls-cert", "--tls-key")


def tls_flags(launch: Launch, cert_flag: str, key_flag: str) -> list[str]:
    """A TLS server's certificate and key options, spelled its way (nothing for plain HTTP)."""
    if launch.tls is None:
        return []
    return [cert_flag, str(launch.tls.cert), key_flag, str(launch.tls.key)]


def ring3_argv(launch: Launch) -> list[str]:
    return _ring3_argv(launch, [str(launch.root)])


def ring3_files_argv(*extra: str) -> Callable[[Launch], list[str]]:
    """ring3 serving the bench site with extra flags (--no-tls-session-tickets)."""
    def argv(launch: Launch) -> list[str]:
        return _ring3_argv(launch, [str(launch.root), *extra])
    return argv


def ring3_sites_argv(*extra: str) -> Callable[[Launch], list[str]]:
    """ring3 with the sites scenarios' config (benchkit.sites: 100 virtual hosts of 20 locations each, in
    the run's work folder) and no ROOT, with extra flags (--replay-cache-entries 0)."""
    def argv(launch: Launch) -> list[str]:
        return _ring3_argv(launch, ["--config", str(sites.config_file(launch.work)), *extra])
    return argv


def ring3_config_argv(config: Callable[[Launch], Path], *extra: str) -> Callable[[Launch], list[str]]:
    """ring3 with the config file that `config` writes for the instance (the proxy scenarios' upstream
    address), no ROOT, and extra flags."""
    def argv(launch: Launch) -> list[str]:
        return _ring3_argv(launch, ["--config", str(config(launch)), *extra])
    return argv


def ring3_tree_argv(*extra: str) -> Callable[[Launch], list[str]]:
    """ring3 serving the sites scenarios' files as one root (each site's folder a path under it)."""
    def argv(launch: Launch) -> list[str]:
        return _ring3_argv(launch, [str(sites.tree(launch.work)), *extra])
    return argv


def ring3_app_argv(app: str, interface: str, *extra: str) -> Callable[[Launch], list[str]]:
    """ring3 hosting `app` (module:attribute of bench/apps/), with its default (asyncio) loop unless
    `extra` flags say otherwise."""
    def argv(launch: Launch) -> list[str]:
        return _ring3_argv(launch, ["--app", app, "--app-dir", str(APPS_DIR), "--interface", interface,
                                    *extra])
    return argv


NGINX_CONF = """\
# Written by bench/benchkit/servers.py: {workers} worker(s), sendfile, no access log (but the handshake
# log of the TLS handshake scenarios), connections kept open.
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{
    worker_connections 16384;
    use epoll;
}}
http {{
    default_type application/octet-stream;
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush {nopush};
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests {keepalive_requests};
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    log_format handshakes "{handshake_format}";
    server {{
        listen {host}:{port}{ssl}{http2};
        root {root};
{tls}{gzip}    }}
}}
"""
# The server's TLS lines: TLS 1.3 is not in nginx 1.22's default ssl_protocols; ring3's minimum is 1.2.
NGINX_TLS = """\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
"""
# No session tickets and no session cache: every handshake is a full one.
NGINX_NO_RESUMPTION = """\
        ssl_session_tickets off;
        ssl_session_cache off;
"""
# One short line per request, buffered (a write per thousands of requests), flushed within 250 ms.
NGINX_HANDSHAKE_LOG = """\
        access_log {log} handshakes buffer=32k flush=250ms;
"""
NGINX_FLUSH_S = 0.6  # the handshake log's flush interval, and some
# The compress scenarios' peers: the config has no mime.types, so the page's type is given (with its
# charset, as ring3 sends it); Vary: Accept-Encoding on, as ring3 sends it. `gzip on` at its default
# level 1, compressing every answer (text/html is always in gzip_types); `gzip_static on` serves FILE.gz
# beside the file to a client that takes gzip (Debian's nginx has no brotli module for FILE.br).
NGINX_TYPES = """\
        types { text/html html; text/css css; application/javascript js; application/json json; }
        charset utf-8;
        gzip_vary on;
"""
GZIP_ON = "on"
GZIP_STATIC = "static"
NGINX_COMPRESSION = {
    GZIP_ON: NGINX_TYPES + """\
        gzip on;
        gzip_comp_level 1;
        gzip_min_length 256;
        gzip_types text/css application/javascript application/json image/svg+xml;
""",
    GZIP_STATIC: NGINX_TYPES + """\
        gzip_static on;
""",
}


def handshake_log(launch: Launch) -> Path:
    """nginx's handshake log (NGINX_HANDSHAKE_LOG), of one instance."""
    return launch.work / f"nginx-{launch.port}-handshakes.log"


def _nginx_tls(launch: Launch, resumption: bool, log_handshakes: bool) -> str:
    if launch.tls is None:
        return ""
    lines = NGINX_TLS.format(cert=launch.tls.cert, key=launch.tls.key)
    if not resumption:
        lines += NGINX_NO_RESUMPTION
    if log_handshakes:
        lines += NGINX_HANDSHAKE_LOG.format(log=handshake_log(launch))
    return lines


def nginx_argv(nopush: bool, resumption: bool = True, log_handshakes: bool = False,
               http2: bool = False, gzip: str = "", workers: int = 1) -> Callable[[Launch], list[str]]:
    """nginx's command line, its config written first; with TLS, sessions resumable or not, and each
    request's handshake logged or not; with `http2`, HTTP/2 on the listener (nginx 1.22's `listen ...
    http2`: h2 by ALPN beside HTTP/1.1 with ssl, h2c with prior knowledge alone without); with `gzip`
    (GZIP_ON, GZIP_STATIC), the compress scenarios' lines (NGINX_COMPRESSION); `workers`: its
    worker_processes (the workers scenarios' nginx-w2: 2)."""
    def argv(launch: Launch) -> list[str]:
        conf = launch.work / f"nginx-{launch.port}.conf"
        conf.write_text(NGINX_CONF.format(
            work=launch.work, workers=workers, nopush="on" if nopush else "off",
            keepalive_requests=KEEPALIVE_REQUESTS,
            host=HOST, port=launch.port, root=launch.root, handshake_format=tls.NGINX_LOG_FORMAT,
            ssl=" ssl" if launch.tls else "", http2=" http2" if http2 else "",
            tls=_nginx_tls(launch, resumption, log_handshakes), gzip=NGINX_COMPRESSION[gzip] if gzip else ""))
        nginx = tools.find_tool("nginx") or "nginx"
        return [nginx, "-c", str(conf), "-p", str(launch.work), "-e", str(launch.work / "nginx-error.log")]
    return argv


def granian_argv(launch: Launch) -> list[str]:
    return [str(tools.VENV / "bin" / "granian"), "--interface", "asgi", "--host", HOST,
            "--port", str(launch.port), "--workers", "1", "--no-access-log", "--log-level", "warning",
            "--static-path-route", "/static", "--static-path-mount", str(launch.root),
            "--working-dir", str(APPS_DIR), "granian_static:app"]


def granian_app_argv(app: str, interface: str, *extra: str) -> Callable[[Launch], list[str]]:
    """granian hosting `app`, with extra flags (--http 2)."""
    def argv(launch: Launch) -> list[str]:
        return [str(tools.VENV / "bin" / "granian"), "--interface", interface, "--host", HOST,
                "--port", str(launch.port), "--workers", "1", "--no-access-log", "--log-level", "warning",
                *tls_flags(launch, "--ssl-certificate", "--ssl-keyfile"), *extra, "--working-dir",
                str(APPS_DIR), app]
    return argv


def hypercorn_app_argv(app: str) -> Callable[[Launch], list[str]]:
    """hypercorn (asyncio worker) hosting `app`, given by its file's path: hypercorn imports it from
    there. One worker process (and the arbiter); h2 and http/1.1 offered by ALPN over TLS. Its config
    file lifts the 1,000 requests it serves on a connection (HTTP/2 too) before closing it."""
    module, attribute = app.split(":")
    def argv(launch: Launch) -> list[str]:
        config = launch.work / f"hypercorn-{launch.port}.toml"
        config.write_text(f"keep_alive_max_requests = {KEEPALIVE_REQUESTS}\n")
        return [str(tools.VENV / "bin" / "hypercorn"), "--config", str(config), "--bind",
                f"{HOST}:{launch.port}", "--workers", "1", "--log-level", "warning",
                *tls_flags(launch, "--certfile", "--keyfile"), f"{APPS_DIR / module}:{attribute}"]
    return argv


def _uvicorn_argv(launch: Launch, app: str, app_dir: Path, ws: str) -> list[str]:
    return [str(tools.VENV_PYTHON), "-m", "uvicorn", app, "--app-dir", str(app_dir),
            "--host", HOST, "--port", str(launch.port), "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--ws", ws, "--no-access-log", "--log-level", "warning",
            *tls_flags(launch, "--ssl-certfile", "--ssl-keyfile")]


def uvicorn_argv(launch: Launch) -> list[str]:
    return _uvicorn_argv(launch, "starlette_app:app", PEERS_DIR, "auto")


def uvicorn_app_argv(app: str, ws: str = "auto") -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        return _uvicorn_argv(launch, app, APPS_DIR, ws)
    return argv


def gunicorn_app_argv(app: str) -> Callable[[Launch], list[str]]:
    """gunicorn's threaded worker: one process of 10 threads (and the arbiter)."""
    def argv(launch: Launch) -> list[str]:
        return [str(tools.VENV / "bin" / "gunicorn"), "-k", "gthread", "--threads", "10", "-w", "1",
                "--bind", f"{HOST}:{launch.port}", "--chdir", str(APPS_DIR), "--log-level", "warning", app]
    return argv


RING3 = ServerSpec("ring3", ring3_argv, has_ledger=True)
NGINX = ServerSpec("nginx", nginx_argv(nopush=True), peer="native")
NGINX_NOPUSH_OFF = ServerSpec("nginx-nopush-off", nginx_argv(nopush=False), peer="native-variant")
GRANIAN = ServerSpec("granian", granian_argv, prefix="/static", peer="python")
UVICORN = ServerSpec("uvicorn", uvicorn_argv, peer="python", strace_share=0.2)


def start(spec: ServerSpec, root: Path, work: Path, probe: str, with_admin: bool,
          cpu: int = SERVER_CPU) -> Server:
    """The server pinned to `cpu` (the proxy scenarios' upstream: the load CPU) or to its spec's `cpus`,
    once `probe` answers."""
    admin = free_port() if with_admin and spec.has_ledger else None
    launch = Launch(free_port(), root, work, admin, tls.files(work) if spec.tls else None)
    log_path = work / f"{spec.name}-{launch.port}.log"
    env = {**os.environ, "BENCH_ROOT": str(root), "PYTHONUNBUFFERED": "1", **spec.env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(pinned(spec.cpus or cpu, spec.argv(launch)), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = Server(spec, process, launch, log_path)
    try:
        wait_ready(server, spec.path or probe)
    except BaseException:
        stop(server)
        raise
    return server


def _get_status(launch: Launch, path: str, host: str = "") -> int:
    conn = (http.client.HTTPConnection(HOST, launch.port, timeout=2) if launch.tls is None else
            http.client.HTTPSConnection(HOST, launch.port, timeout=2, context=tls.client_context(launch.tls)))
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _answers(server: Server, path: str) -> bool:
    """`path` answered with 200 (over HTTP/2: with 2xx, by h2load)."""
    if server.spec.http2:
        return h2load.answers_over(h2load.H2 if server.spec.tls else h2load.H2C, server.origin + path)
    try:
        return _get_status(server.launch, path, server.spec.host) == 200
    except OSError:
        return False


def wait_ready(server: Server, probe: str) -> None:
    """Until `probe` (a path under the server's prefix) is answered with 200 (bounded by START_TIMEOUT)."""
    deadline = time.monotonic() + START_TIMEOUT
    path = f"{server.spec.prefix}/{probe}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited: {tail(server.log_path)}")
        if _answers(server, path):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.spec.name} not ready in {START_TIMEOUT}s: {tail(server.log_path)}")


def tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def stop(server: Server) -> int:
    """SIGTERM, then SIGKILL past STOP_TIMEOUT; returns the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


@contextmanager
def running(specs: Sequence[ServerSpec], root: Path, work: Path, probe: str,
            with_admin: bool) -> Iterator[tuple[list[Server], dict[str, str]]]:
    """All the servers at once, each on its own port, and why those that did not start failed; all
    stopped on the way out."""
    servers: list[Server] = []
    failed: dict[str, str] = {}
    try:
        for spec in specs:
            try:
                servers.append(start(spec, root, work, probe, with_admin))
            except (RuntimeError, OSError) as exc:
                failed[spec.name] = str(exc)
        yield list(servers), failed
    finally:
        for server in servers:
            stop(server)
