"""Small, complete responses for error and status codes."""

from __future__ import annotations

from http import HTTPStatus

from ring3.events import Headers, Response

_HTML = b"text/html; charset=utf-8"


def _page(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (f"<!doctype html>\n<html><head><title>{status} {phrase}</title></head>\n"
            f"<body><h1>{status} {phrase}</h1><hr><p>ring3</p></body></html>\n").encode()


_PAGES: dict[int, bytes] = {}
_HTML_BLOCK = b"content-type: " + _HTML + b"\r\n"


def status_response(status: int, headers: Headers | None = None, *, close: bool = False) -> Response:
    """A response with a small HTML page for `status` (no body for 304 and 1xx/204)."""
    all_headers: Headers = list(headers) if headers else []
    if status in (204, 304) or status < 200:
        return Response(status=status, headers=all_headers, close=close)
    page = _PAGES.get(status)
    if page is None:
        page = _PAGES[status] = _page(status)
    return Response(status=status, headers=all_headers, header_block=_HTML_BLOCK, body=page, close=close)


def is_status_page(response: Response) -> bool:
    """Whether a response is one of ring3's own status pages (not an application's or a file's)."""
    return response.body is _PAGES.get(response.status)
