"""The static file handler: decides what to send for a file; never sends anything itself.

It answers with a FileRange body (or several, for multipart/byteranges); the output path chooses between
sendfile and a read joined to the headers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import partial

from ring3.config import StaticSection
from ring3.events import FileRange, Headers, Request, Response, Segment
from ring3.files.conditional import (
    Unsatisfiable,
    Validators,
    if_range_allows,
    parse_ranges,
    precondition_status,
)
from ring3.files.mime import content_type
from ring3.files.resolve import FileResolver, IsDirectory, PathRefused, close_file, decode_path
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response

ALLOW = b"GET, HEAD"


class StaticHandler:
    """Serves one directory tree."""

    __slots__ = ("_dotfiles", "_max_ranges", "_resolver")

    def __init__(self, settings: StaticSection, root: str) -> None:
        self._resolver = FileResolver(root, index=settings.index,
                                      follow_symlinks_outside=settings.follow_symlinks_outside_root)
        self._dotfiles = settings.dotfiles
        self._max_ranges = settings.max_ranges

    @property
    def root(self) -> str:
        return self._resolver.root

    def __call__(self, request: Request, body: BodyReader) -> Response:
        if request.method not in (b"GET", b"HEAD"):
            return status_response(405, [(b"allow", ALLOW)])
        try:
            decoded = decode_path(request.path, dotfiles=self._dotfiles)
            found = self._resolver.open(decoded)
        except PathRefused as refused:
            return status_response(refused.status)
        if isinstance(found, IsDirectory):
            location = found.location.encode("ascii")
            if request.query:
                location += b"?" + request.query
            return status_response(301, [(b"location", location)])
        return self._file_response(request, found.fd, found.stat, found.name)

    def _file_response(self, request: Request, fd: int, st: os.stat_result, name: str) -> Response:
        cleanup = partial(close_file, fd)
        validators = Validators.of(st)
        headers: Headers = [
            (b"last-modified", validators.last_modified),
            (b"etag", validators.etag),
        ]
        decided = precondition_status(request, validators)
        if decided is not None:
            close_file(fd)
            return status_response(decided, headers if decided == 304 else None)
        headers.append((b"accept-ranges", b"bytes"))
        size = st.st_size
        mime = content_type(name)
        range_header = request.header(b"range")
        if range_header is not None and request.method == b"GET" and if_range_allows(request, validators):
            try:
                ranges = parse_ranges(range_header, size, self._max_ranges)
            except Unsatisfiable:
                close_file(fd)
                return status_response(416, [(b"content-range", b"bytes */%d" % size)])
            if ranges is not None and len(ranges) == 1:
                first, last = ranges[0]
                headers += ((b"content-type", mime),
                            (b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
                return Response(status=206, headers=headers,
                                body=FileRange(fd, first, last - first + 1), cleanup=cleanup)
            if ranges is not None:
                return _multipart(headers, fd, mime, size, ranges, cleanup)
        headers.append((b"content-type", mime))
        return Response(status=200, headers=headers, body=FileRange(fd, 0, size), cleanup=cleanup)


def _multipart(headers: Headers, fd: int, mime: bytes, size: int,
               ranges: list[tuple[int, int]], cleanup: Callable[[], None]) -> Response:
    boundary = secrets.token_hex(12).encode("ascii")
    parts: list[Segment] = []
    for first, last in ranges:
        parts.append(b"\r\n--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
                     % (boundary, mime, first, last, size))
        parts.append(FileRange(fd, first, last - first + 1))
    parts.append(b"\r\n--%s--\r\n" % boundary)
    headers.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
    return Response(status=206, headers=headers, body=parts, cleanup=cleanup)
