"""The exchange rules with handlers that read bodies and stream responses (in-process server)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx

from conftest import InProcessServer, ResponseReader, exchange, recv_until_closed
from ring3.events import Request, Response
from ring3.handlers import BodyReader

Start = Callable[..., InProcessServer]


async def echo(request: Request, body: BodyReader) -> Response:
    data = await body.read_all()
    return Response(status=200, headers=[(b"content-type", b"application/octet-stream")], body=data)


def test_expect_100_continue_is_sent_when_the_handler_reads(in_process: Start) -> None:
    server = in_process(echo)
    with server.connect() as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(5)
        interim = sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        status, _, body = ResponseReader(sock).read()
        assert (status, body) == (200, b"hello")


def test_chunked_request_body_reaches_the_handler(in_process: Start) -> None:
    server = in_process(echo)
    with server.connect() as sock:
        status, headers, body = exchange(
            sock, b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert (status, body) == (200, b"hello world")
        assert headers[b"content-length"] == b"11"


def test_chunked_body_over_the_limit_gets_413(in_process: Start) -> None:
    server = in_process(echo, limits__max_body_size=1000)
    with server.connect() as sock:
        chunk = b"3e8\r\n" + b"a" * 1000 + b"\r\n"
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in data


def test_large_body_with_backpressure(in_process: Start) -> None:
    received: list[int] = []

    async def slow_reader(request: Request, body: BodyReader) -> Response:
        total = 0
        while data := await body.read():
            total += len(data)
            await asyncio.sleep(0)
        received.append(total)
        return Response(status=200, body=b"%d" % total)

    server = in_process(slow_reader, limits__max_body_size=8 * 1024 * 1024)
    payload = b"x" * (4 * 1024 * 1024)
    response = httpx.post(server.url + "/up", content=payload, timeout=30)
    assert response.status_code == 200
    assert response.text == str(len(payload))


def test_streamed_response_is_chunked_on_http11_and_close_delimited_on_http10(in_process: Start) -> None:
    async def stream(request: Request, body: BodyReader) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for index in range(5):
                await asyncio.sleep(0.01)
                yield b"piece-%d;" % index
        return Response(status=200, body=pieces())

    server = in_process(stream)
    with httpx.Client() as client:
        first = client.get(server.url + "/s")
        second = client.get(server.url + "/s")  # same connection: chunked framing kept it usable
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.text == second.text == "".join(f"piece-{i};" for i in range(5))
    with server.connect() as sock:
        sock.sendall(b"GET /s HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert body == b"piece-0;piece-1;piece-2;piece-3;piece-4;"


def test_handler_exception_gives_500_without_traceback(in_process: Start) -> None:
    def broken(request: Request, body: BodyReader) -> Response:
        raise RuntimeError("secret internal detail")

    server = in_process(broken)
    with server.connect() as sock:
        status, _, body = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 500
        assert b"secret" not in body and b"Traceback" not in body
        status, _, _ = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # connection still usable
        assert status == 500


def test_invalid_response_header_from_a_handler_becomes_500(in_process: Start) -> None:
    def splitter(request: Request, body: BodyReader) -> Response:
        return Response(status=200, headers=[(b"x-evil", b"a\r\nset-cookie: pwned=1")], body=b"ok")

    server = in_process(splitter)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 500 ")
    assert b"pwned" not in data


def test_pipelined_requests_wait_for_the_slow_one(in_process: Start) -> None:
    order: list[bytes] = []

    async def handler(request: Request, body: BodyReader) -> Response:
        order.append(request.path)
        if request.path == b"/slow":
            await asyncio.sleep(0.2)
        return Response(status=200, body=request.path)

    server = in_process(handler)
    with server.connect() as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read()[2] == b"/slow"
        assert reader.read()[2] == b"/fast"
    assert order == [b"/slow", b"/fast"]


def test_client_half_close_still_gets_its_answer(in_process: Start) -> None:
    server = in_process(lambda request, body: Response(status=200, body=b"done"))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"done")


def test_idle_connections_give_back_their_queues(in_process: Start) -> None:
    """Between requests a connection holds no deque of its own: events and output share one empty
    sentinel each, which nothing may ever fill (it would leak into every connection)."""
    from ring3.http1.connection import _NO_EVENTS
    from ring3.output import _NOTHING_QUEUED

    big = b"z" * (4 << 20)  # more than a socket takes at once: the output queues and waits

    def handler(request: Request, body: BodyReader) -> Response:
        return Response(200, [], b"", big if request.path == b"/big" else b"small")

    server = in_process(handler)
    socks = [server.connect() for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n" * 20 + b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        for sock in socks:
            reader = ResponseReader(sock)
            assert [reader.read()[2] for _ in range(20)] == [b"small"] * 20
            assert reader.read()[2] == big
        assert server.server is not None
        connections = list(server.server.connections)
        assert len(connections) == 3

        def all_idle() -> bool:  # the loop thread may still be finishing the last send
            return all(c._events is _NO_EVENTS and c._output._queue is _NOTHING_QUEUED for c in connections)

        deadline = time.monotonic() + 2
        while not all_idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all_idle()
        assert not _NO_EVENTS and not _NOTHING_QUEUED
    finally:
        for sock in socks:
            sock.close()
