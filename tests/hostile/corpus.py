"""Hostile raw requests, one row each, and what ring3 must do with them.

Written for this project, byte for byte, so that no client library normalises anything on the way. Each row
says what the sans-IO parser must produce and what a real `ring3 serve` of the test site must answer:

- `stage="head"`: the head alone is refused. The parser emits exactly one `RequestRejected(status)` and no
  `Request`, so no handler ever runs for it.
- `stage="body"`: the head is fine and is handed on; the body then breaks the framing, and the parser emits
  `RequestRejected(status)` after the `Request`. The static handler answers a POST with 405 before reading
  the body, so over the wire against `ring3 serve` the client sees that 405 (see `Row.served_status`),
  then the connection closes. A handler that reads the body first sees `status` itself.
- `stage="accept"`: nothing hostile after all (or nothing ring3 must refuse); the request is served and
  `status` is what the static server answers for it.

`close` says whether the connection must close after the answer. It must whenever the message framing is in
doubt: whatever follows a refused request on that connection is never processed.

The rows are run with the small limits of `LIMITS` (the same values are passed to `ring3 serve` as
`SERVER_FLAGS`), so the over-long rows stay small. The corpus is HTTP/1.1's: its servers run with h2c off,
so the HTTP/2 preface is an HTTP/1.1 request line to refuse (with h2c on, HTTP/2 takes the connection:
tests/test_h2_clients.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ring3.http1.parser import H1Limits

LIMITS = H1Limits(max_request_line=1024, max_header_bytes=2048, max_header_count=20, max_body_size=1000)
SERVER_FLAGS: tuple[str, ...] = (
    "--max-request-line", str(LIMITS.max_request_line),
    "--max-header-bytes", str(LIMITS.max_header_bytes),
    "--max-header-count", str(LIMITS.max_header_count),
    "--max-body-size", str(LIMITS.max_body_size),
    "--no-h2c",
)

# The valid request an attacker pipelines right behind each row. When the framing is in doubt it must never
# be answered: if it were, a proxy in front of ring3 would have handed someone else's request to the attacker.
SMUGGLED = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
SMUGGLED_BODY = b"hello, world\n"  # /hello.txt in the tests' `site`

# What the static handler answers to a POST, before it reads any of the body.
STATIC_POST_STATUS = 405

Stage = Literal["head", "body", "accept"]


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    raw: bytes
    status: int
    close: bool
    stage: Stage
    host: bytes | None = None  # accepted rows: the effective host the parser must report

    @property
    def served_status(self) -> int:
        """The first status a client of `ring3 serve` (static handler) receives for this row."""
        return STATIC_POST_STATUS if self.stage == "body" else self.status


CRLF = b"\r\n"
HOST = b"Host: t"
CHUNKED = b"Transfer-Encoding: chunked"


def message(start_line: bytes, *fields: bytes, body: bytes = b"") -> bytes:
    """A request: start line, fields, each ended with CRLF, the empty line, then the body as given."""
    return b"".join(line + CRLF for line in (start_line, *fields)) + CRLF + body


def get(*fields: bytes, target: bytes = b"/hello.txt", version: bytes = b"HTTP/1.1") -> bytes:
    return message(b"GET " + target + b" " + version, *fields)


def post(*fields: bytes, body: bytes = b"") -> bytes:
    return message(b"POST /hello.txt HTTP/1.1", *fields, body=body)


def chunked_post(body: bytes) -> bytes:
    """A POST with a valid chunked head; `body` is the raw (possibly hostile) chunked body."""
    return post(HOST, CHUNKED, body=body)


def reject(name: str, raw: bytes, status: int = 400, stage: Stage = "head") -> Row:
    return Row(name, raw, status, close=True, stage=stage)


def body_reject(name: str, raw: bytes, status: int = 400) -> Row:
    return Row(name, raw, status, close=True, stage="body")


def accept(name: str, raw: bytes, status: int = 200, *, close: bool = False,
           host: bytes | None = None) -> Row:
    return Row(name, raw, status, close=close, stage="accept", host=host)


# Bytes of a TLS 1.2 ClientHello's first record, as a browser sends to an http:// port by mistake.
TLS_CLIENT_HELLO = (bytes.fromhex("16030100a5010000a103031a2b3c4d5e6f") + bytes(range(32))
                    + b"\x00\x02\x13\x01")

CORPUS: tuple[Row, ...] = (
    # -- Content-Length and Transfer-Encoding together (RFC 9112 6.1: a server MAY reject; ring3 always
    #    does, in either order, because the two framings disagree on where the next request starts) ----------
    reject("cl-then-te", post(HOST, b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n")),
    reject("te-then-cl", post(HOST, CHUNKED, b"Content-Length: 5", body=b"0\r\n\r\n")),
    reject("te-then-cl-zero", post(HOST, CHUNKED, b"Content-Length: 0", body=b"0\r\n\r\n")),
    reject("cl-te-lower-case-names", post(HOST, b"content-length: 5", b"transfer-encoding: chunked",
                                          body=b"0\r\n\r\n")),
    reject("te-with-cl-in-http10", message(b"POST /hello.txt HTTP/1.0", b"Content-Length: 5", CHUNKED,
                                           body=b"0\r\n\r\n")),
    # HTTP/1.0 has no chunked coding (RFC 9112 6.1: a server MUST treat such framing as faulty).
    reject("te-in-http10", message(b"POST /hello.txt HTTP/1.0", CHUNKED, body=b"0\r\n\r\n")),
    # -- Content-Length that is not exactly one 1*DIGIT (RFC 9110 8.6; RFC 9112 6.3 item 5) ------------------
    reject("cl-duplicate-same", post(HOST, b"Content-Length: 5", b"Content-Length: 5", body=b"hello")),
    reject("cl-duplicate-differ", post(HOST, b"Content-Length: 0", b"Content-Length: 5", body=b"hello")),
    reject("cl-list-same", post(HOST, b"Content-Length: 5, 5", body=b"hello")),
    reject("cl-list-differ", post(HOST, b"Content-Length: 0, 5", body=b"hello")),
    reject("cl-plus", post(HOST, b"Content-Length: +5", body=b"hello")),
    reject("cl-minus", post(HOST, b"Content-Length: -5", body=b"hello")),
    reject("cl-hex", post(HOST, b"Content-Length: 0x5", body=b"hello")),
    reject("cl-inner-space", post(HOST, b"Content-Length: 1 0", body=b"0123456789")),
    reject("cl-empty", post(HOST, b"Content-Length: ", body=b"hello")),
    reject("cl-overflow-2^64", post(HOST, b"Content-Length: 18446744073709551616", body=b"hello")),
    reject("cl-2^64-minus-1-is-too-large", post(HOST, b"Content-Length: 18446744073709551615"), 413),
    # -- Transfer-Encoding other than exactly `chunked` ----------------------------------------------------
    # RFC 9112 6.3 item 4: chunked not final -> the length cannot be determined: 400 and close.
    reject("te-chunked-gzip", post(HOST, b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n")),
    reject("te-xchunked", post(HOST, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n")),
    reject("te-chunkedx", post(HOST, b"Transfer-Encoding: chunkedx", body=b"0\r\n\r\n")),
    reject("te-identity", post(HOST, b"Transfer-Encoding: identity", body=b"hello")),
    reject("te-chunked-with-parameter", post(HOST, b"Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n")),
    # The same framing error on a GET: no handler may run, so no file may be served for it.
    reject("te-xchunked-on-get", get(HOST, b"Transfer-Encoding: xchunked") + b"0\r\n\r\n"),
    # RFC 9112 7: chunked must not be applied twice; whether in one field or two, the body is ambiguous.
    reject("te-chunked-twice-in-two-fields", post(HOST, CHUNKED, CHUNKED, body=b"0\r\n\r\n")),
    reject("te-chunked-twice-in-one-field", post(HOST, b"Transfer-Encoding: chunked, chunked",
                                                 body=b"0\r\n\r\n")),
    reject("te-empty", post(HOST, b"Transfer-Encoding: ", body=b"hello")),
    reject("te-trailing-comma", post(HOST, b"Transfer-Encoding: chunked,", body=b"0\r\n\r\n")),
    # Chosen where the RFC is lenient: RFC 9110 5.6.1 lets a recipient skip empty list elements, which would
    # make ",chunked" mean "chunked". ring3 accepts exactly one coding, `chunked`, and refuses list games
    # (as nginx does, with 501), because an empty element is where front ends and back ends disagree.
    reject("te-leading-comma", post(HOST, b"Transfer-Encoding: ,chunked", body=b"0\r\n\r\n")),
    # A coding ring3 does not implement before the final chunked: the framing is clear, the content is not.
    # RFC 9112 6.1: a server that receives a transfer coding it does not understand SHOULD answer 501;
    # handing a handler gzip bytes as if they were the body would be guessing.
    reject("te-gzip-chunked", post(HOST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501),
    reject("te-identity-then-chunked-in-two-fields",
           post(HOST, b"Transfer-Encoding: identity", CHUNKED, body=b"0\r\n\r\n"), 501),
    # -- chunk sizes: 1*HEXDIG and nothing else (RFC 9112 7.1) ---------------------------------------------
    body_reject("chunk-size-plus", chunked_post(b"+5\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-minus", chunked_post(b"-5\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-underscore", chunked_post(b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n")),
    body_reject("chunk-size-0x", chunked_post(b"0x5\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-leading-space", chunked_post(b" 5\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-trailing-space", chunked_post(b"5 \r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-trailing-tab", chunked_post(b"5\t\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-empty", chunked_post(b"\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-size-overflow", chunked_post(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
    # 2^64-1 fits llhttp's counter: the body limit must still stop it (the data runs past max_body_size).
    body_reject("chunk-size-2^64-minus-1", chunked_post(b"ffffffffffffffff\r\n" + b"a" * 1001), 413),
    body_reject("chunk-data-longer-than-size", chunked_post(b"5\r\nhelloXX\r\n0\r\n\r\n")),
    body_reject("chunk-data-without-crlf", chunked_post(b"5\r\nhello0\r\n\r\n")),
    # -- chunk extensions: token [= token / quoted-string] (RFC 9112 7.1.1) ----------------------------------
    body_reject("chunk-ext-nul", chunked_post(b"5;a\x00b\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-space-in-name", chunked_post(b"5;a b\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-del", chunked_post(b"5;a\x7f\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-ctl-in-value", chunked_post(b"5;a=\x01\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-obs-text-unquoted", chunked_post(b"5;a=\x85\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-bare-cr", chunked_post(b"5;a\rb\r\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-bare-lf", chunked_post(b"5;a\nhello\r\n0\r\n\r\n")),
    body_reject("chunk-ext-empty", chunked_post(b"5;\r\nhello\r\n0\r\n\r\n")),
    accept("chunk-ext-valid", chunked_post(b"5;name=value;q=\"a b\"\r\nhello\r\n0;last\r\n\r\n"),
           STATIC_POST_STATUS),
    # -- bare LF and bare CR (RFC 9112 2.2: ring3 takes the option to reject) -------------------------------
    reject("bare-lf-after-request-line", b"GET /hello.txt HTTP/1.1\nHost: t\r\n\r\n"),
    reject("bare-cr-after-request-line", b"GET /hello.txt HTTP/1.1\rHost: t\r\n\r\n"),
    reject("bare-cr-in-target", b"GET /hello\r.txt HTTP/1.1\r\nHost: t\r\n\r\n"),
    reject("bare-lf-after-field", b"GET /hello.txt HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n"),
    reject("bare-lf-ends-head", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\n"),
    reject("bare-lf-everywhere", b"GET /hello.txt HTTP/1.1\nHost: t\n\n"),
    reject("bare-cr-after-field", b"GET /hello.txt HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n"),
    body_reject("bare-lf-after-chunk-size", chunked_post(b"5\nhello\r\n0\r\n\r\n")),
    body_reject("bare-cr-after-chunk-size", chunked_post(b"5\rhello\r\n0\r\n\r\n")),
    body_reject("bare-lf-after-chunk-data", chunked_post(b"5\r\nhello\n0\r\n\r\n")),
    body_reject("bare-lf-last-chunk", chunked_post(b"5\r\nhello\r\n0\n\n")),
    # -- obs-fold (RFC 9112 5.2: a server MUST reject it with 400 or replace it; ring3 rejects) -------------
    reject("obs-fold-space", get(HOST, b"X-A: a", b" b")),
    reject("obs-fold-tab", get(HOST, b"X-A: a", b"\tb")),
    reject("obs-fold-of-host", get(b"Host: t", b" evil.example")),
    reject("whitespace-before-first-field", get(b" Host: t")),
    body_reject("obs-fold-in-trailer", chunked_post(b"0\r\nX-T: a\r\n b\r\n\r\n")),
    body_reject("nul-in-trailer", chunked_post(b"0\r\nX-T: a\x00b\r\n\r\n")),
    body_reject("content-length-in-trailer", chunked_post(b"0\r\nContent-Length: 5\r\n\r\n")),
    # -- bytes in field names: a name is a token (RFC 9110 5.1); none of these is a tchar --------------------
    reject("nul-in-name", get(HOST, b"X-A\x00B: v")),
    reject("cr-in-name", get(HOST, b"X-A\rB: v")),
    reject("lf-in-name", get(HOST, b"X-A\nB: v")),
    reject("x85-in-name", get(HOST, b"X-A\x85B: v")),
    reject("xa0-in-name", get(HOST, b"X-A\xa0B: v")),
    reject("space-in-name", get(HOST, b"X A: v")),
    reject("at-in-name", get(HOST, b"X@A: v")),
    reject("space-before-colon", get(HOST, b"X-A : v")),
    reject("tab-before-colon", get(HOST, b"X-A\t: v")),
    reject("space-before-colon-of-content-length", post(HOST, b"Content-Length : 5", body=b"hello")),
    reject("empty-name", get(HOST, b": v")),
    reject("field-without-colon", get(HOST, b"X-A v")),
    # -- bytes in field values. field-value = *field-content, field-vchar = VCHAR / obs-text (RFC 9110 5.5):
    #    NUL, CR, LF and the other CTLs are refused; HTAB and SP are allowed inside; obs-text (0x80-0xFF)
    #    is legal and is passed on as opaque bytes, so \x85 (NEL in Latin-1) and \xa0 (NBSP) are accepted.
    reject("nul-in-value", get(HOST, b"X-A: a\x00b")),
    reject("cr-in-value", get(HOST, b"X-A: a\rb")),
    reject("lf-in-value", get(HOST, b"X-A: a\nb")),
    reject("ctl-in-value", get(HOST, b"X-A: a\x01b")),
    reject("del-in-value", get(HOST, b"X-A: a\x7fb")),
    reject("vtab-before-value", post(HOST, b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n")),
    accept("x85-in-value", get(HOST, b"X-A: a\x85b")),
    accept("xa0-in-value", get(HOST, b"X-A: a\xa0b")),
    accept("xff-in-value", get(HOST, b"X-A: a\xffb")),
    accept("htab-in-value", get(HOST, b"X-A: a\tb")),
    # -- methods ------------------------------------------------------------------------------------------
    reject("method-unknown-token", message(b"FOO /hello.txt HTTP/1.1", HOST), 501),
    reject("method-lower-case", message(b"get /hello.txt HTTP/1.1", HOST), 501),  # methods are case-sensitive
    reject("method-not-a-token", message(b"G@T /hello.txt HTTP/1.1", HOST)),
    reject("method-with-nul", message(b"G\x00T /hello.txt HTTP/1.1", HOST)),
    reject("method-empty", message(b" /hello.txt HTTP/1.1", HOST)),
    reject("method-from-rtsp", message(b"PLAY /hello.txt HTTP/1.1", HOST), 501),  # a token, unknown to HTTP
    reject("method-tab-separated", message(b"GET\t/hello.txt\tHTTP/1.1", HOST)),
    reject("connect", message(b"CONNECT example.org:443 HTTP/1.1", b"Host: example.org:443"), 501),
    reject("tls-client-hello", TLS_CLIENT_HELLO),
    accept("trace-is-not-allowed", message(b"TRACE /hello.txt HTTP/1.1", HOST), 405),
    # -- versions -----------------------------------------------------------------------------------------
    # Chosen where the RFC is lenient: RFC 9112 2.3 says a 1.x recipient SHOULD treat an unknown higher
    # minor version as the highest it knows; ring3 answers 505 to everything but 1.0 and 1.1.
    reject("version-1.2", get(HOST, version=b"HTTP/1.2"), 505),
    reject("version-2.0", get(HOST, version=b"HTTP/2.0"), 505),
    reject("version-3.0", get(HOST, version=b"HTTP/3.0"), 505),
    reject("version-0.9-spelled-out", get(HOST, version=b"HTTP/0.9"), 505),
    reject("version-1.10", get(HOST, version=b"HTTP/1.10")),
    reject("version-lower-case", get(HOST, version=b"http/1.1")),
    reject("version-x", get(HOST, version=b"HTTP/1.x")),
    reject("version-no-dot", get(HOST, version=b"HTTP/11")),
    # llhttp also speaks RTSP and ICE (SHOUTcast); ring3 serves HTTP only, so their requests are garbage here.
    reject("version-rtsp", get(HOST, version=b"RTSP/1.1")),
    reject("rtsp-request", message(b"SETUP /hello.txt RTSP/1.0", b"CSeq: 1")),
    reject("ice-request", message(b"SOURCE /hello.txt ICE/1.0", b"Content-Length: 0")),
    reject("version-trailing-space", get(HOST, version=b"HTTP/1.1 ")),
    # HTTP/0.9: a request line without a version and no head after it; its client waits for the body.
    reject("http09", b"GET /hello.txt\r\n", 505),
    reject("http09-with-blank-line", b"GET /hello.txt\r\n\r\n", 505),
    reject("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    reject("pri-method-without-preface", message(b"PRI /hello.txt HTTP/1.1", HOST)),
    # -- request targets ----------------------------------------------------------------------------------
    # RFC 9112 3.2.2: with an absolute-form target the target's authority wins over Host; the site answers
    # for any host, so the file is served for the URI's host.
    accept("absolute-form-host-mismatch", get(b"Host: other.example", target=b"http://example.org/hello.txt"),
           host=b"example.org"),
    accept("absolute-form-port-mismatch", get(b"Host: example.org:80", target=b"http://example.org:81/hello.txt"),
           host=b"example.org:81"),
    accept("absolute-form-https", get(HOST, target=b"https://example.org/hello.txt"), host=b"example.org"),
    # RFC 9112 3.2: an HTTP/1.1 request without Host gets 400 whatever its target.
    reject("absolute-form-without-host", get(target=b"http://example.org/hello.txt")),
    # HTTP/1.0 needs no Host; without keep-alive the connection closes after the answer.
    accept("absolute-form-http10-without-host",
           get(target=b"http://example.org/hello.txt", version=b"HTTP/1.0"), close=True, host=b"example.org"),
    reject("absolute-form-userinfo", get(HOST, target=b"http://user@example.org/hello.txt")),
    reject("absolute-form-empty-authority", get(HOST, target=b"http:///hello.txt")),
    reject("absolute-form-bad-port", get(HOST, target=b"http://example.org:8x/hello.txt")),
    reject("absolute-form-other-scheme", get(HOST, target=b"ftp://example.org/hello.txt")),
    reject("authority-form-with-get", get(b"Host: example.org", target=b"example.org:80")),
    reject("authority-form-with-options", message(b"OPTIONS example.org:80 HTTP/1.1", b"Host: example.org")),
    reject("asterisk-form-with-get", get(HOST, target=b"*")),
    accept("asterisk-form-with-options", message(b"OPTIONS * HTTP/1.1", HOST)),
    reject("space-in-target", get(HOST, target=b"/hello .txt")),
    reject("nul-in-target", get(HOST, target=b"/hello\x00.txt")),
    reject("ctl-in-target", get(HOST, target=b"/hello\x01.txt")),
    reject("obs-text-in-target", get(HOST, target=b"/hello\xff.txt")),
    reject("leading-space-before-request-line", b" " + get(HOST)),
    # -- Host (RFC 9112 3.2: 400 when missing on HTTP/1.1, when repeated, when its value is invalid) ---------
    reject("host-missing", get()),
    reject("host-duplicate-same", get(HOST, HOST)),
    reject("host-duplicate-differ", get(HOST, b"host: evil.example")),
    reject("host-with-inner-space", get(b"Host: a b")),
    reject("host-with-userinfo", get(b"Host: user@example.org")),
    reject("host-with-path", get(b"Host: example.org/x")),
    reject("host-with-bad-port", get(b"Host: example.org:8x")),
    reject("host-with-two-ports", get(b"Host: example.org:80:80")),
    reject("host-with-list", get(b"Host: a.example, b.example")),
    reject("host-unclosed-ipv6", get(b"Host: [::1")),
    reject("host-with-obs-text", get(b"Host: a\xa0b")),
    reject("host-with-nul", get(b"Host: a\x00b")),
    # An empty Host is valid: it is what a client sends for a URI without an authority (RFC 9112 3.2).
    accept("host-empty", get(b"Host: "), host=b""),
    # Surrounding whitespace is OWS, not part of the value (RFC 9110 5.5: a parser MUST exclude it).
    accept("host-with-trailing-ows", get(b"Host: t \t"), host=b"t"),
    # -- limits (LIMITS: request line 1024, head 2048, 20 fields, body 1000) --------------------------------
    reject("request-line-over-limit", get(HOST, target=b"/" + b"a" * 1024), 414),
    reject("request-line-never-ends", b"GET /" + b"a" * 3000, 414),
    reject("header-field-over-limit", get(HOST, b"X-Big: " + b"a" * 2100), 431),
    reject("header-block-never-ends", b"GET /hello.txt HTTP/1.1\r\nX-A: " + b"a" * 3000, 431),
    reject("header-count-over-limit", get(HOST, *(b"X-%d: v" % i for i in range(20))), 431),
    reject("content-length-over-limit", post(HOST, b"Content-Length: 1001", body=b"a" * 1001), 413),
    body_reject("chunked-body-over-limit", chunked_post(b"258\r\n" + b"a" * 600 + b"\r\n258\r\n" + b"a" * 600
                                                        + b"\r\n0\r\n\r\n"), 413),
    reject("unknown-expectation", post(HOST, b"Expect: 200-ok", b"Content-Length: 5", body=b"hello"), 417),
    # -- protocol switch: ring3 ignores Upgrade, but llhttp stops parsing HTTP/1.1 at it, so the request is
    #    answered and the connection closed; nothing after it is read as a request.
    accept("upgrade-h2c", get(HOST, b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                              b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), close=True),
)

ROWS: dict[str, Row] = {row.name: row for row in CORPUS}
assert len(ROWS) == len(CORPUS), "row names must be unique"
