"""Starlette FileResponse (starlette-file): one route, /file, answering the 1 KiB file of the bench site
($BENCH_ROOT/1k.bin). Starlette sends it with http.response.pathsend where the server offers it."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

PATH = os.path.join(os.environ["BENCH_ROOT"], "1k.bin")


async def file(request: Request) -> FileResponse:
    return FileResponse(PATH)


app = Starlette(routes=[Route("/file", file)])
