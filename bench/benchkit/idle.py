"""Idle keep-alive connections: what holding them open costs a server in memory.

The client opens `count` connections in waves, asks each for one file (so each connection has served a
request and sits in keep-alive, as a browser's do between page loads), reads the whole response, and
holds them all open while the server's resident memory is read. Bounded in count and in time.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

WAVE = 250  # connections opened, asked and answered together
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding: *chunked\r\n", re.I)
_LAST_CHUNK = b"\r\n0\r\n\r\n"  # no trailers from a static file server


@dataclass
class Held:
    """What the client managed: connections held open after a good response, and how long it took."""

    connections: int
    seconds: float
    failures: int


def _receive(sock: socket.socket, data: bytes, deadline: float) -> bytes:
    """`data` with the next piece the socket brings; raises EOFError when it closes."""
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    chunk = sock.recv(65536)
    if not chunk:
        raise EOFError
    return data + chunk


def _read_response(sock: socket.socket, deadline: float) -> bool:
    """One whole response with a 200; False on anything else (or past the deadline)."""
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            data = _receive(sock, data, deadline)
        head, _, body = data.partition(b"\r\n\r\n")
        head += b"\r\n"
        if not head.startswith(b"HTTP/1.1 200"):
            return False
        if _CHUNKED.search(head):  # granian's static files
            while not body.endswith(_LAST_CHUNK):
                body = _receive(sock, body, deadline)
            return True
        match = _LENGTH.search(head)
        if match is None:
            return False
        while len(body) < int(match.group(1)):
            body = _receive(sock, body, deadline)
    except EOFError:
        return False
    return True


@contextmanager
def held_open(host: str, port: int, path: str, count: int, timeout: float) -> Iterator[Held]:
    """Open `count` keep-alive connections that each got one response; close them all on exit."""
    request = f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("ascii")
    started = time.monotonic()
    deadline = started + timeout
    held: list[socket.socket] = []
    failures = 0
    try:
        while len(held) + failures < count and time.monotonic() < deadline:
            wave = []
            for _ in range(min(WAVE, count - len(held) - failures)):
                try:
                    sock = socket.create_connection((host, port), timeout=max(deadline - time.monotonic(),
                                                                              0.01))
                    sock.sendall(request)
                except OSError:
                    failures += 1
                    continue
                wave.append(sock)
            for sock in wave:
                try:
                    good = _read_response(sock, deadline)
                except OSError:
                    good = False
                if good:
                    held.append(sock)
                else:
                    failures += 1
                    sock.close()
        yield Held(len(held), time.monotonic() - started, failures)
    finally:
        for sock in held:
            sock.close()
