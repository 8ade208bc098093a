"""Every row of the hostile corpus (tests/hostile/corpus.py), run as an attacker would run it.

Three ways: through the sans-IO parser; over a raw socket against a real `ring3 serve` with a valid request
pipelined right behind the row; and against an in-process server whose handler reads the whole body before
answering, so that a body-stage rejection must reach the client with its own status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import InProcessServer, ResponseReader, RunningServer, start_ring3
from hostile.corpus import CORPUS, LIMITS, SERVER_FLAGS, SMUGGLED, SMUGGLED_BODY, Row
from hostile.wire import connect, fetch_hello, quiet_for, read_until_eof
from ring3.config import build_config
from ring3.events import Event, Request, RequestData, RequestEnded, RequestRejected, Response
from ring3.handlers import BodyReader
from ring3.http1.parser import H1Parser

REJECTED = [row for row in CORPUS if row.stage != "accept"]
ACCEPTED = [row for row in CORPUS if row.stage == "accept"]
ALL = pytest.mark.parametrize("row", CORPUS, ids=[row.name for row in CORPUS])
ONLY_REJECTED = pytest.mark.parametrize("row", REJECTED, ids=[row.name for row in REJECTED])
ONLY_ACCEPTED = pytest.mark.parametrize("row", ACCEPTED, ids=[row.name for row in ACCEPTED])

VALID = b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
# Rows refused only because their head never ends: the partial-head bound is exact up to one read by
# design (see H1Parser._check_partial_head), so the feed a head begins in mid-way is not counted.
UNTERMINATED = {"request-line-never-ends", "header-block-never-ends"}
EOF_WAIT = 2.0  # how long a connection that must close may take to do so
QUIET_WAIT = 0.2  # how long a connection that must stay open has to stay silent


# -- the parser -------------------------------------------------------------------------------------------


def parse(data: bytes) -> tuple[H1Parser, list[Event]]:
    parser = H1Parser(LIMITS)
    return parser, parser.receive_data(data)


def describe(events: list[Event]) -> list[str]:
    return [f"Rejected({e.status}: {e.reason})" if isinstance(e, RequestRejected) else type(e).__name__
            for e in events]


def rejection_status(events: list[Event]) -> int | None:
    statuses = [e.status for e in events if isinstance(e, RequestRejected)]
    assert len(statuses) <= 1, describe(events)
    return statuses[0] if statuses else None


@ALL
def test_parser_gives_the_expected_outcome(row: Row) -> None:
    parser, events = parse(row.raw)
    kinds = describe(events)
    if row.stage == "head":
        # Refused on the head alone: no Request event, so no handler runs for it.
        assert len(events) == 1 and isinstance(events[0], RequestRejected), kinds
        assert events[0].status == row.status, kinds
        assert parser.dead
    elif row.stage == "body":
        assert isinstance(events[0], Request), kinds
        assert isinstance(events[-1], RequestRejected), kinds
        assert events[-1].status == row.status, kinds
        assert not any(isinstance(e, RequestEnded) for e in events), kinds
        body = sum(len(e.data) for e in events if isinstance(e, RequestData))
        assert body <= LIMITS.max_body_size
        assert parser.dead
    else:
        assert rejection_status(events) is None, kinds
        assert [type(e) for e in events if not isinstance(e, RequestData)] == [Request, RequestEnded], kinds
        request = events[0]
        assert isinstance(request, Request)
        if row.host is not None:
            assert request.host == row.host


@ONLY_REJECTED
def test_parser_stays_dead_after_a_rejection(row: Row) -> None:
    parser, events = parse(row.raw + SMUGGLED)
    kinds = describe(events)
    assert isinstance(events[-1], RequestRejected), kinds
    assert rejection_status(events) == row.status, kinds
    # The smuggled request never surfaces: the only Request is the row's own head, if it was accepted.
    own = [e for e in parse(row.raw)[1] if isinstance(e, Request)]
    assert [e for e in events if isinstance(e, Request)] == own, kinds
    assert len(own) == (1 if row.stage == "body" else 0)
    assert parser.dead
    for more in (SMUGGLED, b"\r\n\r\n", b"0\r\n\r\n", row.raw):
        assert parser.receive_data(more) == []


@ONLY_ACCEPTED
def test_parser_after_an_accepted_row(row: Row) -> None:
    parser, events = parse(row.raw + SMUGGLED)
    kinds = describe(events)
    paths = [e.path for e in events if isinstance(e, Request)]
    if row.close:
        # The connection ends after the row's answer: the next bytes are refused or not parsed at all.
        assert len(paths) == 1, kinds
        assert parser.upgraded or rejection_status(events) is not None, kinds
    else:
        assert rejection_status(events) is None, kinds
        assert len(paths) == 2 and paths[1] == b"/hello.txt", kinds
        assert isinstance(events[-1], RequestEnded), kinds


def statuses_by_arrival(raw: bytes) -> dict[str, int | None]:
    """The rejection status of `raw` however it arrives: whole, byte by byte, in 7-byte pieces, and
    right behind a valid request in the same read."""
    outcomes: dict[str, int | None] = {}
    for how, pieces in (("whole", [raw]),
                        ("bytewise", [raw[i:i + 1] for i in range(len(raw))]),
                        ("7-byte pieces", [raw[i:i + 7] for i in range(0, len(raw), 7)])):
        parser = H1Parser(LIMITS)
        events = [event for piece in pieces for event in parser.receive_data(piece)]
        outcomes[how] = rejection_status(events)
    parser = H1Parser(LIMITS)
    events = parser.receive_data(VALID + raw)
    assert isinstance(events[0], Request) and events[0].path == b"/first", describe(events)
    outcomes["behind a valid request"] = rejection_status(events)
    return outcomes


@pytest.mark.parametrize("row", [r for r in REJECTED if r.name not in UNTERMINATED],
                         ids=[r.name for r in REJECTED if r.name not in UNTERMINATED])
def test_rejection_status_does_not_depend_on_how_the_bytes_arrive(row: Row) -> None:
    outcomes = statuses_by_arrival(row.raw)
    assert outcomes == dict.fromkeys(outcomes, row.status), outcomes


@pytest.mark.parametrize("row", [r for r in REJECTED if r.name in UNTERMINATED],
                         ids=[r.name for r in REJECTED if r.name in UNTERMINATED])
def test_unterminated_heads_are_refused_however_they_arrive(row: Row) -> None:
    outcomes = statuses_by_arrival(row.raw)
    # Behind a valid request the head began mid-read and is bounded from the next read on.
    del outcomes["behind a valid request"]
    assert outcomes == dict.fromkeys(outcomes, row.status), outcomes


# -- a real `ring3 serve` ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "site"
    root.mkdir()
    (root / "hello.txt").write_bytes(SMUGGLED_BODY)
    (root / "index.html").write_text("<!doctype html><title>home</title>\n")
    return root


@pytest.fixture(scope="module")
def hostile_server(hostile_site: Path) -> Iterator[RunningServer]:
    """One `ring3 serve` for the whole corpus, with the corpus limits: every row hits the same process,
    so a row that hurts the server hurts the rows after it too."""
    server = start_ring3([str(hostile_site), "--listen", "127.0.0.1:0", "--access-log", "off",
                          *SERVER_FLAGS], hostile_site.parent)
    yield server
    server.stop()


def check_exchange(port: int, row: Row, first_status: int, second_status: int) -> None:
    """Send the row and the smuggled request in one write; check everything that comes back, and report
    every broken promise at once (a wrong status and an answered smuggled request are different bugs)."""
    problems: list[str] = []
    with connect(port) as sock:
        sock.sendall(row.raw + SMUGGLED)
        reader = ResponseReader(sock, timeout=5.0)
        status, headers, body = reader.read()
        if status != first_status:
            problems.append(f"answered {status}, expected {first_status}: {body[:80]!r}")
        if b"Traceback" in body:
            problems.append("a traceback reached the client")
        if row.stage != "accept" or row.close:
            # Framing in doubt (or a connection that ends anyway): nothing more may come, then a close.
            if row.stage == "head" and headers.get(b"connection") != b"close":
                problems.append("the rejection did not say Connection: close")
            rest, closed = read_until_eof(sock, EOF_WAIT)
            rest = reader.buffer + rest
            if rest:
                problems.append(f"bytes after the first answer (the smuggled request was answered?): "
                                f"{rest[:160]!r}")
            if not closed:
                problems.append(f"the connection was still open {EOF_WAIT} s later")
        else:
            try:
                status, _, body = reader.read()
            except (AssertionError, OSError) as exc:  # closed, reset or silent
                status, body = 0, f"no answer: {exc}".encode()
            if status != second_status or b"Traceback" in body:
                problems.append(f"the pipelined request got {status}: {body[:80]!r}")
            extra = reader.buffer or quiet_for(sock, QUIET_WAIT)
            if extra is not None:
                problems.append(f"a keep-alive connection sent more or closed: {extra[:160]!r}")
    assert not problems, "; ".join(problems)


@ALL
def test_served_over_a_raw_socket(hostile_server: RunningServer, row: Row) -> None:
    errors_before = len(hostile_server.stderr())
    check_exchange(hostile_server.port, row, row.served_status, 200)
    # Nobody else pays for it: the server lives on and a fresh client is served.
    assert hostile_server.process.poll() is None
    status, body, _ = fetch_hello(hostile_server.port)
    assert (status, body) == (200, SMUGGLED_BODY)
    assert "Traceback" not in hostile_server.stderr()[errors_before:]


# -- a handler that reads the body before answering --------------------------------------------------------


async def read_body_then_answer(request: Request, body: BodyReader) -> Response:
    data = await body.read_all()
    return Response(status=200, headers=[(b"content-type", b"text/plain")],
                    body=b"read %d body bytes\n" % len(data))


@pytest.fixture(scope="module")
def body_reader_server() -> Iterator[InProcessServer]:
    values: dict[tuple[str, str], object] = {
        ("server", "listen"): ["127.0.0.1:0"], ("server", "access_log"): "off",
        ("limits", "max_request_line"): LIMITS.max_request_line,
        ("limits", "max_header_bytes"): LIMITS.max_header_bytes,
        ("limits", "max_header_count"): LIMITS.max_header_count,
        ("limits", "max_body_size"): LIMITS.max_body_size,
        ("http2", "cleartext"): False,
    }
    server = InProcessServer(read_body_then_answer, build_config(None, "<test>", values))
    yield server
    server.stop()


@ALL
def test_the_exact_status_reaches_a_body_reading_handler_s_client(body_reader_server: InProcessServer,
                                                                   row: Row) -> None:
    expected = 200 if row.stage == "accept" else row.status
    check_exchange(body_reader_server.port, row, expected, 200)
    status, _, _ = fetch_hello(body_reader_server.port)
    assert status == 200
