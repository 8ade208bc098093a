"""Socket helpers for the hostile tests: every socket has a timeout and every target is loopback."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from conftest import ResponseReader

LOOPBACK = "127.0.0.1"
HELLO = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
HELLO_BODY = b"hello, world\n"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=timeout)


def read_until_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the peer still sends, and whether it then closed (EOF or reset) within `timeout`."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def quiet_for(sock: socket.socket, seconds: float) -> bytes | None:
    """None if the peer neither sends nor closes for `seconds`; else what it sent (b"" for a close)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def fetch_hello(port: int, timeout: float = 5.0) -> tuple[int, bytes, float]:
    """A fresh client's GET /hello.txt: (status, body, seconds it took from connect to the last byte)."""
    started = time.monotonic()
    with connect(port, timeout) as sock:
        sock.sendall(HELLO)
        status, _, body = ResponseReader(sock, timeout).read()
    return status, body, time.monotonic() - started


def open_fds(pid: int) -> int:
    """How many file descriptors process `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
