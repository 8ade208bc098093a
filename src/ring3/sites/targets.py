"""The handlers and rules that send a request elsewhere: a redirect, a fixed answer, rewrites, try_files and
error pages. Those that route again within the site (a rewrite's 'last', try_files' fallback, an error
page) make an internal request and hand it to the site's `route`, at most MAX_REDIRECTS deep."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from ring3.body import EMPTY_BODY
from ring3.events import Request, Response
from ring3.handlers import BodyReader, Handler
from ring3.handlers.static import StaticHandler
from ring3.handlers.status import is_status_page, status_response
from ring3.sites.hosts import host_name
from ring3.sites.paths import normalize
from ring3.sites.rules import Result, then

logger = logging.getLogger("ring3.error")

_ABSOLUTE = (b"http://", b"https://", b"$scheme")  # a rewrite to these is a redirect, as in nginx
MAX_REDIRECTS = 10  # internal redirects of one request (nginx: 10); past it, 500
Route = Callable[[Request, BodyReader], Result]
_VARIABLE = re.compile(rb"\$(?:(\d)|(uri|args|host|scheme|request_uri)\b)")
_DROP_ON_INTERNAL = frozenset((b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
                               b"if-unmodified-since", b"content-length", b"transfer-encoding"))


def expand(template: bytes, request: Request, groups: tuple[bytes | None, ...] = ()) -> bytes:
    """$uri, $args, $host, $scheme, $request_uri and $1..$9 of a redirect or rewrite, filled in."""
    if b"$" not in template:
        return template

    def value(match: re.Match[bytes]) -> bytes:
        number, name = match.group(1), match.group(2)
        if number is not None:
            index = int(number)
            return (groups[index - 1] or b"") if 0 < index <= len(groups) else b""
        if name == b"uri":
            return request.path
        if name == b"args":
            return request.query
        if name == b"host":
            return host_name(request.host)
        if name == b"scheme":
            return request.conn.scheme.encode("ascii")
        return request.target

    return _VARIABLE.sub(value, template)


def internal(request: Request, target: bytes, *, as_get: bool = False) -> Request | None:
    """The request sent on to `target` (a path, with a query or not) within the site; None when the path
    must be refused or the request went round too often."""
    if request.redirects >= MAX_REDIRECTS:
        logger.error("internal redirect loop for %r", request.target)
        return None
    path, mark, query = target.partition(b"?")
    canonical = normalize(path)
    if canonical is None or canonical[:1] != b"/":
        return None
    changes: dict[str, Any] = {"path": canonical, "target": target, "query": query if mark else request.query,
                               "redirects": request.redirects + 1}
    if as_get:  # an error page: a plain GET of the page, whatever the failed request was
        changes.update(method=b"HEAD" if request.method == b"HEAD" else b"GET", has_body=False,
                       conditional=False, expect_continue=False,
                       headers=[pair for pair in request.headers if pair[0] not in _DROP_ON_INTERNAL])
    if request.upstream is None:  # one list for both: the access log, given the first, sees a proxy's tries
        request.upstream = []
    return dataclasses.replace(request, **changes)


def no_replay(response: Response) -> Response:
    """A response routed by more than its request's bytes (another location answered it, whose rules
    differ): kept out of the replay cache."""
    return response if response.replay is None else dataclasses.replace(response, replay=None)


class Redirect:
    """`redirect = "..."`: 301 (or the configured status) to the expanded target; a regex location's
    captures are its $1..$9."""

    __slots__ = ("_regex", "_status", "_template")

    def __init__(self, template: str, status: int, regex: Any = None) -> None:
        self._template = template.encode("utf-8")
        self._status = status
        self._regex = regex

    def __call__(self, request: Request, body: BodyReader) -> Response:
        groups: tuple[bytes | None, ...] = ()
        if self._regex is not None:
            match = self._regex.search(request.path)
            groups = match.groups() if match is not None else ()
        location = expand(self._template, request, groups)
        return status_response(self._status, [(b"location", location)])


class Respond:
    """`respond = { status, body, content_type }`: one prebuilt answer, replayable (it depends on nothing)."""

    __slots__ = ("_response",)

    def __init__(self, status: int, body: str, content_type: str, replayable: bool = True) -> None:
        data = body.encode("utf-8")
        headers = [(b"content-type", content_type.encode("ascii"))] if data else []
        self._response = Response(status, headers, b"", data)
        if replayable:
            self._response.replay = self._replay

    def _replay(self) -> Response:
        return self._response

    def __call__(self, request: Request, body: BodyReader) -> Response:
        return self._response


class TryFiles:
    """nginx's try_files: each entry but the last names a file ('$uri') or a directory's index ('$uri/')
    under the location's root; the first that exists answers. Else the last entry: '=CODE', or a path
    routed again within the site."""

    __slots__ = ("_entries", "_fallback", "_route", "_static")

    def __init__(self, static: StaticHandler, entries: tuple[str, ...], route: Route) -> None:
        self._static = static
        self._entries = [entry.encode("utf-8") for entry in entries[:-1]]
        self._fallback = entries[-1].encode("utf-8")
        self._route = route

    def __call__(self, request: Request, body: BodyReader) -> Result:
        for entry in self._entries:
            path = expand(entry, request)
            if path[:1] != b"/":
                continue
            response = self._static(request, EMPTY_BODY, path)
            if response.status in (404, 301) and is_status_page(response):
                continue  # missing, or a directory asked for as a file
            if path != request.path and response.replay is not None:
                # Answered by another path: a later file at this one would not show in a replay.
                response = dataclasses.replace(response, replay=None)
            return response
        fallback = self._fallback
        if fallback[:1] == b"=":
            return status_response(int(fallback[1:]))
        moved = internal(request, expand(fallback, request))
        if moved is None:
            return status_response(500)
        return then(self._route(moved, body), no_replay)


class Rewrite:
    """A location's rewrite rules (nginx's rewrite), tried in order: the first that matches changes the
    path; 'last' routes it again, 'break' goes on in this location, 'redirect' and 'permanent' answer
    302 and 301."""

    __slots__ = ("_next", "_route", "_rules")

    def __init__(self, rules: list[tuple[Any, bytes, str]], route: Route, next_handler: Handler) -> None:
        self._rules = rules
        self._route = route
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        for regex, replacement, flag in self._rules:
            match = regex.search(request.path)
            if match is None:
                continue
            target = expand(replacement, request, match.groups())
            if flag in ("redirect", "permanent") or replacement.startswith(_ABSOLUTE):
                if b"?" not in target and request.query:
                    target += b"?" + request.query
                return status_response(301 if flag == "permanent" else 302, [(b"location", target)])
            moved = internal(request, target)
            if moved is None:
                return status_response(500 if request.redirects >= MAX_REDIRECTS else 400)
            if flag == "break":
                return then(self._next(moved, body), no_replay)
            return then(self._route(moved, body), no_replay)
        return self._next(request, body)


class ErrorPages:
    """error_pages: ring3's own error responses (a missing file, 401, 403, 429...) replaced by the
    configured page, with their status; an application's own pages are left alone."""

    __slots__ = ("_next", "_pages", "_route")

    def __init__(self, pages: list[tuple[int, int, bytes]], route: Route, next_handler: Handler) -> None:
        self._pages = pages
        self._route = route
        self._next = next_handler

    def __call__(self, request: Request, body: BodyReader) -> Result:
        result = self._next(request, body)
        if isinstance(result, Response):
            return self._replace(request, result)
        return self._replace_later(request, result)

    async def _replace_later(self, request: Request, result: Awaitable[Response]) -> Response:
        replaced = self._replace(request, await result)
        return replaced if isinstance(replaced, Response) else await replaced

    def _replace(self, request: Request, response: Response) -> Result:
        status = response.status
        if status < 300 or not is_status_page(response):
            return response
        page = next((page for low, high, page in self._pages if low <= status <= high), None)
        if page is None:
            return response
        if not page.startswith(b"/"):
            return status_response(302, [(b"location", page)])
        moved = internal(request, page, as_get=True)
        if moved is None:
            return response
        return then(self._route(moved, EMPTY_BODY), lambda found: _as_error(response, found))


def _as_error(failed: Response, page: Response) -> Response:
    """The page's body with the failed response's status and fields (WWW-Authenticate, Retry-After...)."""
    if page.status != 200:
        if page.cleanup is not None:
            page.cleanup()
        return failed
    if failed.cleanup is not None:
        failed.cleanup()
    keep = [pair for pair in page.headers if pair[0] == b"content-type"]
    block = b"".join(line + b"\r\n" for line in page.header_block.split(b"\r\n")
                     if line[:13].lower() == b"content-type:")
    return Response(failed.status, failed.headers + keep, block, page.body, page.cleanup, failed.close)
