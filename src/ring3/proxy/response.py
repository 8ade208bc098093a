"""Sans-IO reading of an upstream's HTTP/1.1 responses: bytes in, a head and body pieces out.

Strict on purpose: an upstream is trusted with its content, never with framing. A head with a bare CR or
LF, an obsolete line fold, a malformed status line, two Content-Lengths, Content-Length beside
Transfer-Encoding, a transfer coding other than chunked (or any in HTTP/1.0), or a head over the limits
is refused (UpstreamError: the proxy answers 502 and closes that upstream connection), so nothing the
upstream frames ambiguously can reach the client as a valid-looking response.

Own code rather than httptools' response parser, for three things it cannot do: end a response to HEAD
after its head (llhttp would wait for the body its Content-Length announces), tell where the head ends
in the bytes read (the body after it may be spliced without entering Python), and refuse what llhttp
tolerates in responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ring3.events import Headers

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [\t -~\x80-\xff]*)?")
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Field lines as a whole: each a token, a colon, a value without CR or LF, and CRLF.
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n)*")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF are _FIELDS's; HTAB is allowed
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
# An LF without its CR: a head of bare-LF lines never ends in CRLF CRLF, so it is refused as it comes
# rather than waited for until first_byte_timeout.
BARE_LF = re.compile(rb"(?<!\r)\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t -~\x80-\xff]*)?")
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
NO_BODY = frozenset((204, 304))


class UpstreamError(Exception):
    """The upstream broke HTTP/1.1: its connection is closed, and the client gets 502 (or, once the head
    has been sent on, an aborted connection)."""


@dataclass(slots=True)
class ResponseHead:
    """An upstream response's status line and fields (names lower-cased, values with OWS stripped)."""

    status: int
    headers: Headers
    length: int | None  # Content-Length, when it frames the body
    chunked: bool
    keep_alive: bool  # the connection may carry another request after this response
    size: int  # bytes of the head on the wire


def parse_head(data: bytes, end: int, head_request: bool, max_count: int) -> ResponseHead:
    """The head in `data[:end]` (`end` is where its blank line starts). Raises UpstreamError.

    The field lines are checked all at once (two regex scans in C: their shape, and no control
    character), then split; only a head that fails is gone through line by line, to say what is wrong.
    """
    first = data.find(b"\r\n", 0, end)
    if first < 0:
        first = end
    match = _STATUS_LINE.fullmatch(data, 0, first)
    if match is None:
        raise UpstreamError(f"bad status line {data[:min(first, 80)]!r}")
    minor, status = match.group(1), int(match.group(2))
    fields = data[first + 2:end + 2] if first < end else b""
    if fields and (_FIELDS.fullmatch(fields) is None or _CONTROL.search(fields) is not None):
        _explain(fields)
    lines = fields.split(b"\r\n")
    lines.pop()  # what follows the last CRLF: nothing
    if len(lines) > max_count:
        raise UpstreamError(f"more than {max_count} header fields")
    headers: Headers = []
    length: int | None = None
    coding: bytes | None = None
    connection = b""
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        headers.append((name, value))
        if name not in _FRAMING:
            continue
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 18:
                raise UpstreamError("two Content-Lengths" if length is not None else
                                    f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            if coding is not None:
                raise UpstreamError("two Transfer-Encoding fields")
            coding = value.lower()
        else:
            connection += b"," + value.lower()
    chunked = False
    if coding is not None:
        if minor == b"0":  # RFC 9112 6.1: its framing is faulty, whatever else it says
            raise UpstreamError("Transfer-Encoding in an HTTP/1.0 response")
        if coding != b"chunked":
            raise UpstreamError(f"transfer coding {coding[:40]!r} (only chunked is accepted)")
        if length is not None:
            raise UpstreamError("Content-Length with Transfer-Encoding")
        chunked = True
    if connection:
        tokens = {token.strip() for token in connection.split(b",")}
        keep_alive = b"close" not in tokens if minor == b"1" else b"keep-alive" in tokens
    else:
        keep_alive = minor == b"1"
    if head_request or status in NO_BODY or status < 200:
        return ResponseHead(status, headers, length, False, keep_alive, end + 4)
    if length is None and not chunked:
        keep_alive = False  # the body ends when the connection does
    return ResponseHead(status, headers, length, chunked, keep_alive, end + 4)


def _explain(fields: bytes) -> None:
    """Raise the UpstreamError that says which field line is wrong, and how."""
    for line in fields.split(b"\r\n")[:-1]:
        name, colon, value = line.partition(b":")
        if not colon or not _NAME.fullmatch(name):
            raise UpstreamError(f"bad header line {line[:80]!r}")  # an obs-fold starts with a space
        if _BAD_VALUE.search(value.strip(b" \t")):
            raise UpstreamError(f"control character in header {name[:40]!r}")
    raise UpstreamError("bare CR or LF in the response head")


class ChunkedDecoder:
    """A chunked body's pieces from its bytes, refusing bad sizes, a missing CRLF after a chunk, and
    trailers over `max_trailer_bytes`."""

    __slots__ = ("_buffer", "_left", "_max_trailer", "_state", "done", "trailers")

    def __init__(self, max_trailer_bytes: int) -> None:
        self._buffer = b""
        self._left = 0
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._max_trailer = max_trailer_bytes
        self.done = False
        self.trailers: Headers = []

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Pieces of the body in `data`, and the bytes after the body's end (b"" until done)."""
        pieces: list[bytes] = []
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        at = 0
        size = len(buffer)
        while at < size:
            state = self._state
            if state == 1:
                take = min(self._left, size - at)
                pieces.append(buffer[at:at + take])
                at += take
                self._left -= take
                if self._left == 0:
                    self._state = 2
            elif state == 2:
                if size - at < 2:
                    break
                if buffer[at:at + 2] != b"\r\n":
                    raise UpstreamError("no CRLF after a chunk's data")
                at += 2
                self._state = 0
            elif state == 0:
                end = buffer.find(b"\r\n", at, at + MAX_CHUNK_LINE)
                if end < 0:
                    if size - at >= MAX_CHUNK_LINE:
                        raise UpstreamError("chunk-size line too long")
                    break
                match = _CHUNK_SIZE.fullmatch(buffer, at, end)
                if match is None:
                    raise UpstreamError(f"bad chunk size {buffer[at:min(end, at + 40)]!r}")
                self._left = int(match.group(1), 16)
                at = end + 2
                self._state = 1 if self._left else 3
            else:
                end = buffer.find(b"\r\n", at)
                if end < 0:
                    if size - at > self._max_trailer:
                        raise UpstreamError("trailers too large")
                    break
                if end == at:
                    self.done = True
                    return pieces, buffer[end + 2:]
                self._trailer(buffer[at:end])
                at = end + 2
        self._buffer = buffer[at:]
        return pieces, b""

    def _trailer(self, line: bytes) -> None:
        self._max_trailer -= len(line) + 2
        if self._max_trailer < 0:
            raise UpstreamError("trailers too large")
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise UpstreamError(f"bad trailer line {line[:80]!r}")
        self.trailers.append((name.lower(), value))
