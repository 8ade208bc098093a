"""Listeners, readiness, the access log and graceful shutdown of a real `ring3 serve` process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import ResponseReader, RunningServer, exchange, recv_until_closed

Start = Callable[..., RunningServer]
GET = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
CLF = re.compile(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
                 r'"(.*)" (\d{3}) (\d+) "(.*)" "(.*)"$')


def test_sigterm_exits_zero_and_closes_idle_connections(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
    idle = server.connect()
    assert exchange(idle, GET)[0] == 200
    assert server.stop(signal.SIGTERM) == 0
    assert recv_until_closed(idle, timeout=3) == b""
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=2)


def test_sigint_exits_zero(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.stderr()


def test_in_flight_download_finishes_during_shutdown(ring3_process: Start, site: Path) -> None:
    payload = os.urandom(24 * 1024 * 1024)
    (site / "big.bin").write_bytes(payload)
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--shutdown-grace", "20")
    curl = subprocess.Popen(["curl", "-s", "--limit-rate", "16M", f"{server.url}/big.bin"],
                            stdout=subprocess.PIPE)
    time.sleep(0.5)  # the download is under way
    server.process.send_signal(signal.SIGTERM)
    body, _ = curl.communicate(timeout=30)
    assert curl.returncode == 0
    assert body == payload
    assert server.stop() == 0


def test_grace_period_ends_slow_responses(ring3_process: Start, site: Path) -> None:
    (site / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--shutdown-grace", "0.5")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    sock.close()


def test_ipv6_and_unix_listeners_each_announce_themselves(ring3_process: Start, site: Path,
                                                          tmp_path: Path) -> None:
    unix_path = tmp_path / "ring3.sock"
    server = ring3_process(str(site), "--listen", "[::1]:0", "--listen", f"unix:{unix_path}",
                           "--access-log", "off")
    announced = [line for line in server.stdout_lines if "listening on" in line]
    assert announced[0].startswith("ring3 listening on http://[::1]:")
    time.sleep(0.2)
    announced = [line for line in server.stdout_lines if "listening on" in line]
    assert any(line.strip() == f"ring3 listening on unix:{unix_path}" for line in announced)
    response = httpx.get(f"{server.url}/hello.txt")
    assert response.text == "hello, world\n"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(unix_path))
        assert exchange(sock, GET)[2] == b"hello, world\n"
    assert server.stop() == 0
    assert not unix_path.exists()


def test_access_log_in_combined_format_with_escaping(ring3_process: Start, site: Path,
                                                    tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", str(log))
    with server.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /hello.txt?q=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r/\r\n"
                     b"User-Agent: evil\"agent\xff\\x\r\n\r\n")
        assert reader.read()[0] == 200
        sock.sendall(b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read()[0] == 404
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: rejected, still logged
        assert ResponseReader(sock).read()[0] == 400
    assert server.stop() == 0
    lines = log.read_text("ascii").splitlines()
    assert len(lines) == 3
    first = CLF.match(lines[0])
    assert first is not None, lines[0]
    assert first.group(1) == "127.0.0.1"
    assert first.group(3) == "GET /hello.txt?q=1 HTTP/1.1"
    assert (first.group(4), first.group(5)) == ("200", "13")
    assert first.group(6) == "http://r/"
    assert first.group(7) == r"evil\x22agent\xff\x5cx"
    assert CLF.match(lines[1]) and ' 404 ' in lines[1]
    assert CLF.match(lines[2]) and '"-" 400 ' in lines[2]


def test_access_log_to_stdout_by_default_and_off(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0")
    assert httpx.get(f"{server.url}/hello.txt").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("GET /hello.txt" in x for x in server.stdout_lines):
        time.sleep(0.05)
    assert any(CLF.match(line.rstrip("\n")) for line in server.stdout_lines)
    quiet = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
    assert httpx.get(f"{quiet.url}/hello.txt").status_code == 200
    assert quiet.stop() == 0
    assert not any("GET /hello.txt" in line for line in quiet.stdout_lines)


def test_listen_failure_is_reported_without_traceback(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
    result = subprocess.run(
        [sys.executable, "-m", "ring3", "serve", str(site), "--listen", f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr
