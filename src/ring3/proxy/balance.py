"""Choosing an upstream for a request: weighted round robin (nginx's smooth variant), least connections,
or consistent hashing on a key. Each skips upstreams that are down or already tried for this request;
backup upstreams are chosen only when no other is available.
"""

from __future__ import annotations

import bisect
import hashlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

from ring3.events import Request
from ring3.proxy.upstreams import Upstream

POINTS_PER_WEIGHT = 160  # points on the hash ring per unit of weight (as ketama)


class Balancer(ABC):
    """Picks among `upstreams`; subclasses choose how."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        self.upstreams = list(upstreams)
        if len(self.upstreams) == 1:
            # As nginx: a lone upstream is never taken out by failures, since no other could take its
            # requests (a refused connect is a 502, and the next request tries again); health checks may.
            self.upstreams[0].max_fails = 0
        self.primary = [u for u in upstreams if not u.backup]
        self.backups = [u for u in upstreams if u.backup]

    def pick(self, request: Request, now: float, tried: Sequence[Upstream]) -> Upstream | None:
        for group in (self.primary, self.backups):
            candidates = [u for u in group if u.available(now) and u not in tried]
            if candidates:
                return self._choose(request, candidates, group)
        return None

    @abstractmethod
    def _choose(self, request: Request, candidates: list[Upstream], group: list[Upstream]) -> Upstream:
        """One of `candidates` (all available and untried), from `group` (primaries or backups)."""


class RoundRobin(Balancer):
    """Smooth weighted round robin: with weights 5, 1, 1 the order is a a b a c a a, never a burst."""

    def pick(self, request: Request, now: float, tried: Sequence[Upstream]) -> Upstream | None:
        if len(self.upstreams) == 1 and not tried:  # the common case: one upstream, nothing to weigh
            only = self.upstreams[0]
            return only if only.available(now) else None
        return super().pick(request, now, tried)

    def _choose(self, request: Request, candidates: list[Upstream], group: list[Upstream]) -> Upstream:
        total = 0
        best = candidates[0]
        for upstream in candidates:
            upstream.current_weight += upstream.weight
            total += upstream.weight
            if upstream.current_weight > best.current_weight:
                best = upstream
        best.current_weight -= total
        return best


class LeastConn(Balancer):
    """The upstream with the fewest requests in flight for its weight; ties go round robin."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        super().__init__(upstreams)
        self._next = 0

    def _choose(self, request: Request, candidates: list[Upstream], group: list[Upstream]) -> Upstream:
        self._next += 1
        start = self._next % len(candidates)
        order = candidates[start:] + candidates[:start]
        return min(order, key=lambda u: u.active / u.weight)


class ConsistentHash(Balancer):
    """A ring of points per upstream (weighted); a key goes to the first point at or after its hash, so
    when an upstream leaves, only its own keys move (to the next points), and they come back with it."""

    def __init__(self, upstreams: Sequence[Upstream], key: str) -> None:
        super().__init__(upstreams)
        self.key = key
        kind, _, name = key.partition(":")
        self._kind = kind  # 'client', 'uri', 'header' or 'cookie'
        self._name = name.lower().encode() if kind == "header" else name.encode() + b"="
        self._rings: dict[int, tuple[list[int], list[Upstream]]] = {}
        for group in (self.primary, self.backups):
            points: list[tuple[int, Upstream]] = []
            for upstream in group:
                for number in range(POINTS_PER_WEIGHT * upstream.weight):
                    digest = hashlib.blake2b(f"{upstream.name}-{number}".encode(), digest_size=4).digest()
                    points.append((int.from_bytes(digest, "big"), upstream))
            points.sort(key=lambda point: point[0])
            self._rings[id(group)] = ([p[0] for p in points], [p[1] for p in points])

    def _choose(self, request: Request, candidates: list[Upstream], group: list[Upstream]) -> Upstream:
        hashes, owners = self._rings[id(group)]
        at = bisect.bisect_left(hashes, zlib.crc32(self.key_of(request)))
        for step in range(len(owners)):
            owner = owners[(at + step) % len(owners)]
            if owner in candidates:
                return owner
        return candidates[0]  # unreachable: every candidate has points

    def key_of(self, request: Request) -> bytes:
        kind = self._kind
        if kind == "client":
            client = request.conn.client
            return client[0].encode() if client else b""
        if kind == "header":
            return request.header(self._name) or b""
        if kind == "cookie":
            wanted = self._name  # b"NAME="
            for name, value in request.headers:
                if name == b"cookie":  # HTTP/2 may split the field: each one is looked at
                    for part in value.split(b";"):
                        part = part.strip()
                        if part.startswith(wanted):
                            return part[len(wanted):]
            return b""
        return request.target  # "uri"


def balancer(kind: str, upstreams: Sequence[Upstream], hash_key: str) -> Balancer:
    if kind == "least_conn":
        return LeastConn(upstreams)
    if kind == "hash":
        return ConsistentHash(upstreams, hash_key)
    return RoundRobin(upstreams)
