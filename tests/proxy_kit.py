"""Test kit for the reverse proxy: ring3 started as a proxy in front of an upstream, and raw-socket
upstreams whose every byte the test writes (a thread per connection, a script per test)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import RunningServer
from sites_kit import serve_config

# What a scripted upstream does with one accepted connection; `requests` holds what it read.
Script = Callable[[socket.socket, "RawUpstream"], None]


class RawUpstream:
    """A loopback listener whose connections run `script` in a thread each; records what arrived."""

    def __init__(self, script: Script, port: int = 0) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", port))  # a given port: an upstream back
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []  # every request head (and body bytes read with it), in order
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            self.script(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def read_head(self, conn: socket.socket) -> bytes:
        """Read one request head (to its blank line), record it and return it; b"" at the close."""
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return b""
            data += piece
        self.received.append(data)
        return data

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)


def answer(status: int = 200, body: bytes = b"ok", headers: str = "") -> bytes:
    """A well-formed response with a Content-Length."""
    return (f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n{headers}\r\n").encode() + body


def keep_answering(response: bytes) -> Script:
    """A script: answer every request on the connection with `response` (keep-alive)."""
    def script(conn: socket.socket, upstream: RawUpstream) -> None:
        while upstream.read_head(conn):
            conn.sendall(response)
    return script


def proxy_to(ring3_process: Callable[..., RunningServer], tmp_path: Path, proxy: str,
             *flags: str, extra: str = "") -> RunningServer:
    """ring3 with one site whose '/' location is `proxy = <proxy>` (a TOML value)."""
    toml = f"""
    [[site]]
    hosts = ["*"]
    {extra}
    [[site.location]]
    path = "/"
    proxy = {proxy}
    """
    return serve_config(ring3_process, tmp_path, toml, "--access-log", "off", *flags)
