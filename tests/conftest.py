"""Shared test kit: a real ring3 process on loopback, an in-process server for custom handlers, raw
sockets, and a rule that in CI a skipped test is a failure."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ring3.config import Config, build_config
from ring3.handlers import Handler
from ring3.server import Server

READY = re.compile(r"ring3 listening on (\S+)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> Iterator[None]:
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
    yield


@dataclass
class RunningServer:
    """A `ring3 serve` child process."""

    process: subprocess.Popen[str]
    url: str
    stdout_lines: list[str] = field(default_factory=list)
    stderr_path: Path | None = None
    reader: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            if self.reader is not None:
                self.reader.join(5)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""


def start_ring3(args: list[str], tmp_path: Path, *, timeout: float = 15.0) -> RunningServer:
    """Start `python -m ring3 serve ARGS` and wait for its readiness line."""
    stderr_path = tmp_path / f"ring3-stderr-{time.monotonic_ns()}.log"
    stderr = stderr_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ring3", "serve", *args],
        stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stderr.close()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = READY.search(line)
        if match:
            reader = threading.Thread(target=_drain, args=(process, lines), daemon=True)
            reader.start()
            return RunningServer(process, match.group(1), lines, stderr_path, reader)
    process.kill()
    process.wait()
    process.stdout.close()
    raise AssertionError(f"ring3 did not start: {lines!r} {stderr_path.read_text()!r}")


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA and leaf certificates made with trustme (tls_kit.Certs), once per module."""
    from tls_kit import make_certs

    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A small site: text, HTML, binary, a directory with an index, and a dotfile."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>home</title><p>hello</p>\n")
    (root / "hello.txt").write_text("hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<p>sub</p>\n")
    (root / "empty-dir").mkdir()
    (root / ".secret").write_text("do not serve\n")
    (root / "style.css").write_text("body { color: red }\n")
    return root


@pytest.fixture
def ring3_process(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start ring3 with arguments; every process is stopped at the end."""
    started: list[RunningServer] = []

    def start(*args: str) -> RunningServer:
        server = start_ring3(list(args), tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def served(site: Path, ring3_process: Callable[..., RunningServer]) -> RunningServer:
    """ring3 serving `site` on a free loopback port, access log off."""
    return ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")


class InProcessServer:
    """A Server with a custom handler, on its own event loop in a thread."""

    def __init__(self, handler: Handler, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.handler = handler
        self.config = config
        self.server: Server | None = None
        self.url = ""
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = Server(self.config, self.handler, self.loop)
            self.url = self.server.start()[0]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self) -> None:
        assert self.server is not None
        future = asyncio.run_coroutine_threadsafe(self.server.shutdown(1.0), self.loop)
        future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def in_process() -> Iterator[Callable[..., InProcessServer]]:
    """Factory: run a handler in-process; keyword arguments are config overrides."""
    started: list[InProcessServer] = []

    def start(handler: Handler, **overrides: object) -> InProcessServer:
        values = {("server", "listen"): ["127.0.0.1:0"], ("server", "access_log"): "off"}
        for key, value in overrides.items():
            section, _, name = key.partition("__")
            values[(section, name)] = value
        server = InProcessServer(handler, build_config(None, "<test>", values))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def protocol(request: pytest.FixtureRequest) -> str:
    """Tests that speak through httpx take it to run over HTTP/1.1 and over HTTP/2 (h2c by prior
    knowledge on plain listeners)."""
    return str(request.param)


def http_client(base_url: str, protocol: str = "HTTP/1.1", **options: Any) -> Any:
    """An httpx.Client speaking only `protocol`; every response is checked to have come over it."""
    import httpx

    def check(response: httpx.Response) -> None:
        assert response.http_version == protocol, (response.http_version, protocol)

    h2 = protocol == "HTTP/2"
    options.setdefault("timeout", 10.0)
    return httpx.Client(base_url=base_url, http1=not h2, http2=h2, event_hooks={"response": [check]},
                        **options)


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes (or the timeout passes)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


class ResponseReader:
    """Reads Content-Length-framed responses off a socket, keeping what follows for the next one."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.buffer = b""
        sock.settimeout(timeout)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; buffered {self.buffer[:200]!r}")
        self.buffer += chunk

    def read(self, head_only: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        """One response: (status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        length = 0 if head_only or status in (204, 304) or status < 200 else int(
            headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send raw request bytes and read one response."""
    sock.sendall(request)
    return ResponseReader(sock).read(head_only=request.startswith(b"HEAD "))
