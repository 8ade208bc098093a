"""Upstream servers: their addresses as the config writes them, and what the proxy knows of each (its
idle connections, requests in flight, passive and active health).

An entry is 'HOST:PORT', '[IPv6]:PORT', 'http://HOST:PORT' or 'unix:/path', followed by options:
'weight=N', 'max_fails=N', 'fail_timeout=10s', 'backup' (used only when no other upstream is up).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ring3.proxy.upstream_conn import UpstreamConnection

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


@dataclass(frozen=True, slots=True)
class Address:
    """Where an upstream listens: (family, sockaddr), and its name for logs, Host and metrics."""

    family: int
    sockaddr: tuple[str, int] | str
    name: str  # '127.0.0.1:9001', '[::1]:9001', 'unix:/run/app.sock'
    host: str  # what a Host field names it: '127.0.0.1:9001', 'localhost' for a Unix socket


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    """One upstream as configured."""

    address: Address
    weight: int = 1
    max_fails: int | None = None  # None: the proxy's own
    fail_timeout: float | None = None
    backup: bool = False


def parse_address(text: str) -> Address:
    """'HOST:PORT', '[::1]:PORT', 'http://HOST:PORT' or 'unix:/path'; raises ValueError."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/") and not path.startswith("@"):
            raise ValueError(f"{text!r}: a Unix socket path is absolute ('unix:/run/app.sock')")
        return Address(socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path, text,
                       "localhost")
    if text.startswith("http://"):
        text = text[7:].rstrip("/")
    elif "://" in text:
        raise ValueError(f"{text!r}: only http:// upstreams are supported (TLS to upstreams is not built)")
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ValueError(f"{text!r}: give '[ADDRESS]:PORT'")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
        family, shown = socket.AF_INET6, f"[{host}]"
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{text!r}: give HOST:PORT ('127.0.0.1:9000'), or 'unix:/path'")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOST.match(host):
                raise ValueError(f"{text!r}: {host!r} is not an address or host name") from None
            host = _resolve(host, text)
        family, shown = socket.AF_INET, host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: {port!r} is not a port")
    name = f"{shown}:{int(port)}"
    return Address(family, (host, int(port)), name, name)


def _resolve(host: str, text: str) -> str:
    """A host name's first IPv4 address, resolved once at start (as nginx does without a resolver)."""
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"{text!r}: cannot resolve {host!r}: {exc}") from None
    return str(found[0][4][0])


def parse_duration(text: str) -> float | None:
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def parse_entry(text: str) -> UpstreamEntry:
    """An upstreams entry with its options; raises ValueError."""
    words = text.split()
    if not words:
        raise ValueError("an empty upstream")
    address = parse_address(words[0])
    weight, max_fails, fail_timeout, backup = 1, None, None, False
    for option in words[1:]:
        key, equals, value = option.partition("=")
        if key == "backup" and not equals:
            backup = True
        elif key == "weight" and value.isdigit() and 1 <= int(value) <= 1000:
            weight = int(value)
        elif key == "max_fails" and value.isdigit():
            max_fails = int(value)
        elif key == "fail_timeout" and (seconds := parse_duration(value)) is not None:
            fail_timeout = seconds
        else:
            raise ValueError(f"{text!r}: unknown option {option!r} (weight=1..1000, max_fails=N, "
                             "fail_timeout=10s, backup)")
    return UpstreamEntry(address, weight, max_fails, fail_timeout, backup)


class Upstream:
    """One upstream server's live state in this worker."""

    __slots__ = ("active", "address", "backup", "checked_down", "current_weight", "down_until",
                 "fail_timeout", "failed_at", "fails", "failures", "idle", "max_fails", "name", "requests",
                 "weight")

    def __init__(self, entry: UpstreamEntry, max_fails: int, fail_timeout: float) -> None:
        self.address = entry.address
        self.name = entry.address.name
        self.weight = entry.weight
        self.backup = entry.backup
        self.max_fails = entry.max_fails if entry.max_fails is not None else max_fails
        self.fail_timeout = entry.fail_timeout if entry.fail_timeout is not None else fail_timeout
        self.idle: deque[UpstreamConnection] = deque()  # most recently used last
        self.active = 0  # requests in flight
        self.requests = 0  # requests sent, for metrics
        self.fails = 0  # failures within fail_timeout (passive health)
        self.failures = 0  # every failed try, for metrics
        self.failed_at = 0.0
        self.down_until = 0.0  # passive: out of the pool until then
        self.checked_down = False  # active: the last checks failed
        self.current_weight = 0  # smooth weighted round robin's state

    def available(self, now: float) -> bool:
        return not self.checked_down and now >= self.down_until

    def failed(self, now: float) -> bool:
        """Count a failure (connect refused, timeout, bad response); True when it takes the upstream out."""
        if now - self.failed_at > self.fail_timeout:
            self.fails = 0
        self.fails += 1
        self.failures += 1
        self.failed_at = now
        if self.max_fails and self.fails >= self.max_fails:
            self.down_until = now + self.fail_timeout
            self.fails = 0
            return True
        return False

    def succeeded(self) -> None:
        self.fails = 0

    def state(self, now: float) -> str:
        if self.checked_down:
            return "down (health check)"
        if now < self.down_until:
            return "down (failures)"
        return "up"
