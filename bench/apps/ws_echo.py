"""WebSocket echo (ws-echo), raw ASGI: every message goes back as it came (bytes or text). A plain HTTP
request gets 200 "ok" (the harness's readiness probe)."""

from __future__ import annotations

from typing import Any

from _lifespan import Receive, Send, lifespan

OK = b"ok"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(OK))]}
BODY = {"type": "http.response.body", "body": OK}


async def echo(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            data = message.get("bytes")
            if data is not None:
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": message.get("text") or ""})
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.disconnect":
            return


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await echo(receive, send)
    elif scope["type"] == "http":
        await send(START)
        await send(BODY)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
