"""A small HTTP/2 client for tests that need control over streams (resets, several streams at once,
reading slowly): the `h2` library (a complete, well-kept HTTP/2 implementation) over a real socket."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame


@dataclass
class Answer:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    ended_at: int = 0  # the order in which streams ended (1 = first)


class H2Client:
    """One HTTP/2 connection (h2c with prior knowledge, or TLS with ALPN h2)."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None, timeout: float = 5.0,
                 window: int | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            context.set_alpn_protocols(["h2"])
            wrapped = context.wrap_socket(raw, server_hostname="localhost")
            assert wrapped.selected_alpn_protocol() == "h2"
            self.sock: socket.socket = wrapped
        else:
            self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.answers: dict[int, Answer] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True  # grant back what is received at once
        self._ended = 0
        self._rest = b""
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                  *(headers or [])]
        self.conn.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.answers[stream_id] = Answer()
        self._flush()
        return stream_id

    def send_data_raw(self, stream_id: int, data: bytes) -> None:
        """A DATA frame written directly: after a GOAWAY the h2 library sends nothing more, though the
        streams it spares go on (RFC 9113 6.8)."""
        self.sock.sendall(DataFrame(stream_id, data).serialize())

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.conn.reset_stream(stream_id, code)
        self._flush()

    def pump(self, until: float = 5.0) -> bool:
        """Read once (up to `until` seconds); False once the connection is closed."""
        self.sock.settimeout(max(until, 0.01))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        if self.goaway is None:
            # The h2 library takes any GOAWAY as the end of everything: it gets the frames up to the
            # first GOAWAY, and the frames after it (the streams a graceful GOAWAY spares) are read here.
            upto, after = _through_goaway(data)
            for event in self.conn.receive_data(upto):
                self._on(event)
            self._flush()
            if self.goaway is None or not after:
                return True
            data = after
        self._after_goaway(data)
        return True

    def _after_goaway(self, data: bytes) -> None:
        """Frames after a graceful GOAWAY (the streams it spares go on), read with hyperframe."""
        data = self._rest + data
        while len(data) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            frame.parse_body(memoryview(data[9:9 + length]))
            data = data[9 + length:]
            answer = self.answers.setdefault(frame.stream_id, Answer())
            if isinstance(frame, HeadersFrame):
                answer.headers.update({str(k): str(v) for k, v in self.conn.decoder.decode(frame.data)})
            elif isinstance(frame, DataFrame):
                answer.body += frame.data
            elif isinstance(frame, RstStreamFrame):
                answer.reset = int(frame.error_code)
            if "END_STREAM" in frame.flags:
                self._ended += 1
                answer.ended = True
                answer.ended_at = self._ended
        self._rest = data

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            answer = self.answers.setdefault(event.stream_id, Answer())
            answer.headers.update({str(k): str(v) for k, v in event.headers})
        elif isinstance(event, h2.events.TrailersReceived):
            self.answers[event.stream_id].headers.update({str(k): str(v) for k, v in event.headers})
        elif isinstance(event, h2.events.DataReceived):
            self.answers[event.stream_id].body += event.data
            if self.auto_ack and event.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass  # data that crossed our reset
        elif isinstance(event, h2.events.StreamEnded):
            self._ended += 1
            answer = self.answers[event.stream_id]
            answer.ended = True
            answer.ended_at = self._ended
        elif isinstance(event, h2.events.StreamReset):
            self.answers.setdefault(event.stream_id, Answer()).reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, *stream_ids: int, timeout: float = 10.0) -> list[Answer]:
        """Read until every stream has ended or been reset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answers = [self.answers[s] for s in stream_ids]
            if all(a.ended or a.reset is not None for a in answers):
                return answers
            if not self.pump(min(1.0, deadline - time.monotonic())):
                break
        return [self.answers[s] for s in stream_ids]

    def get(self, path: str, method: str = "GET", body: bytes | None = None,
            headers: list[tuple[str, str]] | None = None) -> Answer:
        return self.wait(self.request(path, method=method, body=body, headers=headers))[0]

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _through_goaway(data: bytes) -> tuple[bytes, bytes]:
    """`data` split after its first GOAWAY frame, if it holds a whole one (the frames of one read are
    whole here but for the last; the h2 library buffers the rest)."""
    at = 0
    while len(data) - at >= 9:
        length = int.from_bytes(data[at:at + 3], "big")
        end = at + 9 + length
        if end > len(data):
            break
        if data[at + 3] == 0x7:  # GOAWAY
            return data[:end], data[end:]
        at = end
    return data, b""
