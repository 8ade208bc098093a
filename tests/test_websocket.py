"""ASGI WebSockets end to end: a real ring3 server in-process on loopback, the `websockets` client for what
a browser would do, and raw sockets (framed by wsproto in client mode) for what a browser never does:
malformed handshakes, unanswered pings, a vanishing TCP connection, a look at the frames' bits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from conftest import InProcessServer, ResponseReader, RunningServer, exchange
from ring3.config.schema import AppSection
from ring3.errors import ClientDisconnected
from ring3.handlers.asgi import ASGIHandler
from ring3.websocket.asgi import WebSocketEndpoint
from ring3.websocket.session import MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES, Closed, WebSocketSession

Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

# What the applications saw, by the token in the query string.
_seen: dict[str, queue.Queue[Message]] = {}
_seen_lock = threading.Lock()
_calls: list[str] = []


def seen(token: str) -> queue.Queue[Message]:
    with _seen_lock:
        return _seen.setdefault(token, queue.Queue())


def record(scope: Message, message: Message) -> None:
    seen(scope["query_string"].decode()).put(message)


# -- the applications -----------------------------------------------------------------------------


async def echo(scope: Message, receive: Receive, send: Send) -> None:
    """Accept (picking chat.v2 if offered), echo every message, record how it ended."""
    subprotocol = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol,
                "headers": [(b"x-hello", b"world"), (b"Upgrade", b"not-yours")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        if scope["path"] == "/slow" and message.get("text") == "0":
            await asyncio.sleep(0.5)  # the client goes on sending: reading has to pause
        reply = {"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}}
        await send(reply)
    again = await receive()
    try:
        await send({"type": "websocket.send", "text": "too late"})
        send_raised = False
    except ClientDisconnected:
        send_raised = True
    record(scope, {"disconnect": message, "again": again, "send_raised": send_raised})


async def close_first(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
    record(scope, await receive())


async def deny(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.close"})


async def deny_custom(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.http.response.start", "status": 401,
                "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"999")]})
    await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"are you?"})


async def fail_before(scope: Message, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom before accept")


async def return_before(scope: Message, receive: Receive, send: Send) -> None:
    return None


async def unoffered_subprotocol(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.accept", "subprotocol": "never-offered"})


async def fail_after(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.accept"})
    await receive()
    raise RuntimeError("boom after accept")


async def return_after(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.accept"})


async def flood(scope: Message, receive: Receive, send: Send) -> None:
    """Send COUNT messages of SIZE bytes as fast as send() lets us."""
    await send({"type": "websocket.accept"})
    count, size = map(int, (await receive())["text"].split())
    for index in range(count):
        await send({"type": "websocket.send", "bytes": index.to_bytes(4, "big") * (size // 4)})
    record(scope, {"done_at": time.monotonic()})
    await send({"type": "websocket.send", "text": "done"})
    await receive()


async def sink(scope: Message, receive: Receive, send: Send) -> None:
    """Read nothing for half a second, then digest every message until "end"."""
    await send({"type": "websocket.accept"})
    await asyncio.sleep(0.5)
    digest = hashlib.sha256()
    count = 0
    while (message := await receive()).get("text") != "end":
        digest.update(message["bytes"])
        count += 1
    await send({"type": "websocket.send", "text": f"{count} {digest.hexdigest()}"})
    await receive()


async def show_scope(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": repr(sorted(scope))})
    await send({"type": "websocket.send", "text": repr((scope["subprotocols"], scope["extensions"],
                                                        scope["scheme"], scope["path"],
                                                        scope["query_string"]))})
    await receive()


ROUTES = {"/echo": echo, "/slow": echo, "/close": close_first, "/deny": deny, "/deny-custom": deny_custom,
          "/fail-before": fail_before, "/return-before": return_before, "/fail-after": fail_after,
          "/return-after": return_after, "/unoffered": unoffered_subprotocol,
          "/flood": flood, "/sink": sink, "/scope": show_scope}


async def app(scope: Message, receive: Receive, send: Send) -> None:
    assert scope["type"] == "websocket"
    _calls.append(scope["path"])
    connect_message = await receive()
    assert connect_message == {"type": "websocket.connect"}
    await ROUTES[scope["path"]](scope, receive, send)


# -- the kit --------------------------------------------------------------------------------------


@pytest.fixture
def serve(in_process: Callable[..., InProcessServer]) -> Callable[..., InProcessServer]:
    """Factory: ring3 serving `app`, HTTP and WebSocket, with these [app] settings."""

    def start(**settings: Any) -> InProcessServer:
        section = AppSection(**settings)
        handler = ASGIHandler(app, section)
        handler.websocket = WebSocketEndpoint(app, section)
        return in_process(handler)

    return start


@pytest.fixture
def server(serve: Callable[..., InProcessServer]) -> InProcessServer:
    return serve()


def url(srv: InProcessServer, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def token() -> str:
    return f"t{time.monotonic_ns()}"


def handshake(path: str, *extra: bytes, key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==",
              version: bytes = b"13") -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: localhost", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: " + version,
             *extra]
    return b"\r\n".join(line for line in lines if not line.endswith(b": ")) + b"\r\n\r\n"


class RawClient:
    """A WebSocket client on a plain socket: wsproto frames, the test decides every byte's fate."""

    def __init__(self, srv: InProcessServer, target: str, extensions: list[PerMessageDeflate] | None = None,
                 early: bytes = b""):
        self.sock = srv.connect()
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        request = self.ws.send(Request(host="localhost", target=target, extensions=extensions or []))
        self.sock.sendall(request + early)  # `early`: frames sent before the 101 arrives
        accepted = self.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        self.accepted = accepted

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def feed(self, data: bytes) -> None:
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())

    def next_event(self, timeout: float = 5.0) -> Event:
        self.sock.settimeout(timeout)
        while not self.events:
            self.feed(self.sock.recv(65536))
        return self.events.popleft()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def open_client(srv: InProcessServer, target: str, **options: Any) -> RawClient:
        client = RawClient(srv, target, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def headers_of(ws: ClientConnection) -> Any:
    assert ws.response is not None
    return ws.response.headers


def closed_by_server(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    return info.value


def close_code(ws: ClientConnection) -> int:
    """The code of the close frame the server sent."""
    received = closed_by_server(ws).rcvd
    assert received is not None, "the connection ended without a close frame"
    return received.code


# -- messages -------------------------------------------------------------------------------------


def test_echo_text_and_binary(server: InProcessServer) -> None:
    with connect(url(server, "/echo")) as ws:
        ws.send("hello, ünïcode")
        assert ws.recv(timeout=5) == "hello, ünïcode"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=5) == b"\x00\x01binary\xff"
        ws.send("")
        assert ws.recv(timeout=5) == ""


def test_subprotocol_and_accept_headers(server: InProcessServer) -> None:
    with connect(url(server, "/echo"), subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")]) as ws:
        assert ws.subprotocol == "chat.v2"
        headers = headers_of(ws)
        assert headers["Sec-WebSocket-Protocol"] == "chat.v2"
        assert headers["X-Hello"] == "world"
        assert headers["Upgrade"] == "websocket"  # the application's field was dropped
        assert headers.get_all("Upgrade") == ["websocket"]
    with connect(url(server, "/echo")) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in headers_of(ws)


def test_scope(server: InProcessServer) -> None:
    with connect(url(server, "/scope?a=1"), subprotocols=[Subprotocol("one"), Subprotocol("two")]) as ws:
        keys = ws.recv(timeout=5)
        assert "'subprotocols'" in keys and "'method'" not in keys
        assert ws.recv(timeout=5) == repr((["one", "two"], {"websocket.http.response": {}}, "ws", "/scope",
                                           b"a=1"))


def test_fragmented_messages_are_reassembled(server: InProcessServer) -> None:
    with connect(url(server, "/echo")) as ws:
        ws.send(iter(["hel", "lo, ", "wörld"]))
        assert ws.recv(timeout=5) == "hello, wörld"
        ws.send(iter([b"ab", b"", b"cd"]))
        assert ws.recv(timeout=5) == b"abcd"


def test_large_message_echoed_byte_exact(server: InProcessServer) -> None:
    payload = os.urandom(1 << 20)
    with connect(url(server, "/echo"), max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload


def test_fifty_concurrent_clients(server: InProcessServer) -> None:
    async def client(number: int) -> int:
        async with async_connect(url(server, "/echo")) as ws:
            for index in range(10):
                await ws.send(f"{number}:{index}")
                assert await ws.recv() == f"{number}:{index}"
        return number

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(50))), 10)

    assert asyncio.run(main()) == list(range(50))


def test_a_slow_application_pauses_reading_and_loses_nothing(server: InProcessServer) -> None:
    with connect(url(server, "/slow"), compression=None) as ws:
        for index in range(200):
            ws.send(str(index))
        assert [ws.recv(timeout=5) for _ in range(200)] == [str(index) for index in range(200)]


def test_reading_pauses_while_the_application_does_not_read(server: InProcessServer) -> None:
    count, size = 400, 64 * 1024  # 25 MiB: far more than the socket buffers and the queue hold
    digest = hashlib.sha256()
    with connect(url(server, "/sink"), compression=None, max_size=None) as ws:
        started = time.monotonic()
        for index in range(count):
            payload = index.to_bytes(4, "big") * (size // 4)
            digest.update(payload)
            ws.send(payload)
        sending = time.monotonic() - started
        ws.send("end")
        assert ws.recv(timeout=10) == f"{count} {digest.hexdigest()}"
    assert sending > 0.3  # the server stopped reading while the application slept


def test_send_waits_for_a_slow_client(server: InProcessServer) -> None:
    count, size = 300, 64 * 1024  # 19 MiB: more than the socket buffers hold
    name = token()
    with connect(url(server, f"/flood?{name}"), compression=None, max_size=None) as ws:
        ws.send(f"{count} {size}")
        time.sleep(0.3)
        reading_at = time.monotonic()
        for index in range(count):
            message = ws.recv(timeout=5)
            assert message == index.to_bytes(4, "big") * (size // 4)
        assert ws.recv(timeout=5) == "done"
    assert seen(name).get(timeout=5)["done_at"] > reading_at  # send() waited for the client to read


# -- closing --------------------------------------------------------------------------------------


def test_server_closes_with_code_and_reason(server: InProcessServer) -> None:
    name = token()
    with connect(url(server, f"/close?{name}")) as ws:
        closed = closed_by_server(ws)
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye")
    disconnect = seen(name).get(timeout=5)
    assert disconnect["type"] == "websocket.disconnect"
    assert disconnect["code"] == 4001  # the client's answer echoes our close frame


def test_client_closes_with_code_and_reason(server: InProcessServer) -> None:
    name = token()
    with connect(url(server, f"/echo?{name}")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(code=4002, reason="later")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 4002  # the server answered the close frame
    ended = seen(name).get(timeout=5)
    expected = {"type": "websocket.disconnect", "code": 4002, "reason": "later"}
    assert ended == {"disconnect": expected, "again": expected, "send_raised": True}


def test_client_vanishing_without_close_is_1006(server: InProcessServer,
                                                 raw: Callable[..., RawClient]) -> None:
    name = token()
    client = raw(server, f"/echo?{name}")
    client.send(TextMessage(data="ping?"))
    assert client.next_event() == TextMessage(data="ping?")
    client.sock.close()
    ended = seen(name).get(timeout=5)
    assert ended["disconnect"]["code"] == 1006
    assert ended["again"]["code"] == 1006
    assert ended["send_raised"] is True


def test_application_returning_after_accept_closes_with_1000(server: InProcessServer) -> None:
    with connect(url(server, "/return-after")) as ws:
        closed = closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1000


def test_a_client_breaking_the_protocol_gets_1002(server: InProcessServer,
                                                  raw: Callable[..., RawClient]) -> None:
    name = token()
    client = raw(server, f"/echo?{name}")
    client.sock.sendall(b"\x81\x02hi")  # a client's frame must be masked
    closing = client.next_event()
    assert isinstance(closing, CloseConnection) and closing.code == 1002
    assert client.next_event() == CloseConnection(code=1006)  # and the server hangs up
    assert seen(name).get(timeout=5)["disconnect"]["code"] == 1006


def test_a_client_that_never_answers_our_close_is_dropped(serve: Callable[..., InProcessServer],
                                                          raw: Callable[..., RawClient]) -> None:
    srv = serve(websocket_ping_interval=0, websocket_ping_timeout=0.2)
    name = token()
    client = raw(srv, f"/close?{name}")
    started = time.monotonic()
    assert client.next_event() == CloseConnection(code=4001, reason="bye")
    assert client.next_event() == CloseConnection(code=1006)  # no answer from us: the server hangs up
    assert 0.1 < time.monotonic() - started < 2
    assert seen(name).get(timeout=5) == {"type": "websocket.disconnect", "code": 1006,
                                         "reason": "close timeout"}


def test_a_deflate_bomb_is_closed_before_it_inflates(serve: Callable[..., InProcessServer],
                                                     raw: Callable[..., RawClient]) -> None:
    import tracemalloc

    srv = serve(websocket_max_message=1 << 20)
    client = raw(srv, "/echo", extensions=[PerMessageDeflate()])
    bomb = client.ws.send(BytesMessage(data=bytes(64 << 20)))  # 64 MiB of zeros: about 64 KiB on the wire
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        client.sock.sendall(bomb)
        event = client.next_event()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(event, CloseConnection) and event.code == 1009
    assert peak < 16 << 20  # inflated in slices: never near the 64 MiB the message would become


def test_frames_sent_with_the_handshake_are_not_lost(server: InProcessServer,
                                                     raw: Callable[..., RawClient]) -> None:
    early = Connection(ConnectionType.CLIENT).send(TextMessage(data="early bird"))
    client = raw(server, "/echo", early=early)
    assert client.next_event() == TextMessage(data="early bird")


def test_message_too_big_closes_with_1009(serve: Callable[..., InProcessServer]) -> None:
    srv = serve(websocket_max_message=1000)
    with connect(url(srv, "/echo")) as ws:
        ws.send(b"x" * 1000)  # at the limit: fine
        assert ws.recv(timeout=5) == b"x" * 1000
        ws.send("é" * 501)  # 501 characters, 1002 bytes
        assert close_code(ws) == 1009
    with connect(url(srv, "/echo"), compression=None) as ws:
        try:  # each fragment is small; the message is not
            ws.send(iter([b"y" * 600, b"y" * 600]))
        except ConnectionClosed as early:  # the close came before websockets' final empty fragment left
            closed = early
        else:
            closed = closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1009


def test_application_error_after_accept_closes_with_1011(server: InProcessServer) -> None:
    with connect(url(server, "/fail-after")) as ws:
        ws.send("go")
        closed = closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1011


# -- pings ----------------------------------------------------------------------------------------


def test_server_pings_keep_an_idle_connection_alive(serve: Callable[..., InProcessServer],
                                                    raw: Callable[..., RawClient]) -> None:
    srv = serve(websocket_ping_interval=0.2, websocket_ping_timeout=0.3)
    client = raw(srv, "/echo")
    pings = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        event = client.next_event(timeout=1)
        assert isinstance(event, Ping), event
        pings += 1
        client.send(event.response())
    assert pings >= 3
    client.send(TextMessage(data="still here"))
    assert client.next_event() == TextMessage(data="still here")
    with connect(url(srv, "/echo")) as ws:  # a real client answers by itself
        time.sleep(0.8)
        ws.send("awake")
        assert ws.recv(timeout=5) == "awake"


def test_a_client_that_never_answers_pings_is_closed(serve: Callable[..., InProcessServer],
                                                     raw: Callable[..., RawClient]) -> None:
    srv = serve(websocket_ping_interval=0.2, websocket_ping_timeout=0.2)
    name = token()
    started = time.monotonic()
    client = raw(srv, f"/echo?{name}")
    assert isinstance(client.next_event(), Ping)
    closing = client.next_event()
    assert isinstance(closing, CloseConnection) and closing.code == 1011
    assert client.next_event() == CloseConnection(code=1006)  # then the TCP connection ends
    assert time.monotonic() - started < 2
    assert seen(name).get(timeout=5)["disconnect"] == {
        "type": "websocket.disconnect", "code": 1006, "reason": "ping timeout"}


def test_no_pings_with_interval_zero(serve: Callable[..., InProcessServer],
                                     raw: Callable[..., RawClient]) -> None:
    srv = serve(websocket_ping_interval=0, websocket_ping_timeout=0.05)
    client = raw(srv, "/echo")
    client.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.sock.recv(100)
    client.send(TextMessage(data="quiet"))
    assert client.next_event() == TextMessage(data="quiet")


# -- compression ----------------------------------------------------------------------------------


def test_permessage_deflate_is_negotiated_and_used(server: InProcessServer,
                                                   raw: Callable[..., RawClient]) -> None:
    text = "compress me " * 1000
    with connect(url(server, "/echo")) as ws:
        assert headers_of(ws)["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send(text)
        assert ws.recv(timeout=5) == text
    client = raw(server, "/echo", extensions=[PerMessageDeflate()])
    client.send(TextMessage(data=text))
    client.sock.settimeout(5)
    frame = client.sock.recv(65536)
    assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
    assert len(frame) < len(text) // 10
    client.feed(frame)
    assert client.next_event() == TextMessage(data=text)


def test_compression_off(serve: Callable[..., InProcessServer]) -> None:
    srv = serve(websocket_compression=False)
    with connect(url(srv, "/echo")) as ws:
        assert "Sec-WebSocket-Extensions" not in headers_of(ws)
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_unknown_deflate_parameters_are_declined(server: InProcessServer) -> None:
    with server.connect() as sock:
        sock.sendall(handshake("/echo", b"Sec-WebSocket-Extensions: permessage-deflate; foo=1, "
                                        b"permessage-deflate; client_max_window_bits"))
        status, headers, _ = ResponseReader(sock).read(head_only=True)
    assert status == 101
    assert headers[b"sec-websocket-extensions"] == b"permessage-deflate; client_max_window_bits=15"


# -- handshakes -----------------------------------------------------------------------------------


def test_close_before_accept_is_403(server: InProcessServer) -> None:
    with server.connect() as sock:
        status, _, body = exchange(sock, handshake("/deny"))
    assert (status, body) == (403, b"")
    with pytest.raises(InvalidStatus) as info:
        connect(url(server, "/deny"))
    assert info.value.response.status_code == 403


def test_denial_response_extension(server: InProcessServer) -> None:
    with server.connect() as sock:
        status, headers, body = exchange(sock, handshake("/deny-custom"))
    assert (status, body) == (401, b"who are you?")
    assert headers[b"www-authenticate"] == b"Bearer"
    assert headers[b"content-length"] == b"12"


@pytest.mark.parametrize(("request_bytes", "status"), [
    (handshake("/echo", key=b""), 400),
    (handshake("/echo", key=b"dG9vIHNob3J0"), 400),  # 9 bytes, not 16
    (handshake("/echo", key=b"not base64 at all!!!===="), 400),
    (handshake("/echo", version=b""), 400),
    (handshake("/echo", version=b"8"), 426),
    (handshake("/echo").replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
])
def test_bad_handshakes_never_reach_the_application(server: InProcessServer, request_bytes: bytes,
                                                     status: int) -> None:
    before = len(_calls)
    with server.connect() as sock:
        answer, headers, _ = exchange(sock, request_bytes)
    assert answer == status
    if status == 426:
        assert headers[b"sec-websocket-version"] == b"13"
    assert len(_calls) == before


def test_a_good_raw_handshake_is_accepted(server: InProcessServer) -> None:
    before = len(_calls)
    with server.connect() as sock:
        sock.sendall(handshake("/echo"))
        status, headers, _ = ResponseReader(sock).read(head_only=True)
    assert status == 101
    assert headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3
    assert headers[b"connection"].lower() == b"upgrade"
    assert len(_calls) == before + 1


@pytest.mark.parametrize("offer", [b"", b"chat.v1, chat.v2"])
def test_a_subprotocol_the_client_did_not_offer_is_refused(server: InProcessServer, offer: bytes,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """RFC 6455 4.1: the client must fail a handshake that picks a subprotocol it did not offer; the
    server refuses it first, with a 500 and a line in the error log, rather than send a 101 that fails."""
    with server.connect() as sock:
        status, headers, _ = exchange(sock, handshake("/unoffered", b"Sec-WebSocket-Protocol: " + offer))
    assert status == 500
    assert b"sec-websocket-accept" not in headers
    assert any("never-offered" in record.getMessage() or "never-offered" in str(record.exc_info)
               for record in caplog.records)


@pytest.mark.parametrize("path", ["/fail-before", "/return-before"])
def test_application_failing_before_accept_is_500(server: InProcessServer, path: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with server.connect() as sock:
        status, _, body = exchange(sock, handshake(path))
    assert status == 500
    assert b"boom" not in body
    assert any(record.name == "ring3.error" for record in caplog.records)



# -- through the command line ---------------------------------------------------------------------

_CLI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
"""


def test_ring3_serve_app_speaks_websocket(tmp_path: Path,
                                          ring3_process: Callable[..., RunningServer]) -> None:
    (tmp_path / "wsapp.py").write_text(_CLI_APP)
    srv = ring3_process("--app", "wsapp:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                        "--access-log", "off", "--websocket-max-message", "100", "--no-websocket-compression")
    address = f"ws://127.0.0.1:{srv.port}/"
    with connect(address) as ws:
        assert "Sec-WebSocket-Extensions" not in headers_of(ws)
        ws.send("over the wire")
        assert ws.recv(timeout=5) == "over the wire"
        ws.send(b"z" * 101)
        assert close_code(ws) == 1009


def test_server_shutdown_closes_websockets_with_going_away(
        tmp_path: Path, ring3_process: Callable[..., RunningServer]) -> None:
    import signal

    (tmp_path / "wsapp.py").write_text(_CLI_APP)
    srv = ring3_process("--app", "wsapp:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                        "--access-log", "off")
    with connect(f"ws://127.0.0.1:{srv.port}/") as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
        srv.process.send_signal(signal.SIGTERM)
        closed = closed_by_server(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert srv.stop() == 0


# -- the session alone: bytes in, pauses and bytes out -------------------------------------------


class FakeChannel:
    """A Channel that records what the session does with the connection."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.pauses = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    @property
    def blocked(self) -> bool:
        return False

    async def drain(self) -> None:
        return None

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def run_session(body: Callable[[WebSocketSession, FakeChannel, Connection], Any]) -> None:
    async def main() -> None:
        session = WebSocketSession(asyncio.get_running_loop(), [], max_message=1 << 20, ping_interval=0,
                                   ping_timeout=1)
        channel = FakeChannel()
        session.start(channel, b"")
        await body(session, channel, Connection(ConnectionType.CLIENT))
        session.connection_lost()

    asyncio.run(main())


@pytest.mark.parametrize(("size", "pause_after"), [
    (10, MAX_QUEUED_MESSAGES),  # many small messages: the count bound
    (300 * 1024, -(-MAX_QUEUED_BYTES // (300 * 1024))),  # a few large ones: the byte bound
])
def test_session_pauses_reading_at_its_queue_bounds(size: int, pause_after: int) -> None:
    async def body(session: WebSocketSession, channel: FakeChannel, client: Connection) -> None:
        for index in range(pause_after):
            assert not channel.paused, index
            session.data_received(client.send(BytesMessage(data=bytes([index]) * size)))
        assert channel.paused
        for index in range(pause_after):
            assert await session.receive() == bytes([index]) * size
        assert not channel.paused and channel.pauses == 1

    run_session(body)


def test_session_answers_pings_and_close_frames() -> None:
    async def body(session: WebSocketSession, channel: FakeChannel, client: Connection) -> None:
        session.data_received(client.send(Ping(payload=b"hi")) + client.send(
            CloseConnection(code=4000, reason="done")))
        client.receive_data(bytes(channel.written))
        assert list(client.events()) == [Pong(payload=b"hi"), CloseConnection(code=4000, reason="done")]
        assert channel.closed
        assert await session.receive() == Closed(code=4000, reason="done")
        assert await session.receive() == Closed(code=4000, reason="done")
        with pytest.raises(ClientDisconnected):
            await session.send("after the end")

    run_session(body)


def test_a_101_the_connection_dropped_ends_the_session() -> None:
    async def main() -> None:
        session = WebSocketSession(asyncio.get_running_loop(), [], max_message=100, ping_interval=0,
                                   ping_timeout=1)
        session.head_settled()  # the Response's cleanup ran, and start never comes
        ended = await asyncio.wait_for(session.receive(), 1)
        assert ended == Closed(code=1006, reason="the 101 response was never sent")
        with pytest.raises(ClientDisconnected):
            await session.send("nobody")
        channel = FakeChannel()
        session.start(channel, b"")  # too late: the connection is dropped
        assert channel.closed

    asyncio.run(main())
