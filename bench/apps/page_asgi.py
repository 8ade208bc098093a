"""ASGI page (asgi-gzip-html-100k): the compress scenarios' 100 KiB HTML page on every request, whatever
the path, as text/html; charset=utf-8, sent in PIECES pieces with more_body=True and no content-length,
so a server that compresses application responses (ring3 --app-compress) compresses it as it streams, a
piece at a time, and frames it itself (chunked). The page is the file the harness writes into the bench
site ($BENCH_ROOT/page.html, benchkit.pages), read once at import; the harness checks that the answers
decode to it."""

from __future__ import annotations

import os
from typing import Any

from _lifespan import Receive, Send, lifespan

PIECES = 4
with open(os.path.join(os.environ["BENCH_ROOT"], "page.html"), "rb") as _file:
    _DATA = _file.read()
_STEP = -(-len(_DATA) // PIECES)  # ceiling: PIECES pieces, the last one shorter
BODIES = [{"type": "http.response.body", "body": _DATA[offset:offset + _STEP], "more_body": True}
          for offset in range(0, len(_DATA), _STEP)]
END = {"type": "http.response.body", "body": b"", "more_body": False}
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/html; charset=utf-8")]}


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send(START)
        for body in BODIES:
            await send(body)
        await send(END)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
