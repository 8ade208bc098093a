"""On-the-fly compression of static files, once per file version.

nginx's `gzip on` compresses a file again for every request (about 1,100 µs of CPU for 100 KiB at level
1); ring3 compresses a hot file once, when the file cache admits it, at the best ratio (gzip -9, brotli 11,
zstd 19), in a worker thread so the event loop goes on serving; until the result is ready the file goes
out as it is. The compressed bodies live in the file's cache entry, within their own byte budget
(`compress_cache_bytes`), and are dropped with it (a change on disk, eviction). They are then answered
from memory like any small cached file, replays included. Codecs: gzip (zlib) always; brotli and zstd
when their packages are installed (`ring3[brotli]`, `ring3[zstd]`).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ring3.files.encoding import ENCODINGS
from ring3.observe.ledger import LEDGER

logger = logging.getLogger("ring3.error")

# Types worth compressing (prefixes of Content-Type); images, video, archives and woff2 are compressed
# already.
COMPRESSIBLE_TYPES = (
    "text/", "application/javascript", "application/json", "application/xml", "application/xhtml+xml",
    "application/rss+xml", "application/atom+xml", "application/manifest+json", "application/wasm",
    "application/ld+json", "application/x-javascript", "image/svg+xml", "image/x-icon",
    "font/ttf", "font/otf", "application/vnd.ms-fontobject",
)
WORTH = 0.9  # a compressed body must be at most this fraction of the original to be kept
# Files larger than this are compressed at lower levels (brotli 9, zstd 15): once per version still, but
# in seconds rather than a minute for tens of megabytes.
BIG_FILE = 1024 * 1024
BIG_LEVELS = {"br": 9, "zstd": 15}
Compressed = bytes | tuple[int, int]  # a body in memory, or (an open unlinked file, its size)


def _gzip(level: int) -> Callable[[bytes], bytes]:
    return lambda data: gzip.compress(data, level, mtime=0)


def _brotli(level: int) -> Callable[[bytes], bytes] | None:
    try:
        import brotli
    except ImportError:
        return None
    return lambda data: bytes(brotli.compress(data, quality=level))


def _zstd(level: int) -> Callable[[bytes], bytes] | None:
    try:
        import zstandard
    except ImportError:
        return None
    # A compressor per call: ZstdCompressor is not thread-safe, and files compress in several threads.
    return lambda data: bytes(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data))


def codecs(levels: dict[str, int]) -> dict[str, Callable[[bytes], bytes]]:
    """The codecs that can run here, by encoding name, at the given levels (missing packages leave theirs
    out)."""
    found: dict[str, Callable[[bytes], bytes]] = {"gzip": _gzip(levels.get("gzip", 9))}
    brotli = _brotli(levels.get("br", 11))
    if brotli is not None:
        found["br"] = brotli
    zstd = _zstd(levels.get("zstd", 19))
    if zstd is not None:
        found["zstd"] = zstd
    return found


def report(wanted: tuple[str, ...]) -> str:
    """What the startup line says about compression: the codecs in use, and how to get the missing."""
    present = codecs({})
    parts = [name for name in wanted if name in present]
    missing = {"br": "ring3[brotli]", "zstd": "ring3[zstd]"}
    parts += [f"{name} missing (pip install '{missing[name]}')" for name in wanted
              if name not in present and name in missing]
    return ", ".join(parts) or "off"


class OnTheFly:
    """Compresses what a static handler asks for, in the loop's default executor."""

    __slots__ = ("_big_codecs", "_codecs", "_encodings", "_max_size", "_min_size", "_types", "budget",
                 "directory", "disk_threshold")

    def __init__(self, *, encodings: tuple[str, ...], levels: dict[str, int], min_size: int, max_size: int,
                 types: tuple[str, ...], budget: int, directory: str = "",
                 disk_threshold: int = 16384) -> None:
        self._codecs = codecs(levels)
        lower = {name: min(level, BIG_LEVELS.get(name, level)) for name, level in levels.items()}
        self._big_codecs = codecs(lower)
        self.directory = directory  # where large compressed bodies are kept (unlinked): "" for the temp dir
        self.disk_threshold = disk_threshold  # compressed bodies larger than this go to disk
        # In the server's preference, and only those that run here.
        self._encodings = tuple(name for name, _ in ENCODINGS if name in encodings and name in self._codecs)
        self._min_size = min_size
        self._max_size = max_size
        self._types = tuple(t.encode("ascii") for t in types)
        self.budget = budget  # bytes of compressed bodies, for the whole file cache

    @property
    def encodings(self) -> tuple[str, ...]:
        return self._encodings

    def wanted(self, mime: bytes, size: int, have: tuple[str, ...]) -> tuple[str, ...]:
        """The encodings to make for a file of this type and size that has `have` already."""
        if not self._encodings or not self._min_size <= size <= self._max_size:
            return ()
        if not mime.startswith(self._types):
            return ()
        return tuple(name for name in self._encodings if name not in have)

    def compressible(self, mime: bytes, size: int) -> bool:
        return bool(self._encodings) and self._min_size <= size <= self._max_size and mime.startswith(
            self._types)

    def start(self, body: bytes | None, fd: int, size: int, encodings: tuple[str, ...],
              done: Callable[[dict[str, Compressed]], None]) -> bool:
        """Compress a body (or `size` bytes of the open `fd`, kept open by the caller until `done`) into
        each encoding, in a worker thread; `done` runs on the event loop with the results worth keeping
        (also after a failure, with none). False when there is no running loop to report to."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if body is None:
            LEDGER.pread += 1
        future = loop.run_in_executor(None, self._work, body, fd, size, encodings)

        def finished(result: asyncio.Future[dict[str, Compressed]]) -> None:
            outcome: dict[str, Compressed] = {}
            if not result.cancelled():
                error = result.exception()
                if error is not None:
                    logger.warning("compressing a file failed: %s", error)
                else:
                    outcome = result.result()
            done(outcome)

        future.add_done_callback(finished)
        return True

    def _work(self, body: bytes | None, fd: int, size: int,
              encodings: tuple[str, ...]) -> dict[str, Compressed]:
        data = body if body is not None else os.pread(fd, size, 0)
        if len(data) != size:
            return {}  # changed while being read: its entry will be dropped at the next check
        codecs = self._codecs if size <= BIG_FILE else self._big_codecs
        results: dict[str, Compressed] = {}
        for name in encodings:
            compressed = codecs[name](data)
            if len(compressed) > size * WORTH:
                continue
            if len(compressed) <= self.disk_threshold:
                results[name] = compressed
                continue
            # Large: kept in an unlinked file, open, and sent from it with sendfile like any big file.
            out, temp = tempfile.mkstemp(prefix="ring3-", dir=self.directory or None)
            os.unlink(temp)
            view = memoryview(compressed)
            while view:
                view = view[os.write(out, view):]
            results[name] = (out, len(compressed))
        return results


def level_settings(settings: Any) -> dict[str, int]:
    return {"gzip": settings.gzip_level, "br": settings.brotli_quality, "zstd": settings.zstd_level}
