"""RSGI hello (asgi-hello, granian's own interface, as a reference): the same 13 bytes."""

from __future__ import annotations

from typing import Any

BODY = b"Hello, world!"
HEADERS = [("content-type", "text/plain"), ("content-length", str(len(BODY)))]


async def app(scope: Any, protocol: Any) -> None:
    protocol.response_bytes(200, HEADERS, BODY)
