"""A bounded fuzz run of the sans-IO HTTP/2 core: random frames (valid headers, mutated fields, random
types, flags, lengths and payloads) and random bytes, in random pieces.

The invariants: the core never raises; what it writes is always a sequence of well-formed frames; once
it has sent GOAWAY for an error it reports CLOSE once and then takes nothing more; every REQUEST it
reports is a well-formed request (its pseudo-headers were valid: the Request has a method, a path that
starts with "/" or is "*", and no connection-specific field).
"""

from __future__ import annotations

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ring3.events import Request
from ring3.http2 import frames as f
from ring3.http2 import protocol as p

BOUNDED = settings(max_examples=300, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FORBIDDEN = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}

FIELDS = st.lists(st.sampled_from([
    (":method", "GET"), (":method", "POST"), (":method", "CONNECT"), (":scheme", "https"), (":path", "/"),
    (":path", "/a?b"), (":path", ""), (":path", "*"), (":authority", "x.test"), (":protocol", "websocket"),
    ("host", "x.test"), ("host", "y.test"), ("te", "trailers"), ("te", "gzip"), ("connection", "close"),
    ("content-length", "3"), ("content-length", "x"), ("cookie", "a=1"), ("X-Up", "1"), ("x-v", " sp"),
    (":bogus", "1"), ("expect", "100-continue"), ("accept", "*/*"),
]), max_size=10)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([f.DATA, f.HEADERS, f.PRIORITY, f.RST_STREAM, f.SETTINGS, f.PUSH_PROMISE,
                                 f.PING, f.GOAWAY, f.WINDOW_UPDATE, f.CONTINUATION, f.PRIORITY_UPDATE, 0x42]))
    stream_id = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 99, (1 << 31) - 1]))
    flags = draw(st.integers(0, 255))
    if kind == f.HEADERS and draw(st.booleans()):
        payload = hpack.Encoder().encode(draw(FIELDS))
        if flags & f.FLAG_PADDED:
            payload = b"\x02" + payload + b"\x00\x00"
        if flags & f.FLAG_PRIORITY:
            payload = b"\x00\x00\x00\x00\x10" + payload
    else:
        payload = draw(st.binary(max_size=64))
    return f.frame(kind, flags, stream_id, payload)


def check(chunks: list[bytes]) -> None:
    core = p.H2Protocol(p.H2Settings(control_frame_burst=50, max_header_list_size=1024), lambda: 0.0)
    core.start()
    closes = 0
    for chunk in chunks:
        was_closed = core.closed
        events = core.receive(chunk)
        if was_closed:
            assert events == []
        for kind, _, a, _ in events:
            if kind == p.CLOSE:
                closes += 1
            if kind == p.REQUEST:
                assert isinstance(a, Request)
                assert a.method and (a.target[:1] == b"/" or a.target == b"*")
                assert not FORBIDDEN & {name for name, _ in a.headers}
        out = core.data_to_send()
        while out:  # well-formed frames only
            length, _, _, _ = f.parse_header(out, 0)
            assert len(out) >= 9 + length
            out = out[9 + length:]
    assert closes <= 1


VALID = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x.test")]


@st.composite
def conversations(draw: st.DrawFn) -> list[bytes]:
    """Requests on rising stream ids (some valid, some with a field or two changed), mixed with random
    frames: deep enough that the core gets past the first error."""
    encoder = hpack.Encoder()
    out, stream_id = [], 1
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 3)):
            fields = [*VALID]
            for extra in draw(FIELDS)[:draw(st.integers(0, 2))]:
                fields.insert(draw(st.integers(0, len(fields))), extra)
            flags = f.FLAG_END_HEADERS | (f.FLAG_END_STREAM if draw(st.booleans()) else 0)
            out.append(f.frame(f.HEADERS, flags, stream_id, encoder.encode(fields)))
            if not flags & f.FLAG_END_STREAM and draw(st.booleans()):
                out.append(f.frame(f.DATA, f.FLAG_END_STREAM * draw(st.integers(0, 1)), stream_id,
                                   draw(st.binary(max_size=8))))
            stream_id += 2
        else:
            out.append(draw(frames()))
    return out


@BOUNDED
@given(conversations())
def test_conversations_of_requests_and_noise(frame_list: list[bytes]) -> None:
    check([f.PREFACE + f.settings_frame({}) + b"".join(frame_list)])


@BOUNDED
@given(st.lists(frames(), max_size=30), st.lists(st.integers(1, 200), max_size=8))
def test_random_frames_in_random_pieces(frame_list: list[bytes], cuts: list[int]) -> None:
    data = f.PREFACE + f.settings_frame({}) + b"".join(frame_list)
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(data[at:at + cut])
        at += cut
    chunks.append(data[at:])
    check(chunks)


@BOUNDED
@given(st.binary(max_size=400))
def test_random_bytes_after_the_preface(data: bytes) -> None:
    check([f.PREFACE + f.settings_frame({}), data])


@BOUNDED
@given(st.binary(max_size=100))
def test_random_header_blocks(block: bytes) -> None:
    check([f.PREFACE + f.settings_frame({}) + f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1,
                                                      block)])
