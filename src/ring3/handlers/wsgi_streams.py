"""What a WSGI application reads and writes beside its response (PEP 3333): wsgi.errors (to the
ring3.error log), wsgi.input (the request body, fetched from the event loop's thread as the application
reads it) and wsgi.file_wrapper (a file that goes out by sendfile when it can)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ring3.body import RequestBody
from ring3.errors import ClientDisconnected
from ring3.events import FileRange

logger = logging.getLogger("ring3.error")


class ErrorStream:
    """wsgi.errors: what applications write goes to the ring3.error log, one record per line."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = threading.local()  # each thread's unfinished line

    def write(self, text: str) -> None:
        *lines, rest = (getattr(self._pending, "text", "") + text).split("\n")
        for line in lines:
            logger.error("%s", line)
        self._pending.text = rest

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        text = getattr(self._pending, "text", "")
        if text:
            self._pending.text = ""
            logger.error("%s", text)


class InputStream:
    """wsgi.input: the request body, fetched from the event loop thread as the application reads."""

    __slots__ = ("_body", "_buffer", "_ended", "_loop")

    def __init__(self, body: RequestBody, loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop
        self._buffer = bytearray()
        self._ended = False

    def _fetch(self) -> bytes:
        """The next piece of the body (b"" at the end); raises ClientDisconnected if the client left."""
        if self._ended:
            return b""
        loop = self._loop
        if not loop.is_running():
            raise ClientDisconnected("the server has stopped")
        try:
            data = asyncio.run_coroutine_threadsafe(self._body.read(), loop).result()
        except concurrent.futures.CancelledError:
            raise ClientDisconnected("the server has stopped") from None
        if not data:
            self._ended = True
        return data

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        if size is None or size < 0:
            parts = [bytes(buffer)]
            buffer.clear()
            while data := self._fetch():
                parts.append(data)
            return b"".join(parts)
        while len(buffer) < size and (data := self._fetch()):
            if not buffer and len(data) == size:
                return data  # the common case: no copy
            buffer += data
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        buffer = self._buffer
        limit = -1 if size is None else size
        searched = 0
        while True:
            end = buffer.find(b"\n", searched)
            if end >= 0:
                return self._take(end + 1 if limit < 0 else min(end + 1, limit))
            if 0 <= limit <= len(buffer):
                return self._take(limit)
            searched = len(buffer)
            data = self._fetch()
            if not data:
                return self._take(len(buffer))
            buffer += data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class NoInput:
    """wsgi.input of a request without a body: shared, and never crosses threads."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


NO_INPUT = NoInput()


class FileWrapper:
    """wsgi.file_wrapper: a file the application wants sent. Over a regular file it becomes a FileRange
    (sendfile); otherwise it is read in blocks of `blksize`."""

    __slots__ = ("_closed", "blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        blksize = self.blksize
        while data := read(blksize):
            yield data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def file_range(self, limit: int | None) -> FileRange | None:
        """The rest of the file from its current position (at most `limit` bytes), or None if it is not
        a regular file with a descriptor."""
        filelike = self.filelike
        if isinstance(filelike, io.TextIOBase):
            return None
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            offset = filelike.tell()
        except (AttributeError, OSError, TypeError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode) or not isinstance(offset, int):
            return None
        count = max(info.st_size - offset, 0)
        if limit is not None:
            count = min(count, limit)
        return FileRange(fd, offset, count)


ERRORS = ErrorStream()
