"""The access log, in Combined Log Format or as JSON lines.

Fields that come from the client are escaped (in Combined: control characters, bytes outside ASCII,
quotes and backslashes become \\xHH; in JSON, by the JSON encoder) so a request cannot forge a log line.
A proxied request also names its upstream and the time it took, as nginx's $upstream_addr and
$upstream_response_time do: `upstream=127.0.0.1:9001 upstream_time=0.003` at the end of a Combined line
(each try, comma-separated: `upstream=127.0.0.1:9001,127.0.0.1:9002 upstream_time=0.001,0.004`), and the
same text as the JSON keys "upstream" and "upstream_time" (null for a request no proxy handled).
Lines are buffered and written with one write call per event-loop iteration, not one per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from ring3.observe.ledger import LEDGER

if TYPE_CHECKING:
    from ring3.events import Request

logger = logging.getLogger("ring3.access")
_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def escape(value: bytes) -> str:
    """Printable ASCII as is; anything else as \\xHH."""
    if _UNSAFE.search(value) is None:
        return value.decode("ascii")
    return _UNSAFE.sub(lambda m: b"\\x%02x" % m.group()[0], value).decode("ascii")


def upstream_fields(tries: list[tuple[str, float]]) -> tuple[str, str]:
    """A proxied request's upstreams and their times (seconds, to the millisecond), one per try; an
    address that is not plain ASCII (a Unix socket's path) escaped as a client's field, spaces too."""
    names = ",".join(escape(name.encode("utf-8", "surrogateescape")).replace(" ", "\\x20")
                     for name, _ in tries)
    return names, ",".join(f"{seconds:.3f}" for _, seconds in tries)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


class AccessLog:
    """Writes log lines to a file descriptor, batched per loop iteration. `style` is 'combined' or
    'json'; the loop is the running one unless given."""

    __slots__ = ("_fd", "_json", "_loop", "_owns_fd", "_pending", "path")

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop | None, *, owns_fd: bool,
                 style: str = "combined", path: str | None = None) -> None:
        self._fd = fd
        self._loop = loop
        self._owns_fd = owns_fd
        self._json = style == "json"
        self._pending: list[bytes] = []
        self.path = path  # the file it appends to (None: stdout), opened again by reopen()
        if path is not None:
            OPEN_LOGS.append(self)

    @classmethod
    def open(cls, target: str, loop: asyncio.AbstractEventLoop | None,
             style: str = "combined") -> AccessLog | None:
        """'-' for stdout, 'off' for none, else a file opened for appending."""
        if target == "off":
            return None
        if target == "-":
            sys.stdout.flush()
            return cls(sys.stdout.fileno(), loop, owns_fd=False, style=style)
        fd = os.open(target, _FLAGS, 0o644)
        return cls(fd, loop, owns_fd=True, style=style, path=target)

    def reopen(self) -> None:
        """Open the file at its path again (logrotate has renamed it): what is pending goes to the old
        one, every later line to the new. If it cannot be opened, the old file goes on being written."""
        if self.path is None:
            return
        self.flush()
        try:
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            logger.error("cannot reopen the access log %s: %s; still writing the old file", self.path,
                         exc.strerror)
            return
        old, self._fd = self._fd, fd
        os.close(old)

    def log(self, client: str, time_text: str, request_line: bytes, status: int, sent: int,
            request: Request) -> None:
        if self._json:
            line = self._json_line(client, request_line, status, sent, request)
        else:
            referer, user_agent = request.header(b"referer"), request.header(b"user-agent")
            line = (f'{client} - - [{time_text}] "{escape(request_line)}" {status} {sent} '
                    f'"{escape(referer) if referer else "-"}" '
                    f'"{escape(user_agent) if user_agent else "-"}"')
            if request.request_id:  # a site gives its requests ids: the last quoted field
                line += f' "{escape(request.request_id)}"'
            if request.upstream:  # proxied: after all of them
                names, times = upstream_fields(request.upstream)
                line += f" upstream={names} upstream_time={times}"
            line += "\n"
        if not self._pending:
            (self._loop or asyncio.get_running_loop()).call_soon(self.flush)
        self._pending.append(line.encode("ascii"))

    @staticmethod
    def _json_line(client: str, request_line: bytes, status: int, sent: int, request: Request) -> str:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record = {
            "time": stamp, "client": client, "method": _text(request.method), "uri": _text(request.target),
            "protocol": "HTTP/2.0" if request.http_version == "2" else "HTTP/" + request.http_version,
            "host": _text(request.host) or None,
            "status": status, "bytes": sent, "referer": _text(request.header(b"referer")),
            "user_agent": _text(request.header(b"user-agent")),
            "request_id": _text(request.request_id or None),
            "upstream": None, "upstream_time": None,
        }
        if request.upstream:
            record["upstream"], record["upstream_time"] = upstream_fields(request.upstream)
        if request_line == b"-":  # a request refused before it was parsed
            record["method"] = record["uri"] = None
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"

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
        if self in OPEN_LOGS:
            OPEN_LOGS.remove(self)
        if self._owns_fd:
            os.close(self._fd)


# Every access log writing to a file in this process, for SIGUSR1 (reopen_all).
OPEN_LOGS: list[AccessLog] = []
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def reopen_all() -> None:
    """SIGUSR1, as nginx's: every access log file opened again at its path (after logrotate renamed
    it), the server's and each site's."""
    for log in list(OPEN_LOGS):
        log.reopen()
    logging.getLogger("ring3.error").info("access logs reopened (SIGUSR1)")
