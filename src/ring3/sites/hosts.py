"""Which site a Host names: exact names first, then the longest wildcard, then regexes in file order, then
the default site. Matched without the port, case-insensitively, a trailing dot ignored."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

MEMO_ENTRIES = 1024  # Host values whose site is remembered

T = TypeVar("T")


def host_name(host: bytes) -> bytes:
    """The name part of a Host value (the parsers have checked its syntax): lower case, no port, no
    trailing dot; an IPv6 literal keeps its brackets."""
    if host[:1] == b"[":
        return host[:host.find(b"]") + 1].lower()
    return host.partition(b":")[0].rstrip(b".").lower()


class HostTable(Generic[T]):
    """Sites by host name; `default` answers every Host no other site claims."""

    __slots__ = ("_exact", "_regexes", "_wildcards", "default", "memo")

    def __init__(self, default: T) -> None:
        self.default = default
        self._exact: dict[bytes, T] = {}
        self._wildcards: list[tuple[bytes, T]] = []  # (".example.test", site), longest first
        self._regexes: list[tuple[Any, T]] = []
        self.memo: dict[bytes, tuple[T, bool]] = {}  # Host values' sites, read by the router inline

    def add(self, pattern: str, site: T, compile_regex: Any) -> None:
        if pattern.startswith("~"):
            self._regexes.append((compile_regex(pattern[1:], True), site))
        elif pattern.startswith("*."):
            self._wildcards.append((pattern[1:].lower().rstrip(".").encode("ascii"), site))
            self._wildcards.sort(key=lambda entry: len(entry[0]), reverse=True)
        else:
            name = pattern.lower().rstrip(".")
            if ":" in name and not name.startswith("["):
                name = f"[{name}]"  # an IPv6 address, as a Host field carries it
            self._exact[name.encode("ascii")] = site

    def match(self, host: bytes) -> tuple[T, bool]:
        """The site for a Host value, and whether a site claims it by name (False: the default site)."""
        found = self.memo.get(host)
        if found is None:
            found = self._find(host_name(host))
            memo = self.memo
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[host] = found
        return found

    def _find(self, name: bytes) -> tuple[T, bool]:
        site = self._exact.get(name)
        if site is not None:
            return site, True
        for suffix, site in self._wildcards:
            if name.endswith(suffix) and len(name) > len(suffix):
                return site, True
        for regex, site in self._regexes:
            if regex.search(name) is not None:
                return site, True
        return self.default, False

    def names(self) -> list[tuple[str, T]]:
        """(pattern, site) in matching order, for the routing table."""
        rows = [(name.decode(), site) for name, site in self._exact.items()]
        rows += [("*" + suffix.decode(), site) for suffix, site in self._wildcards]
        rows += [("~" + (r.pattern.decode() if isinstance(r.pattern, bytes) else r.pattern), site)
                 for r, site in self._regexes]
        return rows
