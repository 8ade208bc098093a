"""HTTP/2 with real clients over loopback: curl (h2c by prior knowledge and h2 over TLS), nghttp, h2load,
httpx, and the h2 library (tests/h2_kit.py) where a test needs control over streams: fairness between a
large download and a small file, resets, flow control, graceful shutdown, applications over HTTP/2."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import InProcessServer, ResponseReader, RunningServer
from h2_kit import H2Client
from ring3.config import AppSection
from ring3.handlers.asgi import ASGIHandler, Receive, Scope, Send
from tls_kit import Certs, serve_tls

Start = Callable[..., RunningServer]
StartInProcess = Callable[..., InProcessServer]

def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A client tool (curl, nghttp, h2load: scripts/test installs them); missing, the test fails."""
    assert shutil.which(argv[0]), f"{argv[0]} is missing: scripts/test installs it"
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def big_site(site: Path) -> Path:
    (site / "big.bin").write_bytes(hashlib.sha256(b"seed").digest() * (10 * 1024 * 1024 // 32))
    return site


# -- curl, nghttp, h2load -------------------------------------------------------------------------


def test_curl_h2c_with_prior_knowledge(served: RunningServer, site: Path) -> None:
    out = run("curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
              f"{served.url}/hello.txt")
    body, _, facts = out.stdout.rpartition("\n")
    assert facts == "2 200" and body == "hello, world\n"


def test_curl_h2_over_tls_by_alpn(certs: Certs, big_site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, big_site, certs)
    out = run("curl", "-s", "--http2", "--cacert", str(certs.ca_file), "-o", "/dev/null",
              "-w", "%{http_version} %{http_code} %{size_download}",
              f"https://localhost:{server.port}/big.bin")
    assert out.stdout == f"2 200 {10 * 1024 * 1024}"
    digest = subprocess.run(
        ["curl", "-s", "--http2", "--cacert", str(certs.ca_file), f"https://localhost:{server.port}/big.bin"],
        capture_output=True, timeout=60, check=True).stdout
    assert digest == (big_site / "big.bin").read_bytes()


def test_a_large_file_over_h2c_arrives_whole(big_site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off")
    body = subprocess.run(["curl", "-s", "--http2-prior-knowledge", f"{server.url}/big.bin"],
                          capture_output=True, timeout=60, check=True).stdout
    assert body == (big_site / "big.bin").read_bytes()


def test_nghttp_fetches_a_page_and_its_frames_are_well_formed(served: RunningServer) -> None:
    out = run("nghttp", "-nv", f"{served.url}/index.html")
    assert out.returncode == 0, out.stderr
    assert ":status: 200" in out.stdout
    assert "recv DATA frame" in out.stdout and "END_STREAM" in out.stdout
    assert "GOAWAY" not in out.stdout.split("recv DATA frame")[0]  # no error before the answer


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2"])
def test_h2load_many_streams_on_few_connections(tls: bool, certs: Certs, site: Path,
                                                ring3_process: Start) -> None:
    if tls:
        server = serve_tls(ring3_process, site, certs)
        url = f"https://localhost:{server.port}/index.html"
    else:
        server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
        url = f"{server.url}/index.html"
    out = run("h2load", "-n", "3000", "-c", "4", "-m", "10", url)
    assert "3000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout + out.stderr
    assert "status codes: 3000 2xx" in out.stdout


def test_h2c_can_be_turned_off(site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-h2c")
    with server.connect() as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        assert ResponseReader(sock).read()[0] == 505


def test_the_access_log_says_http_2(site: Path, ring3_process: Start, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", str(log))
    run("curl", "-s", "--http2-prior-knowledge", f"{server.url}/hello.txt")
    server.stop()
    assert '"GET /hello.txt HTTP/2.0" 200 13' in log.read_text()


# -- httpx ---------------------------------------------------------------------------------------


def test_httpx_over_h2_static_semantics(certs: Certs, site: Path, ring3_process: Start) -> None:
    server = serve_tls(ring3_process, site, certs)
    base = f"https://localhost:{server.port}"
    with httpx.Client(http2=True, verify=certs.client_context()) as client:
        first = client.get(f"{base}/data.bin")
        assert first.http_version == "HTTP/2" and first.content == bytes(range(256)) * 4
        etag = first.headers["etag"]
        assert client.get(f"{base}/data.bin", headers={"if-none-match": etag}).status_code == 304
        part = client.get(f"{base}/data.bin", headers={"range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == bytes(range(10, 20))
        assert part.headers["content-range"] == "bytes 10-19/1024"
        head = client.head(f"{base}/data.bin")
        assert head.status_code == 200 and head.headers["content-length"] == "1024" and head.content == b""
        assert client.get(f"{base}/missing").status_code == 404
        assert client.get(f"{base}/.secret").status_code == 403  # as over HTTP/1.1


# -- streams: fairness, resets, windows, shutdown ------------------------------------------------------


def test_a_large_download_does_not_starve_a_small_file(big_site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off")
    with H2Client(server.port) as client:
        big = client.request("/big.bin")  # its first 512 KiB may leave before the next request is read
        small = client.request("/hello.txt")
        big_answer, small_answer = client.wait(big, small, timeout=30)
    assert small_answer.body == b"hello, world\n"
    assert len(big_answer.body) == 10 * 1024 * 1024
    assert small_answer.ended_at < big_answer.ended_at


def test_a_reader_that_gives_no_credit_gets_only_its_window(big_site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off")
    with H2Client(server.port) as client:
        client.auto_ack = False
        stream = client.request("/big.bin")
        for _ in range(10):
            client.pump(0.2)
        assert len(client.answers[stream].body) == 65535  # the default windows, and not a byte more
        assert not client.answers[stream].ended


async def _streaming_app(scope: Scope, receive: Receive, send: Send, seen: list[str]) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": hashlib.sha256(body).hexdigest().encode()})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for i in range(1000):
                await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
                await asyncio.sleep(0.01)
        except OSError as exc:
            seen.append(f"send raised {type(exc).__name__}")
            return
        await send({"type": "http.response.body", "body": b""})
    elif path == "/wait-disconnect":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        message = await receive()  # the (empty) body of the GET first
        while message["type"] == "http.request":
            message = await receive()
        seen.append(message["type"])
    elif path == "/slow":
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
    else:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"X-Mixed-Case", b"kept")]})
        await send({"type": "http.response.body", "body": b"hello over " + scope["http_version"].encode()})


def serve_app(in_process: StartInProcess, seen: list[str]) -> InProcessServer:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _streaming_app(scope, receive, send, seen)
    return in_process(ASGIHandler(app, AppSection()))


def test_an_asgi_app_over_h2c(in_process: StartInProcess) -> None:
    server = serve_app(in_process, [])
    with H2Client(server.port) as client:
        answer = client.get("/")
    assert answer.body == b"hello over 2"
    assert answer.headers[":status"] == "200" and answer.headers["x-mixed-case"] == "kept"


def test_an_upload_larger_than_the_windows_is_granted_credit_as_the_app_reads(
        in_process: StartInProcess) -> None:
    server = serve_app(in_process, [])
    body = bytes(range(256)) * 4096  # 1 MiB: sixteen times the stream's initial window
    with H2Client(server.port) as client:
        stream = client.request("/echo", method="POST", end=False)
        sent = 0
        deadline = time.monotonic() + 20
        while sent < len(body) and time.monotonic() < deadline:
            room = min(client.conn.local_flow_control_window(stream), client.conn.max_outbound_frame_size,
                       len(body) - sent)
            if room > 0:
                client.conn.send_data(stream, body[sent:sent + room])
                sent += room
                client._flush()
            else:
                client.pump(0.5)  # wait for WINDOW_UPDATE
        client.conn.end_stream(stream)
        client._flush()
        [answer] = client.wait(stream)
    assert answer.headers["x-length"] == str(len(body))
    assert answer.body == hashlib.sha256(body).hexdigest().encode()


def reset_after(client: H2Client, path: str, marker: bytes) -> None:
    """Ask for `path`, read until `marker` arrived, then reset the stream."""
    stream = client.request(path)
    while marker not in client.answers[stream].body:
        assert client.pump(1.0)
    client.reset(stream)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_client_reset_reaches_the_app_as_a_disconnect(in_process: StartInProcess) -> None:
    seen: list[str] = []
    server = serve_app(in_process, seen)
    with H2Client(server.port) as client:
        reset_after(client, "/wait-disconnect", b"first")
        other = client.get("/")  # the connection serves on
        assert other.body == b"hello over 2"
    wait_until(lambda: bool(seen))
    assert seen == ["http.disconnect"]


def test_a_reset_stream_makes_the_apps_send_raise(in_process: StartInProcess) -> None:
    seen: list[str] = []
    server = serve_app(in_process, seen)
    with H2Client(server.port) as client:
        reset_after(client, "/stream", b"chunk 2")
        client.pump(0.3)
    wait_until(lambda: bool(seen))
    assert seen and seen[0].startswith("send raised")


SLOW_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})
"""


def test_shutdown_sends_goaway_and_lets_streams_in_flight_finish(ring3_process: Start,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    server = ring3_process("--app", "slow_app:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                           "--access-log", "off", "--lifespan", "off")
    with H2Client(server.port) as client:
        stream = client.request("/slow")
        client.pump(0.1)
        server.process.send_signal(signal.SIGTERM)
        [answer] = client.wait(stream)
        while not client.closed:
            client.pump(1.0)
    assert answer.body == b"done"
    assert client.goaway is not None and client.goaway.error_code == 0
    assert client.goaway.last_stream_id == stream
    assert server.stop() == 0


def test_a_wsgi_app_over_h2c(in_process: StartInProcess) -> None:
    from ring3.handlers.wsgi import WSGIHandler

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["SERVER_PROTOCOL"].encode(), b" ", str(len(body)).encode()]

    server = in_process(WSGIHandler(app, AppSection()))
    with H2Client(server.port) as client:
        answer = client.get("/", method="POST", body=b"x" * 5000)
    assert answer.body == b"HTTP/2 5000"


def test_an_urgent_stream_is_sent_before_a_less_urgent_one(big_site: Path, ring3_process: Start) -> None:
    """RFC 9218: the Priority field's urgency orders the streams; without it they would share the
    connection in turn and the first asked would end first."""
    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off")
    with H2Client(server.port) as client:
        background = client.request("/big.bin", headers=[("priority", "u=5")])
        urgent = client.request("/big.bin", headers=[("priority", "u=0")])
        first, second = client.wait(background, urgent, timeout=30)
    assert len(first.body) == len(second.body) == 10 * 1024 * 1024
    assert second.ended_at < first.ended_at


def test_priority_update_reorders_streams_in_flight(big_site: Path, ring3_process: Start) -> None:
    from ring3.http2 import frames as f

    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off")
    with H2Client(server.port) as client:
        earlier = client.request("/big.bin")
        later = client.request("/big.bin")
        client.sock.sendall(f.frame(f.PRIORITY_UPDATE, 0, 0, later.to_bytes(4, "big") + b"u=0"))
        first, second = client.wait(earlier, later, timeout=30)
    assert len(first.body) == len(second.body) == 10 * 1024 * 1024
    assert second.ended_at < first.ended_at


def test_expect_100_continue_is_answered_when_the_app_reads(in_process: StartInProcess) -> None:
    server = serve_app(in_process, [])
    with H2Client(server.port) as client:
        stream = client.request("/echo", method="POST", end=False, headers=[("expect", "100-continue")])
        deadline = time.monotonic() + 5
        while client.answers[stream].headers.get(":status") != "100" and time.monotonic() < deadline:
            assert client.pump(0.5)
        assert client.answers[stream].headers.get(":status") == "100"  # before any byte of the body
        client.conn.send_data(stream, b"body", end_stream=True)
        client._flush()
        [answer] = client.wait(stream)
    assert answer.headers[":status"] == "200" and answer.headers["x-length"] == "4"


async def _trailers_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum")]})
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"X-Count", b"2"), (b"content-length", b"9")]})


def test_asgi_trailers_over_http2(in_process: StartInProcess) -> None:
    server = in_process(ASGIHandler(_trailers_app, AppSection()))
    with H2Client(server.port) as client:
        answer = client.get("/", headers=[("te", "trailers")])
    assert answer.body == b"part one, part two"
    assert answer.headers["x-checksum"] == "abc" and answer.headers["x-count"] == "2"
    assert "content-length" not in answer.headers  # a framing field never goes as a trailer


def test_asgi_trailers_over_http11_chunked(in_process: StartInProcess) -> None:
    server = in_process(ASGIHandler(_trailers_app, AppSection()))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\nx-checksum: abc\r\nx-count: 2\r\n\r\n"), body
    assert b"part two" in body


def test_a_reset_download_releases_its_file(big_site: Path, ring3_process: Start) -> None:
    """RST_STREAM from the client on a file being sent: the stream's file descriptor is let go (files
    too large for the file cache are opened per response)."""
    server = ring3_process(str(big_site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--cache-max-file-size", "1k", "--open-files-max", "0")
    fds = Path(f"/proc/{server.process.pid}/fd")
    with H2Client(server.port) as client:
        client.get("/hello.txt")
        before = len(list(fds.iterdir()))
        client.auto_ack = False  # the download stalls at the window: it is in flight when reset
        streams = [client.request("/big.bin") for _ in range(5)]
        client.pump(0.3)
        during = len(list(fds.iterdir()))
        for stream in streams:
            client.reset(stream)
        client.auto_ack = True
        client.conn.increment_flow_control_window(1 << 20)  # the connection's credit back, for the next
        client._flush()
        assert client.get("/hello.txt").body == b"hello, world\n"
        wait_until(lambda: len(list(fds.iterdir())) <= before)
        after = len(list(fds.iterdir()))
    assert during > before, (before, during)  # the files being sent are open
    assert after <= before, (before, during, after)


def test_max_requests_per_connection_ends_an_h2_connection_with_goaway(site: Path,
                                                                        ring3_process: Start) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--max-requests-per-connection", "3")
    with H2Client(server.port) as client:
        answers = client.wait(*[client.request("/hello.txt") for _ in range(3)])
        assert [a.body for a in answers] == [b"hello, world\n"] * 3
        while not client.closed:
            client.pump(1.0)
    assert client.goaway is not None and client.goaway.error_code == 0
    assert client.goaway.last_stream_id == 5  # the third stream: it was answered, and no more
    with H2Client(server.port) as again:  # a new connection starts a new count
        assert again.get("/hello.txt").body == b"hello, world\n"
