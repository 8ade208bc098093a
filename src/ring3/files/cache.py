"""A bounded cache of hot files, kept fresh by a bounded re-check.

Small files are kept whole in memory; larger ones are kept open (like nginx's open_file_cache), so a hit
costs no open, fstat, readlink or close: the output path sends the cached descriptor with sendfile.
Admission follows HTTP.sys: a file enters on its second request within ADMIT_WINDOW seconds, so a crawl
of cold files does not churn the cache. An entry is re-checked with one stat() at most once per
`recheck` seconds, so a change on disk is visible within that time. Entries idle for IDLE_EVICT seconds,
or beyond the byte or descriptor budget (least recently used first), are dropped; an open descriptor is
closed once the last response using it is done.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

from ring3.events import Response
from ring3.files.conditional import Validators
from ring3.files.encoding import ENCODINGS, SUFFIXES
from ring3.files.mime import content_type
from ring3.files.resolve import FileResolver, OpenedFile, close_file
from ring3.files.variants import DirectoryNames
from ring3.observe.ledger import LEDGER

ADMIT_HITS = 2  # HTTP.sys: two hits ...
ADMIT_WINDOW = 10.0  # ... within 10 seconds
IDLE_EVICT = 120.0  # HTTP.sys drops entries unused for 120 s
MAX_CANDIDATES = 4096  # keys being counted towards admission, at most
MAX_MISSING = 1024  # paths remembered as missing (404), at most; like open_file_cache_errors


@dataclass(slots=True, eq=False)
class CachedFile:
    """A file with everything needed to answer for it without opening it again.

    Either `body` holds the whole file, or `fd` is an open descriptor shared by the responses that
    send it (`users` of them); a dropped entry closes it when the last one is done.
    """

    fs_path: str
    identity: tuple[int, int, int]  # inode, size, mtime in ns: what a change on disk alters
    validators: Validators
    mime: bytes
    size: int
    body: bytes | None
    fd: int
    header_block: bytes  # validators, accept-ranges and content-type, serialised
    checked_at: float
    used_at: float
    users: int = 0
    dropped: bool = False
    # The whole 200 response, built once (by the handler that stores the entry) and shared. For an
    # open descriptor, each hand-out is paid for by acquire() and ends with its cleanup, release().
    response: Response | None = None
    # Its precompressed variants by encoding (files/variants.py), loaded with it; `encodings` lists them in
    # the server's preference. A variant is itself a CachedFile, with `encoding` set.
    variants: dict[str, CachedFile] | None = None
    encodings: tuple[str, ...] = ()  # beside it in its directory (what a re-check compares)
    offered: tuple[str, ...] = ()  # of those, loaded and fresh, and those made: what Accept-Encoding chooses
    encoding: str = ""
    generated: int = 0  # bytes of the variants compressed on the fly (files/compress.py), in its budget
    generated_on_disk: int = 0  # of those kept in unlinked files, in the disk budget
    compressing: bool = False

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        """One response using the descriptor is done."""
        self.users -= 1
        if self.dropped and self.users == 0:
            self._close()

    def drop(self) -> None:
        self.dropped = True
        if self.users == 0:
            self._close()
        for variant in (self.variants or {}).values():
            variant.drop()

    def weight(self) -> tuple[int, int]:
        """(bytes in memory, descriptors kept open), its precompressed variants included (those made on the
        fly count in their own budget: `generated`)."""
        size, fds = (len(self.body), 0) if self.body is not None else (0, 1)
        for variant in (self.variants or {}).values():
            if variant.fs_path:
                more, more_fds = variant.weight()
                size, fds = size + more, fds + more_fds
        return size, fds

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            close_file(fd)


def identity_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def header_block(validators: Validators, mime: bytes, encoding: str = "", vary: bool = False) -> bytes:
    block = b"last-modified: %s\r\netag: %s\r\naccept-ranges: bytes\r\ncontent-type: %s\r\n" % (
        validators.last_modified, validators.etag, mime)
    if encoding:
        block += b"content-encoding: %s\r\n" % encoding.encode("ascii")
    if vary:
        block += b"vary: accept-encoding\r\n"
    return block


class FileCache:
    """Hot files by request path, within a byte budget (bodies) and a descriptor budget (open files)."""

    __slots__ = ("_candidates", "_compressed", "_compressed_on_disk", "_entries", "_max_bytes", "_max_open",
                 "_missing", "_open", "_recheck", "_size", "compressed_disk_max", "compressed_max", "dirs",
                 "max_file_size")

    def __init__(self, *, max_bytes: int, max_file_size: int, max_open: int, recheck: float,
                 variants: bool = True) -> None:
        self._entries: OrderedDict[bytes, CachedFile] = OrderedDict()
        self._candidates: dict[bytes, tuple[int, float]] = {}
        self._missing: OrderedDict[bytes, float] = OrderedDict()
        self._max_bytes = max_bytes
        self._max_open = max_open
        self._recheck = recheck
        self._size = 0
        self._open = 0
        self.max_file_size = max_file_size
        # Which files have precompressed variants, from their directories' names (None: not looked for).
        self.dirs: DirectoryNames | None = DirectoryNames(recheck) if variants else None
        self._compressed = 0  # bytes of bodies compressed on the fly, at most compressed_max
        self.compressed_max = 0
        self._compressed_on_disk = 0  # of large ones, kept in unlinked files, at most compressed_disk_max
        self.compressed_disk_max = 0

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
            if identity_of(st) != entry.identity or not self._variants_hold(entry, now):
                self._drop(key)
                return None
            entry.checked_at = now
        entry.used_at = now
        self._entries.move_to_end(key)
        return entry

    def _variants_hold(self, entry: CachedFile, now: float) -> bool:
        """Its variants are those beside it still, unchanged (one stat each)."""
        if self.dirs is None:
            return True
        if self.dirs.encodings_of(entry.fs_path, now) != entry.encodings:
            return False
        for variant in (entry.variants or {}).values():
            if not variant.fs_path:
                continue  # made from the file itself, whose identity was just checked
            LEDGER.fstat += 1
            try:
                if identity_of(os.stat(variant.fs_path)) != variant.identity:
                    return False
            except OSError:
                return False
        return True

    def known_missing(self, key: bytes, now: float) -> bool:
        """Whether the path was found missing less than `recheck` seconds ago (a new file shows up
        within that time, as a change does)."""
        checked_at = self._missing.get(key)
        if checked_at is None:
            return False
        if now - checked_at < self._recheck:
            return True
        del self._missing[key]
        return False

    def note_missing(self, key: bytes, now: float) -> None:
        missing = self._missing
        missing[key] = now
        missing.move_to_end(key)
        if len(missing) > MAX_MISSING:
            missing.popitem(last=False)

    def wants(self, key: bytes, size: int, now: float) -> bool:
        """Count a request for an uncached file; True when it has earned a place."""
        if size <= self.max_file_size:
            if size > self._max_bytes:
                return False
        elif not self._max_open:
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
        size, fds = entry.weight()
        self._size += size
        self._open += fds
        self._evict(entry.used_at)

    def holds(self, key: bytes, entry: CachedFile) -> bool:
        """Whether `entry` is the one cached for `key` (not dropped or replaced meanwhile)."""
        return self._entries.get(key) is entry

    def add_generated(self, entry: CachedFile, variants: dict[str, CachedFile]) -> None:
        """Variants compressed on the fly join their entry, as far as their budget allows."""
        kept = entry.variants or {}
        for encoding, variant in variants.items():
            size = variant.size
            if variant.body is None:  # in an unlinked file
                if self._compressed_on_disk + size > self.compressed_disk_max:
                    variant.drop()  # closes it: the disk space goes back
                    continue
                self._compressed_on_disk += size
                entry.generated_on_disk += size
            else:
                if self._compressed + size > self.compressed_max:
                    continue
                self._compressed += size
                entry.generated += size
            kept[encoding] = variant
        entry.variants = kept or None
        # A new tuple: replays recorded with the old choice are routed again (see the static handler).
        entry.offered = tuple(name for name, _ in ENCODINGS if name in kept)

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            within_budget = self._size <= self._max_bytes and self._open <= self._max_open
            if within_budget and now - oldest.used_at < IDLE_EVICT:
                break
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        size, fds = entry.weight()
        self._size -= size
        self._open -= fds
        self._compressed -= entry.generated
        self._compressed_on_disk -= entry.generated_on_disk
        entry.drop()


def load_entry(found: OpenedFile, now: float, keep_open: bool, *, mime: bytes | None = None,
               encoding: str = "", vary: bool = False) -> CachedFile | None:
    """A cache entry for an opened file: read whole (and closed), or kept open. A variant gives its
    file's `mime`, its `encoding`; `vary` when the answer depends on Accept-Encoding."""
    size = found.stat.st_size
    body: bytes | None = None
    fd = found.fd
    if not keep_open:
        fd = -1
        try:
            LEDGER.pread += 1
            body = os.pread(found.fd, size, 0)
        except OSError:
            return None
        finally:
            close_file(found.fd)
        if len(body) != size:
            return None  # changed while being read: serve it the slow way next time
    validators = Validators.of(found.stat, encoding)
    if mime is None:
        mime = content_type(found.name)
    return CachedFile(fs_path=found.path, identity=identity_of(found.stat), validators=validators,
                      mime=mime, size=size, body=body, fd=fd,
                      header_block=header_block(validators, mime, encoding, vary),
                      checked_at=now, used_at=now, encoding=encoding)


def attach_variants(resolver: FileResolver, found: OpenedFile, entry: CachedFile, encodings: tuple[str, ...],
                    now: float, max_file_size: int) -> None:
    """Load the precompressed variants beside a file into its entry (files/variants.py); a stale one (older
    than the file) or one that cannot be served is left out."""
    variants: dict[str, CachedFile] = {}
    for encoding in encodings:
        sibling = resolver.open_sibling(found, SUFFIXES[encoding])
        if sibling is None:
            continue
        if sibling.stat.st_mtime_ns < found.stat.st_mtime_ns:
            close_file(sibling.fd)
            continue
        variant = load_entry(sibling, now, sibling.stat.st_size > max_file_size, mime=entry.mime,
                             encoding=encoding, vary=True)
        if variant is not None:
            variants[encoding] = variant
    entry.encodings = encodings
    entry.variants = variants or None
    entry.offered = tuple(variants)
