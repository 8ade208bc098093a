"""The proxy scenarios: ring3, nginx and HAProxy as reverse proxies in front of one upstream, and what
went through ring3's Python on the way.

The upstream is one nginx serving the bench site (`servers.nginx_argv`), pinned to the load generator's
CPU (CPU 0), so that the proxy under test has CPU 1 to itself as every server under test does; it is
started once per proxy scenario and all three proxies front it at once (its address in the run's work
folder, `UPSTREAM_FILE`, read by their command lines). A --quick run on a machine without nginx (it
installs nothing) takes ring3 serving the site as the upstream instead, and says so.

- ring3: a `[[site]]` for every host whose one location `/` has `proxy = { upstreams = [...], keepalive =
  64 }` (and keepalive_requests raised, as every server's in the bench: no connection is closed part-way).
- nginx-proxy: `proxy_pass` to an `upstream` block with `keepalive 64`, `proxy_http_version 1.1` and
  `proxy_set_header Connection ""`; nginx's other proxy settings are its defaults (proxy_buffering on).
- haproxy: `mode http`, `http-reuse always`, one `server` line; one thread (`nbthread 1`), in the
  foreground (`-db`).

Each proxy's CPU and syscalls are its own process tree's (the upstream is not in it). For ring3 the body
check (`body_path`) then asks for the scenario's file over one connection, with request bytes it writes
itself, and reads ring3's ledger (/metrics) around it: the bytes ring3 read into Python beyond those
requests and the upstream's response heads are body bytes that went through Python (0 for a spliced body,
the whole body below splice_min_size), beside the bytes it sent zero-copy (splice: ring3 serves no file
here) and copied.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchkit import syscalls, tools
from benchkit.figures import Record, num
from benchkit.scenarios import FILES, HAPROXY, KIB, MIB, NGINX_PROXY
from benchkit.servers import (
    HOST,
    KEEPALIVE_REQUESTS,
    LOAD_CPU,
    Launch,
    Server,
    ServerSpec,
    nginx_argv,
    ring3_argv,
    ring3_config_argv,
    running,
    start,
    stop,
)

UPSTREAM_FILE = "proxy-upstream.txt"  # HOST:PORT of the upstream, in the run's work folder
KEEPALIVE = 64  # idle connections each proxy keeps to the upstream (as many as the clients')
BODY_CHECK_BYTES = 80 * MIB  # the body check's budget: 8 responses of 10 MiB, 100 of 1 KiB
BODY_CHECK_MAX = 100
QUICK_SHARE = 4  # --quick asks for a quarter of them (at least 2)
CHECK_TIMEOUT = 60.0  # seconds for the whole body check
READ_SIZE = 1024 * KIB


def upstream_address(work: Path) -> str:
    """HOST:PORT of the running upstream (UPSTREAM_FILE)."""
    return (work / UPSTREAM_FILE).read_text().strip()


@dataclass(frozen=True)
class Upstream:
    server: Server
    kind: str  # "nginx", or "ring3" (--quick without nginx)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.server.launch.port}"

    def record(self) -> Record:
        return {"server": self.kind, "address": self.address, "cpu": LOAD_CPU}


def start_upstream(root: Path, work: Path, probe: str) -> Upstream:
    """The upstream serving `root`, pinned to the load CPU, its address written to UPSTREAM_FILE."""
    with_nginx = tools.find_tool("nginx") is not None
    spec = ServerSpec("upstream-nginx" if with_nginx else "upstream-ring3",
                      nginx_argv(nopush=True) if with_nginx else ring3_argv)
    upstream = Upstream(start(spec, root, work, probe, with_admin=False, cpu=LOAD_CPU),
                        "nginx" if with_nginx else "ring3")
    (work / UPSTREAM_FILE).write_text(upstream.address + "\n")
    return upstream


@contextmanager
def servers_running(specs: Sequence[ServerSpec], root: Path, work: Path, probe: str, with_admin: bool,
                    with_upstream: bool) -> Iterator[tuple[list[Server], dict[str, str], Upstream | None]]:
    """servers.running, with the upstream started first where `with_upstream` (a proxy scenario) and
    stopped last; if it does not start, no server runs and each one's error says why."""
    if not with_upstream:
        with running(specs, root, work, probe, with_admin) as (started, failed):
            yield started, failed, None
        return
    try:
        upstream = start_upstream(root, work, probe)
    except (RuntimeError, OSError) as exc:
        yield [], {spec.name: f"upstream: {exc}" for spec in specs}, None
        return
    try:
        with running(specs, root, work, probe, with_admin) as (started, failed):
            yield started, failed, upstream
    finally:
        stop(upstream.server)


RING3_CONFIG = """\
# Written by bench/benchkit/proxy.py: every host's requests to the bench's upstream.
[[site]]
hosts = ["*"]

  [[site.location]]
  path = "/"
  proxy = {{ upstreams = ["{upstream}"], keepalive = {keepalive}, keepalive_requests = {requests} }}
"""


def ring3_proxy_config(launch: Launch) -> Path:
    config = launch.work / f"ring3-proxy-{launch.port}.toml"
    config.write_text(RING3_CONFIG.format(upstream=upstream_address(launch.work), keepalive=KEEPALIVE,
                                          requests=KEEPALIVE_REQUESTS))
    return config


NGINX_PROXY_CONF = """\
# Written by bench/benchkit/proxy.py: one worker, no access log, connections kept open both ways.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
user root;
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}-error.log warn;
events {{
    worker_connections 16384;
    use epoll;
}}
http {{
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests {keepalive_requests};
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy-{port};
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream bench_upstream {{
        server {upstream};
        keepalive {keepalive};
        keepalive_requests {keepalive_requests};
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_proxy_argv(launch: Launch) -> list[str]:
    conf = launch.work / f"nginx-proxy-{launch.port}.conf"
    conf.write_text(NGINX_PROXY_CONF.format(work=launch.work, port=launch.port, host=HOST,
                                            upstream=upstream_address(launch.work), keepalive=KEEPALIVE,
                                            keepalive_requests=KEEPALIVE_REQUESTS))
    nginx = tools.find_tool("nginx") or "nginx"
    return [nginx, "-c", str(conf), "-p", str(launch.work), "-e",
            str(launch.work / f"nginx-{launch.port}-error.log")]


HAPROXY_CONF = """\
# Written by bench/benchkit/proxy.py: one thread, HTTP mode, server connections reused across clients.
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 65s
    timeout server 65s
    timeout http-keep-alive 65s
    http-reuse always

frontend bench
    bind {host}:{port}
    default_backend upstream

backend upstream
    server upstream1 {upstream}
"""


def haproxy_argv(launch: Launch) -> list[str]:
    conf = launch.work / f"haproxy-{launch.port}.cfg"
    conf.write_text(HAPROXY_CONF.format(host=HOST, port=launch.port, upstream=upstream_address(launch.work)))
    return [tools.find_tool("haproxy") or "haproxy", "-db", "-f", str(conf)]


LINEUP: tuple[ServerSpec, ...] = (
    ServerSpec("ring3", ring3_config_argv(ring3_proxy_config), has_ledger=True),
    ServerSpec(NGINX_PROXY, nginx_proxy_argv, peer="native"),
    ServerSpec(HAPROXY, haproxy_argv, peer="native"),
)


# -- the body check -------------------------------------------------------------------------------------

def check_count(size: int, quick: bool) -> int:
    """Responses the body check asks for: BODY_CHECK_BYTES of bodies, at most BODY_CHECK_MAX."""
    count = max(2, min(BODY_CHECK_MAX, BODY_CHECK_BYTES // size))
    return max(2, count // QUICK_SHARE) if quick else count


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, int, int]:
    """One response with a Content-Length off a keep-alive connection: (status, head bytes, body
    bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline or len(data) > 64 * KIB:
            raise RuntimeError("no complete response head")
        chunk = sock.recv(64 * KIB)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
    lengths = [value for name, value in fields.items() if name.strip().lower() == b"content-length"]
    if not lengths:
        raise RuntimeError(f"a response without Content-Length: {lines[0]!r}")
    length = int(lengths[0])
    got = len(rest)
    buffer = bytearray(READ_SIZE)
    while got < length:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{got} of {length} body bytes in time")
        read = sock.recv_into(buffer, min(READ_SIZE, length - got))
        if read == 0:
            raise RuntimeError(f"connection closed after {got} of {length} body bytes")
        got += read
    if got != length:
        raise RuntimeError(f"{got} body bytes for a Content-Length of {length}")
    return status, len(head) + 4, length


def _ask(port: int, request: bytes, count: int, deadline: float) -> list[tuple[int, int, int]]:
    """`count` requests, one after another, on one connection to HOST:port."""
    answers = []
    with socket.create_connection((HOST, port), timeout=10) as sock:
        for _ in range(count):
            sock.sendall(request)
            answers.append(_read_response(sock, deadline))
    return answers


LEDGER_KEYS = {"received": "ring3_bytes_received_total",
               "zero_copy": 'ring3_bytes_sent_total{path="zero_copy"}',
               "copied": 'ring3_bytes_sent_total{path="copied"}',
               "spliced": "ring3_bytes_spliced_total",  # where /metrics has it
               "splice": 'ring3_syscalls_total{kind="splice"}'}


def _window(first: dict[str, float], second: dict[str, float], third: dict[str, float]) -> dict[str, float]:
    """What the load between the second and third scrape added to each ledger figure: the third's gain
    less one scrape's own (the second's over the first: a scrape's request bytes, its answer's)."""
    found = {}
    for name, key in LEDGER_KEYS.items():
        if key in third:
            found[name] = (third[key] - second.get(key, 0.0)) - (second.get(key, 0.0) - first.get(key, 0.0))
    return found


def body_path(server: Server, upstream: Upstream, path: str, quick: bool) -> Record:
    """The scenario's file asked `count` times from ring3 with request bytes written here, and ring3's
    ledger around it: body bytes read into Python (bytes received beyond the requests and the upstream's
    response heads, the upstream's head measured by the same request sent to it directly), bytes sent
    zero-copy (the spliced bodies: ring3 serves no file here) and copied (response heads, the requests it
    sent upstream), and splice calls, each per response."""
    admin = server.launch.admin_port
    if admin is None:
        raise RuntimeError("no admin listener: no ledger to read")
    size = FILES[path]
    count = check_count(size, quick)
    deadline = time.monotonic() + CHECK_TIMEOUT
    request = f"GET /{path} HTTP/1.1\r\nHost: {HOST}:{server.launch.port}\r\n\r\n".encode()
    direct = _ask(upstream.server.launch.port, request, 1, deadline)[0]
    first = syscalls.scrape(admin)
    second = syscalls.scrape(admin)
    answers = _ask(server.launch.port, request, count, deadline)
    third = syscalls.scrape(admin)
    wrong = [(status, body) for status, _, body in answers if status != 200 or body != size]
    if wrong:
        raise RuntimeError(f"expected 200 with {size} bytes, got (status, bytes) {wrong[:3]}")
    gained = _window(first, second, third)
    python = gained["received"] - count * (len(request) + direct[1])
    per = {name: value / count for name, value in gained.items()}
    return {
        "responses": count, "body_bytes": size, "request_bytes": len(request),
        "upstream_head_bytes": direct[1],
        "python_bytes_per_response": python / count, "python_share": python / (count * size),
        "zero_copy_bytes_per_response": per["zero_copy"], "copied_bytes_per_response": per["copied"],
        "spliced_bytes_per_response": per.get("spliced"), "splice_calls_per_response": per.get("splice"),
        "error": None,
    }


def add_body_check(record: Record, server: Server, upstream: Upstream, path: str, quick: bool) -> None:
    """ring3's body check (body_path) into its record; a wrong answer is the row's error too."""
    try:
        record["proxy_body"] = body_path(server, upstream, path, quick)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        record["proxy_body"] = {"error": str(exc)}
        if not record.get("error"):
            record["error"] = f"body check: {exc}"


# -- the report -----------------------------------------------------------------------------------------

NOTE = ("Proxy scenarios: ring3, nginx-proxy and haproxy front one upstream ({upstream}, pinned to CPU "
        "{cpu} with the load generator); each proxy's CPU and syscalls are its own processes'. The body "
        "check asks ring3 for the file (responses: how many times) over one connection, with request "
        "bytes the harness writes, between two reads of its ledger: body bytes through Python are the "
        "bytes it read beyond those requests and the upstream's response heads (each as long as the "
        "upstream's answer to the same request sent to it directly); zero-copy bytes are those it sent by "
        "splice (it serves no file here); copied bytes are the response heads and the requests it sent "
        "upstream.")


def body_table(report: Record) -> list[str]:
    """ring3's body check in each proxy scenario: how the bodies went, per response."""
    rows = []
    note = ""
    for scenario in report["scenarios"]:
        if not scenario.get("upstream"):
            continue
        upstream = scenario["upstream"]
        note = NOTE.format(upstream=f"{upstream['server']} at {upstream['address']}", cpu=upstream["cpu"])
        body = scenario["results"].get("ring3", {}).get("proxy_body")
        if not body:
            continue
        if body.get("error"):
            reason = " ".join(body["error"].split())[:120].replace("|", "/")
            rows.append(f"| {scenario['title']} | failed: {reason} |" + " |" * 6)
            continue
        spliced = body.get("spliced_bytes_per_response")
        rows.append(f"| {scenario['title']} | {body['responses']} | {body['body_bytes']:,} | "
                    f"{num(body['python_bytes_per_response'])} ({body['python_share']:.2%}) | "
                    f"{num(body['zero_copy_bytes_per_response'])}"
                    f"{'' if spliced is None else f' (spliced {num(spliced)})'} | "
                    f"{num(body['copied_bytes_per_response'])} | "
                    f"{num(body['splice_calls_per_response'], 2)} | "
                    f"{body['upstream_head_bytes']} |")
    if not note:
        return []
    lines = [note, ""]
    if rows:
        lines += ["| scenario | responses | body bytes | body bytes through Python per response (share) | "
                  "zero-copy bytes per response | copied bytes per response | splice calls per response | "
                  "upstream head bytes |", "|" + "---|" * 8, *rows]
    return lines
