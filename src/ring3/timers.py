"""One timer per connection, re-armed lazily.

A connection has many deadlines (head, body, keep-alive, send, lingering close; for a WebSocket: ping,
pong, closing handshake) but needs only the earliest. `arm` only ever moves the timer earlier, so the
common case (a read that pushes a deadline later) costs no timer call at all; when the timer fires, the
owner works out what is due now and arms again for what comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LazyTimer:
    """Calls `check` no later than the earliest time given to `arm` since it last fired."""

    __slots__ = ("_at", "_check", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, check: Callable[[], None]) -> None:
        self._loop = loop
        self._check = check
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def arm(self, when: float) -> None:
        """Make sure `check` runs no later than `when` (loop time)."""
        handle = self._handle
        if handle is None or when < self._at:
            if handle is not None:
                handle.cancel()
            self._at = when
            self._handle = self._loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Cancel for good and let go of `check`: its owner (which holds this timer) is then freed
        by reference counting at once, not by a later pass of the cycle collector."""
        self.cancel()
        self._check = _nothing

    def _fire(self) -> None:
        self._handle = None
        self._check()


def _nothing() -> None:
    pass
