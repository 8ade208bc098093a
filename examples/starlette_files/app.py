"""A Starlette application that serves the files of one directory with FileResponse.

ring3 offers the `http.response.pathsend` ASGI extension, so Starlette hands it the file's path and
ring3 sends the body with sendfile(2): the bytes never pass through Python.

The directory is $FILES_ROOT, or the `files/` directory next to this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

FILES_ROOT = Path(os.environ.get("FILES_ROOT") or Path(__file__).with_name("files")).resolve()


def resolve(name: str) -> Path:
    """The file `name` names under FILES_ROOT; 404 for anything else (missing, a directory, outside)."""
    path = (FILES_ROOT / name).resolve()
    if not path.is_relative_to(FILES_ROOT) or not path.is_file():
        raise HTTPException(404, f"no file {name!r}")
    return path


async def download(request: Request) -> FileResponse:
    path = resolve(request.path_params["name"])
    return FileResponse(path)


async def listing(request: Request) -> JSONResponse:
    names = sorted(str(p.relative_to(FILES_ROOT)) for p in FILES_ROOT.rglob("*") if p.is_file())
    return JSONResponse({"root": str(FILES_ROOT), "files": names})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


app = Starlette(routes=[
    Route("/", listing),
    Route("/health", health),
    Route("/files/{name:path}", download, methods=["GET", "HEAD"]),
])
