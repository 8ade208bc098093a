"""The request path as locations see it, and the choice of a location with nginx's precedence.

Locations match the path decoded and normalised, as nginx matches them: otherwise `/adm%69n/` would miss
the `/admin/` location (and its password) and still reach an application that decodes it to `/admin/`.
The normal form is re-encoded canonically (unreserved characters plain, the rest as uppercase %XX, an
encoded slash kept encoded) and replaces the request's path, so locations, static files and applications
all see the same path. Dot segments (plain or encoded), an encoded NUL and broken escapes are refused with
400 rather than resolved: a path that climbs is not one a client means. Runs of slashes are merged.

Regex locations use RE2, whose matching is linear in the path's length (bounded by max_request_line)
whatever the pattern: no pattern can make one request cost more.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import quote, unquote_to_bytes

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})|%00")
_ENCODED_SLASH = re.compile(rb"%2[fF]")
_SLASHES = re.compile(rb"/{2,}")
_SAFE = "/!$&'()*+,;=:@~-._"
MEMO_ENTRIES = 4096  # paths whose location is remembered, per site

T = TypeVar("T")


def normalize(path: bytes) -> bytes | None:
    """The canonical form of a request path, or None when it must be refused (400). The path itself is
    returned (the same object) when it is canonical already, which is the common case and costs three
    substring searches."""
    if b"%" not in path and b"//" not in path and b"/." not in path:
        return path
    if _BAD_ESCAPE.search(path):
        return None
    parts = [quote(unquote_to_bytes(part), safe=_SAFE).encode("ascii")
             for part in _ENCODED_SLASH.split(path)]
    canonical = _SLASHES.sub(b"/", b"%2F".join(parts))
    for segment in canonical.split(b"/"):
        if segment in (b".", b".."):
            return None
    return path if canonical == path else canonical


def has_dot_start(remainder: bytes) -> bool:
    """Whether what follows a prefix begins with a dot segment ('/img' then '../secret'): the prefix
    matched inside a segment, and an alias must not let it climb."""
    first = remainder.split(b"/", 1)[0]
    return first in (b".", b"..")


class LocationTable(Generic[T]):
    """Chooses among a site's locations as nginx does: an exact match first; else the longest prefix,
    kept if it is '^~'; else the first regex (in file order) that matches; else that longest prefix."""

    __slots__ = ("_exact", "_prefixes", "_regex_texts", "_regexes", "memo")

    def __init__(self) -> None:
        self._exact: dict[bytes, T] = {}
        self._prefixes: list[tuple[bytes, bool, T]] = []  # (prefix, stops the regex search, location)
        self._regexes: list[tuple[Any, T]] = []
        self._regex_texts: list[str] = []  # as configured, for the routing table
        self.memo: dict[bytes, T] = {}  # paths' locations, read by the router inline

    def add(self, kind: str, pattern: str, location: T, compile_regex: Callable[[str, bool], Any]) -> None:
        if kind == "exact":
            self._exact[canonical_pattern(pattern)] = location
        elif kind in ("prefix", "stop"):
            self._prefixes.append((canonical_pattern(pattern), kind == "stop", location))
            self._prefixes.sort(key=lambda entry: len(entry[0]), reverse=True)
        else:
            self._regexes.append((compile_regex(pattern, kind == "iregex"), location))
            self._regex_texts.append(("~* " if kind == "iregex" else "~ ") + pattern)

    def match(self, path: bytes) -> T | None:
        memo = self.memo
        found = memo.get(path)
        if found is None:
            found = self._find(path)
            if found is not None:
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()  # a flood of distinct paths: start afresh rather than grow
                memo[path] = found
        return found

    def _find(self, path: bytes) -> T | None:
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        longest: T | None = None
        for prefix, stops, location in self._prefixes:
            if path.startswith(prefix):
                if stops:
                    return location
                longest = location
                break
        for regex, location in self._regexes:
            if regex.search(path) is not None:
                return location
        return longest

    def describe(self) -> list[tuple[str, T]]:
        """(how it matches, location) in the order matching considers them, for the routing table."""
        rows: list[tuple[str, T]] = [(f"= {p.decode()}", loc) for p, loc in self._exact.items()]
        rows += [(("^~ " if stops else "") + p.decode(), loc) for p, stops, loc in self._prefixes]
        rows += [(text, loc) for text, (_, loc) in zip(self._regex_texts, self._regexes, strict=True)]
        return rows


def canonical_pattern(pattern: str) -> bytes:
    """A configured prefix or exact path in the form requests are normalised to."""
    raw = pattern.encode("utf-8")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return _SLASHES.sub(b"/", quote(raw, safe=_SAFE).encode("ascii"))
