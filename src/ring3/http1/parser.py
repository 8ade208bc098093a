"""Sans-IO HTTP/1.1 request parsing on httptools (llhttp): bytes in, events out.

No sockets, clocks or tasks here. The I/O layer feeds `receive_data()` and gets protocol-neutral events.
Every limit is enforced here and turned into a `RequestRejected` event that carries the status to answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httptools

from ring3.errors import RemoteProtocolError
from ring3.events import Event, Request, RequestData, RequestEnded, RequestRejected

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")
# A method token, or what has arrived of one (llhttp may fail before the space arrives).
_TOKEN_OR_PREFIX = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?: |$)")
# Host: reg-name / IPv4 / [IPv6] with an optional port. No userinfo, no path, no spaces.
HOST_SYNTAX = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?$")
# A request line of a protocol llhttp also parses (RTSP, ICE), at the start of a line.
_OTHER_PROTOCOL = re.compile(rb"(?:^|\n)[A-Z_-]+ [^ \r\n]+ (?:RTSP|ICE)/")
_ENDED = RequestEnded()  # immutable and the same for every HTTP/1.1 request: shared
_FRAMING_FIELDS = frozenset((b"host", b"content-length", b"transfer-encoding", b"expect"))
_CONDITIONAL_FIELDS = frozenset(
    (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range", b"range"))
_NOTED_FIELDS = _FRAMING_FIELDS | _CONDITIONAL_FIELDS
_ABSOLUTE = re.compile(rb"^[hH][tT][tT][pP][sS]?://")
# Raw head bytes beyond the measured fields: request-line framing ("OPTIONS ", " HTTP/1.1\r\n"), the
# final CRLF and optional whitespace.
_HEAD_FRAMING_SLACK = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class H1Limits:
    """The parser's limits; see ring3.config.schema.LimitsSection for the docs and defaults."""

    max_request_line: int = 8192
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_body_size: int = 1024 * 1024


class H1Parser:
    """One connection's request stream.

    `receive_data()` returns the events the bytes complete, in order. After a `RequestRejected`, the
    parser is dead: later bytes are ignored, since the message framing is in doubt.
    """

    __slots__ = (
        "_begun_in_feed",
        "_body_bytes",
        "_conditional",
        "_content_length",
        "_events",
        "_expect",
        "_field_bytes",
        "_first_line",
        "_has_te",
        "_headers",
        "_host",
        "_host_count",
        "_limits",
        "_max_header_bytes",
        "_max_header_count",
        "_parser",
        "_raw_head",
        "_te_values",
        "_url",
        "_valid_host",
        "dead",
        "in_body",
        "in_head",
        "upgrade_data",
        "upgraded",
    )

    def __init__(self, limits: H1Limits | None = None) -> None:
        self._limits = limits = limits or H1Limits()
        self._max_header_count = limits.max_header_count  # read for every field: kept at hand
        self._max_header_bytes = limits.max_header_bytes
        # httptools' parser, made by the first receive_data: a connection whose requests are all
        # answered from the replay cache never needs one (it looks up ten callbacks as it is made).
        self._parser: httptools.HttpRequestParser | None = None
        self._events: list[Event] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._field_bytes = 0
        self._raw_head = 0
        self._first_line: bytes | None = None
        self._body_bytes = 0
        self._host: bytes = b""
        self._valid_host: bytes | None = None  # the last Host that passed HOST_SYNTAX
        self._host_count = 0
        self._content_length: int | None = None
        self._expect: bytes | None = None
        self._has_te = False
        self._te_values: list[bytes] | None = None
        self._conditional = False
        self._begun_in_feed = False
        self.in_head = False  # some bytes of a request head arrived; the head is not complete
        self.in_body = False  # the head is complete; the body is not
        self.dead = False  # a request was rejected; nothing more is parsed
        self.upgraded = False  # the peer asked to switch protocols; later bytes are not HTTP/1.1
        self.upgrade_data = b""  # bytes received after the head of a request that upgrades

    # -- the sans-IO interface ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes; return the events they complete."""
        if self.dead or self.upgraded or not data:
            return []
        events = self._events = []
        began_before = self.in_head
        self._begun_in_feed = False
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            self.upgrade_data = data[exc.args[0]:] if exc.args else b""
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RemoteProtocolError):
                self._reject(cause.status, cause.reason)
            else:  # pragma: no cover - a bug of ours inside a callback
                raise
        except httptools.HttpParserError as exc:
            if not self._refuse_other_protocols(data, began_before):
                self._reject(*_status_for_parser_error(exc, self._failing_message(data, began_before)))
        else:
            if self.in_head:
                # A head that began before this feed and still runs has all of this feed's bytes.
                self._check_partial_head(data, began_before and not self._begun_in_feed, not events)
        has_head = self._begun_in_feed or began_before
        # find, not `in`: bytes.__contains__ tries the needle as an int first and builds a TypeError.
        if has_head and not self.dead and (data.find(b"RTSP/") >= 0 or data.find(b"ICE/") >= 0):
            self._refuse_other_protocols(data, began_before)
        return events

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self._begun_in_feed = True
        self._url = b""
        self._first_line = None
        self._headers = []
        self._field_bytes = 0
        self._raw_head = 0
        self._body_bytes = 0
        self._host_count = 0
        self._content_length = None
        self._expect = None
        self._has_te = False
        self._te_values = None
        self._conditional = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_request_line:
            raise RemoteProtocolError("request target too long", status=414)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        name = name.lower()
        value = value.rstrip(b" \t")  # RFC 9110 5.5: trailing whitespace is not part of the value
        headers.append((name, value))
        if name in _NOTED_FIELDS:
            self._note_framing(name, value)
        field_bytes = self._field_bytes = self._field_bytes + len(name) + len(value) + 4  # "name: value\r\n"
        if len(headers) > self._max_header_count:
            raise RemoteProtocolError("too many header fields", status=431)
        if field_bytes + len(self._url) > self._max_header_bytes:
            raise RemoteProtocolError("request header block too large", status=431)

    def _note_framing(self, name: bytes, value: bytes) -> None:
        """Remember the fields that decide framing and routing, and whether any is conditional."""
        if name == b"host":
            self._host = value
            self._host_count += 1
        elif name == b"content-length":
            self._content_length = int(value)  # llhttp has checked it is one run of digits
        elif name == b"transfer-encoding":
            self._has_te = True
            if self._te_values is None:
                self._te_values = []
            self._te_values.append(value)
        elif name == b"expect":
            self._expect = value
        else:
            self._conditional = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.in_body = True
        request = self._build_request()
        self._events.append(request)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.max_body_size:
            raise RemoteProtocolError("request body too large", status=413)
        self._events.append(RequestData(data=body))

    def on_message_complete(self) -> None:
        self.in_body = False
        self._events.append(_ENDED)

    # -- helpers ----------------------------------------------------------------------------------

    def _build_request(self) -> Request:
        parser = self._parser
        assert parser is not None  # called back from its feed_data
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise RemoteProtocolError(f"HTTP/{version} is not supported", status=505)
        method: bytes = parser.get_method()
        if self._host_count != 1:
            if self._host_count > 1:
                raise RemoteProtocolError("more than one Host header", status=400)
            if version == "1.1":
                raise RemoteProtocolError("HTTP/1.1 request without Host", status=400)
        has_te = self._has_te
        if has_te:
            if version == "1.0":
                raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request", status=400)
            _check_transfer_coding(self._te_values or [])
        host = self._host
        if host != self._valid_host:  # a connection's requests name the same host: checked once
            if not HOST_SYNTAX.match(host):
                raise RemoteProtocolError("invalid Host header", status=400)
            self._valid_host = host
        if method == b"CONNECT":
            raise RemoteProtocolError("CONNECT is not supported", status=501)
        target = self._url
        if target[:1] == b"/" and target.find(b"#") < 0:
            path, _, query = target.partition(b"?")
        else:
            path, query, host = _split_target(target, method, host)
        content_length = self._content_length
        if content_length is not None and content_length > self._limits.max_body_size:
            raise RemoteProtocolError("request body too large", status=413)
        expect_continue = False
        expect = self._expect
        if expect is not None:
            if expect.lower() != b"100-continue":
                raise RemoteProtocolError("unsupported Expect", status=417)
            expect_continue = version == "1.1" and (has_te or bool(content_length))
        # Positional (see Request): method, target, path, query, http_version, headers, host, keep_alive,
        # expect_continue, has_body, conditional, upgrade.
        return Request(method, target, path, query, version, self._headers, host, parser.should_keep_alive(),
                       expect_continue, has_te or bool(content_length), self._conditional,
                       parser.should_upgrade())

    def _check_partial_head(self, data: bytes, began_before: bool, no_events: bool) -> None:
        """Bound a head that is still incomplete after a feed (httptools buffers its pieces).

        The complete fields are measured exactly in on_header; this bounds the raw bytes of a head that
        never ends. Feeds are counted whole once the head began before them. When it began after other
        messages in this feed and none of them had a body, it starts after the last CRLFCRLF; after a
        body its start is unknown and the feed is not counted, so the bound is exact up to one read.
        """
        if began_before or no_events:
            self._raw_head += len(data)
            self._track_first_line(data, began_before)
        elif not any(isinstance(event, RequestData) for event in self._events):
            start = data.rfind(b"\r\n\r\n") + 4
            self._raw_head += len(data) - start
            self._track_first_line(data[start:], False)
        if self.dead:
            return
        # The slack covers what the field measure leaves out: method, version, CRLFs, whitespace.
        if self._raw_head > self._limits.max_header_bytes + _HEAD_FRAMING_SLACK:
            if not self._headers and len(self._url) + _HEAD_FRAMING_SLACK >= self._raw_head:
                self._reject(414, "request target too long")
            else:
                self._reject(431, "request header block too large")

    def _track_first_line(self, data: bytes, began_before: bool) -> None:
        """Spot an HTTP/0.9 simple request (a request line without a version), which llhttp would
        hold until a blank line that such a client never sends."""
        line = self._first_line
        if line is None:
            if began_before:
                return  # the head began mid-feed: its start was not seen (the header timeout applies)
            line = b""
        elif b"\n" in line:
            return
        line = self._first_line = (line + data)[: self._limits.max_request_line + 32]
        end = line.find(b"\n")
        if end == -1:
            return
        if line[:end].rstrip(b"\r").count(b" ") < 2:
            self._reject(505, "HTTP/0.9 is not supported")
        elif _OTHER_PROTOCOL.match(line):
            self._reject(400, "not an HTTP request line")

    def _failing_message(self, data: bytes, began_before: bool) -> bytes | None:
        """The start of the message a parse error belongs to, when it can be known, for classifying it."""
        if self.in_body:
            return None  # the error is in a body, not at the start of a message
        completed = sum(1 for event in self._events if event is _ENDED)
        if began_before and not completed:
            return (self._first_line or b"") + data if self._first_line is not None else None
        if not completed:
            return data
        if any(isinstance(event, RequestData) for event in self._events):
            return None  # a body came first: where it ended is not known here
        start = 0
        for _ in range(completed):
            start = data.find(b"\r\n\r\n", start)
            if start < 0:
                return None
            start += 4
        return data[start:]

    def _refuse_other_protocols(self, data: bytes, began_before: bool) -> bool:
        """llhttp also accepts RTSP and ICE request lines; refuse them: they are not HTTP (400).

        Only heads are scanned (a feed that carried body bytes is not), so a body that merely contains
        such a line is never mistaken for one.
        """
        if any(isinstance(event, RequestData) for event in self._events):
            return False
        if began_before and self._first_line is not None:
            data = self._first_line + data
        match = _OTHER_PROTOCOL.search(data)
        if match is None:
            return False
        # Keep the events of the messages before the offending line; drop the rest with it.
        keep = data.count(b"\r\n\r\n", 0, match.start() + 1)  # the match may begin on its LF
        if began_before and self._first_line is None:
            keep += 1  # the message in progress at the start of the feed began before `data`
        events = self._events
        for index, event in enumerate(events):
            if isinstance(event, Request):
                if keep == 0:
                    del events[index:]
                    break
                keep -= 1
        self._reject(400, "not an HTTP request line")
        return True

    def _reject(self, status: int, reason: str) -> None:
        self.dead = True
        self.in_head = self.in_body = False
        self._events.append(RequestRejected(status=status, reason=reason))


def _split_target(target: bytes, method: bytes, host: bytes) -> tuple[bytes, bytes, bytes]:
    """Path, query and effective host from a request target (origin, absolute or asterisk form)."""
    if target[:1] == b"/":
        path, _, query = target.partition(b"?")
    elif target == b"*":
        if method != b"OPTIONS":
            raise RemoteProtocolError("asterisk-form target is only for OPTIONS", status=400)
        return b"*", b"", host
    elif _ABSOLUTE.match(target):
        rest = target.split(b"://", 1)[1]
        authority_end = len(rest)
        for sep in (b"/", b"?", b"#"):
            index = rest.find(sep)
            if index != -1:
                authority_end = min(authority_end, index)
        authority, remainder = rest[:authority_end], rest[authority_end:]
        if not authority or b"@" in authority or not HOST_SYNTAX.match(authority):
            raise RemoteProtocolError("invalid authority in absolute-form target", status=400)
        host = authority  # RFC 9112 3.2.2: the target's authority replaces Host.
        path, _, query = remainder.partition(b"?")
        if not path.startswith(b"/"):
            path = b"/" + path
    else:
        raise RemoteProtocolError("invalid request target", status=400)
    path = path.partition(b"#")[0]
    query = query.partition(b"#")[0]
    return path, query, host


def _check_transfer_coding(values: list[bytes]) -> None:
    """RFC 9112 6.1: the only coding ring3 decodes is a final, single `chunked`."""
    codings = [coding.strip(b" \t").lower() for coding in b",".join(values).split(b",")]
    if codings[-1] != b"chunked" or b"" in codings or codings.count(b"chunked") > 1:
        raise RemoteProtocolError("Transfer-Encoding is not a final chunked", status=400)
    if len(codings) > 1:
        raise RemoteProtocolError("transfer coding not implemented", status=501)


def _status_for_parser_error(exc: Exception, message: bytes | None) -> tuple[int, str]:
    """The status for an llhttp error, given the start of the failing message when known."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httptools.HttpParserInvalidMethodError) or reason.startswith("Invalid method"):
        # A well-formed method token that llhttp does not know is not implemented; garbage is 400.
        if message is not None and _TOKEN_OR_PREFIX.match(message[:32]):
            return 501, "method not implemented"
        return 400, "invalid method"
    if message is not None:
        line, newline, _ = message.partition(b"\n")
        if newline and line.rstrip(b"\r").count(b" ") < 2 and _TOKEN.match(line + b" "):
            return 505, "HTTP/0.9 is not supported"
    if "PRI" in reason:
        return 505, "HTTP/2 preface on an HTTP/1.1 connection"
    if "HTTP version" in reason:
        return 505, "HTTP version not supported"
    return 400, reason


__all__ = ["H1Limits", "H1Parser"]
