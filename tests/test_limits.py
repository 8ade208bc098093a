"""Every limit crossed over a real socket: the status it maps to, and the connection closed."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ResponseReader, RunningServer, exchange, recv_until_closed

Start = Callable[..., RunningServer]
GET = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
HEAD_WITH_FIELD = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: %s\r\n\r\n"


def start(ring3_process: Start, site: Path, *flags: str) -> RunningServer:
    return ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off", *flags)


def assert_closed(sock: socket.socket, timeout: float = 3.0) -> None:
    """The server closed the connection: reading gives EOF (or a reset), not a timeout."""
    sock.settimeout(timeout)
    try:
        rest = sock.recv(65536)
    except ConnectionResetError:
        return
    assert rest == b"", f"unexpected bytes instead of close: {rest[:100]!r}"


def test_request_line_limit_gives_414(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-request-line", "100")
    with server.connect() as sock:  # at the limit: served (404, the file does not exist)
        path = b"/" + b"a" * 99
        status, _, _ = exchange(sock, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 404
    with server.connect() as sock:
        path = b"/" + b"a" * 100
        status, headers, _ = exchange(sock, b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 414
        assert headers[b"connection"] == b"close"
        assert_closed(sock)


def test_header_block_limit_gives_431(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-header-bytes", "512")
    with server.connect() as sock:
        status, _, _ = exchange(sock, HEAD_WITH_FIELD % (b"a" * 300))
        assert status == 200
    with server.connect() as sock:
        status, _, _ = exchange(sock, HEAD_WITH_FIELD % (b"a" * 600))
        assert status == 431
        assert_closed(sock)
    with server.connect() as sock:  # a head that never ends is cut off at the limit too
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 2000)
        status, _, _ = ResponseReader(sock).read()
        assert status == 431


def test_header_count_limit_gives_431(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-header-count", "5")
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    with server.connect() as sock:
        status, _, _ = exchange(sock, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        assert status == 200  # Host + 4 = 5 fields
    with server.connect() as sock:
        status, _, _ = exchange(sock, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n" + fields + b"X-9: v\r\n\r\n")
        assert status == 431
        assert_closed(sock)


def test_body_limit_gives_413_for_content_length_and_chunked(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-body-size", "1000")
    with server.connect() as sock:  # at the limit the body is accepted (and the method refused)
        status, _, _ = exchange(sock, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                                + b"a" * 1000)
        assert status == 405
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
        assert status == 413
        assert headers[b"connection"] == b"close"
        assert_closed(sock)
    with server.connect() as sock:
        # The static handler answers 405 at once; the oversized chunked body then closes the connection.
        chunk = b"3e8\r\n" + b"a" * 1000 + b"\r\n"
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 405 ")
        assert data.count(b"HTTP/1.1") == 1


def test_body_limit_with_curl_upload(ring3_process: Start, site: Path, tmp_path: Path) -> None:
    """A real client uploading too much sees the 413 (lingering close: no reset eats it)."""
    import subprocess

    server = start(ring3_process, site, "--max-body-size", "1000")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(2_000_000))
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", f"@{upload}",
         "-H", "Expect:", f"{server.url}/x"], capture_output=True, text=True, timeout=30)
    assert result.stdout == "413"


def test_header_timeout_gives_408_then_close(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--header-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n")  # never finishes the head
        started = time.monotonic()
        data = recv_until_closed(sock, timeout=5)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 4
    with server.connect() as sock:  # a connection that sends nothing is closed silently
        assert recv_until_closed(sock, timeout=5) == b""


def test_slow_dripping_head_is_cut_at_header_timeout(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--header-timeout", "1")
    with server.connect() as sock:
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError, AssertionError)):
            for byte in b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 3:
                    raise AssertionError("still open after 3 s of dripping")
                sock.settimeout(0.001)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        raise AssertionError("answered")
                except TimeoutError:
                    pass
        assert time.monotonic() - started < 3.5


def test_keepalive_timeout_closes_idle_connection(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--keepalive-timeout", "0.5")
    with server.connect() as sock:
        status, _, _ = exchange(sock, GET)
        assert status == 200
        started = time.monotonic()
        assert_closed(sock, timeout=5)
        assert 0.3 < time.monotonic() - started < 4


def test_requests_per_connection_limit(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-requests-per-connection", "3")
    with server.connect() as sock:
        reader = ResponseReader(sock)
        for number in range(1, 4):
            sock.sendall(GET)
            status, headers, _ = reader.read()
            assert status == 200
            assert (headers.get(b"connection") == b"close") == (number == 3)
        assert_closed(sock)


def test_connection_limit_pauses_accepting_and_recovers(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-connections", "2")
    first, second = server.connect(), server.connect()
    for sock in (first, second):
        assert exchange(sock, GET)[0] == 200
    third = server.connect()  # the kernel completes the handshake; ring3 does not accept it yet
    third.sendall(GET)
    third.settimeout(0.7)
    with pytest.raises(TimeoutError):
        third.recv(1)
    first.close()
    status, _, body = ResponseReader(third, timeout=5).read()
    assert status == 200 and body == b"hello, world\n"
    for sock in (second, third):
        sock.close()
    assert server.process.poll() is None


def test_send_timeout_drops_a_client_that_stops_reading(ring3_process: Start, site: Path) -> None:
    big = site / "big.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    server = start(ring3_process, site, "--send-timeout", "0.5")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    with sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(2.5)  # read nothing: ring3 must give up after about 0.5 s
        received = len(recv_until_closed(sock, timeout=5))
    assert received < 16 * 1024 * 1024
    assert server.process.poll() is None


def test_body_timeout_closes_a_stalled_upload(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--body-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        status, _, _ = ResponseReader(sock).read()
        assert status == 405
        started = time.monotonic()
        assert_closed(sock, timeout=5)
        assert time.monotonic() - started < 4


def test_lingering_close_is_bounded_by_lingering_timeout(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-body-size", "1000", "--lingering-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        status, _, _ = ResponseReader(sock).read()
        assert status == 413
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:  # keep sending: ring3 drains, then gives up
            try:
                sock.sendall(b"a" * 100)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        assert closed
        assert time.monotonic() - started < 3
