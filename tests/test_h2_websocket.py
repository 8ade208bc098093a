"""WebSockets over HTTP/2 (RFC 8441): an extended CONNECT on a stream, then WebSocket frames in its DATA.

The client is the h2 library (which speaks extended CONNECT once the server announces
SETTINGS_ENABLE_CONNECT_PROTOCOL) with wsproto framing the WebSocket messages; the server, an ASGI
application in an in-process ring3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from conftest import InProcessServer
from h2_kit import H2Client
from ring3.config.schema import AppSection
from ring3.handlers.asgi import ASGIHandler, Receive, Scope, Send
from ring3.websocket.asgi import WebSocketEndpoint

Start = Callable[..., InProcessServer]
SEEN: list[Any] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})
        return
    SEEN.append(dict(scope))
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    subprotocol = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            SEEN.append(message)
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 1000})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


@pytest.fixture
def server(in_process: Start) -> InProcessServer:
    SEEN.clear()
    handler = ASGIHandler(app, AppSection())
    handler.websocket = WebSocketEndpoint(app, AppSection())
    return in_process(handler)


class H2WebSocket:
    """One WebSocket on one stream of an H2Client."""

    def __init__(self, client: H2Client, path: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.client = client
        client.pump(0.2)  # the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) first
        self.stream = client.request(path, method="CONNECT", end=False, headers=[
            (":protocol", "websocket"), ("sec-websocket-version", "13"), *(headers or [])])
        self.ws = Connection(ConnectionType.CLIENT)
        self.events: list[Any] = []
        self._seen = 0

    def send(self, event: Any) -> None:
        self.client.conn.send_data(self.stream, self.ws.send(event))
        self.client._flush()

    def next_event(self, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.client.answers[self.stream].body
            if len(body) > self._seen:
                self.ws.receive_data(bytes(body[self._seen:]))
                self._seen = len(body)
                self.events.extend(self.ws.events())
            if self.events:
                return self.events.pop(0)
            if not self.client.pump(0.2):
                break
        raise AssertionError("no WebSocket event")


def test_settings_announce_extended_connect(server: InProcessServer) -> None:
    with H2Client(server.port) as client:
        client.pump(0.5)
        assert client.conn.remote_settings.enable_connect_protocol == 1


def test_an_echo_over_an_h2_stream(server: InProcessServer) -> None:
    with H2Client(server.port) as client:
        socket = H2WebSocket(client, "/chat", [("sec-websocket-protocol", "chat, other")])
        socket.send(TextMessage(data="hello"))
        assert socket.next_event() == TextMessage(data="echo: hello")
        socket.send(BytesMessage(data=b"abc"))
        assert socket.next_event() == BytesMessage(data=b"cba")
        answer = client.answers[socket.stream]
        assert answer.headers[":status"] == "200"
        assert answer.headers["sec-websocket-protocol"] == "chat"
        assert "sec-websocket-accept" not in answer.headers and "upgrade" not in answer.headers
        # The connection's other streams go on meanwhile.
        assert client.get("/plain").body == b"plain"
        socket.send(TextMessage(data="bye"))
        closing = socket.next_event()
        assert isinstance(closing, CloseConnection) and closing.code == 1000
    scope = SEEN[0]
    assert scope["type"] == "websocket" and scope["http_version"] == "2" and scope["path"] == "/chat"
    assert scope["subprotocols"] == ["chat", "other"]


def test_a_denied_websocket_gets_403(server: InProcessServer) -> None:
    with H2Client(server.port) as client:
        socket = H2WebSocket(client, "/deny")
        [answer] = client.wait(socket.stream)
    assert answer.headers[":status"] == "403"


def test_a_missing_version_gets_400_without_the_app(server: InProcessServer) -> None:
    with H2Client(server.port) as client:
        client.pump(0.2)
        stream = client.request("/chat", method="CONNECT", end=False, headers=[(":protocol", "websocket")])
        [answer] = client.wait(stream)
    assert answer.headers[":status"] == "400"
    assert SEEN == []


def test_a_client_reset_reaches_the_app_as_a_disconnect(server: InProcessServer) -> None:
    with H2Client(server.port) as client:
        socket = H2WebSocket(client, "/chat")
        socket.send(TextMessage(data="ping"))
        assert socket.next_event() == TextMessage(data="echo: ping")
        client.reset(socket.stream)
        client.pump(0.3)
    deadline = time.monotonic() + 5
    while len(SEEN) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert SEEN[1]["type"] == "websocket.disconnect"


def test_shutdown_closes_the_websocket_with_1001(server: InProcessServer) -> None:
    client = H2Client(server.port)
    try:
        socket = H2WebSocket(client, "/chat")
        socket.send(TextMessage(data="x"))
        assert socket.next_event() == TextMessage(data="echo: x")
        loop = server.loop
        assert server.server is not None
        stopping = asyncio.run_coroutine_threadsafe(server.server.shutdown(2.0), loop)
        closing = socket.next_event()
        assert isinstance(closing, CloseConnection) and closing.code == 1001
        client.send_data_raw(socket.stream, socket.ws.send(closing.response()))
        stopping.result(10)
        assert client.goaway is not None and client.goaway.error_code == 0
    finally:
        client.close()
