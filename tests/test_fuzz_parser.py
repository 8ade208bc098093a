"""A bounded fuzz run of H1Parser in the suite: arbitrary bytes and mutated valid requests, in random pieces.

The invariants live in tests/hostile/invariants.py (shared with bench/fuzz/fuzz_parser.py, which runs the
same target for hours). Here each property gets a few hundred examples and no example database, so the
suite stays fast and deterministic in what it costs.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile.corpus import CORPUS
from hostile.invariants import (
    DEFAULT_LIMITS,
    MUTATIONS,
    SEEDS,
    SMALL_LIMITS,
    TOKENS,
    InvariantBroken,
    check_feed,
    cut,
    mutate,
)
from ring3.events import Request, RequestData, RequestEnded, RequestRejected
from ring3.http1.parser import H1Limits

BOUNDED = settings(max_examples=300, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LIMITS = st.sampled_from([DEFAULT_LIMITS, SMALL_LIMITS])
CUTS = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)
ONE_MUTATION = st.tuples(st.integers(0, MUTATIONS - 1), st.integers(0, 1 << 16), st.integers(0, 255),
                         st.sampled_from(TOKENS))
ALL_SEEDS = SEEDS + tuple(row.raw for row in CORPUS)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(ALL_SEEDS))
    for op, position, amount, token in draw(st.lists(ONE_MUTATION, max_size=6)):
        data = mutate(data, op, position, amount, token)
    return data


@BOUNDED
@given(data=st.binary(max_size=512), cuts=CUTS, limits=LIMITS)
def test_arbitrary_bytes_keep_the_invariants(data: bytes, cuts: list[int], limits: H1Limits) -> None:
    check_feed(cut(data, cuts), limits)


@BOUNDED
@given(data=mutated_requests(), cuts=CUTS, limits=LIMITS)
def test_mutated_requests_keep_the_invariants(data: bytes, cuts: list[int], limits: H1Limits) -> None:
    check_feed(cut(data, cuts), limits)


@BOUNDED
@given(data=mutated_requests(), cuts=CUTS)
def test_bytes_after_a_rejection_are_never_parsed(data: bytes, cuts: list[int]) -> None:
    pieces = cut(data, cuts)
    events = check_feed(pieces)
    if any(isinstance(e, RequestRejected) for e in events):
        # Whatever follows, even perfectly valid requests, is dead bytes (check_feed also checks that
        # every call after the rejection returns []).
        assert check_feed([*pieces, SEEDS[0], SEEDS[3]]) == events


# Valid requests that keep the connection open, so any number of them can be pipelined.
KEEP_ALIVE_SEEDS = SEEDS[:8]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(pattern=st.lists(st.sampled_from(KEEP_ALIVE_SEEDS), min_size=1, max_size=6),
       count=st.integers(min_value=200, max_value=800),
       cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_long_valid_pipelines_parse_the_same_however_they_are_split(pattern: list[bytes], count: int,
                                                                    cuts: list[int]) -> None:
    """Tens of KiB of valid pipelined requests, in reads of any size: every request comes out, and
    nothing is refused (a read that starts inside one head and ends inside another is not one head)."""
    parts = (pattern * count)[:count]
    data = b"".join(parts)
    pieces = cut(data, cuts)
    events = check_feed(pieces)
    rejected = [e for e in events if isinstance(e, RequestRejected)]
    assert not rejected, (rejected, len(data), [len(piece) for piece in pieces])
    assert sum(isinstance(e, Request) for e in events) == count


# -- inputs the long fuzz runs found (bench/fuzz), kept as regressions ------------------------------------

FOUND = {
    # HTTP/0.9 line, then a partial head over the limit in the same read: 505 *and* 431 came out.
    "http09-then-oversized-partial-head": [b"GET /a\r\nX: " + b"a" * 17_000],
}


@pytest.mark.parametrize("pieces", list(FOUND.values()), ids=list(FOUND))
def test_inputs_found_by_fuzzing(pieces: list[bytes]) -> None:
    check_feed(pieces)


# -- the checker itself must be able to fail ---------------------------------------------------------------


class Liar:
    """A stand-in parser that emits whatever it is told to, to show check_feed catches each lie."""

    def __init__(self, script: list[list[object]]) -> None:
        self.script = script
        self.dead = False
        self.upgraded = False

    def receive_data(self, data: bytes) -> list[object]:
        events = self.script.pop(0) if self.script else []
        self.dead = self.dead or any(isinstance(e, RequestRejected) for e in events)
        return events


REQ = Request(method=b"GET", target=b"/", path=b"/", query=b"", http_version="1.1", headers=[],
              host=b"x", keep_alive=True)
LIES = {
    "data-before-request": [[RequestData(data=b"x")]],
    "two-requests-at-once": [[REQ, REQ]],
    "event-after-rejection": [[RequestRejected(status=400, reason="r"), REQ]],
    "undocumented-status": [[RequestRejected(status=418, reason="r")]],
    "alive-after-rejection": [[RequestRejected(status=400, reason="r")], [REQ]],
    "more-body-than-bytes": [[REQ, RequestData(data=b"x" * 100)]],
    "not-an-event": [["surprise"]],
}


@pytest.mark.parametrize("script", list(LIES.values()), ids=list(LIES))
def test_check_feed_catches_a_lying_parser(script: list[list[object]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import hostile.invariants as invariants

    monkeypatch.setattr(invariants, "H1Parser", lambda limits: Liar(script))
    with pytest.raises(InvariantBroken):
        check_feed([b"ab", b"cd"])


def test_check_feed_accepts_a_valid_pipeline() -> None:
    events = check_feed(cut(SEEDS[4] + SEEDS[0], [7, 50, 51, 90]))
    assert [type(e) for e in events if not isinstance(e, RequestData)] == [Request, RequestEnded] * 2
