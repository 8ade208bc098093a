"""Syscalls per request, counted twice for ring3: by strace from outside, by ring3's own ledger (/metrics)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchkit.procs import PROC, process_tree
from benchkit.servers import HOST, LOAD_CPU, pinned

ATTACH_TIMEOUT = 15.0
SETTLE_S = 0.3  # after the load, so connection teardown is counted too

# ledger kind -> the syscalls strace names for it
STRACE_NAMES: dict[str, tuple[str, ...]] = {
    "accept": ("accept4", "accept"),
    "getsockname": ("getsockname",),
    "recv": ("recvfrom", "recv"),
    "send": ("sendto", "send"),
    "sendmsg": ("sendmsg",),
    "sendfile": ("sendfile", "sendfile64"),
    "pread": ("pread64", "pread", "preadv", "preadv2"),
    "open": ("openat", "open"),
    "fstat": ("fstat", "newfstatat"),
    "readlink": ("readlink", "readlinkat"),
    "close": ("close",),
    "shutdown": ("shutdown",),
    "epoll_wait": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "epoll_ctl": ("epoll_ctl",),
    "write": ("write",),
    "setsockopt": ("setsockopt",),
    "ioctl": ("ioctl",),
    "getdents": ("getdents64", "getdents"),
    "socket": ("socket",),
    "connect": ("connect",),
    "getsockopt": ("getsockopt",),
    "splice": ("splice",),
    "pipe": ("pipe2", "pipe"),
}
# The calls ring3 makes itself, on which the ledger must agree with strace.
VERDICT_KINDS = ("recv", "send", "sendmsg", "sendfile", "accept", "open", "fstat", "readlink", "close",
                 "epoll_wait")
TOLERANCE = 0.05
# The two /metrics scrapes cost a few calls that only the ledger sees (accept, recv, send, close).
ABSOLUTE_SLACK = 4


def parse_strace_summary(text: str) -> dict[str, int]:
    """`strace -c` table -> calls by syscall name."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0][0].isdigit() or parts[-1] == "total":
            continue
        calls[parts[-1]] = int(parts[3])
    return calls


def _tasks_traced_by(pids: list[int], tracer: int) -> bool:
    for pid in pids:
        try:
            tasks = list((PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            match = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
            if match is None or int(match.group(1)) != tracer:
                return False
    return True


@contextmanager
def strace_attached(root_pid: int, out_file: Path) -> Iterator[None]:
    """strace -f -c attached to every process (and thread) of the server until the block ends."""
    pids = process_tree(root_pid)
    argv = ["strace", "-f", "-c", "-o", str(out_file), *(arg for pid in pids for arg in ("-p", str(pid)))]
    tracer = subprocess.Popen(pinned(LOAD_CPU, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while not _tasks_traced_by(pids, tracer.pid):
            if tracer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strace did not attach to {pids}")
            time.sleep(0.05)
        yield
        time.sleep(SETTLE_S)
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        if tracer.stderr is not None:
            tracer.stderr.close()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(admin_port: int) -> dict[str, float]:
    """Prometheus text from ring3's admin listener -> {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


GAUGES = ("ring3_connections_open",)


def ledger_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter increases between two scrapes (gauges left out)."""
    return {key: after[key] - before.get(key, 0.0) for key in after if not key.startswith(GAUGES)}


def unledgered(strace_calls: dict[str, int]) -> dict[str, int]:
    """Syscalls strace saw that no ledger kind stands for (made by the interpreter or the libraries)."""
    known = {name for names in STRACE_NAMES.values() for name in names}
    return {name: count for name, count in strace_calls.items() if name not in known}


def ledger_syscalls(delta: dict[str, float]) -> dict[str, float]:
    """ring3_syscalls_total{kind="x"} -> {x: calls}."""
    found: dict[str, float] = {}
    for key, value in delta.items():
        match = re.fullmatch(r'ring3_syscalls_total\{kind="(\w+)"\}', key)
        if match:
            found[match.group(1)] = value
    return found


@dataclass(frozen=True)
class KindComparison:
    kind: str
    strace_names: str
    strace_calls: int
    ledger_calls: float
    agree: bool
    in_verdict: bool


def agree(strace_calls: float, ledger_calls: float) -> bool:
    gap = abs(strace_calls - ledger_calls)
    return gap <= max(TOLERANCE * max(strace_calls, ledger_calls), ABSOLUTE_SLACK)


def compare(strace_calls: dict[str, int], ledger: dict[str, float]) -> list[KindComparison]:
    rows = []
    for kind, names in STRACE_NAMES.items():
        seen = sum(strace_calls.get(name, 0) for name in names)
        counted = ledger.get(kind, 0.0)
        label = "/".join(name for name in names if name in strace_calls) or names[0]
        rows.append(KindComparison(kind, label, seen, counted, agree(seen, counted), kind in VERDICT_KINDS))
    return rows
