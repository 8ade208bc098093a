"""H1Parser: bytes in, events out. No sockets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ring3.events import Event, Request, RequestData, RequestEnded, RequestRejected
from ring3.http1.parser import _HEAD_FRAMING_SLACK as HEAD_FRAMING_SLACK
from ring3.http1.parser import H1Limits, H1Parser

# -- helpers ----------------------------------------------------------------------------------------


def parse(data: bytes, **limits: int) -> list[Event]:
    """Feed `data` in one piece to a fresh parser."""
    return H1Parser(H1Limits(**limits)).receive_data(data)


def feed(chunks: Iterable[bytes], **limits: int) -> list[Event]:
    """Feed `chunks` one after another to a fresh parser; all the events, in order."""
    parser = H1Parser(H1Limits(**limits))
    events: list[Event] = []
    for chunk in chunks:
        events += parser.receive_data(chunk)
    return events


def bytewise(data: bytes, **limits: int) -> list[Event]:
    return feed((data[i:i + 1] for i in range(len(data))), **limits)


def merged(events: Sequence[Event]) -> list[Event]:
    """Events with adjacent RequestData joined: how a body is cut depends on how the bytes arrive."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, RequestData) and out and isinstance(out[-1], RequestData):
            out[-1] = RequestData(data=out[-1].data + event.data, stream_id=event.stream_id)
        else:
            out.append(event)
    return out


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    version: bytes = b"HTTP/1.1",
    headers: Sequence[tuple[bytes, bytes]] = ((b"Host", b"example.com"),),
    body: bytes = b"",
) -> bytes:
    """Raw request bytes; add Content-Length yourself when you want one."""
    head = b"%s %s %s\r\n" % (method, target, version)
    head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
    return head + b"\r\n" + body


def only_request(events: Sequence[Event]) -> Request:
    """The Request of a bodiless exchange that must be accepted."""
    assert len(events) == 2, events
    head, end = events
    assert isinstance(head, Request), events
    assert isinstance(end, RequestEnded), events
    return head


def rejection(events: Sequence[Event]) -> RequestRejected:
    """The RequestRejected that must end `events`; no request may have completed before it."""
    assert events, "expected a rejection, got no events"
    last = events[-1]
    assert isinstance(last, RequestRejected), events
    assert not any(isinstance(e, RequestEnded) for e in events), events
    return last


def body_of(events: Sequence[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, RequestData))


def kinds(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- simple requests --------------------------------------------------------------------------------


def test_simple_get() -> None:
    events = parse(b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nX-Mixed-Case: VaLuE\r\n\r\n")
    req = only_request(events)
    assert req.method == b"GET"
    assert req.target == b"/index.html"
    assert req.path == b"/index.html"
    assert req.query == b""
    assert req.http_version == "1.1"
    assert req.host == b"example.com"
    # names lower-cased, values as received, order kept
    assert req.headers == [(b"host", b"example.com"), (b"x-mixed-case", b"VaLuE")]
    assert req.header(b"x-mixed-case") == b"VaLuE"
    assert req.header(b"absent") is None
    assert req.keep_alive is True
    assert req.expect_continue is False
    assert req.has_body is False


def test_query_is_split_from_path_and_fragment_dropped() -> None:
    req = only_request(parse(request(target=b"/a/b?x=1&y=%20#frag")))
    assert req.path == b"/a/b"
    assert req.query == b"x=1&y=%20"
    assert req.target == b"/a/b?x=1&y=%20#frag"


@pytest.mark.parametrize(
    ("version", "headers", "keep_alive"),
    [
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", [(b"Connection", b"keep-alive")], True),
        (b"HTTP/1.1", [(b"Host", b"x")], True),
        (b"HTTP/1.1", [(b"Host", b"x"), (b"Connection", b"close")], False),
        (b"HTTP/1.1", [(b"Host", b"x"), (b"Connection", b"Close")], False),
    ],
)
def test_keep_alive_rules(version: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
    req = only_request(parse(request(version=version, headers=headers)))
    assert req.keep_alive is keep_alive
    assert req.http_version == version.decode()[5:]


def test_http10_without_host_is_accepted() -> None:
    req = only_request(parse(request(version=b"HTTP/1.0", headers=[])))
    assert req.host == b""
    assert req.http_version == "1.0"


def test_head() -> None:
    req = only_request(parse(request(method=b"HEAD", target=b"/x")))
    assert req.method == b"HEAD"
    assert req.path == b"/x"
    assert req.has_body is False


def test_options_asterisk() -> None:
    req = only_request(parse(request(method=b"OPTIONS", target=b"*")))
    assert req.method == b"OPTIONS"
    assert req.target == b"*"
    assert req.path == b"*"
    assert req.query == b""


def test_asterisk_with_get_is_400() -> None:
    assert rejection(parse(request(target=b"*"))).status == 400


# -- absolute-form and Host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "path", "query"),
    [
        (b"http://example.org:8080/a/b?q=1", b"example.org:8080", b"/a/b", b"q=1"),
        (b"https://example.org/", b"example.org", b"/", b""),
        (b"http://example.org", b"example.org", b"/", b""),
        (b"http://example.org?q=2", b"example.org", b"/", b"q=2"),
        (b"HTTP://[::1]:81/x", b"[::1]:81", b"/x", b""),
    ],
)
def test_absolute_form_takes_host_from_the_uri(target: bytes, host: bytes, path: bytes,
                                               query: bytes) -> None:
    req = only_request(parse(request(target=target, headers=[(b"Host", b"ignored.example")])))
    assert (req.host, req.path, req.query) == (host, path, query)
    assert req.target == target


@pytest.mark.parametrize("target", [b"http://user@example.org/", b"http:///nohost", b"ftp://x/"])
def test_bad_absolute_form_is_400(target: bytes) -> None:
    assert rejection(parse(request(target=target))).status == 400


def test_missing_host_on_http11_is_400() -> None:
    assert rejection(parse(request(headers=[]))).status == 400


def test_duplicate_host_is_400() -> None:
    events = parse(request(headers=[(b"Host", b"a.example"), (b"Host", b"b.example")]))
    assert rejection(events).status == 400


@pytest.mark.parametrize("host", [b"a b", b"user@host", b"host/path"])
def test_invalid_host_is_400(host: bytes) -> None:
    assert rejection(parse(request(headers=[(b"Host", host)]))).status == 400


# -- versions and methods ---------------------------------------------------------------------------


def test_http09_request_is_505() -> None:
    # An HTTP/0.9 client sends this line and then waits for the answer: no header block follows.
    assert rejection(parse(b"GET /\r\n")).status == 505


def test_http09_request_with_blank_line_is_505() -> None:
    assert rejection(parse(b"GET /\r\n\r\n")).status == 505


@pytest.mark.parametrize(
    "data",
    [
        request(version=b"HTTP/3.0"),
        request(version=b"HTTP/2.0"),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
    ids=["http3", "http2-line", "h2-preface"],
)
def test_unsupported_versions_are_505(data: bytes) -> None:
    assert rejection(parse(data)).status == 505


def test_unknown_method_token_is_501() -> None:
    assert rejection(parse(request(method=b"FOO"))).status == 501


@pytest.mark.parametrize("method", [b"G@T", b"\x01\x02", b"GE(T"])
def test_garbage_method_is_400(method: bytes) -> None:
    assert rejection(parse(request(method=method))).status == 400


def test_connect_is_501() -> None:
    data = request(method=b"CONNECT", target=b"example.com:443",
                   headers=[(b"Host", b"example.com:443")])
    assert rejection(parse(data)).status == 501


# -- bodies -----------------------------------------------------------------------------------------


def test_content_length_body() -> None:
    data = request(b"POST", b"/up", headers=[(b"Host", b"x"), (b"Content-Length", b"11")],
                   body=b"hello world")
    events = parse(data)
    assert kinds(events)[0] == "Request"
    assert isinstance(events[-1], RequestEnded)
    req = events[0]
    assert isinstance(req, Request)
    assert req.has_body is True
    assert body_of(events) == b"hello world"


def test_content_length_body_incomplete_waits() -> None:
    parser = H1Parser()
    data = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"10")], body=b"abc")
    events = parser.receive_data(data)
    assert kinds(events) == ["Request", "RequestData"]
    assert body_of(events) == b"abc"
    assert parser.in_body
    events = parser.receive_data(b"defghij")
    assert events == [RequestData(data=b"defghij"), RequestEnded()]
    assert not parser.in_body


def test_content_length_zero_has_no_body() -> None:
    req = only_request(parse(request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"0")])))
    assert req.has_body is False


CHUNKED = request(
    b"POST", b"/c", headers=[(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")],
    body=b"3\r\nabc\r\na;ext=1\r\n0123456789\r\n0\r\n\r\n",
)


def test_chunked_body() -> None:
    events = parse(CHUNKED)
    assert isinstance(events[0], Request)
    assert events[0].has_body is True
    assert isinstance(events[-1], RequestEnded)
    assert body_of(events) == b"abc0123456789"


@pytest.mark.parametrize("cut", [len(CHUNKED) - n for n in (1, 3, 6, 12, 17, 20, 25)])
def test_chunked_body_split_across_feeds(cut: int) -> None:
    events = feed([CHUNKED[:cut], CHUNKED[cut:]])
    assert merged(events) == merged(parse(CHUNKED))
    assert body_of(events) == b"abc0123456789"


def test_chunked_body_with_trailer() -> None:
    data = request(b"POST", headers=[(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")],
                   body=b"2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n")
    events = parse(data)
    assert kinds(merged(events)) == ["Request", "RequestData", "RequestEnded"]
    assert body_of(events) == b"hi"


# -- pipelining and splitting -----------------------------------------------------------------------

PIPELINE = (
    request(target=b"/one")
    + request(b"POST", b"/two", headers=[(b"Host", b"x"), (b"Content-Length", b"5")], body=b"12345")
    + request(b"POST", b"/three", headers=[(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")],
              body=b"4\r\nwxyz\r\n0\r\n\r\n")
    + request(b"HEAD", b"/four?q")
)


def test_pipelined_requests_in_one_feed() -> None:
    events = merged(parse(PIPELINE))
    assert kinds(events) == [
        "Request", "RequestEnded",
        "Request", "RequestData", "RequestEnded",
        "Request", "RequestData", "RequestEnded",
        "Request", "RequestEnded",
    ]
    heads = [e for e in events if isinstance(e, Request)]
    assert [(r.method, r.path) for r in heads] == [
        (b"GET", b"/one"), (b"POST", b"/two"), (b"POST", b"/three"), (b"HEAD", b"/four")]
    assert [e.data for e in events if isinstance(e, RequestData)] == [b"12345", b"wxyz"]


def test_pipeline_split_at_every_offset_equals_one_feed() -> None:
    whole = merged(parse(PIPELINE))
    for cut in range(1, len(PIPELINE)):
        assert merged(feed([PIPELINE[:cut], PIPELINE[cut:]])) == whole, cut


def test_pipeline_fed_byte_by_byte_equals_one_feed() -> None:
    assert merged(bytewise(PIPELINE)) == merged(parse(PIPELINE))


def test_events_arrive_as_soon_as_their_bytes_do() -> None:
    parser = H1Parser()
    first, second = request(target=b"/1"), request(target=b"/2")
    assert kinds(parser.receive_data(first + second[:5])) == ["Request", "RequestEnded"]
    assert parser.in_head
    assert kinds(parser.receive_data(second[5:])) == ["Request", "RequestEnded"]
    assert not parser.in_head


# -- Expect -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "version", "framing", "expected"),
    [
        (b"GET", b"HTTP/1.1", [], False),
        (b"POST", b"HTTP/1.1", [(b"Content-Length", b"0")], False),
        (b"POST", b"HTTP/1.1", [(b"Content-Length", b"3")], True),
        (b"POST", b"HTTP/1.1", [(b"Transfer-Encoding", b"chunked")], True),
        (b"POST", b"HTTP/1.0", [(b"Content-Length", b"3")], False),  # RFC 9110 10.1.1
    ],
)
def test_expect_continue_only_with_a_body(method: bytes, version: bytes,
                                          framing: list[tuple[bytes, bytes]],
                                          expected: bool) -> None:
    headers = [(b"Host", b"x"), (b"Expect", b"100-continue"), *framing]
    events = parse(request(method, version=version, headers=headers))
    assert isinstance(events[0], Request)
    assert events[0].expect_continue is expected


def test_expect_is_case_insensitive() -> None:
    headers = [(b"Host", b"x"), (b"Expect", b"100-Continue"), (b"Content-Length", b"1")]
    events = parse(request(b"PUT", headers=headers))
    assert isinstance(events[0], Request)
    assert events[0].expect_continue is True


def test_unknown_expectation_is_417() -> None:
    headers = [(b"Host", b"x"), (b"Expect", b"foo"), (b"Content-Length", b"3")]
    events = parse(request(b"POST", headers=headers, body=b"abc"))
    assert rejection(events).status == 417
    assert events == [events[-1]]


# -- limits: the limit is accepted, one more is refused ---------------------------------------------

LINE = 64


def test_request_target_at_the_limit_is_accepted() -> None:
    target = b"/" + b"a" * (LINE - 1)
    req = only_request(parse(request(target=target), max_request_line=LINE))
    assert req.path == target


def test_request_target_over_the_limit_is_414() -> None:
    target = b"/" + b"a" * LINE
    assert rejection(parse(request(target=target), max_request_line=LINE)).status == 414


def test_partial_request_line_at_the_limit_waits() -> None:
    parser = H1Parser(H1Limits(max_request_line=LINE))
    assert parser.receive_data(b"GET /" + b"a" * (LINE - 1)) == []
    assert not parser.dead
    assert kinds(parser.receive_data(b" HTTP/1.1\r\nHost: x\r\n\r\n")) == ["Request", "RequestEnded"]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_partial_request_line_over_the_limit_is_414(chunk: int) -> None:
    data = b"GET /" + b"a" * LINE  # no CRLF: the line never ends
    events = feed((data[i:i + chunk] for i in range(0, len(data), chunk)), max_request_line=LINE)
    assert events == [events[-1]]
    assert rejection(events).status == 414


HEAD_LIMIT = 256


def counted_head_size(target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> int:
    """The head size as max_header_bytes counts it: the target plus each `name: value\\r\\n`."""
    return len(target) + sum(len(name) + len(value) + 4 for name, value in headers)


def head_of_size(size: int) -> bytes:
    """A complete GET whose counted head size is exactly `size`."""
    base = [(b"Host", b"x"), (b"X-Pad", b"")]
    pad = size - counted_head_size(b"/", base)
    assert pad > 0
    return request(headers=[(b"Host", b"x"), (b"X-Pad", b"p" * pad)])


def test_header_bytes_at_the_limit_are_accepted() -> None:
    only_request(parse(head_of_size(HEAD_LIMIT), max_header_bytes=HEAD_LIMIT))


def test_header_bytes_over_the_limit_are_431() -> None:
    events = parse(head_of_size(HEAD_LIMIT + 1), max_header_bytes=HEAD_LIMIT)
    assert rejection(events).status == 431


def test_partial_head_at_the_limit_waits() -> None:
    prefix = b"GET / HTTP/1.1\r\nX-Pad: "
    parser = H1Parser(H1Limits(max_header_bytes=HEAD_LIMIT))
    assert parser.receive_data(prefix + b"p" * (HEAD_LIMIT - len(prefix))) == []
    assert not parser.dead


@pytest.mark.parametrize("chunk", [1, 50, 10_000])
def test_partial_head_over_the_limit_is_431(chunk: int) -> None:
    prefix = b"GET / HTTP/1.1\r\nX-Pad: "
    # No end of head in sight. Raw bytes get the parser's framing allowance on top of the field limit.
    data = prefix + b"p" * (HEAD_LIMIT + 1 + HEAD_FRAMING_SLACK - len(prefix))
    events = feed((data[i:i + chunk] for i in range(0, len(data), chunk)),
                  max_header_bytes=HEAD_LIMIT)
    assert events == [events[-1]]
    assert rejection(events).status == 431


@pytest.mark.parametrize("chunk", [1, 10, 100])
def test_header_bytes_limit_does_not_depend_on_how_the_head_arrives(chunk: int) -> None:
    data = head_of_size(HEAD_LIMIT)
    chunks = (data[i:i + chunk] for i in range(0, len(data), chunk))
    assert kinds(feed(chunks, max_header_bytes=HEAD_LIMIT)) == ["Request", "RequestEnded"]


def test_large_head_in_tcp_segments_is_accepted_under_the_default_limit() -> None:
    # A 9 KB Cookie is well under the default 16 KiB; it arrives as 1460-byte segments.
    data = request(headers=[(b"Host", b"x"), (b"Cookie", b"c" * 9000)])
    events = feed(data[i:i + 1460] for i in range(0, len(data), 1460))
    assert kinds(events) == ["Request", "RequestEnded"]


def test_body_bytes_before_a_partial_head_do_not_count_as_head() -> None:
    # A body, then the start of the next head, in one read; the rest of that head comes later.
    body = b"y" * 300
    first = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"%d" % len(body))],
                    body=body)
    data = first + request(target=b"/next")
    cut = len(first) + 10
    split = feed([data[:cut], data[cut:]], max_header_bytes=HEAD_LIMIT)
    assert merged(split) == merged(parse(data, max_header_bytes=HEAD_LIMIT))
    assert kinds(merged(split)) == ["Request", "RequestData", "RequestEnded", "Request",
                                    "RequestEnded"]


COUNT = 5


def test_header_count_at_the_limit_is_accepted() -> None:
    headers = [(b"Host", b"x")] + [(b"X-H%d" % i, b"v") for i in range(COUNT - 1)]
    req = only_request(parse(request(headers=headers), max_header_count=COUNT))
    assert len(req.headers) == COUNT


def test_header_count_over_the_limit_is_431() -> None:
    headers = [(b"Host", b"x")] + [(b"X-H%d" % i, b"v") for i in range(COUNT)]
    assert rejection(parse(request(headers=headers), max_header_count=COUNT)).status == 431


BODY = 16


def test_content_length_at_the_limit_is_accepted() -> None:
    data = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"%d" % BODY)],
                   body=b"b" * BODY)
    events = parse(data, max_body_size=BODY)
    assert isinstance(events[-1], RequestEnded)
    assert body_of(events) == b"b" * BODY


def test_content_length_over_the_limit_is_413_before_the_body() -> None:
    data = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"%d" % (BODY + 1))])
    events = parse(data, max_body_size=BODY)
    assert events == [events[-1]]  # refused on the head alone: no need to wait for the body
    assert rejection(events).status == 413


def test_zero_body_limit() -> None:
    ok = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"0")])
    only_request(parse(ok, max_body_size=0))
    over = request(b"POST", headers=[(b"Host", b"x"), (b"Content-Length", b"1")], body=b"x")
    assert rejection(parse(over, max_body_size=0)).status == 413


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return request(b"POST", headers=[(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")],
                   body=body)


def test_chunked_body_at_the_limit_is_accepted() -> None:
    events = parse(chunked(b"a" * 10, b"b" * (BODY - 10)), max_body_size=BODY)
    assert isinstance(events[-1], RequestEnded)
    assert len(body_of(events)) == BODY


def test_chunked_body_over_the_limit_is_413() -> None:
    events = parse(chunked(b"a" * 10, b"b" * (BODY - 9)), max_body_size=BODY)
    assert isinstance(events[0], Request)
    assert rejection(events).status == 413
    assert len(body_of(events)) <= BODY  # nothing past the limit is handed on


# -- request smuggling basics -----------------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Content-Length: 3\r\n\r\nabc",
    "cl-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "negative-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "te-chunked-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                       b"0\r\n\r\n",
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "hex-prefix-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"0x3\r\nabc\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("data", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggling_attempts_are_400(data: bytes) -> None:
    events = parse(data)
    assert rejection(events).status == 400
    assert not any(isinstance(e, RequestData) for e in events)


@pytest.mark.parametrize("data", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggling_attempts_are_400_byte_by_byte(data: bytes) -> None:
    assert rejection(bytewise(data)).status == 400


# -- after a rejection, the parser is dead ----------------------------------------------------------


@pytest.mark.parametrize("bad", [request(headers=[]), b"FOO / HTTP/1.1\r\n\r\n", SMUGGLING["obs-fold"]])
def test_parser_is_dead_after_a_rejection(bad: bytes) -> None:
    parser = H1Parser()
    events = parser.receive_data(bad + request())  # a valid request right behind the bad one
    assert isinstance(events[-1], RequestRejected)
    assert sum(isinstance(e, RequestRejected) for e in events) == 1
    assert parser.dead
    assert parser.receive_data(request()) == []
    assert parser.receive_data(b"\r\n\r\n") == []


def test_rejection_after_a_good_request_keeps_the_good_events() -> None:
    events = parse(request(target=b"/ok") + request(headers=[]))
    assert kinds(events) == ["Request", "RequestEnded", "RequestRejected"]
    assert isinstance(events[0], Request)
    assert events[0].path == b"/ok"


# -- properties -------------------------------------------------------------------------------------

EVENT_TYPES = (Request, RequestData, RequestEnded, RequestRejected)


class Grammar:
    """Checks an event stream: (Request RequestData* RequestEnded)* then maybe one RequestRejected."""

    def __init__(self) -> None:
        self.state = "idle"

    def check(self, events: Sequence[Event]) -> None:
        for event in events:
            assert isinstance(event, EVENT_TYPES), event
            assert self.state != "dead", f"{event!r} after a rejection"
            if isinstance(event, RequestRejected):
                assert 400 <= event.status <= 599, event
                self.state = "dead"
            elif isinstance(event, Request):
                assert self.state == "idle", event
                self.state = "body"
            else:
                assert self.state == "body", event
                if isinstance(event, RequestEnded):
                    self.state = "idle"


def feed_in_pieces(data: bytes, cuts: Sequence[int], **limits: int) -> list[Event]:
    """Feed `data` cut at `cuts`, checking the event grammar and the dead parser as it goes."""
    parser = H1Parser(H1Limits(**limits))
    grammar = Grammar()
    events: list[Event] = []
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in pairwise(bounds):
        got = parser.receive_data(data[start:end])
        assert isinstance(got, list)
        if grammar.state == "dead":
            assert got == []
        grammar.check(got)
        events += got
    assert parser.dead == (grammar.state == "dead")
    return events


HTTPISH = st.sampled_from([
    b"GET", b"POST", b"HEAD", b" ", b"/", b"?", b"*", b"\r\n", b"\n", b"\r", b"HTTP/1.1", b"HTTP/1.0",
    b"Host: x", b"Content-Length: ", b"Transfer-Encoding: chunked", b"Expect: 100-continue",
    b"Connection: close", b"0", b"3", b"abc", b":", b"\x00", b"\xff", b"\t", b"-1", b"99999999999",
])
FUZZ_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(HTTPISH, max_size=40).map(b"".join),
)
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=FUZZ_BYTES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
       small_limits=st.booleans())
def test_random_bytes_never_raise(data: bytes, cuts: list[int], small_limits: bool) -> None:
    limits = ({"max_request_line": 16, "max_header_bytes": 64, "max_header_count": 2,
               "max_body_size": 4} if small_limits else {})
    feed_in_pieces(data, cuts, **limits)


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(
    lambda s: "x-" + s)
VALUE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789 ;=,/", max_size=30).map(str.strip)
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", min_size=1, max_size=10)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, tuple[bytes, bytes, bytes]]:
    """One valid request and what it must parse to: (method, path, body)."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS"]))
    path = ("/" + "/".join(draw(st.lists(SEGMENT, max_size=4)))).encode()
    query = draw(st.one_of(st.just(""), VALUE.map(lambda v: v.replace(" ", "+"))))
    target = path + (b"?" + query.encode() if query else b"")
    headers = [(b"Host", b"example.com")]
    headers += [(n.encode(), v.encode()) for n, v in draw(st.lists(st.tuples(TOKEN, VALUE),
                                                                   max_size=5))]
    body = b""
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "length":
        body = draw(st.binary(max_size=200))
        headers.append((b"Content-Length", b"%d" % len(body)))
        raw_body = body
    elif framing == "chunked":
        pieces = draw(st.lists(st.binary(min_size=1, max_size=50), max_size=4))
        body = b"".join(pieces)
        headers.append((b"Transfer-Encoding", b"chunked"))
        raw_body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        raw_body = b""
    return request(method, target, headers=headers, body=raw_body), (method, path, body)


@FUZZ
@given(reqs=st.lists(valid_requests(), min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10))
def test_valid_pipelines_parse_the_same_however_they_are_split(
        reqs: list[tuple[bytes, tuple[bytes, bytes, bytes]]], cuts: list[int]) -> None:
    data = b"".join(raw for raw, _ in reqs)
    whole = merged(parse(data))
    # what each request must parse to
    heads = [e for e in whole if isinstance(e, Request)]
    assert not any(isinstance(e, RequestRejected) for e in whole), whole
    assert [(r.method, r.path) for r in heads] == [(m, p) for _, (m, p, _) in reqs]
    assert sum(isinstance(e, RequestEnded) for e in whole) == len(reqs)
    bodies = [b for _, (_, _, b) in reqs if b]
    assert [e.data for e in whole if isinstance(e, RequestData)] == bodies
    # and splitting changes nothing
    assert merged(feed_in_pieces(data, cuts)) == whole
