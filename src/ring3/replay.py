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

Bounded by an entry count and by the length of the request bytes; the oldest entry goes first. Keys that
get the same response share one copy of its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ring3.events import FileRange, FixedBody, Request, Response, body_length
from ring3.http1.serialize import serialize_head
from ring3.output import join_small


class Message:
    """The bytes of one response as sent now: a head (with a small body joined to it) and the rest of
    the body, if any. Built once per response, Connection line and second, and shared by every Replay
    that answers with that response, so many keys for one file hold one copy."""

    __slots__ = ("common", "length", "parts", "response")

    def __init__(self, response: Response, common: bytes, parts: tuple[bytes, FixedBody | None],
                 length: int) -> None:
        self.response = response
        self.common = common  # the Date/Server block it was built with
        self.parts = parts
        self.length = length  # of the body, for the access log


class Replay:
    """One remembered exchange: the request as parsed, the handler's renewal, and the Connection line
    its answer carries (b"" on HTTP/1.1; Connection: close for a client that asked for it, whose
    connection then closes after the answer)."""

    __slots__ = ("_message_key", "_message_of", "closes", "connection", "renew", "request")

    def __init__(self, request: Request, renew: Callable[[], Response | None], connection: bytes) -> None:
        self.request = request
        self.renew = renew
        self.connection = connection
        self.closes = not request.keep_alive
        self._message_of: Response | None = None  # the response _message_key was made for
        self._message_key: tuple[int, bytes] = (0, b"")

    def message_key(self, response: Response) -> tuple[int, bytes]:
        """Where the message for `response` is kept: made once, as the response rarely changes."""
        if response is not self._message_of:
            self._message_of = response
            self._message_key = (id(response), self.connection)
        return self._message_key


class ReplayCache:
    """Replays by request bytes, at most `max_entries` of them, for requests of at most `max_request`
    bytes; and the messages they send, at most as many."""

    __slots__ = ("_entries", "_max_entries", "_max_request", "_messages", "get")

    def __init__(self, max_entries: int, max_request: int) -> None:
        self._entries: dict[bytes, Replay] = {}
        self._messages: dict[tuple[int, bytes], Message] = {}
        self._max_entries = max_entries
        self._max_request = max_request
        self.get = self._entries.get  # the lookup of every read: one C call

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, data: bytes, replay: Replay) -> None:
        if len(data) > self._max_request:
            return
        _bounded_put(self._entries, data, replay, self._max_entries)

    def forget(self, data: bytes) -> None:
        self._entries.pop(data, None)

    def message(self, replay: Replay, response: Response, common: bytes) -> Message | None:
        """The message that answers `replay` with `response` now; None for a body of unknown length,
        which only the ordinary path sends. `common` is the Date/Server block, the same object within
        a second."""
        key = replay.message_key(response)
        found = self._messages.get(key)
        if found is not None and found.response is response and found.common is common:
            return found
        body = response.body
        if not isinstance(body, bytes | FileRange | list):
            return None
        length = body_length(body)
        head = serialize_head(response.status, common, response.headers, length, replay.connection,
                              response.header_block)
        message = Message(response, common, join_small(head, body), length)
        _bounded_put(self._messages, key, message, self._max_entries)
        return message


K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(mapping: dict[K, V], key: K, value: V, limit: int) -> None:
    """Put, first dropping the oldest entry if the mapping is full (insertion order)."""
    if len(mapping) >= limit and key not in mapping:
        del mapping[next(iter(mapping))]
    mapping[key] = value
