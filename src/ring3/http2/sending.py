"""The sending side of the HTTP/2 core: SETTINGS at the start, HEADERS and DATA frame headers with
their flow-control credit, resets, GOAWAY, and the credit granted back as request bodies are read.
H2Protocol (ring3.http2.protocol) is this plus the receiving side; both share its state."""

from __future__ import annotations

from collections import deque

from ring3.http2 import frames as f
from ring3.http2.hpack import TABLE_SIZE_ZERO
from ring3.http2.state import H2Settings, StreamState


class SendingSide:
    """The half of H2Protocol that makes frames for ring3's side of the conversation."""

    settings: H2Settings
    streams: dict[int, StreamState]
    last_stream_id: int
    peer_max_frame_size: int
    send_window: int
    goaway_sent: bool
    _out: list[bytes]
    _recently_closed: deque[int]
    _closed_set: set[int]
    _recv_window: int
    _conn_unacked: int
    _table_update: bool
    _tokens: float
    _burst: float

    # -- starting and output ----------------------------------------------------------------------

    def start(self) -> None:
        """Queue ring3's SETTINGS (and the connection window beyond the default)."""
        s = self.settings
        announced = {
            f.SETTINGS_MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
            f.SETTINGS_INITIAL_WINDOW_SIZE: s.initial_window_size,
            f.SETTINGS_MAX_FRAME_SIZE: s.max_frame_size,
            f.SETTINGS_MAX_HEADER_LIST_SIZE: s.max_header_list_size,
            f.SETTINGS_ENABLE_PUSH: 0,
        }
        if s.header_table_size != 4096:
            announced[f.SETTINGS_HEADER_TABLE_SIZE] = s.header_table_size
        if s.enable_connect_protocol:
            announced[f.SETTINGS_ENABLE_CONNECT_PROTOCOL] = 1
        announced[f.SETTINGS_NO_RFC7540_PRIORITIES] = 1  # RFC 9218 2.1: priorities are RFC 9218's
        self._out.append(f.settings_frame(announced))
        extra = s.connection_window_size - f.DEFAULT_WINDOW
        if extra > 0:
            self._out.append(f.window_update(0, extra))
            self._recv_window += extra

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    @property
    def backlog(self) -> int:
        """Pieces of frames waiting in data_to_send()."""
        return len(self._out)

    def _forget(self, stream_id: int) -> StreamState | None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            closed = self._recently_closed
            if len(closed) == closed.maxlen:
                self._closed_set.discard(closed[0])
            closed.append(stream_id)
            self._closed_set.add(stream_id)
        return stream


    # -- sending ----------------------------------------------------------------------------------

    def window(self, stream_id: int) -> int:
        """How many body bytes the stream may send now (0 if it is gone)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return 0
        return min(self.send_window, stream.send_window)

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        """Queue a header block (split into CONTINUATION frames beyond the client's frame size)."""
        self._out.extend(self.header_frames(stream_id, block, end_stream))

    def header_frames(self, stream_id: int, block: bytes, end_stream: bool) -> list[bytes]:
        """The frames of a header block, for the caller to send in its place among DATA frames (the
        trailers after a body); END_STREAM ends ring3's side of the stream."""
        if self._table_update:
            self._table_update = False
            block = TABLE_SIZE_ZERO + block
        flags = f.FLAG_END_STREAM if end_stream else 0
        size = self.peer_max_frame_size
        if len(block) <= size:
            frames = [f.frame_header(len(block), f.HEADERS, flags | f.FLAG_END_HEADERS, stream_id), block]
        else:
            frames = [f.frame(f.HEADERS, flags, stream_id, block[:size])]
            for at in range(size, len(block), size):
                last = at + size >= len(block)
                frames.append(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS if last else 0, stream_id,
                                      block[at:at + size]))
        if end_stream:
            self._local_end(stream_id)
        return frames

    def data_header(self, stream_id: int, length: int, end_stream: bool) -> bytes:
        """The 9-byte header of a DATA frame of `length` bytes, its credit taken; the caller sends the
        header and then the payload, in order, before anything else that is queued here."""
        if length:
            stream = self.streams[stream_id]
            stream.send_window -= length
            self.send_window -= length
            if self._tokens < self._burst:
                self._tokens += 1  # a client that takes data earns its WINDOW_UPDATEs back
        header = f.frame_header(length, f.DATA, f.FLAG_END_STREAM if end_stream else 0, stream_id)
        if end_stream:
            self._local_end(stream_id)
        return header

    def _local_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.local_closed = True
            if stream.remote_closed:
                self._forget(stream_id)

    def reset(self, stream_id: int, code: int) -> None:
        """Reset a stream from ring3's side (its handler gave up, or its response is complete while the
        client still sends a body nobody reads: NO_ERROR, RFC 9113 8.1)."""
        if self._forget(stream_id) is not None:  # a stream closed both ways needs no reset
            self._out.append(f.rst_stream(stream_id, code))

    def refuse(self, stream_id: int) -> None:
        """ring3 answers the stream without its body (408): what still arrives is dropped and credited."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.refused = True

    def consumed(self, stream_id: int, size: int) -> None:
        """The handler has read `size` body bytes: grant them back to the client (in WINDOW_UPDATEs
        once half a window is owed, so a steady upload costs few frames)."""
        self._grant(size)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        stream.unacked += size
        if stream.unacked >= self.settings.initial_window_size // 2:
            self._out.append(f.window_update(stream_id, stream.unacked))
            stream.recv_window += stream.unacked
            stream.unacked = 0

    def _grant(self, size: int) -> None:
        self._conn_unacked += size
        if self._conn_unacked >= self.settings.connection_window_size // 2:
            self._out.append(f.window_update(0, self._conn_unacked))
            self._recv_window += self._conn_unacked
            self._conn_unacked = 0

    def goaway(self, code: int = f.NO_ERROR, reason: str = "") -> None:
        """Refuse new streams; those up to `last_stream_id` may finish (graceful shutdown)."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._out.append(f.goaway(self.last_stream_id, code, reason.encode()[:256]))
