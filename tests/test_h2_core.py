"""The sans-IO HTTP/2 core (ring3.http2.protocol) and HPACK (ring3.http2.hpack), fed bytes: no sockets.

Frames are built and the server's output parsed with hyperframe; header blocks made with the hpack
library's encoder, or written out byte by byte from RFC 7541 Appendix C where the exact bytes matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ring3.events import Request
from ring3.http2 import frames as f
from ring3.http2 import protocol as p
from ring3.http2.hpack import CompressionError, Decoder, HeaderListTooLarge, encode_fields, encode_status

GET = [(":method", "GET"), (":scheme", "https"), (":path", "/a?b=1"), (":authority", "example.test")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


class Peer:
    """A client speaking to the core: it sends frames, and reads what the core answers."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.core = p.H2Protocol(p.H2Settings(**settings), self.clock)
        self.core.start()
        self.encoder = hpack.Encoder()
        self.events = self.core.receive(f.PREFACE + SettingsFrame(0).serialize())
        self.frames = parse_frames(self.core.data_to_send())

    def send(self, *frames: Frame | bytes) -> list[p.H2Event]:
        data = b"".join(fr if isinstance(fr, bytes) else fr.serialize() for fr in frames)
        events = self.core.receive(data)
        self.frames = parse_frames(self.core.data_to_send())
        return events

    def headers(self, stream_id: int, fields: list[tuple[str, str]], end_stream: bool = True) -> HeadersFrame:
        frame = HeadersFrame(stream_id, self.encoder.encode(fields))
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def goaway_code(self) -> int | None:
        for frame in self.frames:
            if isinstance(frame, GoAwayFrame):
                return int(frame.error_code)
        return None

    def resets(self) -> dict[int, int]:
        return {fr.stream_id: int(fr.error_code) for fr in self.frames if isinstance(fr, RstStreamFrame)}


def kinds(events: list[p.H2Event]) -> list[int]:
    return [event[0] for event in events]


# -- the connection's start -------------------------------------------------------------------------


def test_the_server_announces_its_settings_and_acknowledges_the_clients() -> None:
    peer = Peer(max_concurrent_streams=7, initial_window_size=1000, connection_window_size=1 << 20)
    settings = [fr for fr in peer.frames if isinstance(fr, SettingsFrame)]
    assert "ACK" not in settings[0].flags
    assert settings[0].settings[f.SETTINGS_MAX_CONCURRENT_STREAMS] == 7
    assert settings[0].settings[f.SETTINGS_INITIAL_WINDOW_SIZE] == 1000
    assert settings[0].settings[f.SETTINGS_ENABLE_PUSH] == 0
    assert any(isinstance(fr, WindowUpdateFrame) and fr.stream_id == 0 and
               fr.window_increment == (1 << 20) - 65535 for fr in peer.frames)
    assert "ACK" in settings[-1].flags


def test_a_wrong_preface_is_a_protocol_error() -> None:
    core = p.H2Protocol(p.H2Settings(), Clock())
    events = core.receive(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert kinds(events) == [p.CLOSE]
    frames = parse_frames(core.data_to_send())
    assert isinstance(frames[-1], GoAwayFrame) and frames[-1].error_code == f.PROTOCOL_ERROR


def test_a_preface_in_pieces_is_taken() -> None:
    core = p.H2Protocol(p.H2Settings(), Clock())
    data = f.PREFACE + SettingsFrame(0).serialize()
    events = []
    for at in range(len(data)):
        events += core.receive(data[at:at + 1])
    assert events == [] and not core.closed
    frames = parse_frames(core.data_to_send())
    assert any(isinstance(fr, SettingsFrame) and "ACK" in fr.flags for fr in frames)


def test_the_first_frame_must_be_settings() -> None:
    core = p.H2Protocol(p.H2Settings(), Clock())
    core.receive(f.PREFACE + PingFrame(0, b"12345678").serialize())
    last = parse_frames(core.data_to_send())[-1]
    assert isinstance(last, GoAwayFrame) and last.error_code == f.PROTOCOL_ERROR


# -- requests -----------------------------------------------------------------------------------------


def test_a_request_becomes_a_protocol_neutral_request() -> None:
    peer = Peer()
    fields = [*GET, ("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]
    [(kind, stream_id, request, end)] = peer.send(peer.headers(1, fields))
    assert (kind, stream_id, end) == (p.REQUEST, 1, True)
    assert isinstance(request, Request)
    assert (request.method, request.target, request.path, request.query) == (b"GET", b"/a?b=1", b"/a", b"b=1")
    assert request.http_version == "2" and request.host == b"example.test" and request.stream_id == 1
    # RFC 9113 8.2.3: cookies joined with "; "; ASGI asks for :authority as a host field, first.
    assert request.headers == [(b"host", b"example.test"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2")]
    assert not request.has_body


def test_a_repeated_block_is_decoded_once_and_still_gives_fresh_header_lists() -> None:
    peer = Peer()
    first = peer.send(peer.headers(1, GET))[0][2]
    second = peer.send(peer.headers(3, GET))[0][2]
    assert first.headers == second.headers and first.headers is not second.headers
    assert second.stream_id == 3


@pytest.mark.parametrize("fields, why", [
    ([*GET, ("connection", "keep-alive")], "connection-specific"),
    ([*GET, ("transfer-encoding", "chunked")], "connection-specific"),
    ([*GET, ("keep-alive", "5")], "connection-specific"),
    ([*GET, ("upgrade", "websocket")], "connection-specific"),
    ([*GET, ("te", "gzip")], "TE other than trailers"),
    ([*GET, ("X-Upper", "1")], "upper-case name"),
    ([*GET, ("x-bad", " padded")], "whitespace around a value"),
    ([("accept", "*/*"), *GET], "pseudo-header after a regular field"),
    ([*GET, (":method", "POST")], "repeated pseudo-header"),
    ([*GET, (":unknown", "x")], "unknown pseudo-header"),
    ([(":method", "GET"), (":scheme", "https"), (":authority", "x")], "no :path"),
    ([(":method", "GET"), (":scheme", "https"), (":path", ""), (":authority", "x")], "empty :path"),
    ([(":method", "GET"), (":path", "/"), (":authority", "x")], "no :scheme"),
    ([(":method", "GET"), (":scheme", "https"), (":path", "relative"), (":authority", "x")], "relative path"),
    ([*GET, ("host", "other.test")], "Host differs from :authority"),
    ([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a b")], "bad authority"),
    ([(":method", "GET"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/"),
      (":authority", "x")], ":protocol without CONNECT"),
    ([(":method", "CONNECT"), (":authority", "x"), (":path", "/")], "CONNECT with :path"),
])
def test_a_malformed_request_is_a_stream_error_never_a_request(fields: list[tuple[str, str]],
                                                               why: str) -> None:
    peer = Peer()
    events = peer.send(peer.headers(1, fields))
    assert p.REQUEST not in kinds(events), why
    assert peer.resets() == {1: f.PROTOCOL_ERROR}, why
    # The connection goes on: the next request is served.
    assert kinds(peer.send(peer.headers(3, GET))) == [p.REQUEST]


WEBSOCKET = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/chat"),
             (":authority", "x"), ("sec-websocket-version", "13")]


def test_an_extended_connect_is_a_request_to_tunnel_a_protocol() -> None:
    peer = Peer()
    settings = next(fr for fr in peer.frames if isinstance(fr, SettingsFrame))
    assert settings.settings[f.SETTINGS_ENABLE_CONNECT_PROTOCOL] == 1
    [(kind, _, request, end)] = peer.send(peer.headers(1, WEBSOCKET, end_stream=False))
    assert kind == p.REQUEST and not end
    assert (request.method, request.protocol, request.path, request.upgrade) == (
        b"CONNECT", b"websocket", b"/chat", True)


def test_an_extended_connect_is_malformed_when_not_announced() -> None:
    peer = Peer(enable_connect_protocol=False)
    settings = next(fr for fr in peer.frames if isinstance(fr, SettingsFrame))
    assert f.SETTINGS_ENABLE_CONNECT_PROTOCOL not in settings.settings
    assert peer.send(peer.headers(1, WEBSOCKET, end_stream=False)) == []
    assert peer.resets() == {1: f.PROTOCOL_ERROR}


def test_a_plain_connect_gets_501() -> None:
    peer = Peer()
    events = peer.send(peer.headers(1, [(":method", "CONNECT"), (":authority", "example.test:443")]))
    assert events[0][:3] == (p.REFUSED, 1, 501)


def test_content_length_must_match_the_data() -> None:
    peer = Peer()
    peer.send(peer.headers(1, [*GET[:1], (":scheme", "https"), (":path", "/"), (":authority", "x"),
                               ("content-length", "10")], end_stream=False))
    events = peer.send(DataFrame(1, b"12345", flags=["END_STREAM"]))
    assert peer.resets() == {1: f.PROTOCOL_ERROR}
    assert kinds(events) == [p.RESET]
    peer.send(peer.headers(3, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                               (":authority", "x"), ("content-length", "2")], end_stream=False))
    peer.send(DataFrame(3, b"123"))
    assert peer.resets() == {3: f.PROTOCOL_ERROR}


def test_content_length_on_a_request_without_body_is_malformed() -> None:
    peer = Peer()
    peer.send(peer.headers(1, [*GET, ("content-length", "3")]))
    assert peer.resets() == {1: f.PROTOCOL_ERROR}


def test_a_body_over_the_limit_is_refused_with_413() -> None:
    peer = Peer(max_body_size=10)
    peer.send(peer.headers(1, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                               (":authority", "x")], end_stream=False))
    events = peer.send(DataFrame(1, b"x" * 11))
    assert events[0][:3] == (p.REFUSED, 1, 413)
    declared = peer.send(peer.headers(3, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                                          (":authority", "x"), ("content-length", "11")], end_stream=False))
    assert declared[0][:3] == (p.REFUSED, 3, 413)


def test_a_header_list_over_the_limit_gets_431_and_keeps_the_table_in_step() -> None:
    peer = Peer(max_header_list_size=1024)
    events = peer.send(peer.headers(1, [*GET, ("x-big", "v" * 2000)]))
    assert events[0][:3] == (p.REFUSED, 1, 431)
    assert kinds(peer.send(peer.headers(3, GET))) == [p.REQUEST]


# -- flow control -------------------------------------------------------------------------------------


def test_body_credit_comes_back_as_the_handler_reads() -> None:
    peer = Peer(initial_window_size=100, connection_window_size=65535)
    peer.send(peer.headers(1, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                               (":authority", "x")], end_stream=False))
    events = peer.send(DataFrame(1, b"x" * 60))
    assert events == [(p.DATA, 1, b"x" * 60, False)]
    peer.send(DataFrame(1, b"x" * 41))  # past the stream's 100 bytes of credit
    assert peer.resets() == {1: f.FLOW_CONTROL_ERROR}
    peer.send(peer.headers(3, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                               (":authority", "x")], end_stream=False))
    peer.send(DataFrame(3, b"y" * 60))
    peer.core.consumed(3, 60)  # half the window read: granted back at once
    updates = [fr for fr in parse_frames(peer.core.data_to_send()) if isinstance(fr, WindowUpdateFrame)]
    assert [(fr.stream_id, fr.window_increment) for fr in updates] == [(3, 60)]


def test_the_clients_window_bounds_what_the_server_may_send() -> None:
    peer = Peer()
    peer.send(SettingsFrame(0, {f.SETTINGS_INITIAL_WINDOW_SIZE: 10}))
    peer.send(peer.headers(1, GET))
    assert peer.core.window(1) == 10
    peer.core.data_header(1, 10, False)
    assert peer.core.window(1) == 0
    peer.send(WindowUpdateFrame(1, 5))
    assert peer.core.window(1) == 5
    peer.send(SettingsFrame(0, {f.SETTINGS_INITIAL_WINDOW_SIZE: 0}))  # 8.9.2: a window may go negative
    assert peer.core.window(1) == -5


def test_window_updates_past_2_31_minus_1_are_flow_control_errors() -> None:
    peer = Peer()
    peer.send(peer.headers(1, GET))
    peer.send(WindowUpdateFrame(1, f.MAX_WINDOW))
    assert peer.resets() == {1: f.FLOW_CONTROL_ERROR}
    peer.send(WindowUpdateFrame(0, f.MAX_WINDOW))
    assert peer.goaway_code() == f.FLOW_CONTROL_ERROR


# -- limits and floods ------------------------------------------------------------------------------


def test_streams_beyond_the_limit_are_refused() -> None:
    peer = Peer(max_concurrent_streams=2)
    for stream_id in (1, 3):
        peer.send(peer.headers(stream_id, GET, end_stream=False))
    events = peer.send(peer.headers(5, GET, end_stream=False))
    assert events == [] and peer.resets() == {5: f.REFUSED_STREAM}


def test_stream_ids_going_backwards_or_even_end_the_connection() -> None:
    peer = Peer()
    peer.send(peer.headers(5, GET))
    peer.send(peer.headers(3, GET))
    assert peer.goaway_code() == f.PROTOCOL_ERROR
    peer = Peer()
    peer.send(peer.headers(2, GET))
    assert peer.goaway_code() == f.PROTOCOL_ERROR


def test_a_stream_id_reused_after_its_end_is_stream_closed() -> None:
    peer = Peer()
    peer.send(peer.headers(1, GET))
    peer.core.send_headers(1, encode_status(200), True)
    peer.send(peer.headers(1, GET))
    assert peer.goaway_code() == f.STREAM_CLOSED


def test_rapid_reset_exhausts_the_budget_and_ends_the_connection() -> None:
    peer = Peer(control_frame_burst=50, control_frame_rate=10)
    stream_id = 1
    for _ in range(49):
        peer.send(peer.headers(stream_id, GET, end_stream=False), RstStreamFrame(stream_id, f.CANCEL))
        stream_id += 2
    assert peer.goaway_code() is None  # within the burst
    peer.clock.now += 1.0  # ten more tokens
    for _ in range(12):
        peer.send(peer.headers(stream_id, GET, end_stream=False), RstStreamFrame(stream_id, f.CANCEL))
        stream_id += 2
        if peer.goaway_code() is not None:
            break
    assert peer.goaway_code() == f.ENHANCE_YOUR_CALM and peer.core.closed


@pytest.mark.parametrize("flood", [
    lambda i: PingFrame(0, b"%08d" % i),
    lambda i: SettingsFrame(0, {f.SETTINGS_MAX_CONCURRENT_STREAMS: 100}),
    lambda i: PriorityFrame(1, depends_on=0, stream_weight=16),
    lambda i: DataFrame(1, b""),
], ids=["PING", "SETTINGS", "PRIORITY", "empty DATA"])
def test_floods_of_frames_that_carry_nothing_end_with_enhance_your_calm(
        flood: Callable[[int], Frame]) -> None:
    peer = Peer(control_frame_burst=100, control_frame_rate=0)
    peer.send(peer.headers(1, [(":method", "POST"), (":scheme", "https"), (":path", "/"),
                               (":authority", "x")], end_stream=False))
    frames = b"".join(flood(i).serialize() for i in range(150))
    peer.send(frames)
    assert peer.goaway_code() == f.ENHANCE_YOUR_CALM


def test_a_continuation_flood_is_cut_at_the_header_list_limit() -> None:
    peer = Peer(max_header_list_size=4096)
    start = HeadersFrame(1, peer.encoder.encode(GET))
    peer.send(start)
    for _ in range(100):
        peer.send(ContinuationFrame(1, b"\x00\x01a\x01b" * 20))
        if peer.core.closed:
            break
    assert peer.goaway_code() == f.ENHANCE_YOUR_CALM


def test_a_frame_larger_than_announced_is_a_frame_size_error() -> None:
    peer = Peer()
    peer.send(peer.headers(1, GET, end_stream=False))
    peer.send(DataFrame(1, b"x" * 16385))
    assert peer.goaway_code() == f.FRAME_SIZE_ERROR


def test_push_promise_from_a_client_is_a_protocol_error() -> None:
    peer = Peer()
    peer.send(f.frame(f.PUSH_PROMISE, f.FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02"))
    assert peer.goaway_code() == f.PROTOCOL_ERROR


def test_sending_splits_a_large_header_block_into_continuations() -> None:
    peer = Peer()
    peer.send(peer.headers(1, GET))
    block = encode_status(200) + encode_fields([(b"x-big", b"v" * 40000)])
    peer.core.send_headers(1, block, True)
    frames = parse_frames(peer.core.data_to_send())
    assert isinstance(frames[0], HeadersFrame) and "END_HEADERS" not in frames[0].flags
    assert all(isinstance(fr, ContinuationFrame) for fr in frames[1:])
    assert "END_HEADERS" in frames[-1].flags
    blocks = [fr.data for fr in frames if isinstance(fr, HeadersFrame | ContinuationFrame)]
    fields = hpack.Decoder().decode(b"".join(blocks), raw=True)
    decoded = [(bytes(name), bytes(value)) for name, value in fields]
    assert decoded[1] == (b"x-big", b"v" * 40000)


def test_graceful_goaway_names_the_last_stream_and_refuses_new_ones() -> None:
    peer = Peer()
    peer.send(peer.headers(1, GET, end_stream=False))
    peer.core.goaway()
    [goaway] = [fr for fr in parse_frames(peer.core.data_to_send()) if isinstance(fr, GoAwayFrame)]
    assert goaway.last_stream_id == 1 and goaway.error_code == f.NO_ERROR
    assert peer.send(peer.headers(3, GET)) == []
    assert kinds(peer.send(DataFrame(1, b"x", flags=["END_STREAM"]))) == [p.DATA]


# -- HPACK ----------------------------------------------------------------------------------------


def test_hpack_decodes_rfc7541_appendix_c3_without_huffman() -> None:
    decoder = Decoder()
    assert decoder.decode(bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")) == [
        (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
    second = decoder.decode(bytes.fromhex("828684be58086e6f2d6361636865"))
    assert second[-1] == (b"cache-control", b"no-cache")
    third = decoder.decode(bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"))
    assert third == [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
                     (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")]


def test_hpack_decodes_rfc7541_appendix_c4_with_huffman() -> None:
    decoder = Decoder()
    assert decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))[-1] == (
        b":authority", b"www.example.com")
    assert decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))[-1] == (b"cache-control", b"no-cache")


@pytest.mark.parametrize("block, why", [
    (b"\x80", "index 0"),
    (b"\xbe", "an index past the (empty) dynamic table"),
    (b"\x82\x20", "a size update after a field"),
    (b"\x3f\xe2\x1f", "a size update above SETTINGS_HEADER_TABLE_SIZE"),
    (b"\x00\x85\xff\xff\xff\xff\xff\x01a", "a Huffman string holding EOS"),
    (b"\x40\x03ab", "a string longer than the block"),
    (b"\x82\xff\xff\xff\xff\xff\xff", "a truncated, overlong integer"),
])
def test_hpack_refuses_what_rfc7541_forbids(block: bytes, why: str) -> None:
    with pytest.raises(CompressionError):
        Decoder().decode(block)


def test_an_hpack_bomb_stops_at_the_list_limit() -> None:
    decoder = Decoder(max_list_size=8192)
    big = hpack.Encoder()
    first = big.encode([("x-bomb", "v" * 3000)])  # one literal, indexed into the table
    decoder.decode(first)
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(b"\xbe" * 1000)  # a thousand references: 3 MB decoded from 1 KB sent


def test_the_encoder_round_trips_through_a_reference_decoder() -> None:
    block = encode_status(404) + encode_status(299) + encode_fields(
        [(b"content-type", b"text/plain"), (b"x-custom", b"1" * 200), (b"etag", b'"x"')])
    decoded = [(bytes(name), bytes(value)) for name, value in hpack.Decoder().decode(block, raw=True)]
    assert decoded == [(b":status", b"404"), (b":status", b"299"), (b"content-type", b"text/plain"),
                       (b"x-custom", b"1" * 200), (b"etag", b'"x"')]


# -- RFC 9218 priorities ------------------------------------------------------------------------


@pytest.mark.parametrize("value, urgency", [
    (None, 3), (b"", 3), (b"u=0", 0), (b"u=7, i", 7), (b"i, u=1", 1), (b"u=8", 3), (b"u=-1", 3),
    (b"u=x", 3), (b"u=2;a=b", 2), (b"foo=1, u=5", 5),
])
def test_the_priority_field_gives_an_urgency(value: bytes | None, urgency: int) -> None:
    from ring3.http2.request import parse_urgency

    assert parse_urgency(value) == urgency


def test_priority_update_moves_an_open_stream() -> None:
    peer = Peer()
    settings = next(fr for fr in peer.frames if isinstance(fr, SettingsFrame))
    assert settings.settings[f.SETTINGS_NO_RFC7540_PRIORITIES] == 1
    peer.send(peer.headers(1, GET, end_stream=False))
    events = peer.send(f.frame(f.PRIORITY_UPDATE, 0, 0, b"\x00\x00\x00\x01u=0, i"))
    assert events == [(p.PRIORITY, 1, 0, None)]
    assert peer.send(f.frame(f.PRIORITY_UPDATE, 0, 0, b"\x00\x00\x00\x09u=1")) == []  # idle: ignored


@pytest.mark.parametrize("stream_id, payload, code", [
    (1, b"\x00\x00\x00\x01u=1", f.PROTOCOL_ERROR),
    (0, b"\x00\x00", f.FRAME_SIZE_ERROR),
    (0, b"\x00\x00\x00\x00u=1", f.PROTOCOL_ERROR),
])
def test_a_malformed_priority_update_is_a_connection_error(stream_id: int, payload: bytes, code: int) -> None:
    peer = Peer()
    peer.send(f.frame(f.PRIORITY_UPDATE, 0, stream_id, payload))
    assert peer.goaway_code() == code
