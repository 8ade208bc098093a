"""The cost ledger: what this worker paid at the user/kernel boundary.

Plain integer attributes incremented where each syscall is made: no lock, no allocation per request.
"""

from __future__ import annotations


class Ledger:
    """Per-worker counters of syscalls by kind and of bytes sent zero-copy or from Python memory."""

    __slots__ = (
        "accept",
        "bytes_copied",
        "bytes_zero_copy",
        "close",
        "fstat",
        "open",
        "pread",
        "recv",
        "send",
        "sendfile",
        "sendmsg",
        "shutdown",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict (for metrics and tests)."""
        return {name: getattr(self, name) for name in self.__slots__}
