"""The static file handler: decides what to send for a file; never sends anything itself.

It answers with FileRange bodies (several, for multipart/byteranges) that the output path sends with
sendfile, or, for small hot files, with bytes from the in-memory cache and a prebuilt header block.
Preconditions and ranges are worked out the same way for both sources.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ring3.config import StaticSection
from ring3.config.loader import mount_prefix
from ring3.events import FileRange, Headers, Request, Response, Segment
from ring3.files.cache import CachedFile, FileCache, attach_variants, header_block, load_entry
from ring3.files.compress import Compressed, OnTheFly, level_settings
from ring3.files.conditional import (
    Unsatisfiable,
    Validators,
    if_range_allows,
    parse_ranges,
    precondition_status,
)
from ring3.files.encoding import SUFFIXES, choose
from ring3.files.mime import content_type
from ring3.files.resolve import FileResolver, IsDirectory, NoIndex, PathRefused, close_file, decode_path
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response
from ring3.observe.ledger import LEDGER
from ring3.sites.paths import has_dot_start

if TYPE_CHECKING:
    from ring3.files.listing import DirectoryListing

ALLOW = b"GET, HEAD"

Slicer = Callable[[int, int], Segment]  # (offset, count) -> the bytes or the file range


_VARY: Headers = [(b"vary", b"accept-encoding")]
_WILL_COMPRESS: tuple[str, ...] = ("compressed on the fly",)  # a marker: no precompressed variant


def _encoded(encoding: str) -> Headers:
    """The fields of a precompressed variant's answer."""
    return [(b"content-encoding", encoding.encode("ascii")), (b"vary", b"accept-encoding")]


def _nothing() -> None:
    return None


def _slice(body: bytes, offset: int, count: int) -> bytes:
    return body[offset:offset + count]


def new_file_cache(settings: StaticSection) -> FileCache | None:
    """The cache of hot files that settings ask for (None when both budgets are 0)."""
    if not (settings.cache_max_bytes or settings.open_files_max):
        return None
    cache = FileCache(max_bytes=settings.cache_max_bytes, max_file_size=settings.cache_max_file_size,
                      max_open=settings.open_files_max, recheck=settings.cache_recheck,
                      variants=settings.precompressed)
    cache.compressed_max = settings.compress_cache_bytes
    cache.compressed_disk_max = settings.compress_disk_bytes
    return cache


def new_compressor(settings: StaticSection, enabled: bool | None = None) -> OnTheFly | None:
    """On-the-fly compression as settings ask for it (None when off, or when no codec is wanted)."""
    if not (settings.compress if enabled is None else enabled) or not settings.compress_encodings:
        return None
    return OnTheFly(encodings=settings.compress_encodings, levels=level_settings(settings),
                    min_size=settings.compress_min_size, max_size=settings.compress_max_size,
                    types=settings.compress_types, budget=settings.compress_cache_bytes,
                    directory=settings.compress_dir, disk_threshold=settings.cache_max_file_size)


class StaticHandler:
    """Serves one directory tree.

    `strip` is a path prefix taken off before the path is looked up under the root: a mount point, or the
    prefix of a location with alias. It may end inside a segment ('/img' then '/img../x'): what follows it
    is then a segment of its own, and refused if it is a dot segment. Handlers may share one FileCache
    (`cache`, with a `cache_tag` of their own), so every site's files live within one budget. Without
    `replayable`, responses are never offered to the replay cache (a location whose answer depends on
    the client's address or the time).
    """

    __slots__ = ("_cache", "_compress", "_dotfiles", "_listing", "_max_ranges", "_prefix", "_replayable",
                 "_resolver", "_tag")

    def __init__(self, settings: StaticSection, root: str, *, strip: bytes | None = None,
                 cache: FileCache | bool | None = True, cache_tag: bytes = b"",
                 replayable: bool = True, index: tuple[str, ...] | None = None,
                 dotfiles: bool | None = None, compress: OnTheFly | bool | None = True,
                 listing: bool | None = None) -> None:
        self._resolver = FileResolver(root, index=settings.index if index is None else index,
                                      follow_symlinks_outside=settings.follow_symlinks_outside_root)
        self._dotfiles = settings.dotfiles if dotfiles is None else dotfiles
        # b"" when mounted at '/'
        self._prefix = mount_prefix(settings.mount).encode("ascii") if strip is None else strip
        self._max_ranges = settings.max_ranges
        self._replayable = replayable
        self._tag = cache_tag
        self._cache: FileCache | None = (new_file_cache(settings) if cache is True
                                         else None if cache is False else cache)
        self._compress: OnTheFly | None = (new_compressor(settings) if compress is True
                                           else None if compress is False else compress)
        if self._cache is None:
            self._compress = None  # the compressed bodies live in the file cache
        self._listing: DirectoryListing | None = None
        if settings.listing if listing is None else listing:
            from ring3.files.listing import DirectoryListing

            self._listing = DirectoryListing(root=self._resolver.root, dotfiles=self._dotfiles,
                                             follow_symlinks_outside=settings.follow_symlinks_outside_root,
                                             recheck=settings.cache_recheck)

    @property
    def root(self) -> str:
        return self._resolver.root

    def __call__(self, request: Request, body: BodyReader, path: bytes | None = None) -> Response:
        """The answer for the request's path, or for `path` (one that try_files tries)."""
        if path is None:
            path = request.path
        if request.method not in (b"GET", b"HEAD"):
            return status_response(405, [(b"allow", ALLOW)])
        if self._prefix:  # a router sent it here: the path starts with the prefix
            path = path[len(self._prefix):]
            if not path:
                return self._redirect(self._prefix + b"/", request.query)
            if path[:1] != b"/":
                if has_dot_start(path):
                    return status_response(404)
                path = b"/" + path
        if self._tag:
            path = self._tag + path
        cache = self._cache
        now = 0.0
        if cache is not None:
            now = time.monotonic()
            entry = cache.get(path, now)
            if entry is not None:
                if entry.offered:  # precompressed variants: the client's Accept-Encoding chooses
                    chosen = choose(request.header(b"accept-encoding"), entry.offered)
                    if chosen is not None and entry.variants is not None:
                        return self._from_cache(request, entry.variants[chosen])
                return self._from_cache(request, entry)
            if cache.known_missing(path, now):
                return self._not_found(path)
        try:
            decoded = decode_path(path[len(self._tag):] if self._tag else path, dotfiles=self._dotfiles)
            found = self._resolver.open(decoded)
        except NoIndex as refused:
            return self._list(refused.directory, request)
        except PathRefused as refused:
            if refused.status == 404 and cache is not None:
                cache.note_missing(path, now)
            return status_response(refused.status)
        if isinstance(found, IsDirectory):
            return self._redirect(self._prefix + found.location.encode("ascii").lstrip(b"/")
                                  if self._prefix.endswith(b"/") else
                                  self._prefix + found.location.encode("ascii"), request.query)
        encodings: tuple[str, ...] = ()
        if cache is not None:
            if cache.dirs is not None:  # its directory's names, listed at most once per recheck
                encodings = cache.dirs.encodings_of(found.path, now)
            squeeze = self._compress
            size = found.stat.st_size
            if squeeze is not None and not encodings and squeeze.compressible(content_type(found.name), size):
                encodings = _WILL_COMPRESS  # answers will vary, as soon as the compressed bodies are made
            if cache.wants(path, size, now):
                entry = load_entry(found, now, size > cache.max_file_size, vary=bool(encodings))
                if entry is not None:
                    if encodings and encodings is not _WILL_COMPRESS:
                        attach_variants(self._resolver, found, entry, encodings, now, cache.max_file_size)
                    self._renew_responses(path, entry)
                    cache.store(path, entry)
                    if squeeze is not None:
                        self._compress_later(squeeze, path, entry)
                    return self._from_cache_chosen(request, entry)
            if encodings is _WILL_COMPRESS:
                return self._answer(request, Validators.of(found.stat), content_type(found.name), size,
                                    partial(FileRange, found.fd), partial(close_file, found.fd), _VARY)
        fd = found.fd
        if encodings:
            chosen = choose(request.header(b"accept-encoding"), encodings)
            sibling = self._resolver.open_sibling(found, SUFFIXES[chosen]) if chosen is not None else None
            if sibling is not None and chosen is not None:
                if sibling.stat.st_mtime_ns >= found.stat.st_mtime_ns:
                    close_file(fd)
                    validators = Validators.of(sibling.stat, chosen)
                    return self._answer(request, validators, content_type(found.name),
                                        sibling.stat.st_size, partial(FileRange, sibling.fd),
                                        partial(close_file, sibling.fd), _encoded(chosen))
                close_file(sibling.fd)  # stale: older than the file
        return self._answer(request, Validators.of(found.stat), content_type(found.name),
                            found.stat.st_size, partial(FileRange, fd), partial(close_file, fd),
                            _VARY if encodings else None)

    def _list(self, directory: str, request: Request) -> Response:
        """A directory without an index: its listing where listings are on, else 403."""
        listing = self._listing
        if listing is None:
            return status_response(403)
        try:
            return listing(directory, request.path, request)
        except PathRefused as refused:
            return status_response(refused.status)

    def _renew_responses(self, path: bytes, entry: CachedFile) -> None:
        """The shared whole responses of an entry and its variants, replayable while its choice of
        encodings stays what it is now."""
        for variant in (entry.variants or {}).values():
            variant.response = self._whole_response(path, variant, entry)
        entry.response = self._whole_response(path, entry)

    def _compress_later(self, squeeze: OnTheFly, path: bytes, entry: CachedFile) -> None:
        wanted = squeeze.wanted(entry.mime, entry.size, entry.offered)
        if not wanted or entry.compressing:
            return
        if entry.body is None:
            entry.acquire()  # the descriptor stays open while a worker thread reads it
        entry.compressing = True
        done = partial(self._compressed, path, entry)
        if not squeeze.start(entry.body, entry.fd, entry.size, wanted, done):
            done({})

    def _compressed(self, path: bytes, entry: CachedFile, results: dict[str, Compressed]) -> None:
        """A worker thread compressed a cached file: its bodies (in memory, or large ones in unlinked files)
        join the entry, if it still holds."""
        if entry.body is None:
            entry.release()
        entry.compressing = False
        cache = self._cache
        now = time.monotonic()
        made: dict[str, CachedFile] = {}
        plain = entry.validators
        for encoding, data in results.items():
            validators = Validators(plain.etag[:-1] + b"-" + encoding.encode("ascii") + b'"',
                                    plain.last_modified, plain.mtime)
            body, fd, size = (data, -1, len(data)) if isinstance(data, bytes) else (None, *data)
            if body is None:
                LEDGER.open += 1  # the worker's mkstemp, write and unlink
                LEDGER.write += 1
            made[encoding] = CachedFile(fs_path="", identity=entry.identity, validators=validators,
                                        mime=entry.mime, size=size, body=body, fd=fd,
                                        header_block=header_block(validators, entry.mime, encoding, True),
                                        checked_at=now, used_at=now, encoding=encoding)
        if cache is None or not cache.holds(path, entry):
            for variant in made.values():
                variant.drop()  # closes what is on disk
            return
        if made:
            cache.add_generated(entry, made)
            self._renew_responses(path, entry)

    def _from_cache_chosen(self, request: Request, entry: CachedFile) -> Response:
        if entry.offered and entry.variants is not None:
            chosen = choose(request.header(b"accept-encoding"), entry.offered)
            if chosen is not None:
                return self._from_cache(request, entry.variants[chosen])
        return self._from_cache(request, entry)

    def _not_found(self, path: bytes) -> Response:
        """The 404 for a path the cache remembers as missing: replayable while it stays remembered
        (a file created there shows within cache_recheck, replays included)."""
        response = status_response(404)
        if self._replayable:
            response.replay = partial(self._replay_not_found, path, response)
        return response

    def _replay_not_found(self, path: bytes, response: Response) -> Response | None:
        cache = self._cache
        if cache is None or not cache.known_missing(path, time.monotonic()):
            return None
        return response

    @staticmethod
    def _redirect(location: bytes, query: bytes) -> Response:
        if query:
            location += b"?" + query
        return status_response(301, [(b"location", location)])

    def _from_cache(self, request: Request, entry: CachedFile) -> Response:
        body = entry.body
        if request.conditional:
            extra = _encoded(entry.encoding) if entry.encoding else _VARY if entry.encodings else None
            if body is not None:
                return self._answer(request, entry.validators, entry.mime, entry.size,
                                    partial(_slice, body), _nothing, extra)
            entry.acquire()
            return self._answer(request, entry.validators, entry.mime, entry.size,
                                partial(FileRange, entry.fd), entry.release, extra)
        LEDGER.responses_from_cache += 1
        response = entry.response
        assert response is not None
        if entry.body is None:
            entry.acquire()  # the descriptor stays open until this response's cleanup
        return response  # shared: the connection only reads a Response

    def _whole_response(self, path: bytes, entry: CachedFile, plain: CachedFile | None = None) -> Response:
        """The 200 for a whole cached file (or for a precompressed variant of `plain`), shared by every
        unconditional GET of it, and replayable (see Response.replay) for as long as the entry stays in
        the cache."""
        offered = (plain or entry).offered
        replay = partial(self._replay, path, entry, plain, offered) if self._replayable else None
        if entry.body is not None:
            return Response(status=200, header_block=entry.header_block, body=entry.body, replay=replay)
        return Response(status=200, header_block=entry.header_block, body=FileRange(entry.fd, 0, entry.size),
                        cleanup=entry.release, replay=replay)

    def _replay(self, path: bytes, entry: CachedFile, plain: CachedFile | None = None,
                offered: tuple[str, ...] = ()) -> Response | None:
        """The response for a repeat of a request this entry answered, if the entry still holds: the
        same check (and re-check on disk) as any cache hit. A variant holds while its file's entry does
        (the same request bytes choose the same encoding)."""
        cache = self._cache
        owner = plain or entry
        if cache is None or cache.get(path, time.monotonic()) is not owner or owner.offered is not offered:
            return None  # gone, changed, or it has other encodings now: the request is negotiated again
        LEDGER.responses_from_cache += 1
        response = entry.response
        if entry.body is None:
            entry.acquire()
        return response

    def _answer(self, request: Request, validators: Validators, mime: bytes, size: int,
                slice_of: Slicer, cleanup: Callable[[], None], extra: Headers | None = None) -> Response:
        """The response for a whole file, given its validators, type, size and a way to slice it;
        `extra` are its Content-Encoding and Vary fields, if it has them."""
        headers: Headers = [(b"last-modified", validators.last_modified), (b"etag", validators.etag)]
        if extra:
            headers += extra
        decided = precondition_status(request, validators)
        if decided is not None:
            cleanup()
            return status_response(decided, headers if decided == 304 else None)
        headers.append((b"accept-ranges", b"bytes"))
        range_header = request.header(b"range")
        if range_header is not None and request.method == b"GET" and if_range_allows(request, validators):
            try:
                ranges = parse_ranges(range_header, size, self._max_ranges)
            except Unsatisfiable:
                cleanup()
                return status_response(416, [(b"content-range", b"bytes */%d" % size)])
            if ranges is not None and len(ranges) == 1:
                first, last = ranges[0]
                headers += ((b"content-type", mime),
                            (b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
                return Response(status=206, headers=headers, body=slice_of(first, last - first + 1),
                                cleanup=cleanup)
            if ranges is not None:
                return _multipart(headers, slice_of, mime, size, ranges, cleanup)
        headers.append((b"content-type", mime))
        return Response(status=200, headers=headers, body=slice_of(0, size), cleanup=cleanup)


def _multipart(headers: Headers, slice_of: Slicer, mime: bytes, size: int,
               ranges: list[tuple[int, int]], cleanup: Callable[[], None]) -> Response:
    boundary = secrets.token_hex(12).encode("ascii")
    parts: list[Segment] = []
    for first, last in ranges:
        parts.append(b"\r\n--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
                     % (boundary, mime, first, last, size))
        parts.append(slice_of(first, last - first + 1))
    parts.append(b"\r\n--%s--\r\n" % boundary)
    headers.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
    return Response(status=206, headers=headers, body=parts, cleanup=cleanup)
