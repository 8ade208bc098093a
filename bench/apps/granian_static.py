"""The trivial ASGI app behind `granian --static-path-mount` in the static scenarios: granian's Rust side
serves the files, and anything it does not find reaches this app, which answers 404."""

from __future__ import annotations

from typing import Any

from _lifespan import Receive, Send, lifespan

NOT_FOUND = b"not found\n"


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(NOT_FOUND))]})
    await send({"type": "http.response.body", "body": NOT_FOUND})
