"""ASGI 3 WebSockets (spec 2.4, with the websocket.http.response extension) on ring3's handler contract.

ASGIHandler hands a request that asks for a WebSocket to WebSocketEndpoint, which answers with a Future
of the Response at once and runs the application in a Task of its own:
- A handshake that breaks RFC 6455 is refused (400, or 426 for another version) before the application
  is called (handshake.check_request).
- The application's first receive() is websocket.connect. Its answer settles the Response: accept -> a
  101 whose `upgrade` is a WebSocketSession, which the connection starts once the head has left; close ->
  403; websocket.http.response.start/body -> that response, its body collected. An application that
  fails or returns before answering gets a 500 (logged, never sent).
- After the 101, receive() and send() map ASGI messages onto the session (session.py), which frames them
  with wsproto. An application that fails closes the socket with 1011; one that returns, with 1000.

What the application may send when is the table _TRANSITIONS: one place, as data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from enum import Enum
from typing import Any

from wsproto.extensions import Extension

from ring3.config.schema import AppSection
from ring3.errors import ClientDisconnected
from ring3.events import Headers, Request, Response, fields_set
from ring3.handlers.asgi import AppExchange, ASGIApp, Message, Scope
from ring3.handlers.status import status_response
from ring3.websocket import handshake
from ring3.websocket.session import (
    ABNORMAL_CLOSURE,
    INTERNAL_ERROR,
    NORMAL_CLOSURE,
    Closed,
    WebSocketSession,
)

logger = logging.getLogger("ring3.error")

EXTENSIONS: dict[str, dict[str, Any]] = {"websocket.http.response": {}}
_FORBIDDEN = 403  # websocket.close before websocket.accept (ASGI spec)


class _State(Enum):
    CONNECTING = "connecting"  # the application has not answered the handshake yet
    RESPONDING = "responding"  # it is sending a denial response (websocket.http.response.*)
    ACCEPTED = "accepted"  # the 101 is settled: messages flow
    CLOSED = "closed"  # it has closed the socket, or denied the handshake


_LAST_BODY = "websocket.http.response.body, last"  # a body message without more_body counts apart

# (state, message the application sends) -> the state after it. Anything else is a RuntimeError.
_TRANSITIONS: dict[tuple[_State, str], _State] = {
    (_State.CONNECTING, "websocket.accept"): _State.ACCEPTED,
    (_State.CONNECTING, "websocket.close"): _State.CLOSED,
    (_State.CONNECTING, "websocket.http.response.start"): _State.RESPONDING,
    (_State.RESPONDING, "websocket.http.response.body"): _State.RESPONDING,
    (_State.RESPONDING, _LAST_BODY): _State.CLOSED,
    (_State.ACCEPTED, "websocket.send"): _State.ACCEPTED,
    (_State.ACCEPTED, "websocket.close"): _State.CLOSED,
}


class WebSocketEndpoint:
    """Serves every WebSocket request with one ASGI 3 application (ASGIHandler.websocket)."""

    __slots__ = ("_settings", "app", "running")

    def __init__(self, app: ASGIApp, settings: AppSection) -> None:
        self.app = app
        self._settings = settings
        self.running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def __call__(self, request: Request, scope: Scope) -> Awaitable[Response]:
        loop = asyncio.get_running_loop()
        refusal = handshake.check_request(request)
        if refusal is not None:
            future: asyncio.Future[Response] = loop.create_future()
            future.set_result(refusal)
            return future
        scope["subprotocols"] = handshake.offered_subprotocols(request)
        tls = scope["extensions"].get("tls")  # the http scope's, on a TLS connection
        scope["extensions"] = EXTENSIONS if tls is None else {**EXTENSIONS, "tls": tls}
        exchange = WebSocketExchange(loop, request, self._settings)
        task = loop.create_task(exchange.run(self.app, scope))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return exchange.response


def _disconnect(closed: Closed) -> Message:
    return {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}


class WebSocketExchange(AppExchange):
    """One WebSocket request as an ASGI application sees it: receive(), send(), and the Response that
    settles the handshake."""

    __slots__ = ("_body", "_connected", "_decided", "_headers", "_loop", "_request", "_session",
                 "_settings", "_state", "_status", "response")

    def __init__(self, loop: asyncio.AbstractEventLoop, request: Request, settings: AppSection) -> None:
        self._loop = loop
        self._request = request
        self._settings = settings
        self._state = _State.CONNECTING
        self._connected = False  # websocket.connect has been received
        self._session: WebSocketSession | None = None
        self._status = 0  # of a denial response
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._decided = asyncio.Event()  # the Response is settled (or the client left first)
        self.response: asyncio.Future[Response] = loop.create_future()
        self.response.add_done_callback(lambda _: self._decided.set())

    # -- receive ----------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        if self._session is None:
            await self._decided.wait()
        session = self._session
        if session is None:  # denied, or the client left before an answer
            return _disconnect(Closed(code=ABNORMAL_CLOSURE, reason="the WebSocket was not accepted"))
        item = await session.receive()
        if isinstance(item, Closed):
            return _disconnect(item)
        if isinstance(item, str):
            return {"type": "websocket.receive", "text": item}
        return {"type": "websocket.receive", "bytes": item}

    # -- send -------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send" and self._state is _State.ACCEPTED:  # the hot path: one message
            if self._disconnected():
                raise ClientDisconnected("the client closed the WebSocket")
            await self._send_message(message)
            return
        event = _LAST_BODY if kind == "websocket.http.response.body" and not message.get(
            "more_body", False) else kind
        if self._disconnected():
            raise ClientDisconnected("the client closed the WebSocket")
        following = _TRANSITIONS.get((self._state, event))
        if following is None:
            raise RuntimeError(f"ASGI message {kind!r} cannot be sent when the WebSocket is "
                               f"{self._state.value}")
        if kind == "websocket.send":
            await self._send_message(message)
        elif kind == "websocket.close":
            await self._close(message)
        elif kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.http.response.start":
            self._start_denial(message)
        else:
            self._denial_body(message, event == _LAST_BODY)
        self._state = following

    def _disconnected(self) -> bool:
        session = self._session
        if session is not None:
            return session.closed is not None
        return self.response.cancelled()

    async def _send_message(self, message: Message) -> None:
        session = self._session
        assert session is not None
        data = message.get("bytes")
        text = message.get("text")
        if (data is None) == (text is None):
            raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
        if data is not None:
            await session.send(data if type(data) is bytes else bytes(data))
        else:
            await session.send(text if type(text) is str else str(text))

    async def _close(self, message: Message) -> None:
        code = message.get("code", NORMAL_CLOSURE)
        if type(code) is not int or not 1000 <= code <= 4999:
            raise RuntimeError(f"invalid WebSocket close code {code!r}")
        session = self._session
        if session is None:
            self._settle(Response(status=_FORBIDDEN))
            return
        await session.close(code, message.get("reason") or "")

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise RuntimeError(f"invalid subprotocol {subprotocol!r}")
        if subprotocol is not None and subprotocol not in (offered := handshake.offered_subprotocols(
                self._request)):
            # RFC 6455 4.1: the client would fail the connection; refuse it here, where it can be told
            raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client {offered!r}")
        settings = self._settings
        extensions: list[Extension] = []
        extension_header: bytes | None = None
        if settings.websocket_compression:
            deflate = handshake.negotiate_deflate(self._request)
            if deflate is not None:
                extensions.append(deflate[0])
                extension_header = deflate[1]
        headers = handshake.accept_headers(self._request, subprotocol, extension_header,
                                           message.get("headers", ()))
        session = WebSocketSession(self._loop, extensions, max_message=settings.websocket_max_message,
                                   ping_interval=settings.websocket_ping_interval,
                                   ping_timeout=settings.websocket_ping_timeout)
        self._settle(Response(status=handshake.accept_status(self._request), headers=headers, upgrade=session,
                              cleanup=session.head_settled, sets_fields=fields_set(headers)))
        self._session = session

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if type(status) is not int or not 200 <= status <= 599:
            raise RuntimeError(f"invalid status {status!r} for a denial response")
        self._status = status
        self._headers = handshake.application_headers(message.get("headers", ()))

    def _denial_body(self, message: Message, last: bool) -> None:
        self._body.append(bytes(message.get("body", b"")))
        if last:
            body, self._body = b"".join(self._body), []
            self._settle(Response(status=self._status, headers=self._headers, body=body,
                                  sets_fields=fields_set(self._headers)))

    def _settle(self, response: Response) -> None:
        """Hand the answer to the handshake to the connection."""
        if self.response.done():  # the client left before the answer was ready
            raise ClientDisconnected("the client closed the connection")
        self.response.set_result(response)

    # -- endings ----------------------------------------------------------------------------------

    def _failed(self, error: BaseException | None) -> None:
        if error is not None and not (isinstance(error, ClientDisconnected) and self._disconnected()):
            logger.error("ASGI WebSocket application failed", exc_info=error)
        if self._session is not None:
            self._session.application_done(INTERNAL_ERROR)
        elif not self.response.done():
            self.response.set_result(status_response(500))

    def _returned(self) -> None:
        if self._session is not None:
            self._session.application_done(NORMAL_CLOSURE)
        elif not self.response.done():
            connecting = self._state is _State.CONNECTING
            unfinished = "answering the handshake" if connecting else "its denial response"
            logger.error("ASGI WebSocket application returned before %s", unfinished)
            self.response.set_result(status_response(500))
