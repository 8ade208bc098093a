"""ASGI 3 over real sockets: the scope, request bodies, streamed and zero-copy responses, disconnects and
application errors. Each test runs an application in an in-process ring3 on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import InProcessServer, ResponseReader, exchange, http_client, recv_until_closed
from ring3.config import AppSection, StaticSection
from ring3.errors import ClientDisconnected
from ring3.handlers.asgi import ASGIHandler, Message, Receive, Scope, Send
from ring3.handlers.static import StaticHandler
from ring3.observe.ledger import LEDGER
from ring3.routing import MountRouter

Start = Callable[..., InProcessServer]
App = Callable[[Scope, Receive, Send], Any]


def serve(in_process: Start, app: App, settings: AppSection | None = None, **overrides: object
          ) -> InProcessServer:
    return in_process(ASGIHandler(app, settings or AppSection()), **overrides)


async def read_body(receive: Receive) -> tuple[bytes, int]:
    """The whole request body and the number of http.request messages it came in."""
    parts, messages = [], 0
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        messages += 1
        parts.append(message["body"])
        if not message.get("more_body"):
            return b"".join(parts), messages


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
                  ) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


# -- the scope --------------------------------------------------------------------------------------


def test_scope_describes_the_request(in_process: Start) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await respond(send, 200, b"ok")

    server = serve(in_process, app)
    with server.connect() as sock:
        status, _, body = exchange(
            sock, b"GET /caf%C3%A9/a%20b?x=1&y=%20 HTTP/1.1\r\nHost: t\r\nX-Thing: One\r\n\r\n")
        client_port = sock.getsockname()[1]
    assert (status, body) == (200, b"ok")
    scope = seen[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/caf\u00e9/a b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert [tuple(pair) for pair in scope["headers"]] == [(b"host", b"t"), (b"x-thing", b"One")]
    assert scope["client"] == ("127.0.0.1", client_port)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert "http.response.pathsend" in scope["extensions"]
    assert "http.response.zerocopysend" in scope["extensions"]
    assert "state" not in scope


def test_mount_and_root_path_reach_the_scope(in_process: Start, tmp_path: Path, protocol: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await respond(send, 200, scope["path"].encode())

    (tmp_path / "f.txt").write_text("file\n")
    settings = AppSection(mount="/api", root_path="/proxy")
    router = MountRouter([("/api", ASGIHandler(app, settings)),
                          ("/", StaticHandler(StaticSection(root=str(tmp_path)), str(tmp_path)))])
    server = in_process(router)
    with http_client(f"http://127.0.0.1:{server.port}", protocol) as client:
        assert client.get("/api/items/1").text == "/proxy/api/items/1"
        assert client.get("/f.txt").text == "file\n"
        assert client.get("/apix").status_code == 404  # not the app's: a prefix ends at a '/'
    assert seen[0]["root_path"] == "/proxy/api"
    assert seen[0]["raw_path"] == b"/proxy/api/items/1"


# -- request bodies -----------------------------------------------------------------------------------


def test_a_large_body_arrives_in_pieces_and_whole(in_process: Start, protocol: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.05)  # the body piles up meanwhile: reading pauses at the high-water mark
        body, messages = await read_body(receive)
        await respond(send, 200, b"%d %d %s" % (len(body), messages, body[-8:]))

    server = serve(in_process, app, limits__max_body_size="4m")
    payload = os.urandom(3 * 1024 * 1024)
    with http_client("", protocol) as client:
        answer = client.post(f"http://127.0.0.1:{server.port}/", content=payload)
    size, messages, tail = answer.content.split(b" ", 2)
    assert int(size) == len(payload)
    assert int(messages) > 1
    assert tail == payload[-8:]


def test_a_chunked_body_reaches_the_app(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        await respond(send, 200, body)

    server = serve(in_process, app)
    with server.connect() as sock:
        status, _, body = exchange(sock, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert (status, body) == (200, b"hello world")


def test_a_body_over_the_limit_gets_413_without_the_app_answering(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, 200, b"accepted")

    server = serve(in_process, app, limits__max_body_size=1000)
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
    assert status == 413
    assert headers[b"connection"] == b"close"


def test_disconnect_is_received_when_the_client_leaves(in_process: Start) -> None:
    got: list[Message] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got.append(await receive())  # the (empty) body
        got.append(await receive())  # blocks until the client is gone
        done.set()

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.1)
    assert done.wait(5)
    assert got[0] == {"type": "http.request", "body": b"", "more_body": False}
    assert got[1] == {"type": "http.disconnect"}


def test_disconnect_follows_a_complete_response(in_process: Start) -> None:
    got: list[Message] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, 200, b"bye")
        got.append(await receive())
        done.set()

    server = serve(in_process, app)
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"bye"
        assert done.wait(5)  # while the connection is still open
    assert got == [{"type": "http.disconnect"}]


def test_a_client_leaving_mid_stream_makes_send_raise(in_process: Start) -> None:
    raised: list[BaseException] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(1000):
                await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
                await asyncio.sleep(0.01)
        except OSError as exc:
            raised.append(exc)
        done.set()

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    assert done.wait(5)
    assert isinstance(raised[0], ClientDisconnected)


# -- responses ----------------------------------------------------------------------------------------


def test_a_one_message_response_leaves_in_one_send(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 201, b"created", [(b"content-type", b"text/plain"), (b"x-a", b"1")])

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # warm the connection
        ResponseReader(sock).read()
        sends = LEDGER.send + LEDGER.sendmsg
        status, headers, body = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert LEDGER.send + LEDGER.sendmsg - sends == 1
    assert (status, body) == (201, b"created")
    assert headers[b"content-length"] == b"7"
    assert headers[b"x-a"] == b"1"


def test_a_streamed_response_is_chunked_and_complete(in_process: Start, protocol: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"piece %d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    server = serve(in_process, app)
    with http_client("", protocol) as client:
        answer = client.get(f"http://127.0.0.1:{server.port}/")
    # A body of unknown length: chunked on HTTP/1.1; HTTP/2 frames it and has no such field.
    assert answer.headers.get("transfer-encoding") == ("chunked" if protocol == "HTTP/1.1" else None)
    assert answer.content == b"".join(b"piece %d;" % i for i in range(5))


def test_a_declared_length_sends_the_stream_unchunked(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"Content-Length", b"10")]})
        await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        await send({"type": "http.response.body", "body": b"56789"})

    server = serve(in_process, app)
    with server.connect() as sock:
        status, headers, body = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (status, body) == (200, b"0123456789")
        assert b"transfer-encoding" not in headers
        assert headers[b"content-length"] == b"10"
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"0123456789"  # still alive


def test_a_body_shorter_than_its_declared_length_aborts(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"short", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"short")  # then the connection closed: the client sees a truncated body


@pytest.mark.parametrize("value", [b"-5", b"1_0", b" 10", b"ten", b""])
def test_an_invalid_declared_length_gets_500(in_process: Start, value: bytes) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"0123456789", [(b"content-length", value)])

    server = serve(in_process, app)
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500
    assert headers[b"content-length"] != value


def test_a_body_longer_than_its_declared_length_aborts(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"four", "more_body": True})
        await send({"type": "http.response.body", "body": b"more"})

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nfour")  # the extra bytes never left: the connection closed instead


def test_head_announces_the_declared_length(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1234")]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"ignored for HEAD"})

    server = serve(in_process, app)
    with server.connect() as sock:
        status, headers, body = exchange(sock, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (status, headers[b"content-length"], body) == (200, b"1234", b"")
        status, headers, _ = exchange(sock, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200


@pytest.mark.parametrize("file_frames", ["read", "sendfile"])
def test_pathsend_leaves_by_sendfile_or_by_batched_reads(in_process: Start, tmp_path: Path, protocol: str,
                                         file_frames: str) -> None:
    content = os.urandom(200_000)
    path = tmp_path / "big.bin"
    path.write_bytes(content)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": str(path)})

    server = serve(in_process, app, http2__file_frames=file_frames)
    before_calls, before_bytes = LEDGER.sendfile, LEDGER.bytes_zero_copy
    before_reads = LEDGER.pread
    with http_client("", protocol) as client:
        answer = client.get(f"http://127.0.0.1:{server.port}/")
        head = client.head(f"http://127.0.0.1:{server.port}/")
    assert answer.content == content
    assert answer.headers["content-length"] == str(len(content))
    assert head.headers["content-length"] == str(len(content))
    if protocol == "HTTP/1.1":
        assert LEDGER.sendfile > before_calls
        assert LEDGER.bytes_zero_copy - before_bytes == len(content)
    elif file_frames == "sendfile":  # 16 KiB DATA frames by sendfile; the last, smaller, by pread
        assert LEDGER.sendfile > before_calls
        assert LEDGER.bytes_zero_copy - before_bytes == len(content) - len(content) % 16384
    else:  # read into the frames: one preadv per batch of frames, nothing by sendfile
        assert LEDGER.bytes_zero_copy == before_bytes
        assert 0 < LEDGER.pread - before_reads <= len(content) // (256 * 1024) + 2


def test_zerocopysend_sends_a_slice_and_returns_once_sent(in_process: Start, tmp_path: Path,
                                                          protocol: str) -> None:
    content = os.urandom(100_000)
    path = tmp_path / "data.bin"
    path.write_bytes(content)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with path.open("rb") as file:
            await send({"type": "http.response.zerocopysend", "file": file, "offset": 1000,
                        "count": 50_000, "more_body": True})
            file.seek(90_000)  # no offset: from the file's position
            await send({"type": "http.response.zerocopysend", "file": file})
        # the file is closed now: everything must already have been sent

    server = serve(in_process, app)
    with http_client("", protocol) as client:
        answer = client.get(f"http://127.0.0.1:{server.port}/")
    assert answer.content == content[1000:51_000] + content[90_000:]


# -- application errors -----------------------------------------------------------------------------


def test_an_error_before_the_response_gets_500_without_a_traceback(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("secret detail")

    server = serve(in_process, app)
    with server.connect() as sock:
        status, _, body = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 500
        assert b"secret" not in body and b"Traceback" not in body
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 500  # connection kept


def test_an_error_after_the_start_aborts_the_connection(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("too late")

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_until_closed(sock) == b""


def test_an_error_mid_stream_aborts_the_connection(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise ValueError("broken")

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert not data.endswith(b"0\r\n\r\n")  # never the chunked terminator: the client knows it is cut


@pytest.mark.parametrize("started", [False, True])
def test_an_app_returning_without_a_response(in_process: Start, started: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        if started:
            assert recv_until_closed(sock) == b""
        else:
            assert ResponseReader(sock).read()[0] == 500


def test_a_header_that_would_split_the_response_gets_500(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"x", [(b"x-evil", b"a\r\nSet-Cookie: b")])

    server = serve(in_process, app)
    with server.connect() as sock:
        status, headers, _ = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500
    assert b"set-cookie" not in headers


def test_messages_out_of_order_are_refused(in_process: Start) -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.body", "body": b"no start"})
        except RuntimeError as exc:
            errors.append(exc)
        await respond(send, 200, b"ok")
        try:
            await send({"type": "http.response.body", "body": b"after the end"})
        except RuntimeError as exc:
            errors.append(exc)

    server = serve(in_process, app)
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"ok"
    time.sleep(0.05)
    assert len(errors) == 2


# -- exchanges ----------------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.1)
        await respond(send, 200, scope["path"].encode())

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read()[2] == b"/slow"
        assert reader.read()[2] == b"/fast"


def test_concurrent_clients_are_served_concurrently(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.3)
        await respond(send, 200, json.dumps({"path": scope["path"]}).encode())

    server = serve(in_process, app)
    sockets = [server.connect() for _ in range(20)]
    began = time.monotonic()
    for index, sock in enumerate(sockets):
        sock.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % index)
    for index, sock in enumerate(sockets):
        assert json.loads(ResponseReader(sock).read()[2]) == {"path": f"/{index}"}
        sock.close()
    assert time.monotonic() - began < 3  # 20 x 0.3 s one after the other would be 6 s


def test_the_server_header_and_date_are_added(in_process: Start) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"")

    server = serve(in_process, app)
    with server.connect() as sock:
        _, headers, _ = exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert headers[b"server"] == b"ring3"
    assert headers[b"date"].endswith(b" GMT")


def test_a_raw_socket_client_can_half_close_without_hanging_the_app(in_process: Start) -> None:
    finished = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        message = await receive()  # the client is gone: this must not block forever
        assert message["type"] == "http.disconnect"
        finished.set()

    server = serve(in_process, app)
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        recv_until_closed(sock, timeout=2)
    assert finished.wait(5)


def test_apps_run_inside_a_real_task_even_when_started_eagerly(in_process: Start) -> None:
    import anyio

    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(5):  # needs the current task
            with anyio.CancelScope():
                if scope["path"] == "/wait":
                    await asyncio.sleep(0.01)
                await respond(send, 200, b"fine")

    server = serve(in_process, app)
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"fine"
        assert exchange(sock, b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"fine"
    assert all(isinstance(task, asyncio.Task) for task in seen)


def test_an_app_that_never_waits_is_answered_in_the_same_loop_turn() -> None:
    from ring3.body import EMPTY_BODY
    from ring3.eager import start_task
    from ring3.events import Request, Response
    from ring3.http1.parser import H1Parser
    from ring3.loops import SelectorLoop

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"now")

    request = H1Parser().receive_data(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0]
    assert isinstance(request, Request)
    handler = ASGIHandler(app, AppSection())
    outcomes: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        # Called as the connection calls it: from a plain callback, outside any task.
        def read_callback() -> None:
            outcomes.append(handler(request, EMPTY_BODY))
            done.set_result(None)

        loop.call_soon(read_callback)
        await done
        task = start_task(loop, asyncio.sleep(0))  # inside a task, tasks start the usual way
        assert not task.done()
        await task

    with asyncio.Runner(loop_factory=SelectorLoop) as runner:
        runner.run(main())
    assert isinstance(outcomes[0], Response)  # not a Future: no further turn of the loop is needed
    assert outcomes[0].body == b"now"


def test_the_eager_start_leaves_the_loops_call_soon_as_it_was() -> None:
    """start_task hooks call_soon on the loop object for the Task's first step only: what that step
    schedules is queued, and afterwards (even when the Task could not be made) the class's method is
    the one found again."""
    from ring3.eager import start_task
    from ring3.loops import SelectorLoop

    order: list[str] = []

    async def first_step() -> None:
        order.append("step")
        asyncio.get_running_loop().call_soon(order.append, "scheduled by the step")
        order.append("step ends")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def from_a_callback() -> None:  # outside any task, as a connection's read callback runs
            task = start_task(loop, first_step())
            order.append("start_task returned")
            assert task.done()
            assert "call_soon" not in vars(loop)
            with pytest.raises(TypeError):
                start_task(loop, object())  # not a coroutine: no Task
            assert "call_soon" not in vars(loop)
            loop.call_soon(done.set_result, None)

        loop.call_soon(from_a_callback)
        await done

    with asyncio.Runner(loop_factory=SelectorLoop) as runner:
        runner.run(main())
    assert order == ["step", "step ends", "start_task returned", "scheduled by the step"]


def test_hot_pathsend_files_come_from_the_file_cache(in_process: Start, tmp_path: Path) -> None:
    from ring3.files.cache import FileCache

    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_bytes(b"small and hot\n")
    large.write_bytes(os.urandom(100_000))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(tmp_path / scope["path"][1:])})

    files = FileCache(max_bytes=1 << 20, max_file_size=16_384, max_open=10, recheck=0.2)
    server = in_process(ASGIHandler(app, AppSection(), files))
    with server.connect() as sock:
        for name, content in (("small.txt", small.read_bytes()), ("large.bin", large.read_bytes())):
            request = b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % name.encode()
            for _ in range(2):  # the second request admits the file
                assert exchange(sock, request)[2] == content
            opens, hits = LEDGER.open, LEDGER.responses_from_cache
            for _ in range(3):
                assert exchange(sock, request)[2] == content
            assert LEDGER.open == opens  # no open, fstat or close: the cache answered
            assert LEDGER.responses_from_cache - hits == 3
        small.write_bytes(b"changed on disk\n")
        time.sleep(0.25)
        assert exchange(sock, b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"changed on disk\n"


@pytest.mark.parametrize("status", [42, 600, "200"])
def test_an_invalid_status_gets_500(in_process: Start, status: object) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"never"})

    server = serve(in_process, app)
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 500


def raw_head(sock: socket.socket, request: bytes) -> list[bytes]:
    """The header lines of the response to `request`, as sent (names in their case, repeats kept)."""
    sock.sendall(request)
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]


def field_values(lines: list[bytes], name: bytes) -> list[bytes]:
    return [line.partition(b":")[2].strip() for line in lines if line.partition(b":")[0].lower() == name]


@pytest.mark.parametrize("own", [[], [b"Server"], [b"date"], [b"server", b"Date"]])
def test_an_applications_own_date_and_server_replace_ring3s(in_process: Start, own: list[bytes]) -> None:
    values = {b"server": b"my-app/2", b"date": b"Tue, 15 Nov 1994 08:12:31 GMT"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"ok", [(name, values[name.lower()]) for name in own])

    server = serve(in_process, app)
    with server.connect() as sock:
        lines = raw_head(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    chosen = {name.lower() for name in own}
    for name in (b"server", b"date"):
        found = field_values(lines, name)
        assert len(found) == 1, (name, lines)  # never twice
        assert (found[0] == values[name]) == (name in chosen), (name, lines)
