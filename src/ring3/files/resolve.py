"""Traversal-safe mapping of a request path to a file under a root.

The path is percent-decoded exactly once. NUL, encoded slashes and backslashes are refused, `..` is
resolved lexically and can never climb above the root, and after opening, the kernel's own idea of the
file's location (/proc/self/fd) is checked against the root, so symlinks cannot lead outside unless allowed.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from ring3.observe.ledger import LEDGER

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not hang us
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"%00")


class PathRefused(Exception):
    """The path cannot be served; `status` says how to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class NoIndex(PathRefused):
    """A directory without an index file: 403, or its listing where listings are on."""

    def __init__(self, directory: str) -> None:
        super().__init__(403, "directory has no index file")
        self.directory = directory


@dataclass(frozen=True, slots=True)
class DecodedPath:
    """A request path decoded and normalised into segments under the root."""

    segments: tuple[str, ...]
    trailing_slash: bool

    def url_path(self) -> str:
        """The canonical URL path, re-encoded; never starts with '//'."""
        joined = "/".join(quote(segment, safe="!$&'()*+,;=:@~-._") for segment in self.segments)
        return "/" + joined + ("/" if self.trailing_slash and joined else "")


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """An open regular file (the caller owns `fd`) and its metadata."""

    fd: int
    stat: os.stat_result
    name: str
    path: str  # the filesystem path it was opened by


@dataclass(frozen=True, slots=True)
class IsDirectory:
    """The path names a directory requested without its trailing slash."""

    location: str


def close_file(fd: int) -> None:
    """Close a file descriptor this module opened, counting the call."""
    LEDGER.close += 1
    os.close(fd)


# RFC 8615's /.well-known/ is served even without dotfiles (certbot's --webroot puts its ACME challenges
# under /.well-known/acme-challenge/); only at the top, and dotfiles beneath it stay refused.
WELL_KNOWN = ".well-known"


def decode_path(raw_path: bytes, *, dotfiles: bool) -> DecodedPath:
    """Percent-decode once and normalise; raise PathRefused for anything suspicious."""
    if b"\\" in raw_path or b"\0" in raw_path:
        raise PathRefused(400, "backslash or NUL in path")
    lowered = raw_path.lower()
    if any(sep in lowered for sep in _ENCODED_SEPARATORS):
        raise PathRefused(400, "encoded separator or NUL in path")
    if b"%" in raw_path:
        decoded = unquote_to_bytes(raw_path)
        if b"\0" in decoded or b"\\" in decoded:
            raise PathRefused(400, "NUL or backslash in decoded path")
    else:
        decoded = raw_path
    try:
        text = decoded.decode("utf-8")  # strict: overlong encodings and bad bytes are refused
    except UnicodeDecodeError:
        raise PathRefused(400, "path is not valid UTF-8") from None
    segments: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise PathRefused(400, "path climbs above the root")
            segments.pop()
            continue
        if segment[0] == "." and not dotfiles and (segments or segment != WELL_KNOWN):
            raise PathRefused(403, "dotfiles are not served")
        segments.append(segment)
    return DecodedPath(tuple(segments), text.endswith("/"))


class FileResolver:
    """Opens files under one root, refusing what lies outside it."""

    __slots__ = ("_follow_outside", "_index", "_root", "_root_prefix")

    def __init__(self, root: str, *, index: tuple[str, ...], follow_symlinks_outside: bool) -> None:
        self._root = os.path.realpath(root)
        self._root_prefix = self._root.rstrip("/") + "/"
        self._index = index
        self._follow_outside = follow_symlinks_outside

    @property
    def root(self) -> str:
        return self._root

    def open(self, path: DecodedPath) -> OpenedFile | IsDirectory:
        """Open the file a decoded path names; raise PathRefused (404, 403) when it cannot be served."""
        fs_path = os.path.join(self._root, *path.segments)
        fd = self._open_inside(fs_path)
        try:
            LEDGER.fstat += 1
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                if path.trailing_slash:
                    raise PathRefused(404, "file requested as a directory")
                name = path.segments[-1] if path.segments else ""
                opened = OpenedFile(fd, st, name, fs_path)
                fd = -1
                return opened
            if not stat.S_ISDIR(st.st_mode):
                raise PathRefused(403, "not a regular file")
            if not path.trailing_slash and path.segments:
                return IsDirectory(path.url_path() + "/")
            return self._open_index(fs_path)
        finally:
            if fd >= 0:
                close_file(fd)

    def open_sibling(self, opened: OpenedFile, suffix: str) -> OpenedFile | None:
        """The regular file beside an opened one, its name plus `suffix` (a precompressed variant),
        under the same rules as any file (inside the root by the kernel's account); None if there is
        none that may be served."""
        path = opened.path + suffix
        try:
            fd = self._open_inside(path)
        except PathRefused:
            return None
        LEDGER.fstat += 1
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            close_file(fd)
            return None
        return OpenedFile(fd, st, opened.name + suffix, path)

    def _open_index(self, directory: str) -> OpenedFile:
        for name in self._index:
            index_path = os.path.join(directory, name)
            try:
                fd = self._open_inside(index_path)
            except PathRefused as exc:
                if exc.status == 404:
                    continue
                raise
            LEDGER.fstat += 1
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return OpenedFile(fd, st, name, index_path)
            close_file(fd)
        raise NoIndex(directory)

    def _open_inside(self, path: str) -> int:
        LEDGER.open += 1
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                raise PathRefused(403, "permission denied") from None
            raise PathRefused(404, os.strerror(exc.errno or 0)) from None
        if not self._follow_outside and not self._is_inside(fd, path):
            close_file(fd)
            raise PathRefused(403, "symlink leads outside the root")
        return fd

    def _is_inside(self, fd: int, path: str) -> bool:
        """Whether the open file lies under the root, by the kernel's own account of its path."""
        LEDGER.readlink += 1
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: walk the path instead (slower, one lstat per component)
            real = os.path.realpath(path)
        return real == self._root or real.startswith(self._root_prefix)
