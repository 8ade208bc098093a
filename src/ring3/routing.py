"""Routing by URL path prefix: each mount (the static files, an application) owns the paths under it.

The longest matching prefix wins, at a segment boundary ('/static' owns '/static' and '/static/x', not
'/staticx'). With more than one mount, a path holding dot segments ('.', '..', or their percent-encoded
forms) is refused with 400 rather than guessed at: it could otherwise be routed by one prefix and mean
another.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable

from ring3.config.loader import mount_prefix
from ring3.events import Request, Response
from ring3.handlers import BodyReader, Handler
from ring3.handlers.status import status_response

_DOT_SEGMENT = re.compile(rb"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


class MountRouter:
    """Sends each request to the handler mounted at the longest prefix of its path."""

    __slots__ = ("_mounts", "handlers")

    def __init__(self, mounts: list[tuple[str, Handler]]) -> None:
        routes = [(mount_prefix(mount).encode("ascii"), handler) for mount, handler in mounts]
        routes.sort(key=lambda route: len(route[0]), reverse=True)
        self._mounts = [(prefix, prefix + b"/", handler) for prefix, handler in routes]
        self.handlers = [handler for _, handler in mounts]

    def __call__(self, request: Request, body: BodyReader) -> Response | Awaitable[Response]:
        path = request.path
        if (b"." in path or b"%" in path) and _DOT_SEGMENT.search(path):
            return status_response(400)
        for prefix, below, handler in self._mounts:
            if not prefix or path == prefix or path.startswith(below):
                return handler(request, body)
        return status_response(404)
