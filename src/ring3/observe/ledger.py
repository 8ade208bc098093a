"""The cost ledger: what this worker paid at the user/kernel boundary.

Plain integer attributes incremented where each syscall is made: no lock, no allocation per request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(slots=True)
class Ledger:
    """Per-worker counters of syscalls by kind and of bytes sent zero-copy or from Python memory."""

    accept: int = 0
    recv: int = 0
    send: int = 0
    sendmsg: int = 0
    sendfile: int = 0
    pread: int = 0
    shutdown: int = 0
    close: int = 0
    bytes_zero_copy: int = 0
    bytes_copied: int = 0

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict (for metrics and tests)."""
        return dataclasses.asdict(self)
