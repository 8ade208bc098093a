"""Precompressed variants (`page.html.br`, `.zst`, `.gz` beside `page.html`) and how ring3 knows of them
without a system call per request.

A directory's names are listed once per `recheck` seconds and remembered (bounded); whether a file has
variants is then a set lookup, so a file without any costs nothing more to serve. A variant is opened only
when the client accepts its encoding, by the same resolver as the file itself (inside the root by the
kernel's account, a regular file), and only when the plain file was found and allowed first: a stray
`secret.gz` is never reachable by asking for `secret`. A variant older than its file is stale (the file
changed after it was compressed) and is not served.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ring3.files.encoding import ENCODINGS
from ring3.observe.ledger import LEDGER

MAX_DIRECTORIES = 1024  # directories whose names are remembered
MAX_NAMES = 100_000  # a directory with more entries is not listed (its files get no variants)


class DirectoryNames:
    """The names in directories, each listed at most once per `recheck` seconds."""

    __slots__ = ("_dirs", "_recheck")

    def __init__(self, recheck: float) -> None:
        self._recheck = recheck
        self._dirs: OrderedDict[str, tuple[frozenset[str], float]] = OrderedDict()

    def names(self, directory: str, now: float) -> frozenset[str]:
        found = self._dirs.get(directory)
        if found is not None and now - found[1] < self._recheck:
            return found[0]
        LEDGER.open += 1  # opendir(): openat and fstat, then getdents64 until empty, and close
        LEDGER.fstat += 1
        LEDGER.getdents += 2
        LEDGER.close += 1
        try:
            listed = os.listdir(directory)
        except OSError:
            listed = []
        names = frozenset(listed) if len(listed) <= MAX_NAMES else frozenset()
        dirs = self._dirs
        dirs[directory] = (names, now)
        dirs.move_to_end(directory)
        if len(dirs) > MAX_DIRECTORIES:
            dirs.popitem(last=False)
        return names

    def encodings_of(self, fs_path: str, now: float) -> tuple[str, ...]:
        """The encodings whose precompressed file lies beside `fs_path`, in the server's preference."""
        directory, _, name = fs_path.rpartition("/")
        names = self.names(directory or "/", now)
        if not names:
            return ()
        return tuple(encoding for encoding, suffix in ENCODINGS if name + suffix in names)
