"""A stream that carries another protocol after an extended CONNECT (RFC 8441: WebSockets over HTTP/2).

The protocol (events.Upgrade, the same WebSocketSession as after an HTTP/1.1 101) sees the stream through
StreamChannel: what it writes becomes DATA frames on the stream; what the client sends in DATA frames
reaches its `data_received`; pausing its reading withholds the client's flow-control credit, so a
WebSocket whose application does not read holds the client back by the stream's window, as TCP would.
`close` ends the stream (END_STREAM once all written has left); `abort` resets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ring3.errors import ClientDisconnected
from ring3.output import SendFailed

if TYPE_CHECKING:
    from ring3.http2.stream import H2Stream


class StreamChannel:
    """events.Channel over one HTTP/2 stream."""

    __slots__ = ("_stream",)

    def __init__(self, stream: H2Stream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        stream = self._stream
        if data and not stream.closed:
            stream.push(data, len(data))

    @property
    def blocked(self) -> bool:
        return self._stream.writer_blocked

    async def drain(self) -> None:
        try:
            await self._stream.wait_writable()
        except ClientDisconnected as exc:
            raise SendFailed(str(exc)) from None

    def pause_reading(self) -> None:
        self._stream.pause_credit()

    def resume_reading(self) -> None:
        self._stream.resume_credit()

    def close(self) -> None:
        stream = self._stream
        if not stream.closed:
            stream.end_push()

    def abort(self) -> None:
        self._stream.abort_tunnel()
