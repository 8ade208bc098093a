"""The cost ledger agrees with strace, and /metrics exposes it in Prometheus text format."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import ResponseReader, RunningServer

Start = Callable[..., RunningServer]
ADMIN = re.compile(r"ring3 admin on (http://\S+)/metrics")
# strace's name for each ledger kind (several names where libc may pick either).
STRACE_NAMES = {
    "accept": ("accept4", "accept"), "getsockname": ("getsockname",), "recv": ("recvfrom", "recv"),
    "send": ("sendto", "send"),
    "sendmsg": ("sendmsg",), "sendfile": ("sendfile", "sendfile64"),
    "pread": ("pread64", "preadv2", "preadv"),
    "open": ("openat", "open"), "fstat": ("fstat", "newfstatat"), "readlink": ("readlink", "readlinkat"),
    "close": ("close",), "shutdown": ("shutdown",), "epoll_wait": ("epoll_wait", "epoll_pwait"),
    "epoll_ctl": ("epoll_ctl",), "write": ("write",), "setsockopt": ("setsockopt",), "ioctl": ("ioctl",),
    "getdents": ("getdents64", "getdents"),
}


def admin_url(server: RunningServer) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in server.stdout_lines:
            if match := ADMIN.search(line):
                return match.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no admin line in {server.stdout_lines!r}")


def scrape(url: str) -> dict[str, float]:
    response = httpx.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def strace_counts(summary: str) -> dict[str, int]:
    counts = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


def test_metrics_page_counts_requests_and_bytes(ring3_process: Start, site: Path) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0")
    admin = admin_url(server)
    before = scrape(admin)
    big = site / "big.bin"
    big.write_bytes(os.urandom(200_000))
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"{server.url}/hello.txt").status_code == 200
        assert client.get(f"{server.url}/missing").status_code == 404
        assert client.get(f"{server.url}/big.bin").content == big.read_bytes()
    after = scrape(admin)
    # The admin listener shares the worker's ledger: the first scrape's own 200 is counted after it
    # was rendered, and the second scrape's connection is accepted before it is rendered.
    ok = 'ring3_requests_total{status="200"}'
    assert after[ok] - before.get(ok, 0) == 6 + 1
    missing = 'ring3_requests_total{status="404"}'
    assert after[missing] - before.get(missing, 0) == 1
    zero_copy = 'ring3_bytes_sent_total{path="zero_copy"}'
    assert after[zero_copy] - before[zero_copy] == 200_000
    assert after['ring3_syscalls_total{kind="sendfile"}'] > before['ring3_syscalls_total{kind="sendfile"}']
    assert after["ring3_connections_accepted_total"] - before["ring3_connections_accepted_total"] == 1 + 1
    assert httpx.get(admin + "/other").status_code == 404


def traced(server: RunningServer, tmp_path: Path, exercise: Callable[[], int]
           ) -> tuple[dict[str, int], dict[str, int], str]:
    """Run `exercise` (it returns its request count) with strace -f -c attached to the server: the
    ledger's calls by kind over that window, strace's by kind, and strace's summary."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: scripts/test installs it"
    admin = admin_url(server)
    summary = tmp_path / f"strace-{time.monotonic_ns()}.txt"
    tracer = subprocess.Popen([strace, "-f", "-c", "-o", str(summary), "-p", str(server.process.pid)],
                              stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let strace attach
    before = scrape(admin)
    exercise()
    after = scrape(admin)
    tracer.send_signal(signal.SIGINT)
    tracer.communicate(timeout=20)
    text = summary.read_text()
    counted = strace_counts(text)
    ledger = {kind: int(after[f'ring3_syscalls_total{{kind="{kind}"}}']
                        - before[f'ring3_syscalls_total{{kind="{kind}"}}']) for kind in STRACE_NAMES}
    traced_calls = {kind: sum(counted.get(name, 0) for name in names) for kind, names in STRACE_NAMES.items()}
    return ledger, traced_calls, text


def mismatches(ledger: dict[str, int], traced_calls: dict[str, int]) -> list[str]:
    found = []
    for kind, calls in traced_calls.items():
        tolerance = max(0.05 * calls, 3)  # the two scrapes straddle the window by a few calls
        if abs(ledger[kind] - calls) > tolerance:
            found.append(f"{kind}: ledger {ledger[kind]} vs strace {calls}")
    return found


def test_ledger_agrees_with_strace_within_5_percent(ring3_process: Start, site: Path, tmp_path: Path) -> None:
    (site / "64k.bin").write_bytes(os.urandom(64 * 1024))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0")

    def exercise() -> int:
        requests = 0
        for connection in range(4):
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                reader = ResponseReader(sock)
                for index in range(150):
                    path = ("/hello.txt", "/64k.bin", "/missing")[(index + connection) % 3]
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                    reader.read()
                    requests += 1
        return requests

    ledger, traced_calls, summary = traced(server, tmp_path, exercise)
    assert ledger["recv"] >= 600 and ledger["sendfile"] >= 200
    found = mismatches(ledger, traced_calls)
    assert not found, "\n".join(found) + "\n" + summary


WSGI_HELLO = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
"""


def test_ledger_counts_the_wake_ups_of_the_wsgi_pool(ring3_process: Start, tmp_path: Path) -> None:
    """Each answer from a pool thread wakes the loop through its self-pipe: a send there and recvs here,
    which the ledger counts as strace does."""
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "hello_wsgi.py").write_text(WSGI_HELLO)
    server = ring3_process("--app", "hello_wsgi:app", "--app-dir", str(apps), "--interface", "wsgi",
                           "--listen", "127.0.0.1:0", "--access-log", "off", "--admin", "127.0.0.1:0")

    def exercise() -> int:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            reader = ResponseReader(sock)
            for _ in range(300):  # one at a time: every answer is a wake-up of its own
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert reader.read()[2] == b"hello"
        return 300

    ledger, traced_calls, summary = traced(server, tmp_path, exercise)
    assert ledger["send"] >= 2 * 300 and ledger["recv"] >= 2 * 300  # the responses and the wake-ups
    found = mismatches(ledger, traced_calls)
    assert not found, "\n".join(found) + "\n" + summary


@pytest.mark.parametrize("file_frames", ["read", "sendfile"])
def test_ledger_agrees_with_strace_over_http2(ring3_process: Start, site: Path, tmp_path: Path,
                                              file_frames: str) -> None:
    """h2c with h2load: ten streams per connection share each read and write, and a file's DATA frames
    leave by batched reads or by sendfile; the ledger counts those calls as strace does."""
    (site / "64k.bin").write_bytes(os.urandom(64 * 1024))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", "--file-frames", file_frames)
    h2load = shutil.which("h2load")
    assert h2load, "h2load is missing: scripts/test installs nghttp2-client"

    warm = subprocess.run([h2load, "-n", "1", f"{server.url}/64k.bin"], capture_output=True, text=True,
                          timeout=30, check=False).stdout
    assert "1 succeeded" in warm, warm  # ring3.http2 is imported with the first HTTP/2 connection

    def exercise() -> int:
        out = subprocess.run([h2load, "-n", "1000", "-c", "4", "-m", "10", f"{server.url}/64k.bin"],
                             capture_output=True, text=True, timeout=60, check=False).stdout
        assert "1000 succeeded" in out, out
        return 1000

    ledger, traced_calls, summary = traced(server, tmp_path, exercise)
    if file_frames == "read":  # a stream's turn is 64 KiB: one preadv for a file's four frames
        assert 1000 <= ledger["pread"] <= 1300 and ledger["sendfile"] == 0
    else:
        assert ledger["sendfile"] >= 4000  # four 16 KiB frames per file
    found = mismatches(ledger, traced_calls)
    assert not found, "\n".join(found) + "\n" + summary
