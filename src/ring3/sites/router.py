"""The handler in front of every request when [[site]] tables are given: Host (and, under TLS, the
certificate) to site, path to location, location to its chain of rules and its handler.

Per request this costs a Host lookup in a dict, three substring searches for the path's normal form, and
a dict lookup for the location, both lookups remembered per distinct value (bounded).
"""

from __future__ import annotations

from typing import Any

from ring3.events import Request
from ring3.handlers import BodyReader, Handler
from ring3.handlers.status import status_response
from ring3.sites.hosts import HostTable, host_name
from ring3.sites.paths import MEMO_ENTRIES, LocationTable, normalize
from ring3.sites.rules import Result


class Location:
    """A location as routing holds it: where it came from, how it matches, and its chain."""

    __slots__ = ("describe", "handle", "where")

    def __init__(self, where: str, handle: Handler, describe: str) -> None:
        self.where = where  # 'site[1].location[2]'
        self.handle = handle
        self.describe = describe  # its handler and rules, for the routing table


class HostSite:
    """One [[site]]: its locations, and the rules run before choosing one (a site-level rewrite)."""

    __slots__ = ("hosts", "locations", "log", "memo", "plain", "rewrite", "where")

    def __init__(self, where: str, hosts: tuple[str, ...], log: Any) -> None:
        self.where = where
        self.hosts = hosts
        self.log = log  # its AccessLog, False for none, or None for the server's
        self.plain = log is None  # and no rewrite: the router may go straight to a remembered handler
        self.locations: LocationTable[Location] = LocationTable()
        # Canonical paths' handlers: a raw path found here is canonical, so the router's fast path skips
        # the normal form's test on a hit. Kept only while `plain` (no log of its own, no rewrite).
        self.memo: dict[bytes, Handler] = {}
        self.rewrite: Handler | None = None  # a site-level rewrite, run before a location is chosen

    def route(self, request: Request, body: BodyReader) -> Result:
        path = request.path
        if b"%" in path or b"//" in path or b"/." in path:  # normalize()'s own test, inline
            canonical = normalize(path)
            if canonical is None:
                return status_response(400)
            request.path = path = canonical
        if self.log is not None:
            request.log = self.log
        if self.rewrite is not None:
            return self.rewrite(request, body)
        location = self.locations.match(path)
        if location is None:
            return status_response(404)
        if self.plain:
            memo = self.memo
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[path] = location.handle
        return location.handle(request, body)

    def locate(self, request: Request, body: BodyReader) -> Result:
        """The location for the (normalised) path: also where internal redirects go."""
        location = self.locations.match(request.path)
        if location is None:
            return status_response(404)
        return location.handle(request, body)


class SiteRouter:
    """Host to site. Under TLS, a request for a site by a name the connection's certificate does not
    cover gets 421 (Misdirected Request): a client reusing a connection for another name must open one
    for it. The default site takes any other Host (and requests without one, from HTTP/1.0)."""

    __slots__ = ("_cert_names", "_host_memo", "hosts", "sites")

    def __init__(self, hosts: HostTable[HostSite], sites: list[HostSite],
                 cert_names: dict[str, tuple[frozenset[bytes], tuple[bytes, ...]]] | None) -> None:
        self.hosts = hosts
        self._host_memo = hosts.memo
        self.sites = sites
        # certificate (PEM, as TLSInfo.server_cert) -> (exact names, wildcard suffixes)
        self._cert_names = cert_names

    def __call__(self, request: Request, body: BodyReader) -> Result:
        found = self._host_memo.get(request.host)
        site, named = found if found is not None else self.hosts.match(request.host)
        if named and self._cert_names is not None:
            tls = request.conn.tls
            if tls is not None and not self._covers(tls.server_cert, request.host):
                return status_response(421)
        handle = site.memo.get(request.path)  # HostSite.route's common case, inline
        if handle is None:
            return site.route(request, body)
        return handle(request, body)

    def _covers(self, cert: str | None, host: bytes) -> bool:
        names = self._cert_names.get(cert or "") if self._cert_names is not None else None
        if names is None:
            return False
        exact, wildcards = names
        name = host_name(host)
        if name in exact:
            return True
        _, dot, parent = name.partition(b".")
        return bool(dot) and parent in wildcards
