"""Handlers turn a Request into a Response; they never send anything themselves."""

from collections.abc import Awaitable, Callable

from ring3.body import EmptyBody, RequestBody
from ring3.events import Request, Response

BodyReader = RequestBody | EmptyBody
Handler = Callable[[Request, BodyReader], Response | Awaitable[Response]]

__all__ = ["BodyReader", "Handler"]
