"""What the HTTP/2 core keeps and says: its settings, its events, its errors, a stream's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ring3.http2.request import RequestHead

REQUEST, DATA, TRAILERS, REFUSED, RESET, WINDOW, GOAWAY, CLOSE, PRIORITY = range(9)
H2Event = tuple[int, int, Any, Any]

RECENTLY_CLOSED = 256  # closed stream ids remembered, to tell "closed" (STREAM_CLOSED) from "never used"


@dataclass(frozen=True, slots=True, kw_only=True)
class H2Settings:
    """What ring3 announces and enforces; see ring3.config.schema.Http2Section for the docs."""

    max_concurrent_streams: int = 128
    initial_window_size: int = 65535
    connection_window_size: int = 1 << 20
    max_frame_size: int = 16384
    max_header_list_size: int = 32768
    header_table_size: int = 4096
    enable_connect_protocol: bool = True  # RFC 8441
    control_frame_burst: int = 1000
    control_frame_rate: float = 100.0
    max_body_size: int = 1 << 20


class H2ConnectionError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with `code`, then the end."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 5.4.2): RST_STREAM with `code`; the connection goes on."""

    def __init__(self, stream_id: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.stream_id = stream_id
        self.code = code


class StreamState:
    """The core's view of one open stream: both windows, the body's length, which sides ended."""

    __slots__ = ("expected", "local_closed", "received", "recv_window", "refused", "remote_closed",
                 "send_window", "unacked")

    def __init__(self, send_window: int, recv_window: int, expected: int, remote_closed: bool) -> None:
        self.send_window = send_window
        self.recv_window = recv_window  # credit the client still has on this stream
        self.unacked = 0  # body bytes the handler has read, not yet granted back
        self.expected = expected  # Content-Length, or -1
        self.received = 0
        self.remote_closed = remote_closed
        self.local_closed = False
        self.refused = False  # answered without a handler: its body is dropped (and credited back)


@dataclass(frozen=True, slots=True)
class ParsedHead:
    """A header block's validated head, or why it is refused (a status) or malformed."""

    head: RequestHead | None
    status: int
    reason: str
    malformed: bool
