"""What must hold for any bytes fed to H1Parser in any pieces, and a mutator of valid requests.

Shared by the hypothesis test (tests/test_fuzz_parser.py) and the long-running fuzz target
(bench/fuzz/fuzz_parser.py), so both check exactly the same thing. Imports nothing but ring3.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from ring3.events import Event, Request, RequestData, RequestEnded, RequestRejected
from ring3.http1.parser import H1Limits, H1Parser

EVENT_TYPES = (Request, RequestData, RequestEnded, RequestRejected)
# Every status the parser may refuse with (README: "Limits and the statuses bad input gets").
REJECTION_STATUSES = frozenset({400, 413, 414, 417, 431, 501, 505})
SMALL_LIMITS = H1Limits(max_request_line=16, max_header_bytes=64, max_header_count=3, max_body_size=8)
DEFAULT_LIMITS = H1Limits()


class InvariantBroken(AssertionError):
    """The parser broke one of its promises; the message says which, with the input."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantBroken(message)


def check_feed(pieces: Sequence[bytes], limits: H1Limits = DEFAULT_LIMITS) -> list[Event]:
    """Feed `pieces` to a fresh parser, checking every promise after every call; all the events.

    - receive_data returns a list of the four event types, and never raises;
    - the stream reads (Request RequestData* RequestEnded)* then at most one RequestRejected;
    - a rejection carries one of the documented statuses, and a rejected (or upgraded) parser stays dead:
      every later call returns [];
    - body bytes handed on never exceed the bytes given, nor max_body_size for one request;
    - a Request looks like one: a method, a path that starts with '/' (or is '*'), version 1.0 or 1.1.
    """
    parser = H1Parser(limits)
    state = "idle"  # idle -> body (after a Request) -> idle (after RequestEnded); dead after a rejection
    given = handed_on = body = 0
    everything: list[Event] = []
    for index, piece in enumerate(pieces):
        given += len(piece)
        was_done = parser.dead or parser.upgraded
        events = parser.receive_data(piece)
        where = f"call {index} ({piece[:60]!r})"
        _require(type(events) is list, f"{where}: returned {type(events).__name__}, not a list")
        if was_done:
            _require(events == [], f"{where}: events after the parser was done: {events!r}")
        for event in events:
            _require(isinstance(event, EVENT_TYPES), f"{where}: not an event: {event!r}")
            _require(state != "dead", f"{where}: {event!r} after a rejection")
            if isinstance(event, RequestRejected):
                _require(event.status in REJECTION_STATUSES, f"{where}: undocumented status {event!r}")
                _require(isinstance(event.reason, str), f"{where}: reason {event.reason!r}")
                state = "dead"
            elif isinstance(event, Request):
                _require(state == "idle", f"{where}: Request while {state}")
                _require(bool(event.method) and isinstance(event.method, bytes), f"{where}: {event!r}")
                _require(event.path[:1] == b"/" or event.path == b"*", f"{where}: path of {event!r}")
                _require(event.http_version in ("1.0", "1.1"), f"{where}: version of {event!r}")
                state, body = "body", 0
            elif isinstance(event, RequestData):
                _require(state == "body", f"{where}: RequestData while {state}")
                _require(type(event.data) is bytes and event.data != b"", f"{where}: {event!r}")
                body += len(event.data)
                handed_on += len(event.data)
                _require(body <= limits.max_body_size, f"{where}: body {body} > {limits.max_body_size}")
            else:
                _require(state == "body", f"{where}: RequestEnded while {state}")
                state = "idle"
        _require(handed_on <= given, f"{where}: {handed_on} body bytes out of {given} given")
        _require(parser.dead == (state == "dead"), f"{where}: parser.dead={parser.dead}, stream {state}")
        everything += events
    return everything


def cut(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` cut at the given offsets (taken modulo its length + 1), in order."""
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[start:end] for start, end in pairwise(bounds)] or [b""]


# -- mutations of valid requests --------------------------------------------------------------------------

SEEDS: tuple[bytes, ...] = (
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nUser-Agent: t\r\n"
    b"Range: bytes=0-1\r\nIf-None-Match: \"e\"\r\n\r\n",
    b"HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://example.org:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
)

TOKENS: tuple[bytes, ...] = (
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"=", b'"', b"\\", b"/",
    b"\x85", b"\xa0", b"\xff", b"\x7f", b"\x0b", b"\x01", b"0", b"5", b"a", b"-", b"+", b"_", b"0x",
    b"ffffffffffffffff", b"ffffffffffffffffff", b"18446744073709551616", b"99999999999",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n", b"Host: x\r\n", b"Host: \r\n", b"Expect: 100-continue\r\n",
    b"Connection: close\r\n", b"Connection: upgrade\r\nUpgrade: h2c\r\n", b" chunked", b"HTTP/1.1",
    b"HTTP/1.0", b"HTTP/2.0", b"RTSP/1.0", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/1.1\r\n",
    b"POST", b"CONNECT", b"http://", b"*", b"%2e%2e/", b"%00", b"0\r\n\r\n",
)

MUTATIONS = 8


def mutate(data: bytes, op: int, position: int, amount: int, token: bytes) -> bytes:
    """One mutation of `data`; every argument is taken modulo what makes sense, so any ints will do."""
    size = len(data)
    at = position % (size + 1)
    op %= MUTATIONS
    if op == 0:  # insert a token
        return data[:at] + token + data[at:]
    if op == 1:  # delete a few bytes
        return data[:at] + data[at + 1 + amount % 8:]
    if op == 2 and size:  # overwrite one byte
        at %= size
        return data[:at] + bytes([amount % 256]) + data[at + 1:]
    if op == 3:  # duplicate a span (a header line, a chunk, a whole request...)
        span = data[at:at + 1 + amount % 64]
        return data[:at] + span + data[at:]
    if op == 4:  # replace a span with a token
        return data[:at] + token + data[at + 1 + amount % 8:]
    if op == 5:  # swap two lines
        lines = data.split(b"\r\n")
        if len(lines) > 2:
            i, j = at % len(lines), amount % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        return b"\r\n".join(lines)
    if op == 6:  # truncate
        return data[:at]
    if op == 7 and size:  # flip the case of one byte
        at %= size
        return data[:at] + data[at:at + 1].swapcase() + data[at + 1:]
    return data
