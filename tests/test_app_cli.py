"""`ring3 serve --app`: loading applications, the ASGI lifespan, and an application mounted next to
static files, run as a user would (a real process, real clients)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import RunningServer, exchange

Start = Callable[..., RunningServer]

LIFESPAN_APP = '''
import os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                scope["state"]["greeting"] = "hello from startup"
                await send({"type": "lifespan.startup.complete"})
            else:
                with open(os.environ["SHUTDOWN_MARK"], "w") as mark:
                    mark.write("shut down")
                await send({"type": "lifespan.shutdown.complete"})
                return
    state = scope["state"]  # a copy per request: what one request changes, the next does not see
    state["count"] = state.get("count", 0) + 1
    body = (state["greeting"] + " " + str(state["count"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
'''

NO_LIFESPAN_APP = '''
async def app(scope, receive, send):
    assert scope["type"] == "http", "lifespan is not supported"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"no lifespan"})

def make_app():
    return app

class Holder:
    app = app
'''


def write_module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return directory


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ring3", "serve", "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30, cwd=cwd, env=env)


def test_lifespan_state_reaches_requests_and_shutdown_runs(ring3_process: Start, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    apps = write_module(tmp_path / "apps", "life", LIFESPAN_APP)
    mark = tmp_path / "shutdown.mark"
    monkeypatch.setenv("SHUTDOWN_MARK", str(mark))
    server = ring3_process("--app", "life:app", "--app-dir", str(apps), "--access-log", "off")
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"hello from startup 1"
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"hello from startup 1"
    assert not mark.exists()
    assert server.stop(signal.SIGTERM) == 0
    assert mark.read_text() == "shut down"


def test_a_failed_startup_stops_the_server_with_its_message(tmp_path: Path) -> None:
    apps = write_module(tmp_path / "apps", "life", LIFESPAN_APP)
    result = run_cli("--app", "life:app", "--app-dir", str(apps), cwd=tmp_path,
                     env={**_env(), "FAIL_STARTUP": "1", "SHUTDOWN_MARK": str(tmp_path / "m")})
    assert result.returncode == 3
    assert "no database" in result.stderr
    assert "listening" not in result.stdout


def test_an_app_without_lifespan_is_served_in_auto_mode(ring3_process: Start, tmp_path: Path) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    server = ring3_process("--app", "plain:app", "--app-dir", str(apps), "--access-log", "off")
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"no lifespan"


def test_lifespan_on_refuses_an_app_without_it(tmp_path: Path) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    result = run_cli("--app", "plain:app", "--app-dir", str(apps), "--lifespan", "on", cwd=tmp_path)
    assert result.returncode == 3
    assert "lifespan is not supported" in result.stderr


@pytest.mark.parametrize("target", ["plain:make_app --factory", "plain:Holder.app"])
def test_factories_and_dotted_attributes(ring3_process: Start, tmp_path: Path, target: str) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    name, *flags = target.split()
    server = ring3_process("--app", name, *flags, "--app-dir", str(apps), "--access-log", "off")
    with server.connect() as sock:
        assert exchange(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"no lifespan"


@pytest.mark.parametrize(("target", "message"), [
    ("missing_module:app", "cannot import module 'missing_module'"),
    ("plain:nothing", "has no attribute 'nothing'"),
    ("plain", "give it as 'module:attribute'"),
    ("plain:app --factory", "calling the factory plain:app() failed"),
])
def test_app_loading_errors_exit_2_with_a_clear_message(tmp_path: Path, target: str, message: str) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    name, *flags = target.split()
    result = run_cli("--app", name, *flags, "--app-dir", str(apps), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_and_static_files_side_by_side(ring3_process: Start, tmp_path: Path, site: Path) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    server = ring3_process(str(site), "--static-mount", "/static", "--app", "plain:app",
                           "--app-dir", str(apps), "--access-log", "off")
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base) as client:
        assert client.get("/").text == "no lifespan"
        assert client.get("/anything/else").text == "no lifespan"
        assert client.get("/static/hello.txt").text == "hello, world\n"
        assert client.get("/static/sub/").text == "<p>sub</p>\n"
        moved = client.get("/static/sub")
        assert (moved.status_code, moved.headers["location"]) == (301, "/static/sub/")
        moved = client.get("/static")
        assert (moved.status_code, moved.headers["location"]) == (301, "/static/")
        assert client.get("/static/missing.txt").status_code == 404
    with server.connect() as sock:
        for target in (b"/static/../apps/plain.py", b"/x/%2e%2e/static/hello.txt", b"/static/./hello.txt"):
            status, _, _ = exchange(sock, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
            assert status == 400, target


def test_the_same_mount_for_both_is_a_config_error(tmp_path: Path, site: Path) -> None:
    apps = write_module(tmp_path / "apps", "plain", NO_LIFESPAN_APP)
    result = run_cli(str(site), "--app", "plain:app", "--app-dir", str(apps), cwd=tmp_path)
    assert result.returncode == 2
    assert "static.mount" in result.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
