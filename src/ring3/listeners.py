"""Listening sockets: bind from parsed addresses, describe them for the readiness line."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from collections.abc import Callable
from typing import Any

from ring3.config import ListenAddress

BACKLOG = 1024


def bind(address: ListenAddress) -> socket.socket:
    """A non-blocking listening socket for one address."""
    if address.is_unix:
        path = address.unix_path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
    else:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def nodelay_inherited(sock: socket.socket) -> bool:
    """Set TCP_NODELAY on a TCP listener where its accepted sockets inherit it (Linux), so that no
    connection needs a setsockopt of its own; whether it was."""
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


def raw_accept(sock: socket.socket) -> tuple[Callable[[], tuple[int, Any]], int]:
    """A listener's accept without socket.accept's wrapper (which reads the listener's family, type and
    protocol as enums for each connection), and its family as a plain int: the accept loop makes each
    connection's socket object from the descriptor itself."""
    accept: Callable[[], tuple[int, Any]] = sock._accept  # type: ignore[attr-defined]  # _socket's own
    return accept, int(sock.family)


def describe(sock: socket.socket, tls: bool = False) -> str:
    """The URL a listener answers on: http://127.0.0.1:8000, https://[::1]:8443 or unix:/path."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def bound_to(sock: socket.socket, address: ListenAddress) -> bool:
    """Whether a listening socket made elsewhere (systemd's) is bound where `address` says."""
    if address.is_unix:
        return sock.family == socket.AF_UNIX and sock.getsockname() == address.unix_path
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or address.port == 0:
        return False
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return False
    family, _, _, _, sockaddr = infos[0]
    return family == sock.family and sock.getsockname()[:2] == sockaddr[:2]
