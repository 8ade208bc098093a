"""The WSGI handler on a real server over loopback: environ, request bodies, response framing, close(),
file_wrapper with sendfile, errors and the thread pool."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.validate import validator

import httpx
import pytest

from conftest import InProcessServer, ResponseReader, exchange, http_client, recv_until_closed
from ring3.config import AppSection
from ring3.errors import ClientDisconnected, LocalProtocolError
from ring3.handlers.wsgi import WSGIHandler
from ring3.observe.ledger import LEDGER

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication

Environ = dict[str, Any]
Serve = Callable[..., InProcessServer]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def serve(in_process: Callable[..., InProcessServer]) -> Iterator[Serve]:
    """Factory: serve a WSGI app in-process; keyword arguments are config overrides (app__mount=...)."""
    running: list[tuple[WSGIHandler, InProcessServer]] = []

    def start(app: WSGIApplication, **overrides: object) -> InProcessServer:
        app_values: dict[str, Any] = {key[5:]: value for key, value in overrides.items()
                                      if key.startswith("app__")}
        settings = dataclasses.replace(AppSection(), **app_values)
        handler = WSGIHandler(app, settings)
        server = in_process(handler, **overrides)
        running.append((handler, server))
        return server

    yield start
    for handler, server in running:
        asyncio.run_coroutine_threadsafe(handler.shutdown(), server.loop).result(10)


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def hello_generator(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    yield b"Hello, world!"  # unsized, but its Content-Length says that is all


def recv_some(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise AssertionError("connection closed")
    return data


def read_chunked(sock: socket.socket) -> tuple[bytes, list[bytes]]:
    """One chunked response off the socket: its head and its chunks as framed on the wire."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv_some(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks: list[bytes] = []
    while True:
        while b"\r\n" not in rest:
            rest += recv_some(sock)
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += recv_some(sock)
        if size == 0:
            return head, chunks
        chunks.append(rest[:size])
        rest = rest[size + 2:]


def sends() -> int:
    return LEDGER.send + LEDGER.sendmsg + LEDGER.sendfile


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- hello world and environ ----------------------------------------------------------------------


@pytest.mark.parametrize("app", [hello, hello_generator], ids=["list", "generator-with-length"])
def test_a_whole_body_leaves_in_one_send(serve: Serve, app: WSGIApplication) -> None:
    server = serve(app)
    with server.connect() as sock:
        before = sends()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = recv_until_closed(sock)
        after = sends()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert {line for line in lines if not line.startswith(b"date: ")} == {
        b"server: ring3", b"content-type: text/plain", b"content-length: 13", b"connection: close"}
    assert body == b"Hello, world!"
    assert after - before == 1


def test_environ_carries_the_request(serve: Serve) -> None:
    seen: list[Environ] = []

    def record(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ, body=environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(record)
    with server.connect() as sock:
        status, _, _ = exchange(
            sock, b"GET /caf%C3%A9/a%20b%2Fc?x=1&y=%20 HTTP/1.1\r\nHost: example.test:8080\r\n"
            b"X-Custom: one\r\nX-Custom: two\r\nX-Spoof: real\r\nX_Spoof: evil\r\n"
            b"Cookie: a=1\r\nCookie: b=2\r\nContent-Type: text/x\r\n\r\n")
        client_port = sock.getsockname()[1]
        assert status == 200
        status, _, _ = exchange(sock, b"POST /p HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        assert status == 200
    get, post = seen
    assert get["REQUEST_METHOD"] == "GET"
    assert get["PATH_INFO"].encode("latin-1") == "/café/a b/c".encode()
    assert get["QUERY_STRING"] == "x=1&y=%20"
    assert get["RAW_URI"] == "/caf%C3%A9/a%20b%2Fc?x=1&y=%20"
    assert get["SCRIPT_NAME"] == ""
    assert get["SERVER_NAME"] == "127.0.0.1" and get["SERVER_PORT"] == str(server.port)
    assert get["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert get["REMOTE_ADDR"] == "127.0.0.1" and get["REMOTE_PORT"] == str(client_port)
    assert get["HTTP_HOST"] == "example.test:8080"
    assert get["HTTP_X_CUSTOM"] == "one, two"
    assert get["HTTP_X_SPOOF"] == "real"  # X_Spoof dropped: it would pass for X-Spoof
    assert get["HTTP_COOKIE"] == "a=1; b=2"
    assert get["CONTENT_TYPE"] == "text/x"
    assert "CONTENT_LENGTH" not in get and "HTTP_CONTENT_TYPE" not in get
    assert get["body"] == b""
    assert get["wsgi.version"] == (1, 0) and get["wsgi.url_scheme"] == "http"
    assert get["wsgi.multithread"] is True and get["wsgi.multiprocess"] is False
    assert get["wsgi.run_once"] is False and get["wsgi.input_terminated"] is True
    assert callable(get["wsgi.file_wrapper"])
    assert post["REQUEST_METHOD"] == "POST" and post["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert post["CONTENT_LENGTH"] == "5" and post["body"] == b"hello"


def test_mount_prefix_goes_to_script_name(serve: Serve) -> None:
    seen: list[tuple[str, str, str]] = []

    def record(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append((environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]))
        start_response("204 No Content", [])
        return []

    server = serve(record, app__mount="/app/", app__root_path="/proxy")
    with server.connect() as sock:
        for target in (b"/app/x%2Fy/z", b"/app", b"/app/?q=1"):
            status, _, _ = exchange(sock, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
            assert status == 204
    assert seen == [("/proxy/app", "/x/y/z", ""), ("/proxy/app", "", ""), ("/proxy/app", "/", "q=1")]


def test_errors_stream_logs_whole_lines(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def talkative(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        errors = environ["wsgi.errors"]
        print("line one", file=errors)
        errors.writelines(["line ", "two\n", "partial"])
        errors.flush()
        start_response("200 OK", [])
        return [b"ok"]

    server = serve(talkative)
    with caplog.at_level(logging.ERROR, logger="ring3.error"), server.connect() as sock:
        assert exchange(sock, GET)[0] == 200
    assert [r.getMessage() for r in caplog.records if r.name == "ring3.error"] == [
        "line one", "line two", "partial"]


# -- request bodies ---------------------------------------------------------------------------------


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # the validator wants a size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return iter([body])


def streamer(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"one ", b"", b"two ", b"three"])


@pytest.mark.parametrize("app", [echo, streamer])
def test_apps_pass_wsgiref_validator(serve: Serve, app: WSGIApplication, protocol: str) -> None:
    server = serve(validator(app))
    with http_client("", protocol) as client:
        got = client.get(server.url + "/v?x=1")
        posted = client.post(server.url + "/v", content=b"payload")
    assert got.status_code == posted.status_code == 200
    if app is echo:
        assert (got.content, posted.content) == (b"", b"payload")
        assert posted.headers["content-length"] == "7"
    else:
        assert got.content == b"one two three"
        assert got.headers.get("transfer-encoding") == ("chunked" if protocol == "HTTP/1.1" else None)


def test_input_read_readline_and_iteration_across_pieces(serve: Serve) -> None:
    def reader(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        path = environ["PATH_INFO"]
        if path == "/lines":
            result: object = stream.readlines()
        elif path == "/hint":
            result = stream.readlines(5)
        elif path == "/limits":
            result = (stream.readline(2), stream.readline(10), stream.readline(0), stream.readline())
        else:
            result = (stream.read(3), stream.readline(), stream.readline(2), list(stream), stream.read())
        start_response("200 OK", [])
        return [repr(result).encode()]

    server = serve(reader)
    pieces = [b"ab", b"c\nli", b"ne2\nline3", b"\nlast"]
    for path, expected in [
        (b"/", (b"abc", b"\n", b"li", [b"ne2\n", b"line3\n", b"last"], b"")),
        (b"/lines", [b"abc\n", b"line2\n", b"line3\n", b"last"]),
        (b"/hint", [b"abc\n", b"line2\n"]),
    ]:
        with server.connect() as sock:
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % path)
            for piece in pieces:
                time.sleep(0.01)
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
            status, _, body = ResponseReader(sock).read()
        assert status == 200
        assert body == repr(expected).encode()
    with server.connect() as sock:  # all buffered at once: the limits apply within the buffer
        status, _, body = exchange(sock, b"POST /limits HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n"
                                         b"abc\ndefg\nhi")
    assert body == repr((b"ab", b"c\n", b"", b"defg\n")).encode()


def test_expect_continue_is_sent_when_the_app_reads(serve: Serve) -> None:
    server = serve(echo)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert ResponseReader(sock).read()[2] == b"hello"


def test_large_body_reaches_the_app_while_it_arrives(serve: Serve) -> None:
    first_read = threading.Event()
    sizes: list[int] = []

    def digest(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        hashed = hashlib.sha256()
        while data := stream.read(64 * 1024):
            hashed.update(data)
            sizes.append(len(data))
            first_read.set()
        start_response("200 OK", [])
        return [hashed.hexdigest().encode()]

    server = serve(digest, limits__max_body_size=2 * 1024 * 1024)
    payload = os.urandom(600 * 1024)
    with server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(payload))
        sock.sendall(payload[:300 * 1024])
        assert first_read.wait(5), "the app saw nothing before the whole body had arrived"
        sock.sendall(payload[300 * 1024:])
        status, _, body = ResponseReader(sock).read()
    assert status == 200
    assert body == hashlib.sha256(payload).hexdigest().encode()
    assert sum(sizes) == len(payload) and len(sizes) >= 9


def test_body_over_the_limit_gets_413_and_the_reading_app_is_told(serve: Serve) -> None:
    failures: list[BaseException] = []
    done = threading.Event()

    def greedy(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            environ["wsgi.input"].read()
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            done.set()
        start_response("200 OK", [])
        return [b"read it all"]

    server = serve(greedy, limits__max_body_size=1000)
    with server.connect() as sock:  # announced too large: refused before the app runs
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"a" * 2000)
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 413 ")
    assert not done.is_set()
    with server.connect() as sock:  # found too large while the app reads
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"3e8\r\n" + b"a" * 1000 + b"\r\n"
        sock.sendall(chunk)
        time.sleep(0.05)
        sock.sendall(chunk)
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413 ") and b"read it all" not in data
    assert done.wait(5)
    assert len(failures) == 1 and isinstance(failures[0], ClientDisconnected)


# -- response framing -------------------------------------------------------------------------------


def test_streamed_response_is_chunked_and_complete(serve: Serve) -> None:
    def slow_chunks(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for index in range(4):
            time.sleep(0.01)
            yield b"chunk-%d;" % index

    server = serve(slow_chunks)
    with server.connect() as sock:
        for _ in range(2):  # the framing leaves the connection usable
            sock.sendall(GET)
            head, chunks = read_chunked(sock)
            assert head.startswith(b"HTTP/1.1 200 ") and b"content-length" not in head
            assert chunks == [b"chunk-0;", b"chunk-1;", b"chunk-2;", b"chunk-3;"]
    assert httpx.get(server.url).text == "chunk-0;chunk-1;chunk-2;chunk-3;"


def length_app(declared: int, chunks: list[bytes], *, sized: bool = False) -> WSGIApplication:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(declared))])
        return list(chunks) if sized else iter(chunks)
    return app


@pytest.mark.parametrize(("declared", "chunks", "expected"), [
    (10, [b"12345", b"67890"], b"1234567890"),
    (4, [b"12345", b"678"], b"1234"),  # longer than announced: cut at the length (PEP 3333)
    (7, [b"12345", b"678", b"9"], b"1234567"),
])
def test_declared_content_length_is_honoured(serve: Serve, declared: int, chunks: list[bytes],
                                             expected: bytes) -> None:
    server = serve(length_app(declared, chunks))
    with server.connect() as sock:
        for _ in range(2):
            status, headers, body = exchange(sock, GET)
            assert (status, body) == (200, expected)
            assert headers[b"content-length"] == b"%d" % declared
            assert b"transfer-encoding" not in headers


def test_iteration_stops_at_the_declared_length(serve: Serve) -> None:
    body = Tracked([b"12345", b"67", b"never pulled"])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "7")])
        return body

    server = serve(app)
    with server.connect() as sock:
        assert exchange(sock, GET)[2] == b"1234567"
    assert_closed_once_in_the_pool(body)
    assert body.index == 2


@pytest.mark.parametrize(("chunks", "sized"), [
    ([b"12345"], True), ([b"12345"], False), ([b"123", b"45"], False),
], ids=["one-item-list", "one-chunk", "stream"])
def test_a_body_shorter_than_its_content_length_closes_the_connection(serve: Serve, chunks: list[bytes],
                                                                      sized: bool) -> None:
    server = serve(length_app(10, chunks, sized=sized))
    with server.connect() as sock:
        sock.sendall(GET)
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 10" in head
    assert body == b"12345"  # then the connection closed: the client knows the body is short


def test_hop_by_hop_headers_are_dropped_and_connection_close_honoured(serve: Serve) -> None:
    def framing_meddler(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=99"),
                                  ("Connection", "Close"), ("X-Kept", "yes")])
        return [b"ok"]

    server = serve(framing_meddler)
    with server.connect() as sock:
        sock.sendall(GET)
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert body == b"ok"
    assert b"content-length: 2" in lines and b"x-kept: yes" in lines and b"connection: close" in lines
    assert b"chunked" not in head and b"keep-alive" not in head and head.count(b"connection:") == 1


def test_head_gets_the_headers_without_the_body(serve: Serve) -> None:
    server = serve(hello)
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200 and headers[b"content-length"] == b"13"
        status, _, body = exchange(sock, GET)  # nothing of the HEAD body was left on the wire
        assert (status, body) == (200, b"Hello, world!")


# -- close() -----------------------------------------------------------------------------------------


class Tracked:
    """A response iterable that records its close() calls (and their threads)."""

    def __init__(self, chunks: Iterable[bytes], *, fail_at: int = -1, delay: float = 0.0,
                 forever: bytes | None = None) -> None:
        self.chunks = list(chunks)
        self.fail_at = fail_at
        self.delay = delay
        self.forever = forever
        self.index = 0
        self.closes: list[str] = []
        self.closed = threading.Event()

    def __iter__(self) -> Tracked:
        return self

    def __next__(self) -> bytes:
        time.sleep(self.delay)
        index, self.index = self.index, self.index + 1
        if index == self.fail_at:
            raise RuntimeError("failure in the middle of the body")
        if index < len(self.chunks):
            return self.chunks[index]
        if self.forever is None:
            raise StopIteration
        return self.forever

    def close(self) -> None:
        self.closes.append(threading.current_thread().name)
        self.closed.set()


class TrackedList(list[bytes]):
    """A sized response iterable that records its close() calls."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__(chunks)
        self.closes: list[str] = []
        self.closed = threading.Event()

    def close(self) -> None:
        self.closes.append(threading.current_thread().name)
        self.closed.set()


def tracked_app(body: Tracked | TrackedList) -> WSGIApplication:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body
    return app


def assert_closed_once_in_the_pool(body: Tracked | TrackedList) -> None:
    assert body.closed.wait(5)
    time.sleep(0.05)  # a second close() would come about now
    assert len(body.closes) == 1, body.closes
    assert body.closes[0].startswith("ring3-wsgi")


@pytest.mark.parametrize("make", [
    lambda: TrackedList([b"whole"]),
    lambda: Tracked([b"whole"]),
    lambda: Tracked([b"a", b"b", b"c"]),
], ids=["sized-one-chunk", "one-chunk", "stream"])
def test_close_is_called_once_after_a_normal_response(serve: Serve, make: Callable[[], Tracked]) -> None:
    body = make()
    server = serve(tracked_app(body))
    expected = b"".join(body.chunks if isinstance(body, Tracked) else body)
    response = httpx.get(server.url)
    assert response.content == expected
    assert_closed_once_in_the_pool(body)


def test_close_is_called_once_when_the_app_fails_mid_stream(serve: Serve,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    body = Tracked([b"first;", b"second;", b"never"], fail_at=2)
    server = serve(tracked_app(body))
    with server.connect() as sock:
        sock.sendall(GET)
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"second;" in data and not data.endswith(b"0\r\n\r\n")  # cut short, not completed
    assert_closed_once_in_the_pool(body)
    assert any(record.exc_info and "failure in the middle" in str(record.exc_info[1])
               for record in caplog.records)


@pytest.mark.parametrize("forever", [b"tick;", b""], ids=["chunks", "empty-chunks"])
def test_close_is_called_once_when_the_client_leaves_a_stream(serve: Serve, forever: bytes) -> None:
    body = Tracked([b"tick;"], delay=0.01, forever=forever)
    server = serve(tracked_app(body))
    with server.connect() as sock:
        sock.sendall(GET)
        sock.settimeout(5)
        assert b"tick;" in sock.recv(65536)
    assert_closed_once_in_the_pool(body)
    iterations = body.index
    time.sleep(0.1)
    assert body.index <= iterations + 1  # nobody iterates it any more


def test_close_is_called_once_for_a_stream_answering_head(serve: Serve) -> None:
    body = Tracked([b"a", b"b"])
    server = serve(tracked_app(body))
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
    assert_closed_once_in_the_pool(body)


# -- start_response, exc_info and write() ---------------------------------------------------------


def test_exc_info_replaces_headers_not_yet_sent(serve: Serve) -> None:
    def recovering(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("handled by the app")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Second", "1")], sys.exc_info())
        return [b"app's own error page"]

    server = serve(recovering)
    with server.connect() as sock:
        status, headers, body = exchange(sock, GET)
    assert (status, body) == (503, b"app's own error page")
    assert b"x-second" in headers and b"x-first" not in headers


def test_exc_info_after_the_headers_went_out_aborts_the_response(serve: Serve,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    def late_failure(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial;"
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())  # re-raises
        yield b"never"

    server = serve(late_failure)
    with server.connect() as sock:
        sock.sendall(GET)
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and b"partial;" in data
    assert b"never" not in data and not data.endswith(b"0\r\n\r\n")
    assert any(record.exc_info and "late failure" in str(record.exc_info[1]) for record in caplog.records)


def test_start_response_twice_without_exc_info_is_an_error(serve: Serve) -> None:
    def twice(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"should not be sent"]

    server = serve(twice)
    with server.connect() as sock:
        status, _, body = exchange(sock, GET)
    assert status == 500 and b"should not" not in body


@pytest.mark.parametrize(("returned", "framing"), [([], b"content-length"), ([b"world"], b"chunked")])
def test_write_callable_output_comes_first(serve: Serve, returned: list[bytes], framing: bytes) -> None:
    def legacy(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"hello ")
        write(b"")
        if not returned:
            write(b"world")
        return list(returned)

    server = serve(legacy)
    response = httpx.get(server.url)
    assert response.content == b"hello world"
    assert framing.decode() in str(response.headers).lower()


def test_exc_info_after_write_reraises_and_nothing_is_sent(serve: Serve) -> None:
    def writer(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise ValueError("after write")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())  # re-raises
        return [b"never"]

    server = serve(writer)
    with server.connect() as sock:
        status, _, body = exchange(sock, GET)
    assert status == 500 and b"partial" not in body and b"never" not in body


BAD_START = [
    ("200", []),
    (200, []),
    ("100 Continue", []),
    ("200 OK", {"X-A": "b"}),
    ("200 OK", [("X-A", 1)]),
    ("200 OK", [("X-A", "a\r\nset-cookie: pwned=1")]),
    ("200 OK", [("X-A", "\u20ac")]),
    ("200 OK", [("Bad Name", "x")]),
    ("200 OK", [("Content-Length", "12abc")]),
]


@pytest.mark.parametrize(("status", "headers"), BAD_START)
def test_invalid_start_response_raises_in_the_app_and_answers_500(serve: Serve, status: Any,
                                                                   headers: Any) -> None:
    raised: list[BaseException] = []

    def invalid(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            start_response(status, headers)
        except Exception as exc:
            raised.append(exc)
            raise
        return [b"pwned"]

    server = serve(invalid)
    with server.connect() as sock:
        status_code, _, body = exchange(sock, GET)
        assert status_code == 500 and b"pwned" not in body
        assert exchange(sock, GET)[0] == 500  # refused before any byte: the connection stays usable
    assert len(raised) == 2 and isinstance(raised[0], LocalProtocolError)


def test_app_exception_is_a_500_without_traceback(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def broken(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("secret internal detail")

    def broken_first_chunk(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("secret internal detail")
        yield b""

    def str_chunk(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return ["text is not bytes"]  # type: ignore[list-item]  # the application error under test

    for app in (broken, broken_first_chunk, str_chunk):
        caplog.clear()
        server = serve(app)
        with server.connect() as sock:
            status, _, body = exchange(sock, GET)
        assert status == 500
        assert b"secret" not in body and b"Traceback" not in body and b"text is" not in body
        assert any(record.exc_info for record in caplog.records if record.name == "ring3.error")


# -- file_wrapper ----------------------------------------------------------------------------------


def test_file_wrapper_over_a_file_goes_out_with_sendfile(serve: Serve, tmp_path: Path) -> None:
    data = os.urandom(200 * 1024)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    opened: list[io.BufferedReader] = []

    def send_file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        handle = open(path, "rb")  # noqa: SIM115 (the server closes it)
        opened.append(handle)
        handle.seek(1000)
        length = environ["QUERY_STRING"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")]
                       + ([("Content-Length", length)] if length else []))
        wrapper: Callable[..., Iterable[bytes]] = environ["wsgi.file_wrapper"]
        return wrapper(handle)

    server = serve(send_file)
    before = LEDGER.snapshot()
    with server.connect() as sock:
        status, headers, body = exchange(sock, GET)
        assert status == 200 and body == data[1000:]
        assert headers[b"content-length"] == b"%d" % (len(data) - 1000)
        # the server counts a sendfile's bytes after the call returns, which can be after this
        # client has read them: wait for the count before reading it
        wait_until(lambda: LEDGER.bytes_zero_copy - before["bytes_zero_copy"] >= len(data) - 1000)
        after = LEDGER.snapshot()
        status, _, body = exchange(sock, b"GET /?50000 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200 and body == data[1000:51000]
    assert after["sendfile"] > before["sendfile"]
    assert after["bytes_zero_copy"] - before["bytes_zero_copy"] == len(data) - 1000
    wait_until(lambda: all(handle.closed for handle in opened))
    assert len(opened) == 2


def test_file_wrapper_over_a_non_file_is_read_in_blocks(serve: Serve) -> None:
    data = os.urandom(10_000)
    closed: list[bool] = []

    class Stream(io.BytesIO):
        def close(self) -> None:
            closed.append(True)
            super().close()

    def send_stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        wrapper: Callable[..., Iterable[bytes]] = environ["wsgi.file_wrapper"]
        return wrapper(Stream(data), 4096)

    server = serve(send_stream)
    with server.connect() as sock:
        sock.sendall(GET)
        _, chunks = read_chunked(sock)
    assert [len(chunk) for chunk in chunks] == [4096, 4096, 10_000 - 8192]
    assert b"".join(chunks) == data
    wait_until(lambda: closed == [True])


# -- the thread pool -------------------------------------------------------------------------------


def test_requests_beyond_the_threads_wait_for_one(serve: Serve) -> None:
    gate = threading.Event()
    lock = threading.Lock()
    running: list[int] = []
    peak: list[int] = [0]
    started: list[str] = []

    def slow(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        with lock:
            started.append(environ["PATH_INFO"])
            running.append(1)
            peak[0] = max(peak[0], len(running))
        gate.wait(5)
        with lock:
            running.pop()
        start_response("200 OK", [])
        return [b"done"]

    server = serve(slow, app__wsgi_threads=2)
    sockets = [server.connect() for _ in range(3)]
    try:
        for index, sock in enumerate(sockets):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % index)
        wait_until(lambda: len(started) == 2)
        time.sleep(0.2)
        assert len(started) == 2  # the third waits for a thread
        gate.set()
        for sock in sockets:
            assert ResponseReader(sock).read()[2] == b"done"
    finally:
        gate.set()
        for sock in sockets:
            sock.close()
    assert len(started) == 3 and peak[0] == 2


def test_a_queued_request_whose_client_left_never_runs(serve: Serve) -> None:
    gate = threading.Event()
    started: list[str] = []

    def slow(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started.append(environ["PATH_INFO"])
        gate.wait(5)
        start_response("200 OK", [])
        return [b"done"]

    server = serve(slow, app__wsgi_threads=1)
    try:
        with server.connect() as busy:
            busy.sendall(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_until(lambda: started == ["/busy"])
            with server.connect() as leaving:
                leaving.sendall(b"GET /queued HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.05)
            time.sleep(0.1)  # the server sees the EOF and gives the request up
            gate.set()
            assert ResponseReader(busy).read()[2] == b"done"
            assert exchange(busy, b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"done"
    finally:
        gate.set()
    assert started == ["/busy", "/after"]


def test_shutdown_waits_for_running_requests(serve: Serve) -> None:
    gate = threading.Event()
    threads: list[str] = []

    def slow(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        threads.append(threading.current_thread().name)
        gate.wait(5)
        start_response("200 OK", [])
        return [b"finished"]

    in_process_server = serve(slow, app__wsgi_threads=1)
    handler = in_process_server.handler
    assert isinstance(handler, WSGIHandler)
    asyncio.run_coroutine_threadsafe(handler.startup(), in_process_server.loop).result(5)
    try:
        with in_process_server.connect() as sock:
            sock.sendall(GET)
            wait_until(lambda: len(threads) == 1)
            stopping = asyncio.run_coroutine_threadsafe(handler.shutdown(), in_process_server.loop)
            time.sleep(0.1)
            assert not stopping.done()
            gate.set()
            assert ResponseReader(sock).read()[2] == b"finished"
            stopping.result(5)
    finally:
        gate.set()
    assert threads[0].startswith("ring3-wsgi")


def test_each_request_keeps_its_own_context_across_pool_threads(serve: Serve, protocol: str) -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        assert request_id.get("unset") == "unset"  # nothing left over from another request
        start_response("200 OK", [("Content-Type", "text/plain")])
        token = request_id.set(environ["QUERY_STRING"])

        def body() -> Iterator[bytes]:
            try:
                for index in range(3):
                    yield f"{request_id.get()} {index}\n".encode()
                    time.sleep(0.02)
            finally:
                request_id.reset(token)  # fails if this runs in another request's context

        return body()

    server = serve(app, app__wsgi_threads=3)
    results: dict[str, bytes] = {}

    def fetch(name: str) -> None:
        with http_client("", protocol) as client:
            results[name] = client.get(f"http://127.0.0.1:{server.port}/?{name}").content

    threads = [threading.Thread(target=fetch, args=(f"r{index}",)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {f"r{i}": b"".join(b"r%d %d\n" % (i, n) for n in range(3)) for i in range(6)}


def test_inline_mode_runs_on_the_loop_thread(serve: Serve, protocol: str) -> None:
    threads: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        threads.append(threading.current_thread().name)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        multithread = b"multi" if environ["wsgi.multithread"] else b"single"
        if environ["PATH_INFO"] == "/stream":
            return iter([b"a", b"b", body])
        return [multithread + b" " + body]

    server = serve(app, app__wsgi_threads=0)
    with server.connect() as sock:
        assert exchange(sock, GET)[2] == b"single "
        status, _, body = exchange(sock, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert (status, body) == (200, b"single hello")
    with http_client("", protocol) as client:
        answer = client.post(f"http://127.0.0.1:{server.port}/stream", content=b"c" * 300_000)
        assert answer.content == b"ab" + b"c" * 300_000
        assert answer.headers.get("transfer-encoding") == ("chunked" if protocol == "HTTP/1.1" else None)
    assert not any(name.startswith("ring3-wsgi") for name in threads)
    assert len(set(threads)) == 1  # the loop's own thread, every time


def test_a_blocked_thread_does_not_hold_up_queued_requests(serve: Serve) -> None:
    # The pool wakes one thread per batch; a thread that blocks must not keep the rest of its batch
    # waiting: another thread is woken once the oldest queued job has waited a couple of milliseconds.
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1.0)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app, app__wsgi_threads=4)
    with server.connect() as slow, server.connect() as fast:
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        fast.sendall(GET)  # likely in the same turn of the loop as the slow one
        began = time.monotonic()
        assert ResponseReader(fast).read()[2] == b"ok"
        assert time.monotonic() - began < 0.5
        assert ResponseReader(slow).read()[2] == b"ok"


def test_the_pool_wakes_another_thread_when_a_batch_stalls() -> None:
    from ring3.handlers.workers import BatchingPool

    async def main() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        pool = BatchingPool(4, loop)
        names: list[str] = []

        def job(delay: float) -> float:
            names.append(threading.current_thread().name)
            time.sleep(delay)
            return time.monotonic()

        began = time.monotonic()
        slow = pool.submit(job, 1.0)  # one batch: a single thread is woken for both jobs
        fast = pool.submit(job, 0.0)
        done = await asyncio.wrap_future(fast)
        await asyncio.wrap_future(slow)
        await asyncio.to_thread(pool.shutdown)
        return done - began, names

    took, names = asyncio.run(main())
    assert took < 0.5  # not behind the blocked job: the watch woke a second thread
    assert len(set(names)) == 2


@pytest.mark.parametrize("own", [[], ["Server"], ["Date"], ["date", "SERVER"]])
def test_an_applications_own_date_and_server_replace_ring3s(serve: Serve, own: list[str]) -> None:
    from test_asgi import field_values, raw_head

    values = {"server": "my-app/2", "date": "Tue, 15 Nov 1994 08:12:31 GMT"}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        own_fields = [(name, values[name.lower()]) for name in own]
        start_response("200 OK", [("Content-Type", "text/plain"), *own_fields])
        return [b"ok"]

    server = serve(app)
    with server.connect() as sock:
        lines = raw_head(sock, GET)
    chosen = {name.lower() for name in own}
    for name in ("server", "date"):
        found = field_values(lines, name.encode())
        assert len(found) == 1, (name, lines)  # never twice
        assert (found[0] == values[name].encode()) == (name in chosen), (name, lines)
