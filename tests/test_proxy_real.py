"""The reverse proxy between real servers and real clients, all on 127.0.0.1: nginx serving files and a
Starlette application under uvicorn (JSON, a stream, uploads, a WebSocket echo) as the upstreams; curl,
httpx (HTTP/1.1 and HTTP/2), the h2 library, the `websockets` client, h2load and headless Chromium as the
clients; ring3 in between, once listening plain (HTTP/1.1 and h2c) and once over TLS (h2 by ALPN)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect as ws_connect
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from conftest import ResponseReader, RunningServer, start_ring3
from h2_kit import H2Client
from sites_kit import request
from test_examples import chromium_page
from test_h2_websocket import H2WebSocket
from test_ledger import admin_url, scrape
from tls_kit import Certs

MIB = 1024 * 1024
BIG = 10 * MIB
UPLOAD = 5 * MIB
LOOPBACK = "127.0.0.1"

# -- the upstreams ------------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    types {{ text/html html; text/plain txt; }}
    default_type application/octet-stream;
    log_format proxied '$request|$http_range|$http_x_forwarded_for|$http_x_forwarded_proto|$connection';
    access_log {prefix}/access.log proxied;
    server_tokens off;
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""

# The application behind the proxy: what it was given (client, scheme, the forwarded fields), a stream
# of lines, an upload's digest, and a WebSocket echo that records how each socket ended.
APP = '''
import asyncio
import hashlib
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

CLOSES = []


def seen(scope, headers):
    client = scope.get("client")
    return {"client": list(client) if client else None, "scheme": scope["scheme"],
            "http_version": scope.get("http_version"), "path": scope["path"],
            "query": scope["query_string"].decode(), "host": headers.get("host"),
            "x_forwarded_for": headers.get("x-forwarded-for"),
            "x_forwarded_proto": headers.get("x-forwarded-proto"),
            "x_forwarded_host": headers.get("x-forwarded-host"), "forwarded": headers.get("forwarded"),
            "via": headers.get("via"), "connection": headers.get("connection")}


async def info(request):
    await asyncio.sleep(float(request.query_params.get("sleep", "0")))
    headers = {"x-app": "starlette"}
    if "pad" in request.query_params:  # a large field: HTTP/2 carries its block in CONTINUATION frames
        headers["x-pad"] = "p" * int(request.query_params["pad"])
    return JSONResponse(seen(request.scope, request.headers), headers=headers)


async def upload(request):
    delay = float(request.query_params.get("delay", "0"))
    await asyncio.sleep(float(request.query_params.get("hold", "0")))  # before reading a byte
    digest = hashlib.sha256()
    size = pieces = 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
        pieces += 1
        if delay:
            await asyncio.sleep(delay)
    return JSONResponse({"size": size, "sha256": digest.hexdigest(), "pieces": pieces,
                         "content_length": request.headers.get("content-length"),
                         "transfer_encoding": request.headers.get("transfer-encoding")})


async def stream(request):
    count = int(request.query_params.get("lines", "5"))
    delay = float(request.query_params.get("delay", "0.2"))

    async def lines():
        for number in range(count):
            yield f"line {number} at {time.monotonic():.3f}\\n".encode()
            if number + 1 < count:
                await asyncio.sleep(delay)

    return StreamingResponse(lines(), media_type="text/plain")


async def closes(request):
    return JSONResponse(CLOSES)


async def echo(websocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            CLOSES.append(message.get("code"))
            return
        text = message.get("text")
        if text == "bye":
            await websocket.close(1000)
            CLOSES.append("server")
            return
        if text == "whoami":
            await websocket.send_json(seen(websocket.scope, websocket.headers))
        elif text is not None:
            await websocket.send_text("echo: " + text)
        else:
            await websocket.send_bytes(message["bytes"])


app = Starlette(routes=[Route("/app/info", info), Route("/app/upload", upload, methods=["POST", "PUT"]),
                        Route("/app/stream", stream), Route("/app/closes", closes),
                        WebSocketRoute("/app/ws", echo)])
'''

# Served by nginx through the proxy: the page opens a WebSocket to the application, through the proxy
# again, and says in its DOM how it went.
WS_PAGE = """\
<!doctype html>
<title>echo through the proxy</title>
<p id="status">connecting</p>
<script>
const status = document.getElementById("status");
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(scheme + "//" + location.host + "/app/ws");
socket.binaryType = "arraybuffer";
const sent = new Uint8Array(200000);
for (let i = 0; i < sent.length; i++) sent[i] = (i * 7) % 251;
socket.onopen = () => { status.textContent = "open"; socket.send("from the page"); };
socket.onmessage = (event) => {
  if (typeof event.data === "string") {
    if (event.data !== "echo: from the page") { status.textContent = "wrong text: " + event.data; return; }
    status.textContent = "text echoed";
    socket.send(sent);
    return;
  }
  const got = new Uint8Array(event.data);
  if (got.length !== sent.length || got.some((value, i) => value !== sent[i])) {
    status.textContent = "wrong bytes: " + got.length;
    return;
  }
  status.textContent = "echoed";
  socket.send("bye");
};
socket.onerror = () => { status.textContent = "error after " + status.textContent; };
socket.onclose = (event) => {
  if (status.textContent === "echoed") status.textContent = "closed " + event.code + " " + event.wasClean;
};
</script>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    assert path, f"{name} is missing: scripts/test installs it"
    return path


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    prefix: Path

    def log(self) -> list[str]:
        return (self.prefix / "access.log").read_text().splitlines()


def start_nginx(root: Path, prefix: Path) -> Nginx:
    """nginx on a free loopback port (three tries: the port is picked before nginx binds it)."""
    nginx = tool("nginx")
    for _ in range(3):
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", prefix=prefix,
                                          host=LOOPBACK, port=port, root=root))
        process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix), "-e",
                                    str(prefix / "error.log")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                return Nginx(process, port, prefix)
            except OSError:
                time.sleep(0.05)
        stop_process(process)
    raise AssertionError(f"nginx did not start: {(prefix / 'error.log').read_text()}")


@dataclass
class Uvicorn:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def start_uvicorn(app_dir: Path) -> Uvicorn:
    """uvicorn on a socket bound here (passed by --fd: no race for the port), trusting the proxy's
    X-Forwarded-For and X-Forwarded-Proto (--proxy-headers, --forwarded-allow-ips 127.0.0.1)."""
    (app_dir / "proxied_app.py").write_text(APP)
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    log = app_dir / "uvicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "proxied_app:app", "--app-dir", str(app_dir),
             "--fd", str(listener.fileno()), "--proxy-headers", "--forwarded-allow-ips", LOOPBACK,
             "--ws", "wsproto", "--http", "h11", "--log-level", "warning", "--no-access-log",
             "--timeout-graceful-shutdown", "2"],
            stdout=out, stderr=subprocess.STDOUT, pass_fds=[listener.fileno()])
    listener.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://{LOOPBACK}:{port}/app/closes", timeout=2).status_code == 200:
                return Uvicorn(process, port, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(process)
    raise AssertionError(f"uvicorn did not start: {log.read_text()}")


# -- the stack: nginx and uvicorn behind ring3, plain and TLS --------------------------------------------


@dataclass
class Stack:
    root: Path
    nginx: Nginx
    uvicorn: Uvicorn
    plain: RunningServer  # HTTP/1.1 and h2c by prior knowledge
    tls: RunningServer  # HTTP/1.1 and h2 by ALPN
    tls_log: Path
    certs: Certs

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.plain.port}"

    @property
    def https(self) -> str:
        return f"https://{LOOPBACK}:{self.tls.port}"  # the certificate names 127.0.0.1 too

    def context(self) -> ssl.SSLContext:
        return self.certs.client_context()


PROXY_CONFIG = """\
[[site]]
hosts = ["*"]
[[site.location]]
path = "/app/"
proxy = "http://127.0.0.1:{app}"
[[site.location]]
path = "/"
proxy = "http://127.0.0.1:{nginx}"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("nginx-root")
    (root / "hello.txt").write_text("hello from nginx\n")
    seed = hashlib.sha256(b"proxy-real").digest()
    # 32 KiB blocks, each its own: a piece out of place shows
    (root / "big.bin").write_bytes(b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() * 1024
                                            for i in range(BIG // (32 * 1024))))
    (root / "ws.html").write_text(WS_PAGE)
    assert (root / "big.bin").stat().st_size == BIG
    work = tmp_path_factory.mktemp("proxy-real")
    nginx_prefix = work / "nginx"
    nginx_prefix.mkdir()
    started: list[RunningServer] = []
    nginx = start_nginx(root, nginx_prefix)
    uvicorn: Uvicorn | None = None
    try:
        uvicorn = start_uvicorn(work)
        config = work / "proxy.toml"
        config.write_text(PROXY_CONFIG.format(app=uvicorn.port, nginx=nginx.port))
        common = ["--config", str(config), "--max-body-size", "64m", "--admin", f"{LOOPBACK}:0"]
        started.append(start_ring3([*common, "--listen", f"{LOOPBACK}:0", "--access-log", "off"], work))
        tls_log = work / "tls-access.log"
        started.append(start_ring3([*common, "--listen", f"{LOOPBACK}:0", "--access-log", str(tls_log),
                                    "--tls-cert", str(certs.main.cert), "--tls-key", str(certs.main.key)],
                                   work))
        yield Stack(root, nginx, uvicorn, started[0], started[1], tls_log, certs)
    finally:
        for server in started:
            if server.process.poll() is None:
                server.stop()
        if uvicorn is not None:
            stop_process(uvicorn.process)
        stop_process(nginx.process, signal.SIGQUIT)


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    assert shutil.which(argv[0]), f"{argv[0]} is missing: scripts/test installs it"
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def big_sha(stack: Stack) -> str:
    return sha((stack.root / "big.bin").read_bytes())


# -- 1. nginx as the upstream -----------------------------------------------------------------------------


def test_nginx_files_small_and_large_intact_over_keep_alive(stack: Stack) -> None:
    expected = big_sha(stack)
    with socket.create_connection((LOOPBACK, stack.plain.port), timeout=10) as sock:
        reader = ResponseReader(sock, timeout=30)
        for _ in range(3):  # the second and third big bodies go by splice (the proxy learnt to expect them)
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: files.test\r\n\r\n")
            status, headers, body = reader.read()
            assert (status, body) == (200, b"hello from nginx\n")
            # nginx's fields pass; Date and Server are the proxy's own (as nginx does as a proxy).
            assert headers[b"server"] == b"ring3" and headers[b"content-type"] == b"text/plain"
            assert headers[b"etag"] and headers[b"last-modified"] and headers[b"accept-ranges"] == b"bytes"
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: files.test\r\n\r\n")
            status, headers, body = reader.read()
            assert status == 200 and headers[b"content-length"] == b"%d" % BIG
            assert sha(body) == expected
        sock.sendall(b"GET /missing HTTP/1.1\r\nHost: files.test\r\n\r\n")
        assert reader.read()[0] == 404
    lines = [line for line in stack.nginx.log() if "/big.bin" in line]
    assert lines and all(line.split("|")[2] == LOOPBACK and line.split("|")[3] == "http" for line in lines)
    connections = {line.split("|")[4] for line in stack.nginx.log()[-7:]}
    assert len(connections) <= 2, connections  # the proxy kept its connection to nginx alive


def test_nginx_head_ranges_and_conditionals_pass_through(stack: Stack) -> None:
    data = (stack.root / "big.bin").read_bytes()
    with socket.create_connection((LOOPBACK, stack.plain.port), timeout=10) as sock:
        reader = ResponseReader(sock, timeout=20)

        def ask(method: str, path: str, *fields: str) -> tuple[int, dict[bytes, bytes], bytes]:
            extra = "".join(f"{field}\r\n" for field in fields)
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: files.test\r\n{extra}\r\n".encode())
            return reader.read(head_only=method == "HEAD")

        status, headers, body = ask("HEAD", "/big.bin")
        assert (status, headers[b"content-length"], body) == (200, b"%d" % BIG, b"")
        etag = headers[b"etag"].decode()
        modified = headers[b"last-modified"].decode()
        # The connection carries on after a HEAD: no body was waited for, none was sent.
        status, headers, body = ask("GET", "/big.bin", "Range: bytes=100-199")
        assert status == 206 and body == data[100:200]
        assert headers[b"content-range"] == b"bytes 100-199/%d" % BIG
        status, headers, body = ask("GET", "/big.bin", f"Range: bytes={3 * MIB}-{5 * MIB - 1}")
        assert status == 206 and body == data[3 * MIB:5 * MIB]  # long enough to splice
        status, headers, body = ask("GET", "/big.bin", "Range: bytes=-1000")
        assert status == 206 and body == data[-1000:]
        status, headers, body = ask("GET", "/big.bin", "Range: bytes=0-9,20-29")
        assert status == 206 and headers[b"content-type"].startswith(b"multipart/byteranges; boundary=")
        assert data[0:10] in body and data[20:30] in body and b"Content-Range: bytes 20-29/" in body
        status, headers, _ = ask("GET", "/big.bin", f"Range: bytes={BIG + 10}-")
        assert status == 416
        status, _, body = ask("GET", "/big.bin", "Range: bytes=0-4", f"If-Range: {etag}")
        assert (status, body) == (206, data[:5])
        status, _, body = ask("GET", "/hello.txt", "Range: bytes=0-4", 'If-Range: "stale"')
        assert (status, body) == (200, b"hello from nginx\n")  # the validator failed: the whole file
        for _ in range(2):  # a 304 has no body: the next answer on the connection is read right
            status, headers, body = ask("GET", "/big.bin", f"If-None-Match: {etag}")
            assert (status, body) == (304, b"")
            assert headers[b"etag"].decode() == etag and b"content-length" not in headers
        status, _, body = ask("GET", "/big.bin", f"If-Modified-Since: {modified}")
        assert (status, body) == (304, b"")
        status, _, body = ask("GET", "/big.bin", 'If-None-Match: "other"', "Range: bytes=5-9")
        assert (status, body) == (206, data[5:10])
    ranges = [line.split("|")[1] for line in stack.nginx.log() if "/big.bin" in line]
    assert "bytes=100-199" in ranges and "bytes=0-9,20-29" in ranges  # the Range field went upstream


# -- 2. a uvicorn application as the upstream -----------------------------------------------------------


def test_uvicorn_json_and_the_forwarded_fields_it_trusts(stack: Stack) -> None:
    # What the client claims about itself is replaced: uvicorn, trusting the proxy, takes the proxy's word.
    status, headers, body = request(stack.plain, "/app/info?x=1", "shop.test", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6"})
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert headers[b"x-app"] == b"starlette" and headers[b"server"] == b"ring3"
    seen = json.loads(body)
    # request.client comes from X-Forwarded-For (uvicorn gives such a client port 0, not the proxy's).
    assert seen["client"] == [LOOPBACK, 0], seen
    assert seen["scheme"] == "http" and seen["x_forwarded_proto"] == "http"
    assert seen["x_forwarded_for"] == LOOPBACK and seen["x_forwarded_host"] == "shop.test"
    assert seen["forwarded"] == "for=127.0.0.1;host=shop.test;proto=http"
    assert seen["host"] == "shop.test" and seen["via"] == "1.1 ring3"
    assert (seen["path"], seen["query"]) == ("/app/info", "x=1")
    for version in ("HTTP/1.1", "HTTP/2"):  # over TLS: https, the scheme uvicorn sees, whatever the version
        with httpx.Client(http1=version == "HTTP/1.1", http2=version == "HTTP/2", verify=stack.context(),
                          timeout=10) as client:
            response = client.get(f"{stack.https}/app/info")
        assert response.http_version == version
        seen = response.json()
        assert seen["scheme"] == "https" and seen["client"] == [LOOPBACK, 0]
        assert seen["host"] == f"{LOOPBACK}:{stack.tls.port}"  # :authority became Host
        assert seen["http_version"] == "1.1"  # the upstream is spoken to in HTTP/1.1


def read_stream(client: httpx.Client, url: str) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with client.stream("GET", url) as response:
        for piece in response.iter_raw():
            arrivals.append((time.monotonic() - started, piece))
    return response, arrivals


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2", "h2c"])
def test_uvicorn_streamed_response_arrives_as_it_is_made(stack: Stack, version: str) -> None:
    lines, delay = 6, 0.25
    base = stack.http if version == "h2c" else stack.https
    with httpx.Client(http1=version == "HTTP/1.1", http2=version != "HTTP/1.1", verify=stack.context(),
                      timeout=10) as client:
        response, arrivals = read_stream(client, f"{base}/app/stream?lines={lines}&delay={delay}")
    assert response.status_code == 200 and response.http_version == version.replace("h2c", "HTTP/2")
    if version == "HTTP/1.1":
        assert response.headers["transfer-encoding"] == "chunked"
    text = b"".join(piece for _, piece in arrivals).decode()
    assert [line.split(" at ")[0] for line in text.splitlines()] == [f"line {n}" for n in range(lines)]
    produced = (lines - 1) * delay
    assert arrivals[0][0] < produced / 2, arrivals  # the first line came long before the last was made
    assert arrivals[-1][0] >= produced * 0.9, arrivals
    assert len(arrivals) >= lines - 1, arrivals  # in separate pieces, not one lump


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2"])
def test_uvicorn_head_answers_announce_what_a_get_would(stack: Stack, version: str) -> None:
    """A HEAD of the stream (uvicorn answers it chunked, with no length) announces no length, never a
    Content-Length of 0 (RFC 9110 8.6); a HEAD of the JSON keeps its length; large fields pass (in
    CONTINUATION frames over HTTP/2) up to the proxy's limit on a response head."""
    with httpx.Client(http1=version == "HTTP/1.1", http2=version == "HTTP/2", verify=stack.context(),
                      timeout=10) as client:
        for _ in range(2):  # and the connection carries on after each
            head = client.head(f"{stack.https}/app/stream?lines=3")
            assert (head.status_code, head.http_version, head.content) == (200, version, b"")
            assert "content-length" not in head.headers, head.headers
            if version == "HTTP/1.1":
                assert head.headers["transfer-encoding"] == "chunked"
            get = client.get(f"{stack.https}/app/info")
            head = client.head(f"{stack.https}/app/info")
            assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
        response = client.get(f"{stack.https}/app/info?pad=20000")
        assert response.status_code == 200 and response.headers["x-pad"] == "p" * 20000
        assert client.get(f"{stack.https}/app/info?pad=40000").status_code == 502  # max_header_bytes: 32k
        assert "a response head over 32768 bytes" in stack.tls.stderr()
        assert client.get(f"{stack.https}/app/info").status_code == 200


def upload_payload() -> bytes:
    return hashlib.sha256(b"upload").digest() * (UPLOAD // 32)


def test_uvicorn_takes_a_5_mib_post_over_http1(stack: Stack) -> None:
    payload = upload_payload()
    status, _, body = request(stack.plain, "/app/upload", method="POST", body=payload)
    assert status == 200
    seen = json.loads(body)
    assert (seen["size"], seen["sha256"]) == (UPLOAD, sha(payload))
    assert (seen["content_length"], seen["transfer_encoding"]) == (str(UPLOAD), None)

    def pieces() -> Iterator[bytes]:
        for at in range(0, UPLOAD, 256 * 1024):
            yield payload[at:at + 256 * 1024]

    with httpx.Client(timeout=20) as client:  # chunked from the client, chunked upstream
        seen = client.post(f"{stack.http}/app/upload", content=pieces()).json()
    assert (seen["size"], seen["sha256"], seen["transfer_encoding"]) == (UPLOAD, sha(payload), "chunked")
    upload = stack.root.parent / "upload.bin"
    upload.write_bytes(payload)
    # curl sends Expect: 100-continue with a body this large: uvicorn's 100 Continue is relayed.
    out = run("curl", "-s", "--http1.1", "-v", "--data-binary", f"@{upload}", "-H",
              "content-type: application/octet-stream", f"{stack.http}/app/upload")
    assert json.loads(out.stdout)["sha256"] == sha(payload), out.stderr[-2000:]
    assert b"Expect: 100-continue" in out.stderr and b"HTTP/1.1 100 Continue" in out.stderr


# -- 3. a WebSocket application behind the proxy ----------------------------------------------------------


def closes(stack: Stack) -> list[Any]:
    response = httpx.get(f"http://{LOOPBACK}:{stack.uvicorn.port}/app/closes", timeout=5)
    result: list[Any] = response.json()
    return result


def wait_for_closes(stack: Stack, count: int) -> list[Any]:
    deadline = time.monotonic() + 5
    seen = closes(stack)
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = closes(stack)
    return seen


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_websockets_client_echo_through_the_proxy(stack: Stack, tls: bool) -> None:
    before = len(closes(stack))
    url = (f"wss://{LOOPBACK}:{stack.tls.port}" if tls else f"ws://{LOOPBACK}:{stack.plain.port}") + "/app/ws"
    options: dict[str, Any] = {"ssl": stack.context()} if tls else {}
    with ws_connect(url, max_size=None, open_timeout=10, close_timeout=5, **options) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo: hello"
        ws.send(bytes(range(256)) * 4)
        assert ws.recv(timeout=5) == bytes(range(256)) * 4
        big = os.urandom(MIB)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("é" * (MIB // 2))  # a 1 MiB text message
        assert ws.recv(timeout=10) == "echo: " + "é" * (MIB // 2)
        ws.send("whoami")
        seen = json.loads(ws.recv(timeout=5))
        assert seen["scheme"] == ("wss" if tls else "ws") and seen["client"] == [LOOPBACK, 0]
        for number in range(50):  # many small messages, in order
            ws.send(f"n{number}")
        assert [ws.recv(timeout=5) for _ in range(50)] == [f"echo: n{number}" for number in range(50)]
    assert ws.close_code == 1000
    assert wait_for_closes(stack, before + 1)[before:] == [1000]  # the client's close reached the app
    with ws_connect(url, open_timeout=10, **options) as ws:  # and the app's close reaches the client
        ws.send("bye")
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)
    assert ws.close_code == 1000
    assert wait_for_closes(stack, before + 2)[before + 1:] == ["server"]


def page_outcome(url: str, profile: Path, *flags: str) -> str:
    status = ""
    with chromium_page(url, profile, *flags) as evaluate:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = str(evaluate("document.getElementById('status')?.textContent"))
            if status.startswith(("closed", "wrong", "error")):
                break
            time.sleep(0.1)
    return status


def test_chromium_websocket_through_the_proxy(stack: Stack, tmp_path: Path) -> None:
    """The page comes from nginx and its WebSocket goes to uvicorn, both through the proxy; over TLS
    Chromium speaks HTTP/2 and opens the WebSocket as an extended CONNECT (RFC 8441), which the proxy
    turns into an HTTP/1.1 Upgrade."""
    before = len(closes(stack))
    status = page_outcome(f"{stack.http}/ws.html", tmp_path / "plain")
    assert status == "closed 1000 true", (status, stack.plain.stderr()[-2000:])
    # Loopback only, with a certificate made by this test: Chromium need not check it.
    status = page_outcome(f"{stack.https}/ws.html", tmp_path / "tls", "--ignore-certificate-errors")
    assert status == "closed 1000 true", (status, stack.tls.stderr()[-2000:])
    assert wait_for_closes(stack, before + 2)[before:] == ["server", "server"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "CONNECT /app/ws" not in stack.tls_log.read_text():
        time.sleep(0.1)
    served = stack.tls_log.read_text()
    assert '"GET /ws.html HTTP/2.0" 200' in served and '"CONNECT /app/ws HTTP/2.0" 200' in served, served


# -- 4. HTTP/2 and TLS clients to the HTTP/1.1 upstreams ----------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run("curl", "-s", "-S", *args)


@pytest.mark.parametrize("mode", ["h2", "http1.1-tls", "h2c"])
def test_curl_small_and_10_mib_files(stack: Stack, mode: str) -> None:
    if mode == "h2c":
        flags, base, version = ["--http2-prior-knowledge"], stack.http, "2"
    else:
        flags = ["--http2" if mode == "h2" else "--http1.1", "--cacert", str(stack.certs.ca_file)]
        base, version = stack.https, "2" if mode == "h2" else "1.1"
    out = curl(*flags, "-w", "\n%{http_version} %{http_code}", f"{base}/hello.txt")
    body, _, facts = out.stdout.rpartition(b"\n")
    assert (facts.decode(), body) == (f"{version} 200", b"hello from nginx\n"), out.stderr
    if mode != "h2c":  # curl 7.88's --parallel fails on h2c by prior knowledge (against nginx's own too)
        # Two at once on one connection (h2: two streams), then the 10 MiB body alone.
        out = curl(*flags, "--parallel", "-w", "%{http_version} %{http_code} %{size_download}\n",
                   "-o", "/dev/null", "-o", "/dev/null", f"{base}/big.bin", f"{base}/app/info")
        transfers = sorted(out.stdout.decode().splitlines(), key=lambda line: line.endswith(f" {BIG}"))
        assert len(transfers) == 2 and transfers[1] == f"{version} 200 {BIG}", (transfers, out.stderr)
        assert transfers[0].startswith(f"{version} 200 ") and int(transfers[0].split()[2]) > 100, transfers
    out = curl(*flags, f"{base}/big.bin")
    assert out.returncode == 0, out.stderr
    assert sha(out.stdout) == big_sha(stack)


def test_an_h2c_upgrade_stays_with_the_proxy(stack: Stack) -> None:
    """curl --http2 on http:// asks to upgrade the connection to h2c: that is the client's connection's
    business (hop-by-hop), so the upstream gets a plain request, and curl its answer over HTTP/1.1."""
    out = curl("--http2", "-v", "-w", "\n%{http_version} %{http_code}", f"{stack.http}/app/info")
    body, _, facts = out.stdout.rpartition(b"\n")
    assert facts == b"1.1 200", out.stderr
    assert b"Upgrade: h2c" in out.stderr  # curl did ask
    seen = json.loads(body)
    assert seen["connection"] is None, seen  # not "upgrade": uvicorn was not asked to switch
    out = curl("--http2", "-w", "\n%{http_version} %{http_code}", f"{stack.http}/hello.txt")
    assert out.stdout == b"hello from nginx\n\n1.1 200", out.stderr


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_curl_posts_5_mib_over_http2(stack: Stack, mode: str, tmp_path: Path) -> None:
    payload = upload_payload()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    flags = (["--http2-prior-knowledge"] if mode == "h2c"
             else ["--http2", "--cacert", str(stack.certs.ca_file)])
    base = stack.http if mode == "h2c" else stack.https
    out = curl(*flags, "--data-binary", f"@{upload}", "-w", "\n%{http_version}", f"{base}/app/upload")
    body, _, version = out.stdout.rpartition(b"\n")
    assert version == b"2", out.stderr
    assert json.loads(body)["sha256"] == sha(payload)


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_httpx_http2_files_and_uploads(stack: Stack, mode: str) -> None:
    base = stack.http if mode == "h2c" else stack.https
    payload = upload_payload()
    with httpx.Client(http1=False, http2=True, verify=stack.context(), timeout=30) as client:
        for _ in range(3):
            response = client.get(f"{base}/hello.txt")
            assert response.http_version == "HTTP/2"
            assert (response.status_code, response.content) == (200, b"hello from nginx\n")
        response = client.get(f"{base}/big.bin")
        assert response.status_code == 200 and sha(response.content) == big_sha(stack)
        part = client.get(f"{base}/big.bin", headers={"range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == (stack.root / "big.bin").read_bytes()[1000:2000]
        etag = response.headers["etag"]
        assert client.get(f"{base}/big.bin", headers={"if-none-match": etag}).status_code == 304
        head = client.head(f"{base}/big.bin")
        assert (head.status_code, head.headers["content-length"], head.content) == (200, str(BIG), b"")
        seen = client.post(f"{base}/app/upload", content=payload).json()
        assert (seen["size"], seen["sha256"]) == (UPLOAD, sha(payload))

        def pieces() -> Iterator[bytes]:
            for at in range(0, UPLOAD, MIB):
                yield payload[at:at + MIB]

        # No content-length on the stream: the proxy frames the body chunked for the upstream.
        seen = client.post(f"{base}/app/upload", content=pieces()).json()
        assert (seen["size"], seen["sha256"], seen["transfer_encoding"]) == (UPLOAD, sha(payload), "chunked")


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_two_10_mib_streams_and_a_small_one_on_one_h2_connection(stack: Stack, mode: str) -> None:
    context = stack.context() if mode == "h2" else None
    port = stack.tls.port if mode == "h2" else stack.plain.port
    with H2Client(port, context, timeout=10) as client:
        streams = [client.request("/big.bin"), client.request("/big.bin"), client.request("/hello.txt"),
                   client.request("/app/info")]
        answers = client.wait(*streams, timeout=60)
    for answer in answers:
        assert answer.ended and answer.reset is None and answer.headers[":status"] == "200", answer.headers
    expected = big_sha(stack)
    assert sha(bytes(answers[0].body)) == expected and sha(bytes(answers[1].body)) == expected
    assert bytes(answers[2].body) == b"hello from nginx\n"
    assert answers[2].ended_at < 3  # the small file did not wait behind the large ones
    assert json.loads(bytes(answers[3].body))["host"] == "localhost"


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_h2load_through_the_proxy(stack: Stack, mode: str) -> None:
    base = stack.http if mode == "h2c" else stack.https
    out = run("h2load", "-n", "200", "-c", "4", "-m", "4", f"{base}/hello.txt", f"{base}/app/info",
              timeout=60)
    text = out.stdout.decode()
    assert "200 succeeded, 0 failed, 0 errored" in text, text + out.stderr.decode()
    assert "status codes: 200 2xx" in text, text



SPLICES = 'ring3_syscalls_total{kind="splice"}'


def test_tls_and_h2c_bodies_take_the_normal_path_not_splice(stack: Stack) -> None:
    """splice(2) is for cleartext HTTP/1.1 clients alone: over TLS the bytes must be encrypted, over h2c
    framed; the bodies arrive whole either way (the tests above) and no splice is made for them."""
    tls_admin, plain_admin = admin_url(stack.tls), admin_url(stack.plain)
    before = scrape(tls_admin).get(SPLICES, 0), scrape(plain_admin).get(SPLICES, 0)
    expected = big_sha(stack)
    for version in ("HTTP/1.1", "HTTP/2"):
        with httpx.Client(http1=version == "HTTP/1.1", http2=version == "HTTP/2", verify=stack.context(),
                          timeout=30) as client:
            for _ in range(2):  # the second after the proxy has learnt to expect a large body
                response = client.get(f"{stack.https}/big.bin")
                assert response.http_version == version and sha(response.content) == expected
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        for _ in range(2):
            assert sha(client.get(f"{stack.http}/big.bin").content) == expected
    assert scrape(tls_admin).get(SPLICES, 0) == before[0]
    assert scrape(plain_admin).get(SPLICES, 0) == before[1]
    with socket.create_connection((LOOPBACK, stack.plain.port), timeout=10) as sock:  # while HTTP/1.1 does
        reader = ResponseReader(sock, timeout=30)
        for _ in range(2):
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sha(reader.read()[2]) == expected
    assert scrape(plain_admin).get(SPLICES, 0) > before[1]


# -- what real servers and clients do mid-way ----------------------------------------------------------------


def tls_socket(stack: Stack) -> socket.socket:
    raw = socket.create_connection((LOOPBACK, stack.tls.port), timeout=10)
    return stack.context().wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("mode", ["http1.1", "http1.1-tls", "h2", "h2c"])
def test_nginx_refusing_an_upload_early_is_relayed(stack: Stack, mode: str) -> None:
    """nginx answers 413 to a 5 MiB body (its client_max_body_size is 1m) before reading it, and closes:
    the client gets the 413 and its connection goes on; a small POST to a file gets nginx's 405."""
    payload = upload_payload()
    if mode.startswith("http1.1"):
        with tls_socket(stack) if mode.endswith("tls") else socket.create_connection(
                (LOOPBACK, stack.plain.port), timeout=10) as sock:
            reader = ResponseReader(sock, timeout=20)
            sock.sendall(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
            sock.sendall(payload)
            status, _, body = reader.read()
            assert status == 413 and b"413 Request Entity Too Large" in body
            sock.sendall(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nsmall")
            assert reader.read()[0] == 405
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.read()[2] == b"hello from nginx\n"
        return
    base = stack.http if mode == "h2c" else stack.https
    with httpx.Client(http1=False, http2=True, verify=stack.context(), timeout=20) as client:
        response = client.post(f"{base}/hello.txt", content=payload)
        assert (response.status_code, response.http_version) == (413, "HTTP/2")
        assert client.post(f"{base}/hello.txt", content=b"small").status_code == 405
        assert client.get(f"{base}/hello.txt").content == b"hello from nginx\n"
        seen = client.post(f"{base}/app/upload", content=payload).json()  # the connection is sound
        assert seen["sha256"] == sha(payload)


@pytest.mark.parametrize("mode", ["http1.1", "http1.1-tls", "h2", "h2c"])
def test_a_download_abandoned_mid_way_leaves_the_proxy_sound(stack: Stack, mode: str) -> None:
    """Clients that go (HTTP/1.1: close the connection; HTTP/2: reset the stream) after 1 MiB of the
    10 MiB, four times: the upstream connections they held are not pooled mid-body, so what follows on
    the proxy is whole and right."""
    expected = big_sha(stack)
    if mode.startswith("http1.1"):
        for _ in range(4):
            with tls_socket(stack) if mode.endswith("tls") else socket.create_connection(
                    (LOOPBACK, stack.plain.port), timeout=10) as sock:
                sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                got = 0
                for _ in range(10_000):
                    piece = sock.recv(65536)
                    got += len(piece)
                    if not piece or got >= MIB:
                        break
                assert got >= MIB
        with tls_socket(stack) if mode.endswith("tls") else socket.create_connection(
                (LOOPBACK, stack.plain.port), timeout=10) as sock:
            reader = ResponseReader(sock, timeout=30)
            for path in (b"/hello.txt", b"/big.bin", b"/hello.txt"):
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                status, _, body = reader.read()
                assert status == 200
                assert (sha(body) == expected) if path == b"/big.bin" else body == b"hello from nginx\n"
        return
    context = stack.context() if mode == "h2" else None
    port = stack.tls.port if mode == "h2" else stack.plain.port
    with H2Client(port, context, timeout=10) as client:
        for _ in range(4):
            stream = client.request("/big.bin")
            deadline = time.monotonic() + 10
            while len(client.answers[stream].body) < MIB and time.monotonic() < deadline:
                client.pump(0.5)
            assert len(client.answers[stream].body) >= MIB
            client.reset(stream)
            answer = client.get("/hello.txt")  # on the same connection, at once
            assert (answer.headers[":status"], bytes(answer.body)) == ("200", b"hello from nginx\n")
        answer = client.wait(client.request("/big.bin"), timeout=30)[0]
        assert answer.ended and sha(bytes(answer.body)) == expected
        stream = client.request("/app/stream?lines=20&delay=0.1")  # a chunked stream reset mid-way
        deadline = time.monotonic() + 5
        while not client.answers[stream].body and time.monotonic() < deadline:
            client.pump(0.2)
        client.reset(stream)
        assert json.loads(bytes(client.get("/app/info").body))["path"] == "/app/info"


def send_flowing(socket_: H2WebSocket, event: Any, timeout: float = 20.0) -> None:
    """A WebSocket message on its stream in DATA frames as the stream's and connection's windows allow."""
    client = socket_.client
    data = socket_.ws.send(event)
    deadline = time.monotonic() + timeout
    while data:
        assert time.monotonic() < deadline, "the flow-control window never opened"
        window = min(client.conn.local_flow_control_window(socket_.stream),
                     client.conn.max_outbound_frame_size)
        if window <= 0:
            client.pump(0.05)
            continue
        client.conn.send_data(socket_.stream, data[:window])
        data = data[window:]
        client._flush()


def next_message(socket_: H2WebSocket, timeout: float = 20.0) -> bytes | str:
    """The next whole message (wsproto may hand a large one over in pieces)."""
    parts: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = socket_.next_event(timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(event, BytesMessage | TextMessage), event
        parts.append(event.data)
        if event.message_finished:
            return b"".join(parts) if isinstance(event, BytesMessage) else "".join(parts)
    raise AssertionError("no whole message")


def wait_ended(client: H2Client, stream: int, timeout: float = 5.0) -> None:
    answer = client.answers[stream]
    deadline = time.monotonic() + timeout
    while not (answer.ended or answer.reset is not None) and time.monotonic() < deadline:
        client.pump(0.2)
    assert answer.ended and answer.reset is None, answer


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_websockets_over_http2_to_uvicorn(stack: Stack, mode: str) -> None:
    """Three WebSockets at once on one HTTP/2 connection (extended CONNECT), each an HTTP/1.1 Upgrade to
    uvicorn: 1 MiB messages both ways past the streams' windows, the connection's other streams meanwhile,
    and a clean close from either side that ends the stream."""
    before = len(closes(stack))
    context = stack.context() if mode == "h2" else None
    port = stack.tls.port if mode == "h2" else stack.plain.port
    big = os.urandom(MIB)
    with H2Client(port, context, timeout=10) as client:
        sockets = [H2WebSocket(client, "/app/ws") for _ in range(3)]
        for socket_ in sockets:
            send_flowing(socket_, BytesMessage(data=big))
        for socket_ in sockets:
            assert next_message(socket_) == big
            assert client.answers[socket_.stream].headers[":status"] == "200"
        send_flowing(sockets[0], TextMessage(data="ü" * (MIB // 2)))
        assert next_message(sockets[0]) == "echo: " + "ü" * (MIB // 2)
        sockets[0].send(TextMessage(data="whoami"))
        seen = json.loads(next_message(sockets[0]))
        assert seen["scheme"] == ("wss" if mode == "h2" else "ws") and seen["client"] == [LOOPBACK, 0]
        assert bytes(client.get("/hello.txt").body) == b"hello from nginx\n"
        sockets[1].send(TextMessage(data="bye"))  # the app closes: the stream ends once the close is done
        closing = sockets[1].next_event()
        assert isinstance(closing, CloseConnection) and closing.code == 1000
        sockets[1].send(closing.response())
        wait_ended(client, sockets[1].stream)
        sockets[2].send(CloseConnection(code=1000))  # the client closes
        closing = sockets[2].next_event()
        assert isinstance(closing, CloseConnection) and closing.code == 1000
        wait_ended(client, sockets[2].stream)
        sockets[0].send(TextMessage(data="still here"))
        assert next_message(sockets[0]) == "echo: still here"
        sockets[0].send(CloseConnection(code=1000))
        assert isinstance(sockets[0].next_event(), CloseConnection)
        wait_ended(client, sockets[0].stream)
    assert sorted(map(str, wait_for_closes(stack, before + 3)[before:])) == ["1000", "1000", "server"]


@pytest.mark.parametrize("mode", ["h2", "h2c", "http1.1-tls"])
def test_a_slow_upstream_holds_an_upload_back_and_takes_it_whole(stack: Stack, mode: str) -> None:
    """The application reads the 5 MiB upload slowly (a pause per piece): the body arrives whole, and the
    connection serves on."""
    payload = upload_payload()
    base = stack.http if mode == "h2c" else stack.https
    with httpx.Client(http1=mode == "http1.1-tls", http2=mode != "http1.1-tls", verify=stack.context(),
                      timeout=30) as client:
        started = time.monotonic()
        response = client.post(f"{base}/app/upload?delay=0.05", content=payload)
        took = time.monotonic() - started
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["sha256"] == sha(payload)
        assert seen["pieces"] >= 5 and took >= 0.05 * seen["pieces"] * 0.9, (seen, took)  # it waited on it
        assert client.get(f"{base}/hello.txt").content == b"hello from nginx\n"


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_an_h2_client_reading_slowly_gets_the_whole_body(stack: Stack, mode: str) -> None:
    """A client that grants no credit stalls the 10 MiB download at its window; once it reads again the
    rest arrives, whole, and a small file on the same connection meanwhile is not held up."""
    context = stack.context() if mode == "h2" else None
    port = stack.tls.port if mode == "h2" else stack.plain.port
    with H2Client(port, context, timeout=10, window=16384) as client:
        client.auto_ack = False
        stream = client.request("/big.bin")
        for _ in range(10):
            client.pump(0.1)
        assert len(client.answers[stream].body) <= 65535  # the connection's first window at most
        client.auto_ack = True
        client.conn.increment_flow_control_window(4 * MIB)
        client.conn.increment_flow_control_window(MIB, stream)
        client._flush()
        answer = client.wait(stream, timeout=30)[0]
        assert answer.ended and sha(bytes(answer.body)) == big_sha(stack)
        assert bytes(client.get("/hello.txt").body) == b"hello from nginx\n"


@pytest.mark.parametrize("mode", ["h2", "h2c"])
def test_an_upstream_not_reading_holds_an_h2_upload_back(stack: Stack, mode: str) -> None:
    """The application reads nothing for 1.5 s: the proxy stops granting the stream credit once what it
    holds and the sockets' buffers are full, so the client is held far short of its 32 MiB; then all of
    it arrives."""
    total, hold = 32 * MIB, 1.5
    piece = hashlib.sha256(b"held").digest() * 512  # 16 KiB
    context = stack.context() if mode == "h2" else None
    port = stack.tls.port if mode == "h2" else stack.plain.port
    with H2Client(port, context, timeout=10) as client:
        client.pump(0.2)
        started = time.monotonic()
        stream = client.request(f"/app/upload?hold={hold}", method="POST", end=False,
                                headers=[("content-length", str(total))])
        sent = 0
        held_at = None
        deadline = started + 60
        while sent < total:
            assert time.monotonic() < deadline, sent
            if held_at is None and time.monotonic() - started > hold - 0.3:
                held_at = sent
            window = min(client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size)
            if window < len(piece):
                client.pump(0.05)
                continue
            client.conn.send_data(stream, piece, end_stream=sent + len(piece) == total)
            client._flush()
            sent += len(piece)
        answer = client.wait(stream, timeout=30)[0]
    assert held_at is not None and held_at < 24 * MIB, held_at
    assert answer.headers[":status"] == "200", answer
    seen = json.loads(bytes(answer.body))
    assert seen["size"] == total and seen["sha256"] == sha(piece * (total // len(piece)))
