"""The sans-IO HTTP/2 server core (RFC 9113): bytes in, events out, bytes out.

`receive(data)` parses frames, keeps the stream states, flow-control windows and HPACK table, answers
what the protocol itself answers (SETTINGS and PING acknowledgements, connection and stream errors), and
returns events as tuples `(kind, stream_id, a, b)`:

    REQUEST   a: Request             b: the request has no body (END_STREAM on its HEADERS)
    DATA      a: body bytes          b: the body ends here
    TRAILERS  a: header fields       b: True
    REFUSED   a: status to answer    b: reason (a well-formed request refused: 413, 417, 431, 501)
    RESET     a: error code          b: the client reset it (False: ring3 did, for a stream error)
    WINDOW    the stream's window (0: the connection's) or a setting that sizes frames changed
    GOAWAY    a: error code          b: the client's last stream id
    CLOSE     a: error code          b: reason (ring3 sent GOAWAY for a connection error: close once
                                        what is queued has left)

The I/O side sends a response with `send_headers` and `data_header` (which takes flow-control credit;
it asks `window()` first), and grants credit back with `consumed()` as the handler reads the body.
Frames wait in `data_to_send()`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ring3.http2 import frames as f
from ring3.http2.hpack import CompressionError, Decoder, HeaderListTooLarge
from ring3.http2.request import MalformedRequest, RefusedRequest, parse_request, parse_urgency
from ring3.http2.sending import SendingSide
from ring3.http2.state import (
    CLOSE,
    DATA,
    GOAWAY,
    PRIORITY,
    RECENTLY_CLOSED,
    REFUSED,
    REQUEST,
    RESET,
    TRAILERS,
    WINDOW,
    H2ConnectionError,
    H2Event,
    H2Settings,
    ParsedHead,
    StreamError,
    StreamState,
)

__all__ = ["CLOSE", "DATA", "GOAWAY", "PRIORITY", "REFUSED", "REQUEST", "RESET", "TRAILERS", "WINDOW",
           "H2Event", "H2Protocol", "H2Settings"]


class H2Protocol(SendingSide):
    """One server-side HTTP/2 connection's protocol state."""

    def __init__(self, settings: H2Settings, clock: Any) -> None:
        self.settings = settings
        self._clock = clock  # a function returning seconds (the flood budget refills with it)
        self._decoder = Decoder(settings.header_table_size, settings.max_header_list_size)
        self._heads: dict[bytes, ParsedHead] = {}
        self._heads_generation = -1
        self._buffer = b""
        self._out: list[bytes] = []
        self._preface = False
        self._first_settings = False
        self.streams: dict[int, StreamState] = {}
        self._recently_closed: deque[int] = deque(maxlen=RECENTLY_CLOSED)
        self._closed_set: set[int] = set()
        self.last_stream_id = 0
        self._continuation: tuple[int, list[bytes], bool, bool] | None = None
        self._continuation_size = 0
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame_size = f.MIN_FRAME_SIZE
        self.send_window = f.DEFAULT_WINDOW  # the connection's, towards the client
        self._recv_window = f.DEFAULT_WINDOW  # the client's credit on the connection
        self._conn_unacked = 0
        self._table_update = False
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False
        self._tokens = float(settings.control_frame_burst)
        self._burst = float(settings.control_frame_burst)
        self._tokens_at = clock()
        self._events: list[H2Event] = []

    # -- receiving --------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[H2Event]:
        """Take bytes from the client; the events they complete."""
        if self.closed:
            return []
        events = self._events = []
        buf = self._buffer + data if self._buffer else data
        pos = 0
        try:
            if not self._preface:
                if len(buf) < 24:
                    if f.PREFACE.startswith(buf):
                        self._buffer = buf
                        return events
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "not the HTTP/2 connection preface")
                if buf[:24] != f.PREFACE:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "not the HTTP/2 connection preface")
                self._preface = True
                pos = 24
            end = len(buf)
            limit = self.settings.max_frame_size
            while end - pos >= 9:
                length, kind, flags, stream_id = f.parse_header(buf, pos)
                if length > limit:
                    raise H2ConnectionError(f.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                start = pos + 9
                if end - start < length:
                    break
                pos = start + length
                try:
                    self._frame(kind, flags, stream_id, buf[start:pos])
                except StreamError as exc:
                    self._stream_error(exc.stream_id, exc.code)
        except H2ConnectionError as exc:
            self._connection_error(exc.code, str(exc))
            return events
        self._buffer = buf[pos:] if pos < len(buf) else b""
        return events

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if not self._first_settings:
            if kind != f.SETTINGS or flags & f.FLAG_ACK:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._first_settings = True
        if self._continuation is not None and kind != f.CONTINUATION:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "a header block interrupted")
        if kind == f.DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == f.SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == f.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == f.RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == f.PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == f.PRIORITY:
            self._on_priority(stream_id, payload)
        elif kind == f.GOAWAY:
            if stream_id:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            last, code = f.unpack_two_u32(payload)
            self.goaway_received = True
            self._events.append((GOAWAY, 0, code, last & f.MAX_WINDOW))
        elif kind == f.PUSH_PROMISE:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        elif kind == f.PRIORITY_UPDATE:
            self._on_priority_update(stream_id, payload)
        # other types are extensions: ignored (RFC 9113 4.1, 5.5)

    def _charge(self, what: str) -> None:
        """One frame that asks work of ring3 without carrying a request forward (PING, SETTINGS,
        PRIORITY, empty DATA or CONTINUATION, a reset, a refused stream, a WINDOW_UPDATE): a token of the
        flood budget (CVE-2019-9512 to 9518, CVE-2023-44487). The budget refills with time and with
        every DATA frame ring3 sends."""
        now = self._clock()
        s = self.settings
        self._tokens = min(float(s.control_frame_burst), self._tokens + (now - self._tokens_at) *
                           s.control_frame_rate)
        self._tokens_at = now
        self._tokens -= 1
        if self._tokens < 0:
            raise H2ConnectionError(f.ENHANCE_YOUR_CALM, f"a flood of {what} frames")

    def _padding(self, flags: int, payload: bytes) -> tuple[int, int]:
        """(start, end) of the frame's content inside its padding (RFC 9113 6.1, 6.2)."""
        if not flags & f.FLAG_PADDED:
            return 0, len(payload)
        if not payload:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "a padded frame without its pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise H2ConnectionError(f.PROTOCOL_ERROR, "padding as long as the frame")
        return 1, len(payload) - pad

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self._recv_window -= length
        if self._recv_window < 0:
            raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        start, end = self._padding(flags, payload)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is None and stream_id > self.last_stream_id:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "DATA on an idle stream")
            self._grant(length)  # the connection's credit comes back at once
            raise StreamError(stream_id, f.STREAM_CLOSED, "DATA on a closed stream")
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._grant(length)
            raise StreamError(stream_id, f.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        end_stream = bool(flags & f.FLAG_END_STREAM)
        padding = length - (end - start)
        size = end - start
        stream.received += size
        expected = stream.expected
        if expected >= 0 and (stream.received > expected or (end_stream and stream.received != expected)):
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "a body that does not match its content-length")
        if stream.refused:  # answered without its body: what comes is dropped (still checked above)
            self.consumed(stream_id, length)
            if stream.received > self.settings.max_body_size:
                raise StreamError(stream_id, f.NO_ERROR, "the rest of a refused body is too large")
            if end_stream:
                stream.remote_closed = True
                if stream.local_closed:
                    self._forget(stream_id)
            elif not size:
                self._charge("empty DATA")
            return
        if padding:
            self._grant(padding)
            stream.unacked += padding
        data = payload[start:end] if padding else payload
        if stream.received > self.settings.max_body_size:
            stream.refused = True
            self.consumed(stream_id, len(data))
            self._events.append((REFUSED, stream_id, 413, "request body too large"))
            return
        if not data and not end_stream:
            self._charge("empty DATA")
            return
        if end_stream:
            stream.remote_closed = True
            if stream.local_closed:
                self._forget(stream_id)
        self._events.append((DATA, stream_id, data, end_stream))

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        start, end = self._padding(flags, payload)
        self_dependent = False
        if flags & f.FLAG_PRIORITY:
            if end - start < 5:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            self_dependent = f.unpack_u32(payload, start) & f.MAX_WINDOW == stream_id
            start += 5
        fragment = payload[start:end]
        end_stream = bool(flags & f.FLAG_END_STREAM)
        if flags & f.FLAG_END_HEADERS:
            self._headers_complete(stream_id, fragment, end_stream, self_dependent)
        else:
            self._continuation = (stream_id, [fragment], end_stream, self_dependent)
            self._continuation_size = len(fragment)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        pending = self._continuation
        if pending is None or pending[0] != stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        pending[1].append(payload)
        self._continuation_size += len(payload)
        if self._continuation_size > self.settings.max_header_list_size:
            raise H2ConnectionError(f.ENHANCE_YOUR_CALM, "a header block larger than the header list limit")
        if flags & f.FLAG_END_HEADERS:
            self._continuation = None
            self._headers_complete(stream_id, b"".join(pending[1]), pending[2], pending[3])
        elif not payload:
            self._charge("empty CONTINUATION")

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]] | None:
        """The block's fields; None when the list is over the limit (the table is kept in step)."""
        try:
            return self._decoder.decode(block)
        except CompressionError as exc:
            raise H2ConnectionError(f.COMPRESSION_ERROR, str(exc)) from None
        except HeaderListTooLarge:
            return None

    def _headers_complete(self, stream_id: int, block: bytes, end_stream: bool, self_dependent: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._trailers(stream_id, stream, block, end_stream)
            return
        if stream_id <= self.last_stream_id:
            self._decode(block)
            if stream_id in self._closed_set:
                raise H2ConnectionError(f.STREAM_CLOSED, "HEADERS on a closed stream")
            raise H2ConnectionError(f.PROTOCOL_ERROR, "a stream id lower than one used before")
        self.last_stream_id = stream_id
        fields = self._decode(block)
        if self.goaway_sent:
            return  # after GOAWAY, new streams are ignored (RFC 9113 6.8)
        if self_dependent:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "a stream that depends on itself")
        if len(self.streams) >= self.settings.max_concurrent_streams:
            raise StreamError(stream_id, f.REFUSED_STREAM, "more streams than allowed")
        stream = StreamState(self.peer_initial_window, self.settings.initial_window_size, -1, end_stream)
        if fields is None:
            self.streams[stream_id] = stream
            stream.refused = True
            self._events.append((REFUSED, stream_id, 431, "request header list too large"))
            return
        parsed = self._head(stream_id, block, fields)
        head = parsed.head
        self.streams[stream_id] = stream
        if head is None:
            stream.refused = True
            self._events.append((REFUSED, stream_id, parsed.status, parsed.reason))
            return
        if end_stream and head.content_length > 0:
            self._forget(stream_id)
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "content-length without a body")
        stream.expected = head.content_length
        self._events.append((REQUEST, stream_id, head.request(stream_id, not end_stream), end_stream))

    def _head(self, stream_id: int, block: bytes, fields: list[tuple[bytes, bytes]]) -> ParsedHead:
        """The validated head of a block, remembered while the HPACK table stays as it is."""
        generation = self._decoder.generation  # a head holds while the table that decoded it does
        if generation != self._heads_generation:
            self._heads.clear()
            self._heads_generation = generation
        parsed = self._heads.get(block)
        if parsed is not None:
            if parsed.malformed:
                raise StreamError(stream_id, f.PROTOCOL_ERROR, parsed.reason)
            return parsed
        s = self.settings
        try:
            parsed = ParsedHead(parse_request(fields, connect_protocol=s.enable_connect_protocol,
                                           max_body_size=s.max_body_size), 0, "", False)
        except MalformedRequest as exc:
            parsed = ParsedHead(None, 0, str(exc), True)
        except RefusedRequest as exc:
            parsed = ParsedHead(None, exc.status, str(exc), False)
        if len(self._heads) >= 64:
            self._heads.clear()
        self._heads[block] = parsed
        if parsed.malformed:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, parsed.reason)
        return parsed

    def _trailers(self, stream_id: int, stream: StreamState, block: bytes, end_stream: bool) -> None:
        fields = self._decode(block)
        if stream.remote_closed:
            raise StreamError(stream_id, f.STREAM_CLOSED, "HEADERS on a half-closed stream")
        if not end_stream:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "trailers without END_STREAM")
        if fields is None:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "trailers over the header list limit")
        for name, _ in fields:
            if name[:1] == b":":
                raise StreamError(stream_id, f.PROTOCOL_ERROR, "a pseudo-header in trailers")
        if stream.expected >= 0 and stream.received != stream.expected:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "a body that does not match its content-length")
        stream.remote_closed = True
        if stream.local_closed:
            self._forget(stream_id)
        self._events.append((TRAILERS, stream_id, fields, True))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.FLAG_ACK:
            if payload:
                raise H2ConnectionError(f.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        self._charge("SETTINGS")
        for key, value in f.parse_settings(payload):
            if key == f.SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True
            elif key == f.SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif key == f.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
                self._events.append((WINDOW, 0, None, None))
            elif key == f.SETTINGS_MAX_FRAME_SIZE:
                if not f.MIN_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE:
                    raise H2ConnectionError(f.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_max_frame_size = value
                self._events.append((WINDOW, 0, None, None))
        self._out.append(f.SETTINGS_ACK)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = f.unpack_u32(payload) & f.MAX_WINDOW
        self._charge("WINDOW_UPDATE")  # refunded by the DATA it lets ring3 send (see data_header)
        if not stream_id:
            if not increment:
                raise H2ConnectionError(f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise H2ConnectionError(f.FLOW_CONTROL_ERROR, "the connection window past 2^31-1")
            self._events.append((WINDOW, 0, None, None))
            return
        stream = self.streams.get(stream_id)
        if stream is None and stream_id > self.last_stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        if not increment:  # an error even on a stream that has just closed (h2spec 6.9/2)
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if stream is None:
            return  # a closed stream: the update may have crossed our end of it
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            raise StreamError(stream_id, f.FLOW_CONTROL_ERROR, "a stream window past 2^31-1")
        self._events.append((WINDOW, stream_id, None, None))

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if stream_id > self.last_stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self.streams.get(stream_id)
        if stream is None:
            self._charge("RST_STREAM")  # of a closed stream: nothing to give up
            return
        self._forget(stream_id)
        if not stream.local_closed:
            self._charge("RST_STREAM")  # Rapid Reset: a stream opened and given up before its answer
        self._events.append((RESET, stream_id, f.unpack_u32(payload), True))

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "PING not 8 bytes")
        if flags & f.FLAG_ACK:
            return
        self._charge("PING")
        self._out.append(f.frame(f.PING, f.FLAG_ACK, 0, payload))

    def _on_priority_update(self, stream_id: int, payload: bytes) -> None:
        """RFC 9218 7.1: a stream's new priority, sent on stream 0."""
        if stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PRIORITY_UPDATE on a stream")
        if len(payload) < 4:
            raise H2ConnectionError(f.FRAME_SIZE_ERROR, "PRIORITY_UPDATE shorter than 4 bytes")
        self._charge("PRIORITY_UPDATE")
        prioritized = f.unpack_u32(payload) & f.MAX_WINDOW
        if not prioritized:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PRIORITY_UPDATE for stream 0")
        if prioritized in self.streams:  # for an idle stream: its HEADERS' Priority field decides
            self._events.append((PRIORITY, prioritized, parse_urgency(payload[4:]), None))

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise StreamError(stream_id, f.FRAME_SIZE_ERROR, "PRIORITY not 5 bytes")
        self._charge("PRIORITY")
        if f.unpack_u32(payload) & f.MAX_WINDOW == stream_id:
            raise StreamError(stream_id, f.PROTOCOL_ERROR, "a stream that depends on itself")

    # -- errors and closing -----------------------------------------------------------------------

    def _stream_error(self, stream_id: int, code: int) -> None:
        self._charge("stream error")  # each costs an RST_STREAM: frames on closed streams, malformed ones
        self._out.append(f.rst_stream(stream_id, code))
        if self._forget(stream_id) is not None:
            self._events.append((RESET, stream_id, code, False))
        elif stream_id > self.last_stream_id:
            self.last_stream_id = stream_id

    def _connection_error(self, code: int, reason: str) -> None:
        # Even after a graceful GOAWAY: the error's own says why the end came now (RFC 9113 6.8
        # allows more than one).
        self._out.append(f.goaway(self.last_stream_id, code, reason.encode()[:256]))
        self.goaway_sent = True
        self.closed = True
        self._events.append((CLOSE, 0, code, reason))
