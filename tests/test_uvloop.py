"""The same server on uvloop (`--loop uvloop`): files, sendfile, pipelining, shutdown."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import ResponseReader, RunningServer

Start = Callable[..., RunningServer]


def test_uvloop_serves_small_large_and_pipelined(ring3_process: Start, site: Path) -> None:
    big = site / "big.bin"
    big.write_bytes(os.urandom(10 * 1024 * 1024))
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off", "--loop", "uvloop")
    with httpx.Client() as client:
        for _ in range(3):  # the third comes from the cache
            assert client.get(f"{server.url}/hello.txt").text == "hello, world\n"
        body = client.get(f"{server.url}/big.bin").content
        assert hashlib.sha256(body).digest() == hashlib.sha256(big.read_bytes()).digest()
        assert client.get(f"{server.url}/nope").status_code == 404
    with server.connect() as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" * 8)
        reader = ResponseReader(sock)
        assert [reader.read()[2] for _ in range(8)] == [b"hello, world\n"] * 8
    assert server.stop() == 0


def test_unknown_loop_is_a_config_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ring3", "serve", str(tmp_path), "--loop", "trio"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "server.loop" in result.stderr and "Traceback" not in result.stderr
