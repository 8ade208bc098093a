"""HTTP dates: formatting and parsing, and the Date header computed at most once a second.

No polling task refreshes it: the first caller in a new second rebuilds it (time.time() is a vDSO call,
not a syscall).
"""

from __future__ import annotations

import calendar
import functools
import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_tz

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@functools.lru_cache(maxsize=1024)
def http_date(timestamp: int) -> bytes:
    """IMF-fixdate, e.g. b'Sun, 06 Nov 1994 08:49:37 GMT' (whole seconds; remembered, as files'
    modification times repeat from request to request)."""
    return formatdate(timestamp, usegmt=True).encode("ascii")


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch for any of the three HTTP date formats, or None if invalid."""
    try:
        parsed = parsedate_tz(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError, IndexError):
        return None
    if parsed is None or parsed[9] not in (0, None):
        return None
    year, month, day, hour, minute, second = (int(v or 0) for v in parsed[:6])
    if year < 100:  # RFC 850 two-digit years (RFC 9110 5.6.7)
        year += 2000 if year < 70 else 1900
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (OverflowError, ValueError):
        return None  # 32 November, 25 o'clock: invalid dates are ignored (RFC 9110 13.1.3)
    return calendar.timegm(moment.utctimetuple())


def clf_time(timestamp: float) -> str:
    """Time in Common Log Format, UTC: 10/Oct/2000:13:55:36 +0000."""
    t = time.gmtime(timestamp)
    return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


class DateCache:
    """Prebuilt `Date:` and `Server:` lines, rebuilt at most once a second on demand."""

    __slots__ = ("_block", "_clf", "_second", "_server", "_variants")

    def __init__(self, server_header: str) -> None:
        self._server = (b"server: " + server_header.encode("latin-1") + b"\r\n"
                        if server_header else b"")
        self._second = -1
        self._block = b""
        self._variants = (b"", b"", b"", b"")
        self._clf = ""

    def _refresh(self, second: int) -> None:
        self._second = second
        date = b"date: " + http_date(second) + b"\r\n"
        self._block = date + self._server
        # By Response.sets_fields: both lines, the Server line only (the handler has a Date), the Date
        # line only (it has a Server), neither. Each the same object for the whole second.
        self._variants = (self._block, self._server, date, b"")
        self._clf = clf_time(second)

    def common_headers(self, sets_fields: int = 0) -> bytes:
        """The Date and Server lines for a response sent now, but those the response carries already."""
        second = int(time.time())
        if second != self._second:
            self._refresh(second)
        return self._variants[sets_fields]

    def log_time(self) -> str:
        """The current second in Common Log Format."""
        second = int(time.time())
        if second != self._second:
            self._refresh(second)
        return self._clf
