"""A bounded in-memory cache of small, hot files, kept fresh by a bounded re-check.

Admission follows HTTP.sys: a file enters on its second request within ADMIT_WINDOW seconds, so a crawl
of cold files does not churn the cache. An entry is re-checked with one stat() at most once per
`recheck` seconds, so a change on disk is visible within that time; entries idle for IDLE_EVICT seconds
or beyond the byte budget (least recently used first) are dropped.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

from ring3.files.conditional import Validators
from ring3.observe.ledger import LEDGER

ADMIT_HITS = 2  # HTTP.sys: two hits ...
ADMIT_WINDOW = 10.0  # ... within 10 seconds
IDLE_EVICT = 120.0  # HTTP.sys drops entries unused for 120 s
MAX_CANDIDATES = 4096  # keys being counted towards admission, at most


@dataclass(slots=True)
class CachedFile:
    """A whole small file with everything needed to answer for it without a system call."""

    fs_path: str
    identity: tuple[int, int, int]  # inode, size, mtime in ns: what a change on disk alters
    validators: Validators
    mime: bytes
    body: bytes
    header_block: bytes  # validators, accept-ranges and content-type, serialised
    checked_at: float
    used_at: float


def identity_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileCache:
    """Small files by request path, within a byte budget."""

    __slots__ = ("_candidates", "_entries", "_max_bytes", "_recheck", "_size", "max_file_size")

    def __init__(self, *, max_bytes: int, max_file_size: int, recheck: float) -> None:
        self._entries: OrderedDict[bytes, CachedFile] = OrderedDict()
        self._candidates: dict[bytes, tuple[int, float]] = {}
        self._max_bytes = max_bytes
        self._recheck = recheck
        self._size = 0
        self.max_file_size = max_file_size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> CachedFile | None:
        """The fresh entry for a request path, or None (a stale entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry.checked_at >= self._recheck:
            LEDGER.fstat += 1
            try:
                st = os.stat(entry.fs_path)
            except OSError:
                self._drop(key)
                return None
            if identity_of(st) != entry.identity:
                self._drop(key)
                return None
            entry.checked_at = now
        entry.used_at = now
        self._entries.move_to_end(key)
        return entry

    def wants(self, key: bytes, size: int, now: float) -> bool:
        """Count a request for an uncached file; True when it has earned a place."""
        if size > self.max_file_size or size > self._max_bytes:
            return False
        hits, first = self._candidates.get(key, (0, now))
        if now - first > ADMIT_WINDOW:
            hits, first = 0, now
        hits += 1
        if hits >= ADMIT_HITS:
            self._candidates.pop(key, None)
            return True
        if len(self._candidates) >= MAX_CANDIDATES:
            self._candidates.clear()  # a flood of distinct paths: start counting afresh
        self._candidates[key] = (hits, first)
        return False

    def store(self, key: bytes, entry: CachedFile) -> None:
        self._drop(key)
        self._entries[key] = entry
        self._size += len(entry.body)
        self._evict(entry.used_at)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            if self._size <= self._max_bytes and now - oldest.used_at < IDLE_EVICT:
                break
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry.body)
