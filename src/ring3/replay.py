"""The replay cache: whole responses remembered by the exact bytes of the request that asked for them.

HTTP.sys answers hot static URLs from a kernel-mode response cache without waking the server process.
ring3's counterpart sits at the top of the read path. When one read brings exactly one complete GET,
without a body, at a request boundary, and its bytes equal those of an earlier request whose response
the handler declared replayable (`Response.replay`), the connection answers from here. No parser
callback runs, no Request is built, nothing is routed, no handler is called and no header is
serialised. Identical bytes at a request boundary parse identically, so nothing is guessed. What could
still change the answer is checked on every hit:

- the resource behind it: the handler's `replay()` returns None once the response no longer holds
  (for a static file: the file cache dropped or re-checked the entry);
- the Date header: the head is rebuilt when the second changes;
- whether the connection stays open (server draining, the per-connection request limit): such a
  request takes the ordinary path.

Bounded by an entry count and by the length of the request bytes; the oldest entry goes first.
"""

from __future__ import annotations

from collections.abc import Callable

from ring3.events import FileRange, FixedBody, Request, Response, body_length
from ring3.http1.serialize import serialize_head
from ring3.output import join_small


class Replay:
    """One remembered exchange: the request as parsed, the handler's renewal, and the message last
    built for it (rebuilt when the response or the Date line changes)."""

    __slots__ = ("_common", "_message", "_response", "connection", "length", "renew", "request")

    def __init__(self, request: Request, renew: Callable[[], Response | None], connection: bytes) -> None:
        self.request = request
        self.renew = renew
        self.connection = connection  # the Connection line the first answer carried (b"" on HTTP/1.1)
        self._response: Response | None = None
        self._common = b""
        self._message: tuple[bytes, FixedBody | None] = (b"", None)
        self.length = 0  # of the body last built, for the access log

    def message(self, response: Response, common: bytes) -> tuple[bytes, FixedBody | None] | None:
        """The bytes to send for `response` now: a head (with a small body joined to it) and the rest
        of the body, if any; None for a body of unknown length, which only the ordinary path sends.
        `common` is the Date/Server block, the same object within a second."""
        if response is self._response and common is self._common:
            return self._message
        body = response.body
        if not isinstance(body, bytes | FileRange | list):
            return None
        length = self.length = body_length(body)
        head = serialize_head(response.status, common, response.headers, length, self.connection,
                              response.header_block)
        self._message = join_small(head, body)
        self._response = response
        self._common = common
        return self._message


class ReplayCache:
    """Replays by request bytes, at most `max_entries` of them, for requests of at most `max_request`
    bytes."""

    __slots__ = ("_entries", "_max_entries", "get", "max_request")

    def __init__(self, max_entries: int, max_request: int) -> None:
        self._entries: dict[bytes, Replay] = {}
        self._max_entries = max_entries
        self.max_request = max_request
        self.get = self._entries.get  # the lookup of every read: one C call

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, data: bytes, replay: Replay) -> None:
        if len(data) > self.max_request:
            return
        entries = self._entries
        if len(entries) >= self._max_entries and data not in entries:
            del entries[next(iter(entries))]
        entries[data] = replay

    def forget(self, data: bytes) -> None:
        self._entries.pop(data, None)

    def clear(self) -> None:
        self._entries.clear()
