"""Hostile upstreams (and hostile clients) against the reverse proxy, over real sockets.

One ring3 proxies to one scripted upstream for the whole module. Each case is a path whose script sends
the bytes under test; every other path is answered well. A connection the script has broken is marked:
any later request on it is recorded, so that a test can assert the proxy never reused it. Where the
failure comes before the response head reaches the client, the client must get 502 (504 for silence),
never a copy of the bad response, and its next request must succeed.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

import pytest

from conftest import ResponseReader, RunningServer, recv_until_closed, start_ring3
from proxy_kit import RawUpstream, answer
from sites_kit import serve_config

FIRST_BYTE_TIMEOUT = 1.0
READ_TIMEOUT = 1.0
MAX_HEADER_BYTES = 1024
MAX_HEADER_COUNT = 20
MAX_INFORMATIONAL = 3
FINE = answer(200, b"fine")
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"

# What a case's script did to its connection: "good" (it may carry more requests), "broken" (open, but
# the proxy must not send it another request) or "close" (the script hangs up).
Outcome = Literal["good", "broken", "close"]


class Wire:
    """One upstream connection's reads: request heads, and bodies by the framing the proxy sent."""

    def __init__(self, conn: socket.socket, upstream: RawUpstream) -> None:
        self.conn = conn
        self.upstream = upstream
        self.buffer = b""

    def _fill(self) -> bool:
        piece = self.conn.recv(65536)
        self.buffer += piece
        return bool(piece)

    def _until(self, mark: bytes) -> bytes | None:
        while mark not in self.buffer:
            if not self._fill():
                return None
        line, _, self.buffer = self.buffer.partition(mark)
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed in the middle of a request body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def head(self) -> bytes:
        """The next request head (recorded in upstream.received), b"" at the close."""
        head = self._until(b"\r\n\r\n")
        if head is None:
            return b""
        self.upstream.received.append(head + b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def body(self, head: bytes) -> bytes:
        lower = head.lower()
        if b"\r\ntransfer-encoding: chunked\r\n" in lower:
            body = b""
            for _ in range(100_000):
                line = self._until(b"\r\n")
                if line is None:
                    raise ConnectionError("closed in a chunked request body")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n"):  # trailers, to the blank line
                        pass
                    return body
                body += self._exact(size)
                self._exact(2)
            raise AssertionError("too many chunks")
        if b"\r\ncontent-length: " in lower:
            return self._exact(int(lower.split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0]))
        return b""


Behaviour = Callable[[Wire, bytes], Outcome]


class Router:
    """The upstream's script: a behaviour per request target; FINE for every other."""

    def __init__(self) -> None:
        self.behaviours: dict[bytes, Behaviour] = {}
        self.reused: list[bytes] = []  # "target after broken-target": a broken connection carried on
        self.bodies: list[tuple[bytes, bytes]] = []  # (target, body) of the requests answered FINE
        self.number = itertools.count(1)

    def script(self, conn: socket.socket, upstream: RawUpstream) -> None:
        wire = Wire(conn, upstream)
        broken: bytes | None = None
        while head := wire.head():
            target = head.split(b" ", 2)[1]
            if broken is not None:
                self.reused.append(target + b" after " + broken)
            behaviour = self.behaviours.get(target)
            if behaviour is None:
                self.bodies.append((target, wire.body(head)))
                conn.sendall(FINE)
                continue
            outcome = behaviour(wire, head)
            if outcome == "close":
                return
            if outcome == "broken":
                broken = target


def sends(data: bytes, outcome: Outcome = "broken") -> Behaviour:
    def behaviour(wire: Wire, head: bytes) -> Outcome:
        wire.conn.sendall(data)
        return outcome
    return behaviour


class Reader(ResponseReader):
    """ResponseReader that also reads chunked bodies (returned decoded; trailers dropped)."""

    def read(self, head_only: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        status, headers, body = super().read(head_only)
        if headers.get(b"transfer-encoding") != b"chunked" or head_only or status in (204, 304):
            return status, headers, body
        for _ in range(10_000):
            while b"\r\n" not in self.buffer:
                self._fill()
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            size = int(line, 16)
            if size == 0:
                while not self.buffer.startswith(b"\r\n"):
                    if b"\r\n" in self.buffer:  # a trailer line
                        self.buffer = self.buffer.partition(b"\r\n")[2]
                    else:
                        self._fill()
                self.buffer = self.buffer[2:]
                return status, headers, body
            while len(self.buffer) < size + 2:
                self._fill()
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2:]
        raise AssertionError("too many chunks")


class Hostile:
    """The module's proxy, its upstream and the cases' bookkeeping."""

    def __init__(self, router: Router, raw: RawUpstream, proxy: RunningServer) -> None:
        self.router = router
        self.raw = raw
        self.proxy = proxy
        self._log_at = 0

    def case(self, behaviour: Behaviour) -> str:
        """A new path that runs `behaviour`."""
        self.router.reused.clear()  # a failed case's leftovers stay its own
        path = f"/case-{next(self.router.number)}"
        self.router.behaviours[path.encode()] = behaviour
        self._log_at = len(self.proxy.stderr())
        return path

    def log(self) -> str:
        """What ring3 logged since the last case began."""
        return self.proxy.stderr()[self._log_at:]

    def connect(self) -> socket.socket:
        return socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)

    def assert_next_request_succeeds(self, sock: socket.socket | None = None) -> None:
        """A request after the case, on `sock` or a new connection: answered by the upstream, and not on
        a connection a case broke."""
        own = sock is None
        sock = sock or self.connect()
        try:
            sock.sendall(NEXT)
            status, _, body = Reader(sock).read()
        finally:
            if own:
                sock.close()
        assert (status, body) == (200, b"fine")
        assert not self.router.reused, self.router.reused


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    router = Router()
    raw = RawUpstream(router.script)
    directory = tmp_path_factory.mktemp("hostile-proxy")
    proxy = serve_config(
        lambda *args: start_ring3(list(args), directory), directory, f"""
        [[site]]
        hosts = ["*"]
        [[site.location]]
        path = "/"
        [site.location.proxy]
        upstreams = ["{raw.address}"]
        max_fails = 0
        first_byte_timeout = {FIRST_BYTE_TIMEOUT}
        read_timeout = {READ_TIMEOUT}
        max_header_bytes = {MAX_HEADER_BYTES}
        max_header_count = {MAX_HEADER_COUNT}
        max_informational = {MAX_INFORMATIONAL}
        """, "--access-log", "off")
    try:
        yield Hostile(router, raw, proxy)
    finally:
        proxy.stop()
        raw.close()


def head_with(fields: bytes, body: bytes = b"EVIL", status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return status + b"\r\n" + fields + b"\r\n" + body


MANY_FIELDS = b"".join(b"x-evil-%d: 1\r\n" % n for n in range(MAX_HEADER_COUNT)) + b"content-length: 4\r\n"
HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: </evil.css>; rel=preload\r\n\r\n"

# (case, what the upstream sends, then keeps the connection open; what ring3 logs)
BAD_HEADS = [
    ("cr-in-value", head_with(b"x-a: 1\rx-evil: 1\r\ncontent-length: 4\r\n"), "control character in header"),
    ("lf-in-value", head_with(b"x-a: 1\nx-evil: 1\r\ncontent-length: 4\r\n"), "control character in header"),
    ("cr-before-crlf", head_with(b"x-evil: 1\r\r\ncontent-length: 4\r\n"), "control character in header"),
    ("nul-in-value", head_with(b"x-a: a\x00x-evil\r\ncontent-length: 4\r\n"), "control character in header"),
    ("nul-in-name", head_with(b"x-\x00evil: 1\r\ncontent-length: 4\r\n"), "bad header line"),
    ("obs-fold", head_with(b"x-a: 1\r\n x-evil: 1\r\ncontent-length: 4\r\n"), "bad header line"),
    ("obs-fold-tab", head_with(b"x-a: 1\r\n\tx-evil: 1\r\ncontent-length: 4\r\n"), "bad header line"),
    ("fold-of-status-line", head_with(b" x-evil: 1\r\ncontent-length: 4\r\n"), "bad header line"),
    ("space-before-colon", head_with(b"content-length : 4\r\n"), "bad header line"),
    ("no-colon", head_with(b"x-evil\r\ncontent-length: 4\r\n"), "bad header line"),
    ("two-lengths-same", head_with(b"content-length: 4\r\ncontent-length: 4\r\n"), "two Content-Lengths"),
    ("two-lengths-differ", head_with(b"content-length: 4\r\ncontent-length: 9\r\n", b"EVILEVIL!"),
     "two Content-Lengths"),
    ("length-list", head_with(b"content-length: 4, 4\r\n"), "bad Content-Length"),
    ("length-signed", head_with(b"content-length: +4\r\n"), "bad Content-Length"),
    ("length-hex", head_with(b"content-length: 0x4\r\n"), "bad Content-Length"),
    ("length-and-chunked", head_with(b"content-length: 4\r\ntransfer-encoding: chunked\r\n",
                                     b"4\r\nEVIL\r\n0\r\n\r\n"), "Content-Length with Transfer-Encoding"),
    ("chunked-and-length", head_with(b"transfer-encoding: chunked\r\ncontent-length: 4\r\n",
                                     b"4\r\nEVIL\r\n0\r\n\r\n"), "Content-Length with Transfer-Encoding"),
    ("gzip-coding", head_with(b"transfer-encoding: gzip\r\n"), "transfer coding"),
    ("gzip-then-chunked", head_with(b"transfer-encoding: gzip, chunked\r\n", b"4\r\nEVIL\r\n0\r\n\r\n"),
     "transfer coding"),
    ("chunked-twice", head_with(b"transfer-encoding: chunked, chunked\r\n", b"4\r\nEVIL\r\n0\r\n\r\n"),
     "transfer coding"),
    ("two-coding-fields", head_with(b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                                    b"4\r\nEVIL\r\n0\r\n\r\n"), "two Transfer-Encoding fields"),
    ("chunked-in-http-1.0", head_with(b"transfer-encoding: chunked\r\n", b"4\r\nEVIL\r\n0\r\n\r\n",
                                      b"HTTP/1.0 200 OK"), "Transfer-Encoding in an HTTP/1.0 response"),
    ("status-2000", head_with(b"content-length: 4\r\n", status=b"HTTP/1.1 2000 OK"), "bad status line"),
    ("status-20", head_with(b"content-length: 4\r\n", status=b"HTTP/1.1 20 OK"), "bad status line"),
    ("status-099", head_with(b"content-length: 4\r\n", status=b"HTTP/1.1 099 OK"), "bad status line"),
    ("status-http-2", head_with(b"content-length: 4\r\n", status=b"HTTP/2 200"), "bad status line"),
    ("status-lower-case", head_with(b"content-length: 4\r\n", status=b"http/1.1 200 OK"), "bad status line"),
    ("status-leading-space", head_with(b"content-length: 4\r\n", status=b" HTTP/1.1 200 OK"),
     "bad status line"),
    ("status-cr-in-reason", head_with(b"content-length: 4\r\n", status=b"HTTP/1.1 200 O\rK"),
     "bad status line"),
    ("status-garbage", b"EVIL garbage\r\n\r\n", "bad status line"),
    ("head-over-max-bytes", head_with(b"x-evil: " + b"e" * MAX_HEADER_BYTES + b"\r\ncontent-length: 4\r\n"),
     f"a response head over {MAX_HEADER_BYTES} bytes"),
    ("head-over-max-count", head_with(MANY_FIELDS), f"more than {MAX_HEADER_COUNT} header fields"),
    ("1xx-flood", HINTS * (MAX_INFORMATIONAL + 1) + answer(200, b"EVIL"),
     f"more than {MAX_INFORMATIONAL} 1xx responses"),
    ("1xx-with-a-body", head_with(b"content-length: 4\r\n", status=b"HTTP/1.1 100 Continue") + answer(200),
     "bad status line"),
    ("unasked-101", head_with(b"upgrade: evil\r\nconnection: upgrade\r\n", b"EVIL wire protocol",
                              b"HTTP/1.1 101 Switching Protocols"), "101 to a request that did not ask"),
    ("bare-lf-head", b"HTTP/1.1 200 OK\ncontent-length: 4\nx-evil: 1\n\nEVIL",
     "bare LF in the response head"),
]


def _no_trace_of_evil(data: bytes) -> None:
    assert b"evil" not in data.lower(), data[:300]


@pytest.mark.parametrize(("sent", "reason"), [case[1:] for case in BAD_HEADS], ids=[c[0] for c in BAD_HEADS])
def test_a_bad_head_is_502_and_its_connection_is_dropped(hostile: Hostile, sent: bytes, reason: str) -> None:
    path = hostile.case(sends(sent))
    with hostile.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reader = Reader(sock)
        status, headers, body = reader.read()
        assert status == 502, (headers, body)
        _no_trace_of_evil(body + b"".join(k + v for k, v in headers.items()))
        assert reader.buffer == b""
        hostile.assert_next_request_succeeds(sock)  # the client's connection carries on
    log = hostile.log()
    assert f"upstream {hostile.raw.address}: invalid response: {reason}" in log, log


def test_as_many_1xx_as_allowed_pass(hostile: Hostile) -> None:
    path = hostile.case(sends(HINTS * MAX_INFORMATIONAL + answer(200, b"after hints"), "good"))
    with hostile.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, body = Reader(sock).read()
        assert (status, body) == (200, b"after hints")
        hostile.assert_next_request_succeeds(sock)


def _hang_up(wire: Wire, head: bytes) -> Outcome:
    return "close"


# (case, the upstream's behaviour, status, what ring3 logs)
NO_HEADS: list[tuple[str, Behaviour, int, str]] = [
    ("close-unanswered", _hang_up, 502, "connection lost before the response"),
    ("close-in-the-status-line", sends(b"HTTP/1.1 2", "close"), 502, "connection lost before the response"),
    ("close-in-the-head", sends(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nx-ev", "close"), 502,
     "connection lost before the response"),
    ("silent", sends(b""), 504, f"no response within {FIRST_BYTE_TIMEOUT:g}s"),
    ("silent-in-the-head", sends(b"HTTP/1.1 200 OK\r\nx-evil: 1\r\n"), 504,
     f"no response within {FIRST_BYTE_TIMEOUT:g}s"),
    ("silent-after-a-1xx", sends(HINTS), 504, f"no response within {FIRST_BYTE_TIMEOUT:g}s"),
]


@pytest.mark.parametrize(("behaviour", "expected", "reason"), [c[1:] for c in NO_HEADS],
                         ids=[c[0] for c in NO_HEADS])
def test_no_complete_head_is_502_or_504(hostile: Hostile, behaviour: Behaviour, expected: int,
                                        reason: str) -> None:
    path = hostile.case(behaviour)
    with hostile.connect() as sock:
        started = time.monotonic()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = Reader(sock, timeout=10).read()
        elapsed = time.monotonic() - started
        assert status == expected, (headers, body)
        _no_trace_of_evil(body)
        if expected == 504:
            assert FIRST_BYTE_TIMEOUT * 0.9 <= elapsed < FIRST_BYTE_TIMEOUT + 2, elapsed
        else:
            assert elapsed < FIRST_BYTE_TIMEOUT, elapsed
        hostile.assert_next_request_succeeds(sock)
    log = hostile.log()
    assert f"upstream {hostile.raw.address}: {reason}" in log, log


class Staged:
    """Sends `first`; once the test has seen `marker` reach the client (so the head has gone out), sends
    `then` and does `outcome`."""

    def __init__(self, first: bytes, then: bytes, outcome: Outcome, marker: bytes) -> None:
        self.first = first
        self.then = then
        self.outcome = outcome
        self.marker = marker
        self.go = threading.Event()

    def __call__(self, wire: Wire, head: bytes) -> Outcome:
        wire.conn.sendall(self.first)
        if not self.go.wait(5):
            return "close"
        wire.conn.sendall(self.then)
        return self.outcome


CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
PART = b"4\r\npart\r\n"
LARGE = 300_000  # spliced (over splice_min_size): the cut is noticed on the splice path
CLOSED_EARLY = "closed the connection in the middle of the body"
SILENT = f"sent nothing for {READ_TIMEOUT:g}s in the middle of the body"

# (case, what follows a first chunk "part", what ring3 logs)
BAD_CHUNKS = [
    ("size-not-hex", b"zz\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-of-16-digits", b"1" + b"0" * 15 + b"\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-negative", b"-4\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-0x", b"0x4\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-leading-space", b" 4\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-bare-lf", b"4\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("extension-with-cr", b"4;x=\ry\r\nEVIL\r\n0\r\n\r\n", "bad chunk size"),
    ("size-line-too-long", b"4;" + b"e" * 5000, "chunk-size line too long"),
    ("no-crlf-after-data", b"4\r\ndataXX\r\n0\r\n\r\n", "no CRLF after a chunk's data"),
    ("trailer-without-colon", b"0\r\nx-evil\r\n\r\n", "bad trailer line"),
    ("trailer-obs-fold", b"0\r\nx-sum: 1\r\n x-evil: 1\r\n\r\n", "bad trailer line"),
    ("trailer-with-cr", b"0\r\nx-sum: 1\rx-evil: 1\r\n\r\n", "bad trailer line"),
    ("trailers-too-large", b"0\r\nx-sum: " + b"e" * 17_000 + b"\r\n\r\n", "trailers too large"),
]


@pytest.mark.parametrize(("bad", "reason"), [c[1:] for c in BAD_CHUNKS], ids=[c[0] for c in BAD_CHUNKS])
def test_a_bad_chunk_read_with_the_head_is_502(hostile: Hostile, bad: bytes, reason: str) -> None:
    path = hostile.case(sends(CHUNKED + PART + bad))  # one segment: the proxy reads it at once
    with hostile.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = Reader(sock).read()
        assert status == 502, (headers, body)
        _no_trace_of_evil(body)
        hostile.assert_next_request_succeeds(sock)
    log = hostile.log()
    assert f"upstream {hostile.raw.address}: invalid response: {reason}" in log, log


# (case, what the upstream does once the head and a first piece are out, chunked, the announced length,
# what ring3 logs)
CUT_BODIES: list[tuple[str, Staged, bool, int | None, str]] = [
    ("length-close", Staged(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", b"", "close",
                            b"only part"), False, 100, CLOSED_EARLY),
    ("length-close-spliced", Staged(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % LARGE
                                    + b"p" * (LARGE // 3) + b"!", b"", "close", b"!"), False, LARGE,
     CLOSED_EARLY),
    ("length-silent", Staged(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", b"", "broken",
                             b"only part"), False, 100, SILENT),
    ("chunked-close-between-chunks", Staged(CHUNKED + PART, b"", "close", b"part"), True, None, CLOSED_EARLY),
    ("chunked-close-in-data", Staged(CHUNKED + PART, b"8\r\npart", "close", b"part"), True, None,
     CLOSED_EARLY),
    ("chunked-close-in-trailers", Staged(CHUNKED + PART, b"0\r\nx-sum: 1\r\n", "close", b"part"), True,
     None, CLOSED_EARLY),
    ("chunked-silent", Staged(CHUNKED + PART, b"", "broken", b"part"), True, None, SILENT),
    *((f"chunk-{case}", Staged(CHUNKED + PART, bad, "broken", b"part"), True, None, reason)
      for case, bad, reason in BAD_CHUNKS),
]


@pytest.mark.parametrize(("behaviour", "chunked", "length", "reason"), [c[1:] for c in CUT_BODIES],
                         ids=[c[0] for c in CUT_BODIES])
def test_a_body_cut_or_broken_aborts_the_client(hostile: Hostile, behaviour: Staged, chunked: bool,
                                                length: int | None, reason: str) -> None:
    path = hostile.case(behaviour)
    with hostile.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 5
        while behaviour.marker not in data.partition(b"\r\n\r\n")[2] and time.monotonic() < deadline:
            piece = sock.recv(65536)
            assert piece, data[:300]
            data += piece
        behaviour.go.set()  # the head is out: now the upstream breaks the body
        started = time.monotonic()
        data += recv_until_closed(sock, timeout=READ_TIMEOUT + 4)
        assert time.monotonic() - started < READ_TIMEOUT + 3, "the client's connection was not aborted"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:200]
    _no_trace_of_evil(data)
    if chunked:
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.startswith(b"4\r\npart\r\n")
        assert not body.endswith(b"0\r\n\r\n") and b"\r\n0\r\n" not in b"\r\n" + body, body[-100:]
    else:
        assert length is not None
        assert b"content-length: %d" % length in head.lower()
        assert len(body) < length
    hostile.assert_next_request_succeeds()
    log = hostile.log()
    assert f"upstream {hostile.raw.address}: {reason}" in log and "response is aborted" in log, log


def _stray_later(wire: Wire, head: bytes) -> Outcome:
    wire.conn.sendall(answer(200, b"ok"))
    time.sleep(0.1)  # the proxy has pooled the connection by now: it is idle when these arrive
    wire.conn.sendall(answer(200, b"EVIL"))
    return "broken"


SMUGGLED = answer(200, b"EVIL", "x-evil: 1\r\n")

# (case, behaviour, method, the client's status and body): the response is whole, but the bytes after it
# make its connection unusable.
BEYOND = [
    ("after-a-length-body", sends(answer(200, b"ok") + SMUGGLED), "GET", b"ok"),
    ("after-a-long-length-body", sends(answer(200, b"o" * LARGE) + SMUGGLED), "GET", b"o" * LARGE),
    ("after-a-chunked-body", sends(CHUNKED + b"2\r\nok\r\n0\r\n\r\n" + SMUGGLED), "GET", b"ok"),
    ("after-a-204", sends(b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED), "GET", b""),
    ("after-a-304", sends(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 4\r\n\r\n" + SMUGGLED), "GET", b""),
    ("a-body-to-head", sends(answer(200, b"EVIL")), "HEAD", b""),
    ("idle-pooled-connection", _stray_later, "GET", b"ok"),
]


@pytest.mark.parametrize(("behaviour", "method", "expected"), [c[1:] for c in BEYOND],
                         ids=[c[0] for c in BEYOND])
def test_bytes_beyond_the_response_are_never_relayed(hostile: Hostile, behaviour: Behaviour, method: str,
                                                     expected: bytes) -> None:
    path = hostile.case(behaviour)
    with hostile.connect() as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reader = Reader(sock)
        status, headers, body = reader.read(head_only=method == "HEAD")
        assert body == expected, body[:100]
        assert status in (200, 204, 304)
        _no_trace_of_evil(b"".join(k + v for k, v in headers.items()))
        if behaviour is _stray_later:
            time.sleep(0.3)
        hostile.assert_next_request_succeeds(sock)
        assert reader.buffer == b""


EARLY_BODY = 1_000_000  # within the client-side max_body_size (1 MiB)


def _refuse_early(then: str) -> Behaviour:
    def behaviour(wire: Wire, head: bytes) -> Outcome:
        assert b"content-length: %d\r\n" % EARLY_BODY in head.lower()
        wire.conn.sendall(answer(413, b"too big"))  # keep-alive, to tempt the proxy into reusing it
        if then == "close":
            wire.conn.shutdown(socket.SHUT_WR)
            return "close"
        if then == "drain":
            wire._exact(EARLY_BODY)  # the proxy hangs up first: it does not send the rest
            return "broken"
        return "broken"  # "stall": reads nothing more, stays open
    return behaviour


@pytest.mark.parametrize("then", ["close", "drain", "stall"])
def test_an_answer_before_the_request_body_reaches_the_client(hostile: Hostile, then: str) -> None:
    path = hostile.case(_refuse_early(then))
    with hostile.connect() as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {EARLY_BODY}\r\n\r\n".encode()
                     + b"b" * 65536)
        status, _, body = Reader(sock).read()
        assert (status, body) == (413, b"too big")
        # The rest of the body is not the upstream's any more: ring3 reads and drops it (then the client's
        # connection carries on) or closes.
        sender = threading.Thread(target=_send_quietly, args=(sock, b"b" * (EARLY_BODY - 65536)))
        sender.start()
        sender.join(10)
        assert not sender.is_alive()
        try:
            sock.sendall(NEXT)
            first = sock.recv(65536)
        except ConnectionError:
            first = b""
        if first:
            reader = Reader(sock)
            reader.buffer = first
            assert reader.read()[::2] == (200, b"fine")
    hostile.assert_next_request_succeeds()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def _upload_seen(wire: Wire, head: bytes, seen: list[str]) -> Outcome:
    try:
        body = wire.body(head)
    except ConnectionError:
        seen.append("cut")
        return "close"
    seen.append(f"complete: {body!r}")
    wire.conn.sendall(answer(200, b"stored"))
    return "broken"


# (case, the upload's head, its body, what comes after it has reached the upstream: None for a close)
CUT_UPLOADS = [
    ("chunked-bad-size", b"Transfer-Encoding: chunked", b"5\r\nhello\r\n", b"zz\r\n\r\n"),
    ("chunked-no-crlf-after-data", b"Transfer-Encoding: chunked", b"5\r\nhello\r\n", b"2\r\nab0\r\n\r\n"),
    ("chunked-close", b"Transfer-Encoding: chunked", b"5\r\nhello\r\n", None),
    ("length-close", b"Content-Length: 100", b"hello", None),
]


@pytest.mark.parametrize(("framing", "sent", "then"), [c[1:] for c in CUT_UPLOADS],
                         ids=[c[0] for c in CUT_UPLOADS])
def test_a_cut_upload_never_looks_complete_upstream(hostile: Hostile, framing: bytes, sent: bytes,
                                                    then: bytes | None) -> None:
    seen: list[str] = []
    path = hostile.case(lambda wire, head: _upload_seen(wire, head, seen))
    heads = len(hostile.raw.received)
    with hostile.connect() as sock:
        sock.sendall(b"PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n%s" % (path.encode(), framing, sent))
        deadline = time.monotonic() + 5
        while len(hostile.raw.received) == heads and time.monotonic() < deadline:
            time.sleep(0.01)  # until the head (and the body so far) has gone upstream
        assert len(hostile.raw.received) > heads
        if then is not None:
            sock.sendall(then)
            data = recv_until_closed(sock)
            assert data == b"" or data.startswith(b"HTTP/1.1 400 "), data[:100]
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["cut"]  # the upstream saw its connection close, never a finished body
    hostile.assert_next_request_succeeds()


def _smuggle(framing: bytes, body: bytes) -> bytes:
    return b"POST /smuggle HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body


INNER = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNK_OF_INNER = b"%x\r\n%s\r\n0\r\n\r\n" % (len(INNER), INNER)
TRICKS = [
    ("cl-te", _smuggle(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + len(INNER)),
                       b"0\r\n\r\n" + INNER)),
    ("te-cl", _smuggle(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", CHUNK_OF_INNER)),
    ("two-lengths", _smuggle(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(INNER), INNER)),
    ("two-lengths-reversed", _smuggle(b"Content-Length: %d\r\nContent-Length: 0\r\n" % len(INNER), INNER)),
    ("length-list", _smuggle(b"Content-Length: 0, %d\r\n" % len(INNER), INNER)),
    ("te-obs-fold", _smuggle(b"Content-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n" % (5 + len(INNER)),
                             b"0\r\n\r\n" + INNER)),
    ("te-folded-into-other", _smuggle(b"X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: %d\r\n"
                                      % (5 + len(INNER)), b"0\r\n\r\n" + INNER)),
    ("te-space-before-colon", _smuggle(b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n"
                                       % (5 + len(INNER)), b"0\r\n\r\n" + INNER)),
    ("te-not-final", _smuggle(b"Transfer-Encoding: chunked, identity\r\nContent-Length: %d\r\n"
                              % (5 + len(INNER)), b"0\r\n\r\n" + INNER)),
    ("te-xchunked", _smuggle(b"Transfer-Encoding: xchunked\r\nContent-Length: %d\r\n" % (5 + len(INNER)),
                             b"0\r\n\r\n" + INNER)),
    ("te-in-http-1.0", _smuggle(b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(CHUNK_OF_INNER),
                                CHUNK_OF_INNER).replace(b"HTTP/1.1", b"HTTP/1.0", 1)),
    ("cl-bare-lf", _smuggle(b"Content-Length: %d\nTransfer-Encoding: chunked\r\n" % (5 + len(INNER)),
                            b"0\r\n\r\n" + INNER)),
    ("chunk-size-overflow", _smuggle(b"Transfer-Encoding: chunked\r\n",
                                     b"1" + b"0" * 16 + b"%x\r\n" % len(INNER) + INNER + b"\r\n0\r\n\r\n")),
    ("chunk-extension-bare-lf", _smuggle(b"Transfer-Encoding: chunked\r\n",
                                         b"2;\nxx\r\n0\r\n\r\n" + INNER)),
]


@pytest.mark.parametrize("sent", [c[1] for c in TRICKS], ids=[c[0] for c in TRICKS])
def test_a_smuggled_request_never_reaches_the_upstream_as_one(hostile: Hostile, sent: bytes) -> None:
    heads_before = len(hostile.raw.received)
    with hostile.connect() as sock:
        sock.sendall(sent)
        reader = Reader(sock)
        status, _, _ = reader.read()
        assert status in (200, 400, 501), status
        rest = reader.buffer + recv_until_closed(sock, timeout=1)
        assert b"HTTP/1." not in rest, rest[:200]  # one request, one answer: never the inner one's
    heads = hostile.raw.received[heads_before:]
    assert not any(head.split(b" ", 2)[1] == b"/smuggled" for head in heads), heads
    if status == 200:  # framed one way throughout: the inner request went up as body bytes only
        assert len(heads) == 1
        target, body = hostile.router.bodies[-1]
        assert target == b"/smuggle" and (INNER in body or not body), body
    hostile.assert_next_request_succeeds()
