"""The handler of a redirect-https listener: every request gets a 301 to the same host, path and query
over https (nginx's `return 301 https://$host$request_uri;`)."""

from __future__ import annotations

import re

from ring3.events import Request, Response
from ring3.handlers import BodyReader
from ring3.handlers.status import status_response

# A Host field worth redirecting to: a DNS name or IPv4 address, or an IPv6 address in brackets, and an
# optional port (dropped: the https port replaces it). Anything else could aim the redirect elsewhere.
_HOST = re.compile(rb"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_PAGE = b"<!doctype html>\n<title>301 Moved Permanently</title>\n<p>This site is served over https.</p>\n"


class HTTPSRedirect:
    """Answers with 301 to https on `port` (443 is left out of the URL)."""

    __slots__ = ("_suffix",)

    def __init__(self, port: int) -> None:
        self._suffix = b"" if port == 443 else b":%d" % port

    def __call__(self, request: Request, body: BodyReader) -> Response:
        host = request.host
        if not host or not _HOST.match(host):
            return status_response(400)
        name = host[:host.index(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
        target = request.target
        if not target.startswith(b"/"):  # absolute-form (http://host/path) or '*': keep the path only
            target = request.path + (b"?" + request.query if request.query else b"")
        location = b"https://" + name.lower() + self._suffix + target
        return Response(301, [(b"location", location), (b"content-type", b"text/html; charset=utf-8")],
                        b"", _PAGE)
