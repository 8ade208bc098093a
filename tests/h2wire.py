"""Raw HTTP/2 on a real socket, for conformance tests that must send what no well-behaved client would.

Frames are built and parsed with `hyperframe`, header blocks with `hpack` (one Encoder and one Decoder per
connection, so both dynamic tables stay in step with the server's). Hostile frames that hyperframe will
not build (stream 0 where a stream is required, lengths that do not match the type) go out as raw bytes.

Reads are bounded: each one waits at most `timeout` seconds (3 s by default). The `expect_*` helpers mirror
h2spec's verifiers and accept exactly what they accept:

* connection error: a GOAWAY with one of the codes, or the connection closed (EOF or reset); a GOAWAY with
  another code is passed over while reading on;
* stream error: as above, or a RST_STREAM with one of the codes (on any stream, as h2spec does unless a
  stream is named);
* the "first frame of a kind" checks (HEADERS on a stream, SETTINGS with ACK, PING with ACK): frames of other
  types are skipped, and the first frame of the wanted type decides;
* a timeout, an unreadable frame or a connection closed mid-frame ends the reading and fails the check.

Like h2spec, the connection answers DATA it receives with WINDOW_UPDATE frames once its own count of the
connection or stream window (started at 65,535 whatever was announced) drops to zero or below.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_TIMEOUT = 3.0
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
FRAME_HEADER = 9

Header = tuple[str, str]
F = TypeVar("F", bound=Frame)


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


@dataclass(frozen=True)
class Closed:
    """The peer closed the connection (EOF at a frame boundary, or a reset)."""

    detail: str


@dataclass(frozen=True)
class TimedOut:
    """Nothing arrived within the read's deadline."""

    seconds: float


@dataclass(frozen=True)
class ReadError:
    """What arrived could not be read as a frame (closed mid-frame, malformed, bad TLS)."""

    detail: str


End = Closed | TimedOut | ReadError
Event = Frame | End


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"


def describe(event: Event | None) -> str:
    """One line for an event, for failure messages."""
    if event is None:
        return "nothing"
    if isinstance(event, GoAwayFrame):
        return (f"GOAWAY(last_stream_id={event.last_stream_id}, code={code_name(event.error_code)}, "
                f"debug={event.additional_data[:60]!r})")
    if isinstance(event, RstStreamFrame):
        return f"RST_STREAM(stream_id={event.stream_id}, code={code_name(event.error_code)})"
    if isinstance(event, Frame):
        return f"{type(event).__name__}(stream_id={event.stream_id}, flags={sorted(event.flags)}, " \
               f"length={event.body_len})"
    return repr(event)


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame exactly as given: no check on the type, flags, stream or length."""
    length = len(payload)
    return struct.pack(">BHBBL", length >> 16, length & 0xFFFF, frame_type, flags,
                       stream_id & 0xFFFFFFFF) + payload


def _on_stream(frame: F, stream_id: int) -> F:
    """Put a frame on any stream, 0 included: hyperframe checks the stream only when a frame is made."""
    frame.stream_id = stream_id
    return frame


class H2Connection:
    """One client connection speaking raw HTTP/2 (after `connect`)."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        self.auto_window_update = True
        self.windows: dict[int, int] = {0: DEFAULT_WINDOW}
        self.header_blocks: list[tuple[int, list[Header]]] = []  # (stream, decoded fields), in order
        self.decode_error: str | None = None
        self.received: list[str] = []  # a trace of what was read, for failure messages
        self.end: End | None = None  # set once reading has stopped for good
        self.send_error: str | None = None
        self._buffer = bytearray()
        self._block: tuple[int, bytearray] | None = None  # a header block awaiting END_HEADERS

    # -- the connection ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.end is not None

    @property
    def max_frame_size(self) -> int:
        return self.server_settings.get(Setting.MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H2Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ----------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Raw bytes. A failed write is remembered, not raised: the peer may rightly have closed by now."""
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as error:
            self.send_error = self.send_error or repr(error)

    def send_frame(self, frame: Frame) -> None:
        self.send(frame.serialize())

    def send_raw_frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        self.send(raw_frame(frame_type, flags, stream_id, payload))

    def send_preface(self, settings: Sequence[tuple[int, int]] | None = None) -> None:
        """The client connection preface followed by a SETTINGS frame (by default what h2spec sends)."""
        if settings is None:
            settings = [(Setting.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)]
        self.send(PREFACE + self._settings_bytes(settings))

    def handshake(self, settings: Sequence[tuple[int, int]] | None = None) -> dict[int, int]:
        """Preface and SETTINGS, then wait (one deadline for it all) for the server's SETTINGS, which is
        acknowledged, and for its ACK of ours. Other frames are read past. Returns the server's settings."""
        self.send_preface(settings)
        deadline = time.monotonic() + self.timeout
        theirs = acked = False
        while not (theirs and acked):
            event = self.read_event(deadline=deadline)
            if not isinstance(event, Frame):
                raise AssertionError(f"HTTP/2 handshake failed: {describe(event)}; read {self.received}")
            if isinstance(event, SettingsFrame):
                if "ACK" in event.flags:
                    acked = True
                else:
                    theirs = True
                    self.server_settings.update(event.settings)
                    self.send_settings_ack()
        return self.server_settings

    def encode_headers(self, headers: Iterable[Header]) -> bytes:
        """A header block from this connection's encoder (its dynamic table carries over)."""
        return self.encoder.encode(list(headers))

    def set_encoder_table_size(self, size: int) -> None:
        """The encoder's table size; the next block starts with a dynamic table size update."""
        self.encoder.header_table_size = size

    def send_headers(self, stream_id: int, block: bytes, *, end_stream: bool, end_headers: bool = True,
                     pad_length: int = 0, priority: tuple[int, int, bool] | None = None) -> None:
        """HEADERS; `priority` is (depends_on, weight byte as sent, exclusive)."""
        flags = [name for name, wanted in (("END_STREAM", end_stream), ("END_HEADERS", end_headers),
                                          ("PADDED", pad_length > 0), ("PRIORITY", priority is not None))
                 if wanted]
        frame = HeadersFrame(1, block, flags=flags, pad_length=pad_length)
        if priority is not None:
            frame.depends_on, frame.stream_weight, frame.exclusive = priority
        self.send_frame(_on_stream(frame, stream_id))

    def send_continuation(self, stream_id: int, block: bytes, *, end_headers: bool) -> None:
        frame = ContinuationFrame(1, block, flags=["END_HEADERS"] if end_headers else [])
        self.send_frame(_on_stream(frame, stream_id))

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool,
                  padding: bytes | None = None) -> None:
        """DATA; `padding` (zero bytes, may be empty) sets PADDED. DATA is sent whatever the windows say."""
        flags = ["END_STREAM"] if end_stream else []
        if padding is None:
            frame = DataFrame(1, data, flags=flags)
            self.send_frame(_on_stream(frame, stream_id))
        else:  # hyperframe pads with zeros only; send any padding given as is
            self.send_raw_frame(FrameType.DATA, 0x08 | (0x01 if end_stream else 0), stream_id,
                                bytes([len(padding)]) + data + padding)

    def send_priority(self, stream_id: int, *, depends_on: int = 0, weight: int = 15,
                      exclusive: bool = False) -> None:
        """PRIORITY; `weight` is the byte on the wire (the weight minus one)."""
        frame = PriorityFrame(1, depends_on=depends_on, stream_weight=weight, exclusive=exclusive)
        self.send_frame(_on_stream(frame, stream_id))

    def send_rst_stream(self, stream_id: int, code: int) -> None:
        self.send_frame(_on_stream(RstStreamFrame(1, code), stream_id))

    def send_settings(self, *settings: tuple[int, int]) -> None:
        """SETTINGS with the pairs in order (the same identifier may appear twice)."""
        self.send(self._settings_bytes(settings))

    def send_settings_ack(self) -> None:
        self.send_frame(SettingsFrame(0, flags=["ACK"]))

    def send_ping(self, data: bytes, *, ack: bool = False) -> None:
        self.send_frame(PingFrame(0, data.ljust(8, b"\0"), flags=["ACK"] if ack else []))

    def send_goaway(self, last_stream_id: int, code: int, debug: bytes = b"") -> None:
        self.send_frame(GoAwayFrame(0, last_stream_id, code, debug))

    def send_window_update(self, stream_id: int, increment: int) -> None:
        """WINDOW_UPDATE with any increment, 0 and out-of-range ones included."""
        self.send_frame(WindowUpdateFrame(stream_id, increment))

    def send_push_promise(self, stream_id: int, promised_stream_id: int, block: bytes, *,
                          end_headers: bool = True) -> None:
        frame = PushPromiseFrame(1, promised_stream_id, block, flags=["END_HEADERS"] if end_headers else [])
        self.send_frame(_on_stream(frame, stream_id))

    @staticmethod
    def _settings_bytes(settings: Iterable[tuple[int, int]]) -> bytes:
        payload = b"".join(struct.pack(">HL", ident, value) for ident, value in settings)
        return raw_frame(FrameType.SETTINGS, 0, 0, payload)

    # -- receiving --------------------------------------------------------------------------------------

    def read_event(self, timeout: float | None = None, *, deadline: float | None = None) -> Event:
        """The next frame, or how reading ended. Once it has ended, the same end is returned at once."""
        if self.end is not None:
            return self.end
        limit = self.timeout if timeout is None else timeout
        if deadline is not None:
            limit = min(limit, deadline - time.monotonic())
        until = time.monotonic() + max(limit, 0.0)
        event = self._read_frame(until, limit)
        if isinstance(event, Frame):
            self._after_frame(event)
        else:
            self.end = event
        self.received.append(describe(event))
        return event

    def _fill(self, want: int, until: float, limit: float) -> End | None:
        while len(self._buffer) < want:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return TimedOut(limit)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return TimedOut(limit)
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as error:
                return Closed(repr(error))
            except (OSError, ssl.SSLError) as error:
                return ReadError(repr(error))
            if not chunk:
                if self._buffer:
                    return ReadError(f"connection closed mid-frame ({len(self._buffer)} bytes buffered)")
                return Closed("EOF")
            self._buffer += chunk
        return None

    def _read_frame(self, until: float, limit: float) -> Event:
        end = self._fill(FRAME_HEADER, until, limit)
        if end is not None:
            return end
        try:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self._buffer[:FRAME_HEADER])))
        except HyperframeError as error:
            return ReadError(f"bad frame header: {error!r}")
        end = self._fill(FRAME_HEADER + length, until, limit)
        if end is not None:
            return end
        body = bytes(self._buffer[FRAME_HEADER:FRAME_HEADER + length])
        del self._buffer[:FRAME_HEADER + length]
        try:
            frame.parse_body(memoryview(body))
        except HyperframeError as error:
            return ReadError(f"bad {type(frame).__name__} on stream {frame.stream_id}: {error!r}")
        return frame

    def _after_frame(self, frame: Frame) -> None:
        if isinstance(frame, HeadersFrame | PushPromiseFrame):
            self._block = (frame.stream_id, bytearray(frame.data))
            if "END_HEADERS" in frame.flags:
                self._decode_block()
        elif isinstance(frame, ContinuationFrame) and self._block is not None:
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._decode_block()
        elif isinstance(frame, DataFrame) and self.auto_window_update:
            self._count_window(frame.stream_id, frame.body_len)

    def _decode_block(self) -> None:
        assert self._block is not None
        stream_id, block = self._block
        self._block = None
        if self.decode_error is not None:
            return  # the table is out of step: nothing after can be trusted
        try:
            fields = self.decoder.decode(bytes(block), raw=True)
        except hpack.HPACKError as error:
            self.decode_error = repr(error)
            return
        self.header_blocks.append((stream_id, [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                                               for n, v in fields]))

    def _count_window(self, stream_id: int, length: int) -> None:
        for key in (stream_id, 0):
            window = self.windows.setdefault(key, DEFAULT_WINDOW) - length
            if window <= 0:
                self.send_window_update(key, DEFAULT_WINDOW - window)
                window = DEFAULT_WINDOW
            self.windows[key] = window

    def headers_for(self, stream_id: int) -> list[list[Header]]:
        """Decoded header blocks the server sent on a stream, in order."""
        return [fields for sid, fields in self.header_blocks if sid == stream_id]

    # -- h2spec's verifiers -----------------------------------------------------------------------------

    def _fail(self, expected: str, actual: Event | None) -> AssertionError:
        return AssertionError(f"expected {expected}; got {describe(actual)}; read {self.received}")

    def wait_for(self, kind: type[F]) -> F:
        """The first frame of a type (others are read past); fails if reading ends first."""
        while True:
            event = self.read_event()
            if isinstance(event, kind):
                return event
            if not isinstance(event, Frame):
                raise self._fail(kind.__name__, event)

    def _until(self, expected: str, accept: type[Frame] | tuple[type[Frame], ...],
               codes: Sequence[int]) -> Event:
        while True:
            event = self.read_event()
            if isinstance(event, Closed):
                return event
            if isinstance(event, accept) and getattr(event, "error_code", None) in codes:
                return event
            if not isinstance(event, Frame):
                raise self._fail(expected, event)

    def expect_connection_error(self, *codes: int) -> Event:
        """GOAWAY with one of `codes`, or the connection closed (h2spec's VerifyConnectionError)."""
        names = " or ".join(code_name(c) for c in codes)
        return self._until(f"GOAWAY({names}) or connection close", GoAwayFrame, codes)

    def expect_stream_error(self, *codes: int, stream_id: int | None = None) -> Event:
        """RST_STREAM or GOAWAY with one of `codes`, or the connection closed (VerifyStreamError). With
        `stream_id`, only a RST_STREAM on that stream counts (stricter than h2spec)."""
        names = " or ".join(code_name(c) for c in codes)
        while True:
            event = self._until(f"RST_STREAM({names}) or GOAWAY({names}) or connection close",
                                (GoAwayFrame, RstStreamFrame), codes)
            if stream_id is None or not isinstance(event, RstStreamFrame) or event.stream_id == stream_id:
                return event

    def expect_connection_close(self) -> Closed:
        """The connection closed; frames before it are read past (VerifyConnectionClose)."""
        event = self._until("connection close", (), ())
        assert isinstance(event, Closed)
        return event

    def expect_goaway(self, code: int) -> GoAwayFrame:
        """A GOAWAY frame itself (a close alone does not do), with `code`."""
        frame = self.wait_for(GoAwayFrame)
        if frame.error_code != code:
            raise self._fail(f"GOAWAY({code_name(code)})", frame)
        return frame

    def expect_stream_close(self) -> Frame:
        """DATA or HEADERS with END_STREAM, or RST_STREAM(NO_ERROR), on any stream (VerifyStreamClose)."""
        while True:
            event = self.read_event()
            if isinstance(event, DataFrame | HeadersFrame) and "END_STREAM" in event.flags:
                return event
            if isinstance(event, RstStreamFrame) and event.error_code == ErrorCode.NO_ERROR:
                return event
            if not isinstance(event, Frame):
                raise self._fail("stream close", event)

    def expect_headers(self, stream_id: int) -> HeadersFrame:
        """The first HEADERS frame received must be on `stream_id` (VerifyHeadersFrame)."""
        frame = self.wait_for(HeadersFrame)
        if frame.stream_id != stream_id:
            raise self._fail(f"HEADERS on stream {stream_id}", frame)
        return frame

    def expect_response(self, stream_id: int) -> list[Header]:
        """As `expect_headers`, then the decoded fields (reading CONTINUATION frames if need be)."""
        frame = self.expect_headers(stream_id)
        count = len(self.headers_for(stream_id))
        if "END_HEADERS" not in frame.flags:
            while len(self.headers_for(stream_id)) == count and self.decode_error is None:
                self.wait_for(ContinuationFrame)
        if self.decode_error is not None:
            raise AssertionError(f"cannot decode the server's header block: {self.decode_error}")
        return self.headers_for(stream_id)[-1]

    def expect_settings_ack(self) -> SettingsFrame:
        """The first SETTINGS frame received must carry ACK (VerifySettingsFrameWithAck)."""
        frame = self.wait_for(SettingsFrame)
        if "ACK" not in frame.flags:
            raise self._fail("SETTINGS with ACK", frame)
        return frame

    def expect_ping_ack(self, data: bytes) -> PingFrame:
        """The first PING frame received must be an ACK echoing `data` (VerifyPingFrameWithAck)."""
        frame = self.wait_for(PingFrame)
        if "ACK" not in frame.flags or frame.opaque_data != data.ljust(8, b"\0"):
            raise self._fail(f"PING(ACK, {data!r})", frame)
        return frame

    def expect_ping_ack_or_close(self, data: bytes) -> Event:
        """A PING ACK echoing `data` (other PINGs are read past), or the connection closed
        (VerifyPingFrameOrConnectionClose)."""
        while True:
            event = self.read_event()
            if isinstance(event, Closed):
                return event
            if isinstance(event, PingFrame) and "ACK" in event.flags and \
                    event.opaque_data == data.ljust(8, b"\0"):
                return event
            if not isinstance(event, Frame):
                raise self._fail(f"PING(ACK, {data!r}) or connection close", event)

    def read_body_length(self, stream_id: int) -> int:
        """Sum the DATA lengths (padding included) on a stream until END_STREAM; fails if reading ends."""
        total = 0
        while True:
            event = self.read_event()
            if not isinstance(event, Frame):
                raise self._fail(f"the end of stream {stream_id}", event)
            if event.stream_id != stream_id:
                continue
            if isinstance(event, DataFrame):
                total += event.body_len
            if isinstance(event, DataFrame | HeadersFrame) and "END_STREAM" in event.flags:
                return total


def connect(host: str, port: int, tls_context: ssl.SSLContext | None = None, *,
            server_hostname: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> H2Connection:
    """A TCP connection (TCP_NODELAY), wrapped in TLS negotiating "h2" by ALPN when a context is given
    (the context's ALPN list is set to ["h2"]). Nothing is sent yet: see `handshake` and `send_preface`."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_context is not None:
        tls_context.set_alpn_protocols(["h2"])
        try:
            sock = tls_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        assert isinstance(sock, ssl.SSLSocket)
        if sock.selected_alpn_protocol() != "h2":
            sock.close()
            raise AssertionError(f"ALPN did not select h2: {sock.selected_alpn_protocol()!r}")
    return H2Connection(sock, timeout)
