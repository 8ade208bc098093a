"""The cost ledger: what this worker paid at the user/kernel boundary.

One Ledger per process (`LEDGER`), incremented right where each system call is made, failed attempts
(EAGAIN) included, since the kernel was entered all the same. Plain integer attributes: no lock and no
container allocated per request. (CPython still boxes integers above 256 on increment; that is the
floor of counting anything in Python.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SYSCALL_KINDS = (
    "accept", "getsockname", "recv", "send", "sendmsg", "sendfile", "pread", "open", "fstat",
    "readlink", "close", "shutdown", "epoll_wait", "epoll_ctl", "write", "setsockopt", "ioctl",
    "getdents", "socket", "connect", "getsockopt", "splice", "pipe",
)


@dataclass(slots=True)
class Ledger:
    """Per-worker counters of syscalls by kind, bytes by path, and responses by status."""

    accept: int = 0
    getsockname: int = 0  # CPython's socket.accept() asks the new socket's own address
    recv: int = 0
    send: int = 0
    sendmsg: int = 0
    sendfile: int = 0
    pread: int = 0
    open: int = 0
    fstat: int = 0
    readlink: int = 0
    close: int = 0
    shutdown: int = 0
    epoll_wait: int = 0
    epoll_ctl: int = 0
    write: int = 0
    setsockopt: int = 0
    ioctl: int = 0
    getdents: int = 0  # listing a directory for its precompressed variants (two calls a listing)
    socket: int = 0  # the proxy's connections to upstreams: socket, connect and its SO_ERROR check
    connect: int = 0
    getsockopt: int = 0
    splice: int = 0  # proxied bodies moved socket -> pipe -> socket in the kernel
    pipe: int = 0  # pipes made for splice (pooled, so rare)
    bytes_zero_copy: int = 0
    bytes_copied: int = 0
    bytes_encrypted: int = 0  # plaintext encrypted in user space (TLS), before it was copied out
    bytes_received: int = 0
    bytes_spliced: int = 0  # proxied body bytes that went upstream -> client by splice, never in Python
    connections_accepted: int = 0
    responses_from_cache: int = 0
    responses_replayed: int = 0
    tls_handshakes: int = 0
    tls_resumed: int = 0  # of those, abbreviated by a session ticket or the session cache
    tls_handshake_failures: int = 0  # refused, broken off, timed out, or not TLS at all
    statuses: dict[int, int] = field(default_factory=dict)

    def count_status(self, status: int) -> None:
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """All counters (a copy), for metrics and tests."""
        return dataclasses.asdict(self)

    def syscalls(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in SYSCALL_KINDS}


LEDGER = Ledger()
