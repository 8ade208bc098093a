"""The access log in Combined Log Format.

Fields that come from the client are escaped (control characters, bytes outside ASCII, quotes and
backslashes become \\xHH) so a request cannot forge a log line. Lines are buffered and written with one
write call per event-loop iteration, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys

from ring3.observe.ledger import LEDGER

logger = logging.getLogger("ring3.access")
_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def escape(value: bytes) -> str:
    """Printable ASCII as is; anything else as \\xHH."""
    if _UNSAFE.search(value) is None:
        return value.decode("ascii")
    return _UNSAFE.sub(lambda m: b"\\x%02x" % m.group()[0], value).decode("ascii")


class AccessLog:
    """Writes Combined Log Format lines to a file descriptor, batched per loop iteration."""

    __slots__ = ("_fd", "_loop", "_owns_fd", "_pending")

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, *, owns_fd: bool) -> None:
        self._fd = fd
        self._loop = loop
        self._owns_fd = owns_fd
        self._pending: list[bytes] = []

    @classmethod
    def open(cls, target: str, loop: asyncio.AbstractEventLoop) -> AccessLog | None:
        """'-' for stdout, 'off' for none, else a file opened for appending."""
        if target == "off":
            return None
        if target == "-":
            sys.stdout.flush()
            return cls(sys.stdout.fileno(), loop, owns_fd=False)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return cls(fd, loop, owns_fd=True)

    def log(self, client: str, time_text: str, request_line: bytes, status: int, sent: int,
            referer: bytes | None, user_agent: bytes | None) -> None:
        line = (f'{client} - - [{time_text}] "{escape(request_line)}" {status} {sent} '
                f'"{escape(referer) if referer else "-"}" '
                f'"{escape(user_agent) if user_agent else "-"}"\n')
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(line.encode("ascii"))

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            while data:
                LEDGER.write += 1
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:  # a full disk or a closed pipe must not stop the server
            logger.error("access log write failed: %s", exc.strerror)

    def close(self) -> None:
        self.flush()
        if self._owns_fd:
            os.close(self._fd)
