"""The reverse proxy over real sockets: ring3 in front of ring3 and of scripted raw-socket upstreams."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ResponseReader, RunningServer, recv_until_closed
from proxy_kit import RawUpstream, answer, keep_answering, proxy_to
from sites_kit import request, serve_config


@pytest.fixture
def upstream_files(tmp_path: Path) -> Path:
    root = tmp_path / "upstream-files"
    root.mkdir()
    (root / "hello.txt").write_text("hello through the proxy\n")
    (root / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * (10 * 1024 * 1024 // 32))
    return root


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_file_from_a_ring3_upstream(ring3_process: Callable[..., RunningServer], tmp_path: Path,
                                      upstream_files: Path) -> None:
    upstream = ring3_process(str(upstream_files), "--listen", "127.0.0.1:0", "--access-log", "off")
    proxy = proxy_to(ring3_process, tmp_path, f'"http://127.0.0.1:{upstream.port}"')
    status, headers, body = request(proxy, "/hello.txt")
    assert status == 200
    assert body == b"hello through the proxy\n"
    assert headers[b"content-length"] == b"24"
    assert headers[b"etag"]  # the upstream's fields pass
    assert headers[b"server"] == b"ring3"
    status, headers, body = request(proxy, "/hello.txt", method="HEAD")
    assert (status, headers[b"content-length"], body) == (200, b"24", b"")
    status, _, _ = request(proxy, "/missing")
    assert status == 404


def test_ten_mebibytes_spliced_never_enter_python(ring3_process: Callable[..., RunningServer],
                                                  tmp_path: Path, upstream_files: Path) -> None:
    upstream = ring3_process(str(upstream_files), "--listen", "127.0.0.1:0", "--access-log", "off")
    admin = free_port()
    proxy = proxy_to(ring3_process, tmp_path, f'"http://127.0.0.1:{upstream.port}"',
                     "--admin", f"127.0.0.1:{admin}")
    expected = (upstream_files / "big.bin").read_bytes()
    before = metrics(admin)
    read_in: list[float] = []
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        for _ in range(3):  # keep-alive both sides: the pooled connection and the pipe carry on
            start = metrics(admin)["ring3_bytes_received_total"]
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = ResponseReader(sock, timeout=20).read()
            assert status == 200
            assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
            read_in.append(metrics(admin)["ring3_bytes_received_total"] - start)
    after = metrics(admin)
    # The first response teaches the proxy to expect large bodies: from the second on, the head is
    # peeked at and read alone, and no byte of the body is read into Python (the client's request,
    # the upstream's head and the /metrics request are all that is).
    assert read_in[1] < 2048 and read_in[2] < 2048, read_in
    spliced = after['ring3_syscalls_total{kind="splice"}'] - before['ring3_syscalls_total{kind="splice"}']
    assert spliced >= 6
    key = 'ring3_bytes_sent_total{path="zero_copy"}'
    zero_copy = after[key] - before[key]
    assert zero_copy >= 3 * len(expected) * 0.95  # what came with the heads went by send


def test_keep_alive_to_the_upstream_and_forwarded_fields(ring3_process: Callable[..., RunningServer],
                                                         tmp_path: Path) -> None:
    raw = RawUpstream(keep_answering(answer(200, b"pong", "connection: x-secret\r\nx-secret: 1\r\n"
                                            "keep-alive: timeout=5\r\nx-kept: yes\r\n")))
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            for _ in range(5):
                sock.sendall(b"GET /p?q=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: x-hop\r\nX-Hop: 1\r\n"
                             b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nTE: trailers\r\n"
                             b"Proxy-Authorization: Basic eDp5\r\n\r\n")
                status, headers, body = ResponseReader(sock).read()
                assert (status, body) == (200, b"pong")
                assert b"x-secret" not in headers and b"keep-alive" not in headers
                assert headers[b"x-kept"] == b"yes"
        assert raw.connections == 1  # one pooled connection carried all five
        head = raw.received[0].lower()
        assert head.startswith(b"get /p?q=1 http/1.1\r\n")
        assert b"host: shop.test\r\n" in head
        assert b"x-forwarded-for: 127.0.0.1\r\n" in head and b"6.6.6.6" not in head
        assert b"x-forwarded-proto: http\r\n" in head and b"x-forwarded-host: shop.test\r\n" in head
        assert b"forwarded: for=127.0.0.1;host=shop.test;proto=http\r\n" in head
        assert b"via: 1.1 ring3\r\n" in head
        for hop in (b"x-hop", b"connection:", b"te:", b"proxy-authorization"):
            assert hop not in head
    finally:
        raw.close()


def test_request_bodies_streamed_with_their_framing(ring3_process: Callable[..., RunningServer],
                                                     tmp_path: Path) -> None:
    bodies: list[bytes] = []

    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        while head := upstream.read_head(conn):
            data = head.split(b"\r\n\r\n", 1)[1]
            if b"transfer-encoding: chunked" in head:
                while not data.endswith(b"0\r\n\r\n"):
                    data += conn.recv(65536)
            else:
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += conn.recv(65536)
            bodies.append(data)
            conn.sendall(answer(201, b"stored"))

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        payload = bytes(range(256)) * 4096  # 1 MiB
        status, _, body = request(proxy, "/upload", method="POST", body=payload)
        assert (status, body) == (201, b"stored")
        assert bodies[0] == payload
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            status, _, body = ResponseReader(sock).read()
        assert status == 201
        assert bodies[1] == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        assert b"transfer-encoding: chunked" in raw.received[1]
    finally:
        raw.close()


def test_unreachable_is_502_and_silence_is_504(ring3_process: Callable[..., RunningServer],
                                               tmp_path: Path) -> None:
    proxy = proxy_to(ring3_process, tmp_path, f'"http://127.0.0.1:{free_port()}"')
    status, _, _ = request(proxy, "/")
    assert status == 502
    assert "connect failed" in proxy.stderr()

    def silent(conn: socket.socket, upstream: RawUpstream) -> None:
        upstream.read_head(conn)
        time.sleep(3)

    raw = RawUpstream(silent)
    try:
        quiet = proxy_to(ring3_process, tmp_path,
                         f'{{ upstreams = ["{raw.address}"], first_byte_timeout = 0.5 }}')
        started = time.monotonic()
        status, _, _ = request(quiet, "/")
        assert status == 504
        assert time.monotonic() - started < 2.5
        assert f"upstream {raw.address}" in quiet.stderr() and "no response within 0.5s" in quiet.stderr()
    finally:
        raw.close()


def test_a_failed_connect_is_retried_on_the_next_upstream(ring3_process: Callable[..., RunningServer],
                                                          tmp_path: Path) -> None:
    raw = RawUpstream(keep_answering(answer(200, b"second")))
    try:
        dead = free_port()
        proxy = proxy_to(ring3_process, tmp_path,
                         f'{{ upstreams = ["127.0.0.1:{dead}", "{raw.address}"] }}')
        for _ in range(4):
            status, _, body = request(proxy, "/")
            assert (status, body) == (200, b"second")
    finally:
        raw.close()


def test_a_post_whose_body_was_sent_is_never_retried(ring3_process: Callable[..., RunningServer],
                                                     tmp_path: Path) -> None:
    def hang_up(conn: socket.socket, upstream: RawUpstream) -> None:
        upstream.read_head(conn)  # takes the request (and the body with it), then closes unanswered

    first = RawUpstream(hang_up)
    second = RawUpstream(keep_answering(answer(200, b"second")))
    try:
        proxy = proxy_to(ring3_process, tmp_path,
                         f'{{ upstreams = ["{first.address}", "{second.address}"], balance = "round_robin", '
                         'max_fails = 0 }')
        outcomes = [request(proxy, "/order", method="POST", body=b"buy one")[0] for _ in range(2)]
        assert sorted(outcomes) == [200, 502]  # round robin: one went to each; the failed one stays failed
        assert all(not head.startswith(b"POST") for head in second.received[1:])
        assert len([h for h in first.received if h.startswith(b"POST")]) == 1
        status, _, body = request(proxy, "/again")  # a GET is retried on the other
        assert (status, body) == (200, b"second")
    finally:
        first.close()
        second.close()


def test_chunked_responses_pass_with_trailers_and_a_cut_body_aborts(
        ring3_process: Callable[..., RunningServer], tmp_path: Path) -> None:
    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        while head := upstream.read_head(conn):
            if b"/cut " in head:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
                return
            if b"/cutchunk " in head:
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n"
                         b"5\r\nhello\r\n")
            time.sleep(0.05)
            conn.sendall(b"6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n")

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\n") or b"0\r\n" not in data:
                data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
        for path, complete in ((b"/cut", b"only part"), (b"/cutchunk", b"4\r\npart\r\n")):
            with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                data = recv_until_closed(sock)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert body == complete  # what came, then the connection closed: never a complete-looking end
    finally:
        raw.close()


def test_uri_replaces_the_location_prefix(ring3_process: Callable[..., RunningServer],
                                          tmp_path: Path) -> None:
    raw = RawUpstream(keep_answering(answer(200, b"v2")))
    try:
        proxy = serve_config(ring3_process, tmp_path, f"""
            [[site]]
            hosts = ["*"]
            [[site.location]]
            path = "/api/"
            proxy = "http://{raw.address}/v2/"
            """, "--access-log", "off")
        assert request(proxy, "/api/users/7?full=1")[0] == 200
        assert raw.received[-1].startswith(b"GET /v2/users/7?full=1 HTTP/1.1\r\n")
    finally:
        raw.close()


@pytest.mark.parametrize(("value", "reason"), [
    ('"ftp://127.0.0.1:21"', "give 'http://HOST:PORT[/path]'"),
    ('{ upstreams = [] }', "give at least one upstream"),
    ('{ upstreams = ["127.0.0.1:99999"] }', "is not a port"),
    ('{ upstreams = ["127.0.0.1:9000 weight=0"] }', "unknown option 'weight=0'"),
    ('{ upstreams = ["127.0.0.1:9000"], balance = "random" }', "must be one of"),
    ('{ upstreams = ["127.0.0.1:9000"], hash_key = "body" }', "one of 'client', 'uri'"),
    ('{ upstreams = ["127.0.0.1:9000"], request_headers = { "content-length" = "1" } }', "writes this field"),
    ('{ upstreams = ["127.0.0.1:9000"], health = { path = "/h", expect = "ok" } }', "health.expect"),
    ('{ upstreams = ["127.0.0.1:9000"], retries = 2 }', "did you mean"),
])
def test_bad_proxy_configs_name_the_key(tmp_path: Path, value: str, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[[site]]\nhosts = ["*"]\n[[site.location]]\npath = "/"\nproxy = {value}\n')
    result = subprocess.run([sys.executable, "-m", "ring3", "check-config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "site[1].location[1].proxy" in lines[0] and reason in lines[0], lines


def test_100_continue_is_relayed_from_the_upstream(ring3_process: Callable[..., RunningServer],
                                                   tmp_path: Path) -> None:
    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        while head := upstream.read_head(conn):
            if b"/refuse" in head:
                conn.sendall(answer(401, b"no"))  # before any body byte: the client need not send it
                continue
            assert b"expect: 100-continue\r\n" in head
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            data = head.split(b"\r\n\r\n", 1)[1]
            while len(data) < 5:
                data += conn.recv(100)
            conn.sendall(answer(200, b"got " + data))

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            interim = sock.recv(100)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # the upstream's, relayed: now send
            sock.sendall(b"hello")
            status, _, body = ResponseReader(sock).read()
            assert (status, body) == (200, b"got hello")
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            data = recv_until_closed(sock)  # the answer, then the close: the body was never sent
            assert data.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in data
            assert b"connection: close" in data.lower()
    finally:
        raw.close()


def test_request_buffering_spares_the_upstream_a_slow_upload(ring3_process: Callable[..., RunningServer],
                                                             tmp_path: Path) -> None:
    raw = RawUpstream(keep_answering(answer(200, b"stored")))
    try:
        proxy = proxy_to(ring3_process, tmp_path,
                         f'{{ upstreams = ["{raw.address}"], request_buffering = true }}')
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"first ", b"second ", b"third"):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.2)
                assert raw.connections == 0  # nothing reaches the upstream while the upload crawls
            sock.sendall(b"0\r\n\r\n")
            status, _, body = ResponseReader(sock).read()
        assert (status, body) == (200, b"stored")
        head = raw.received[0]
        assert b"content-length: 18\r\n" in head and b"transfer-encoding" not in head
        assert head.endswith(b"first second third")
    finally:
        raw.close()


def test_a_unix_socket_upstream_and_no_body_statuses(ring3_process: Callable[..., RunningServer],
                                                     tmp_path: Path, upstream_files: Path) -> None:
    sock_path = tmp_path / "up.sock"
    ring3_process(str(upstream_files), "--listen", f"unix:{sock_path}", "--access-log", "off")
    proxy = proxy_to(ring3_process, tmp_path, f'"unix:{sock_path}"')
    status, headers, body = request(proxy, "/hello.txt")
    assert (status, body) == (200, b"hello through the proxy\n")
    etag = headers[b"etag"].decode()
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        for _ in range(2):  # a 304 has no body: the next response on the connection is read right
            sock.sendall(f"GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode())
            status, headers, body = ResponseReader(sock).read()
            assert (status, body) == (304, b"")
            assert b"content-length" not in headers and b"transfer-encoding" not in headers
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ResponseReader(sock).read()[2] == b"hello through the proxy\n"


def test_a_204_and_the_sites_error_page_for_a_502(ring3_process: Callable[..., RunningServer],
                                                  tmp_path: Path) -> None:
    raw = RawUpstream(keep_answering(b"HTTP/1.1 204 No Content\r\nx-n: 1\r\n\r\n"))
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "50x.html").write_text("<p>we are on it</p>\n")
    try:
        proxy = serve_config(ring3_process, tmp_path, f"""
            [[site]]
            hosts = ["*"]
            error_pages = {{ "500-599" = "/50x.html" }}
            [[site.location]]
            path = "= /50x.html"
            root = "{pages}"
            [[site.location]]
            path = "/ok/"
            proxy = "http://{raw.address}"
            [[site.location]]
            path = "/down/"
            proxy = "http://127.0.0.1:{free_port()}"
            """, "--access-log", "off")
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(b"GET /ok/x HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = ResponseReader(sock).read()
                assert (status, headers[b"x-n"], body) == (204, b"1", b"")
        status, _, body = request(proxy, "/down/x")
        assert (status, body) == (502, b"<p>we are on it</p>\n")
    finally:
        raw.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_client_that_does_not_read_holds_the_upstream_back(
        ring3_process: Callable[..., RunningServer], tmp_path: Path, framing: str) -> None:
    total = 64 * 1024 * 1024
    piece = b"z" * (256 * 1024)
    sent = [0]

    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        upstream.read_head(conn)
        head = (f"content-length: {total}" if framing == "content-length" else "transfer-encoding: chunked")
        conn.sendall(f"HTTP/1.1 200 OK\r\n{head}\r\n\r\n".encode())
        conn.settimeout(3)
        while sent[0] < total:
            data = piece if framing == "content-length" else b"%x\r\n%s\r\n" % (len(piece), piece)
            conn.sendall(data)  # blocks once the proxy stops reading: that is the point
            sent[0] += len(piece)
        if framing == "chunked":
            conn.sendall(b"0\r\n\r\n")

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.5)  # read nothing: kernel buffers, the pipe and the relay's hold fill, then stop
            stalled = sent[0]
            assert stalled < 24 * 1024 * 1024, stalled
            received = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received += len(data)
                if received >= total and framing == "content-length":
                    break
                if framing == "chunked" and data.endswith(b"0\r\n\r\n"):
                    break
            assert received >= total  # then everything arrives
    finally:
        raw.close()


def test_an_upstream_that_does_not_read_holds_the_upload_back(
        ring3_process: Callable[..., RunningServer], tmp_path: Path) -> None:
    release = time.monotonic() + 1.5

    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        head = upstream.read_head(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        time.sleep(max(0.0, release - time.monotonic()))
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < length:
            data = conn.recv(1 << 20)
            if not data:
                return
            got += len(data)
        conn.sendall(answer(200, b"%d" % got))

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"',
                         "--max-body-size", "100m")
        total = 64 * 1024 * 1024
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
            sock.settimeout(0.2)
            pushed = 0
            chunk = b"u" * (1 << 20)
            while time.monotonic() < release - 0.3:
                try:
                    pushed += sock.send(chunk)
                except TimeoutError:
                    pass
            assert pushed < 24 * 1024 * 1024, pushed  # the proxy stopped reading: the client is held
            sock.settimeout(30)
            sock.sendall(b"u" * (total - pushed))
            status, _, body = ResponseReader(sock, timeout=30).read()
        assert (status, body) == (200, b"%d" % total)
    finally:
        raw.close()


WS_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo: " + (message.get("text") or "")})
'''


def test_a_websocket_over_http2_to_an_http1_upstream(ring3_process: Callable[..., RunningServer],
                                                     tmp_path: Path) -> None:
    """RFC 8441's extended CONNECT from the client becomes an HTTP/1.1 Upgrade with a key of the proxy's
    own; the upstream's 101 (its Accept checked) becomes the 200 that opens the stream's tunnel."""
    from wsproto.events import TextMessage

    from h2_kit import H2Client
    from test_h2_websocket import H2WebSocket

    (tmp_path / "wsapp.py").write_text(WS_APP)
    upstream = ring3_process("--app", "wsapp:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                             "--access-log", "off")
    proxy = proxy_to(ring3_process, tmp_path, f'"http://127.0.0.1:{upstream.port}"')
    with H2Client(proxy.port) as client:
        socket_ = H2WebSocket(client, "/chat")
        socket_.send(TextMessage(data="over h2"))
        assert socket_.next_event() == TextMessage(data="echo: over h2")
        answer = client.answers[socket_.stream]
        assert answer.headers[":status"] == "200"
        assert "sec-websocket-accept" not in answer.headers and "upgrade" not in answer.headers
        socket_.send(TextMessage(data="again"))
        assert socket_.next_event() == TextMessage(data="echo: again")


def test_a_config_without_a_proxy_loads_no_proxy_code(tmp_path: Path) -> None:
    code = """
import sys
from ring3.config import build_config, load_toml
from ring3.apps import build_site
raw = load_toml(sys.argv[1])
config = build_config(raw, sys.argv[1], {})
build_site(config, ".")
print(sorted(name for name in sys.modules if name.startswith("ring3.proxy")))
"""
    plain = tmp_path / "plain.toml"
    plain.write_text('[[site]]\nhosts = ["*"]\nrespond = { body = "x" }\n')
    proxied = tmp_path / "proxied.toml"
    proxied.write_text('[[site]]\nhosts = ["*"]\nproxy = "http://127.0.0.1:9"\n')
    results = [subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=30) for path in (plain, proxied)]
    assert results[0].stdout.strip() == "[]", results[0]
    assert "ring3.proxy.handler" in results[1].stdout, results[1]


def test_a_kept_alive_connection_found_closed_is_retried_on_a_new_one(
        ring3_process: Callable[..., RunningServer], tmp_path: Path) -> None:
    """The race every pooled proxy meets: the upstream closes an idle connection just as a request goes
    out on it. A GET is sent again on a new connection to the same (only) upstream, and no failure is
    counted; a POST is never sent twice."""
    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        if upstream.read_head(conn):
            conn.sendall(answer(200, b"first"))
        upstream.read_head(conn)  # the second request on this connection: closed unanswered

    raw = RawUpstream(script)
    try:
        proxy = proxy_to(ring3_process, tmp_path, f'"http://{raw.address}"')
        assert request(proxy, "/a")[2] == b"first"
        status, _, body = request(proxy, "/b")
        assert (status, body) == (200, b"first")  # from a second connection
        assert raw.connections == 2
        assert "trying it again on a new connection" in proxy.stderr()
        status, _, _ = request(proxy, "/order", method="POST")  # on the pooled second connection
        assert status == 502
        assert [h.split(b" ")[1] for h in raw.received if h.startswith(b"POST")] == [b"/order"]
        assert request(proxy, "/c")[0] == 200  # the upstream was not taken out
    finally:
        raw.close()
