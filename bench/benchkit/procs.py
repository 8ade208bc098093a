"""What a server's processes cost, read from /proc: CPU time and peak resident memory."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces), or None if gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (nginx's workers, granian's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime (and cutime+cstime of reaped children) of every process of the tree, in seconds."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:  # fields[11:15] are utime, stime, cutime, cstime
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def _status_kib(root: int, field: str) -> int:
    """Sum over the tree of one memory field of /proc/PID/status (VmHWM, VmRSS), in KiB."""
    total = 0
    for pid in process_tree(root):
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total


def peak_rss_kib(root: int) -> int:
    """Sum over the tree of each process's VmHWM (its peak resident set), in KiB."""
    return _status_kib(root, "VmHWM")


def rss_kib(root: int) -> int:
    """Sum over the tree of each process's VmRSS (its resident set now), in KiB."""
    return _status_kib(root, "VmRSS")


def children(pid: int) -> list[int]:
    """The direct children of `pid` (a master's workers), from /proc/PID/task/*/children."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def own_cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process alone (its reaped children left out), or None if it is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
