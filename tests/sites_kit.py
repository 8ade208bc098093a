"""Test kit for sites: a config file written for the test, ring3 started on it, raw requests with any Host,
from any loopback source address."""

from __future__ import annotations

import socket
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

from conftest import ResponseReader, RunningServer

Response = tuple[int, dict[bytes, bytes], bytes]

# A real FastAPI application: it answers every path with what it was given (the path, the request id).
FASTAPI_APP = '''
from fastapi import FastAPI, Request

application = FastAPI()


@application.api_route("/{rest:path}", methods=["GET", "POST", "HEAD"])
async def echo(rest: str, request: Request) -> dict[str, object]:
    body = await request.body()
    return {"path": request.url.path, "request_id": request.headers.get("x-request-id"),
            "body_bytes": len(body), "client": request.client.host if request.client else None}
'''


def write_app(directory: Path) -> Path:
    """mysite/asgi.py with the FastAPI echo app, as the issue's example names it."""
    package = directory / "mysite"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text(FASTAPI_APP)
    return directory


def serve_config(ring3_process: Callable[..., RunningServer], tmp_path: Path, toml: str,
                 *flags: str, listen: str = "127.0.0.1:0") -> RunningServer:
    """ring3 serving the config `toml` (dedented) on a free loopback port."""
    path = tmp_path / "ring3.toml"
    path.write_text(textwrap.dedent(toml))
    return ring3_process("--config", str(path), "--listen", listen, *flags)


def request(server: RunningServer, target: str, host: str | None = "example.test", *,
            method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"",
            source: str = "127.0.0.1", version: str = "1.1") -> Response:
    """One request over a new connection, its target sent byte for byte as given."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((server.host, server.port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(raw)
        return ResponseReader(sock, timeout=10).read(head_only=method == "HEAD")


def htpasswd(path: Path, user: str, password: str, scheme: str = "-B") -> Path:
    """An htpasswd file made by Apache's htpasswd (bcrypt by default, at a low cost for speed)."""
    args = ["htpasswd", "-b", scheme]
    if scheme == "-B":
        args += ["-C", "5"]
    if not path.exists():
        args.insert(1, "-c")
    subprocess.run([*args, str(path), user, password], check=True, capture_output=True)
    return path
