"""A leaky bucket per key, bounded in memory: nginx's limit_req with `nodelay`.

Each key keeps one number, the time its bucket drains empty (GCRA's theoretical arrival time). A request
at `now` fills the bucket by one interval (1/rate); it is refused when the bucket would hold more than the
burst, and told when to retry: when enough has drained. At most `max_keys` buckets are kept: when full, a
drained bucket (which a new key would start as anyway) is dropped, else the least recently used one, so
memory is bounded whatever the number of client addresses.
"""

from __future__ import annotations

import math
from collections import OrderedDict

EVICT_SCAN = 8  # oldest buckets looked at for a drained one before the least recently used goes


class RateLimiter:
    """`rate` requests per second per key, `burst` more at once."""

    __slots__ = ("_buckets", "_interval", "_max_keys", "_tolerance")

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self._interval = 1.0 / rate
        self._tolerance = burst * self._interval  # how far ahead of now a bucket may be filled
        self._max_keys = max_keys
        self._buckets: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: bytes, now: float) -> float:
        """Count a request; 0.0 when it may go on, else the seconds to wait before one would."""
        buckets = self._buckets
        drained_at = buckets.get(key, now)
        if drained_at < now:
            drained_at = now
        ahead = drained_at - now
        if ahead > self._tolerance + 1e-9:  # within rounding, the burst's last request still goes
            return ahead - self._tolerance
        if key in buckets:
            buckets.move_to_end(key)
        elif len(buckets) >= self._max_keys:
            self._evict(now)
        buckets[key] = drained_at + self._interval
        return 0.0

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        for number, (key, drained_at) in enumerate(buckets.items()):
            if drained_at <= now:
                del buckets[key]
                return
            if number >= EVICT_SCAN:
                break
        buckets.popitem(last=False)


def retry_after(wait: float) -> bytes:
    """The Retry-After value (whole seconds, at least 1) for a wait."""
    return b"%d" % max(1, math.ceil(wait))
