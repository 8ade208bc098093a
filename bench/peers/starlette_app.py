"""The uvicorn peer: Starlette's StaticFiles serving the directory named by $BENCH_ROOT."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/", app=StaticFiles(directory=os.environ["BENCH_ROOT"]))])
