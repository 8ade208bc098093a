"""ASGI streaming (asgi-stream-10m): 10 MiB from memory in 64 KiB pieces, each sent with more_body=True and
no content-length, so the server frames the body itself (chunked)."""

from __future__ import annotations

import os
from typing import Any

from _lifespan import Receive, Send, lifespan

SIZE = 10 * 1024 * 1024
PIECE = 64 * 1024
_DATA = os.urandom(SIZE)  # random, so no layer can compress it
PIECES = [_DATA[offset:offset + PIECE] for offset in range(0, SIZE, PIECE)]
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/octet-stream")]}


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send(START)
        for piece in PIECES:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
