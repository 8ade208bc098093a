"""The example applications in examples/, each served by a real `ring3 serve` process and driven over
real sockets by real clients: httpx, curl, the `websockets` client and headless Chromium.

- examples/starlette_files: FileResponse -> http.response.pathsend -> sendfile (checked on /metrics).
- examples/fastapi_app: JSON, a pydantic-validated POST, a StreamingResponse, a WebSocket echo.
- examples/django_site: pages, a CSRF-protected form with signed-cookie sessions, collected static files
  served by ring3 at /static; once through Django's ASGI handler and once through its WSGI handler.
- examples/flask_app: a page, a JSON API, POST echo, a generator response, send_file (wsgi.file_wrapper).
- examples/sites: three virtual hosts with redirects, an application location, alias, try_files, limits.
- examples/proxy: ring3 in front of two application servers: static files, a balanced and health-checked
  API, a stream, a WebSocket through the proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect as ws_connect

from conftest import ResponseReader, RunningServer, http_client, start_ring3
from test_ledger import admin_url, scrape
from tls_kit import Certs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MIB = 1024 * 1024
CHROMIUM_FLAGS = [  # as in test_browser.py
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


# -- helpers ----------------------------------------------------------------------------------------


def serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    """`ring3 serve ARGS` on a free loopback port with the access log off, `env` added to its
    environment (start_ring3 passes os.environ on)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        return start_ring3([*args, "--listen", "127.0.0.1:0", "--access-log", "off"], tmp)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RunningServer]]:
    """Module-scoped servers register here; all are stopped when the module is done."""
    started: list[RunningServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def expect(response: httpx.Response, status: int, server: RunningServer) -> httpx.Response:
    """Assert the status; on failure show the body and the end of the server's stderr."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:500]!r}"
        f"\n--- ring3 stderr ---\n{server.stderr()[-3000:]}")
    return response


ZERO_COPY = 'ring3_bytes_sent_total{path="zero_copy"}'
COPIED = 'ring3_bytes_sent_total{path="copied"}'
SENDFILES = 'ring3_syscalls_total{kind="sendfile"}'


def curl_download(url: str, out: Path) -> tuple[int, int]:
    """Fetch `url` into `out` with the curl binary: (status, bytes downloaded)."""
    curl = shutil.which("curl")
    assert curl, "the curl binary is required for these tests"
    result = subprocess.run([curl, "-sS", "--max-time", "20", "-o", str(out), "-w",
                             "%{http_code} %{size_download}", url],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    code, size = result.stdout.split()
    return int(code), int(size)


def raw_get(server: RunningServer, target: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request with the target sent exactly as given (no client-side normalisation)."""
    with server.connect() as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return ResponseReader(sock).read()


def timed_chunks(server: RunningServer, target: str) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """GET a streamed response: (response, [(seconds since the request, bytes read)])."""
    start = time.monotonic()
    arrivals = []
    try:
        with httpx.stream("GET", server.url + target, timeout=10) as response:
            for piece in response.iter_raw():
                arrivals.append((time.monotonic() - start, piece))
    except httpx.TransportError as exc:
        raise AssertionError(f"GET {target} broke off after {arrivals!r}: {exc!r}"
                             f"\n--- ring3 stderr ---\n{server.stderr()[-3000:]}") from exc
    return response, arrivals


def check_streamed(response: httpx.Response, arrivals: list[tuple[float, bytes]], expected: bytes,
                   lines: int, delay: float) -> None:
    """The body is `expected`, chunked, and it arrived line by line while it was being produced."""
    assert response.status_code == 200
    assert response.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.headers
    assert b"".join(piece for _, piece in arrivals) == expected
    produced = (lines - 1) * delay  # the last line is produced this long after the first
    first_line_at = arrivals[0][0]
    last_at = arrivals[-1][0]
    assert last_at >= produced * 0.9, arrivals
    # The first line was read long before the last one existed: nothing was buffered up.
    assert first_line_at < produced / 2, arrivals
    assert len(arrivals) >= lines - 1, arrivals  # the lines came in separate reads, not in one lump


@contextlib.contextmanager
def chromium_page(url: str, profile: Path, *flags: str) -> Iterator[Callable[[str], object]]:
    """Headless Chromium showing `url` (flags as in test_browser.py), driven over the DevTools protocol:
    yields a function that evaluates JavaScript in the page and returns its value. (--dump-dom would
    not do: it dumps at the load event, before any WebSocket message has arrived.)"""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: scripts/test installs it"
    process = subprocess.Popen(
        [path, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and process.poll() is None, "chromium did not start"
            time.sleep(0.05)
        devtools = f"http://127.0.0.1:{port_file.read_text().split()[0]}"
        while True:
            targets = httpx.get(devtools + "/json/list", timeout=5).json()
            pages = [target for target in targets if target["type"] == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "chromium opened no page"
            time.sleep(0.05)
        with ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as channel:
            ids = itertools.count(1)

            def evaluate(expression: str) -> object:
                call = next(ids)
                channel.send(json.dumps({"id": call, "method": "Runtime.evaluate",
                                         "params": {"expression": expression, "returnByValue": True}}))
                while True:
                    message = json.loads(channel.recv(timeout=10))
                    if message.get("id") == call:
                        return message["result"]["result"].get("value")

            yield evaluate
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- Starlette: FileResponse over pathsend ------------------------------------------------------------

STARLETTE = EXAMPLES / "starlette_files"


@pytest.fixture(scope="module")
def starlette_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's files, plus a 1 MiB random file."""
    root = tmp_path_factory.mktemp("starlette-files")
    shutil.copytree(STARLETTE / "files", root, dirs_exist_ok=True)
    (root / "big.bin").write_bytes(os.urandom(MIB))
    return root


@pytest.fixture(scope="module")
def starlette(starlette_root: Path, servers: list[RunningServer],
              tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    server = serve(tmp_path_factory.mktemp("starlette"), "--app", "app:app", "--app-dir", str(STARLETTE),
                   "--admin", "127.0.0.1:0", env={"FILES_ROOT": str(starlette_root)})
    servers.append(server)
    return server


def test_starlette_file_response_is_byte_exact(starlette: RunningServer, starlette_root: Path,
                                               protocol: str) -> None:
    with http_client(starlette.url, protocol, timeout=5) as client:
        listing = expect(client.get("/"), 200, starlette).json()
        assert listing["files"] == ["big.bin", "docs/notes.md", "hello.txt"]
        for name, mime in (("hello.txt", "text/plain"), ("docs/notes.md", "text/markdown")):
            response = expect(client.get(f"/files/{name}"), 200, starlette)
            on_disk = (STARLETTE / "files" / name).read_bytes()
            assert response.content == on_disk
            assert response.headers["content-length"] == str(len(on_disk))
            assert response.headers["content-type"].split(";")[0] == mime
            assert response.headers["etag"] and response.headers["last-modified"]
        expect(client.get("/files/missing.txt"), 404, starlette)
        expect(client.get("/files/docs"), 404, starlette)
    # The application's own guard, with the dot segments sent as they are.
    status, _, body = raw_get(starlette, "/files/%2e%2e/app.py")
    assert status == 404 and b"starlette" not in body


def test_starlette_1mib_file_goes_out_zero_copy(starlette: RunningServer, starlette_root: Path,
                                                tmp_path: Path) -> None:
    admin = admin_url(starlette)
    before = scrape(admin)
    status, size = curl_download(f"{starlette.url}/files/big.bin", tmp_path / "big.bin")
    after = scrape(admin)
    assert status == 200 and size == MIB
    expected = (starlette_root / "big.bin").read_bytes()
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).digest() == hashlib.sha256(expected).digest()
    # The whole body went out with sendfile; what was copied is headers and the first scrape's page.
    assert after[ZERO_COPY] - before[ZERO_COPY] == MIB, (before, after)
    assert after[SENDFILES] > before[SENDFILES]
    assert after[COPIED] - before[COPIED] < 16 * 1024, (before[COPIED], after[COPIED])
    # httpx too, and a second time (the same bytes, nothing cached wrongly).
    response = expect(httpx.get(f"{starlette.url}/files/big.bin", timeout=10), 200, starlette)
    assert response.headers["content-length"] == str(MIB)
    assert response.content == expected


def test_starlette_head_and_range(starlette: RunningServer, starlette_root: Path, protocol: str) -> None:
    big = (starlette_root / "big.bin").read_bytes()
    with starlette.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"HEAD /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = reader.read(head_only=True)
        assert status == 200 and body == b""
        assert headers[b"content-length"] == str(MIB).encode()
        assert headers[b"content-type"] == b"application/octet-stream"
        assert headers[b"accept-ranges"] == b"bytes"
        # No body bytes followed the HEAD response: the next response on the connection parses cleanly.
        sock.sendall(b"GET /files/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200 and body == (starlette_root / "hello.txt").read_bytes()
        assert reader.buffer == b""
    with http_client(starlette.url, protocol, timeout=5) as client:
        response = expect(client.get("/files/big.bin", headers={"Range": "bytes=1000-1999"}), 206, starlette)
        assert response.headers["content-range"] == f"bytes 1000-1999/{MIB}"
        assert response.content == big[1000:2000]
        response = expect(client.get("/files/big.bin", headers={"Range": "bytes=-100"}), 206, starlette)
        assert response.content == big[-100:]
        expect(client.get("/files/big.bin", headers={"Range": f"bytes={MIB}-"}), 416, starlette)


# -- FastAPI: JSON, pydantic, StreamingResponse, WebSocket --------------------------------------------

FASTAPI = EXAMPLES / "fastapi_app"


@pytest.fixture(scope="module")
def fastapi(servers: list[RunningServer], tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    server = serve(tmp_path_factory.mktemp("fastapi"), "--app", "main:app", "--app-dir", str(FASTAPI))
    servers.append(server)
    return server


def test_fastapi_json_and_pydantic_post(fastapi: RunningServer, protocol: str) -> None:
    with http_client(fastapi.url, protocol, timeout=5) as client:
        response = expect(client.get("/api/hello", params={"name": "Grace Hopper"}), 200, fastapi)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"message": "Hello, Grace Hopper!", "server": "ring3"}
        order = {"item": "teapot", "quantity": 3, "unit_price": 12.5}
        response = expect(client.post("/api/orders", json=order), 200, fastapi)
        assert response.json() == {"item": "teapot", "quantity": 3, "total": 37.5}
        response = expect(client.post("/api/orders", json={**order, "quantity": 0}), 422, fastapi)
        assert [error["loc"] for error in response.json()["detail"]] == [["body", "quantity"]]
        response = expect(client.post("/api/orders", content=b"{not json",
                                      headers={"content-type": "application/json"}), 422, fastapi)
        assert response.json()["detail"][0]["type"] == "json_invalid"
        expect(client.get("/api/orders"), 405, fastapi)
        page = expect(client.get("/"), 200, fastapi)
        assert page.headers["content-type"].startswith("text/html")
        assert "new WebSocket(" in page.text


def test_fastapi_streaming_response_arrives_chunk_by_chunk(fastapi: RunningServer) -> None:
    lines, delay = 5, 0.25
    response, arrivals = timed_chunks(fastapi, f"/stream?chunks={lines}&delay={delay}")
    expected = "".join(f"chunk {index}\n" for index in range(lines)).encode()
    check_streamed(response, arrivals, expected, lines, delay)


def test_fastapi_websocket_echo_with_websockets_client(fastapi: RunningServer) -> None:
    url = fastapi.url.replace("http://", "ws://") + "/ws"
    with (
        ws_connect(url, open_timeout=5, close_timeout=5) as first,  # offers permessage-deflate
        ws_connect(url, open_timeout=5, close_timeout=5, compression=None) as second,
    ):
        assert first.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert "Sec-WebSocket-Extensions" not in second.response.headers
        first.send("hello")
        second.send("from the second socket")
        assert first.recv(timeout=5) == "echo: hello"
        assert second.recv(timeout=5) == "echo: from the second socket"
        big = "x" * 200_000 + "ü"  # several frames' worth, and not only ASCII
        first.send(big)
        assert first.recv(timeout=5) == "echo: " + big
        for index in range(20):
            second.send(f"message {index}")
        assert [second.recv(timeout=5) for _ in range(20)] == [f"echo: message {i}" for i in range(20)]
        first.send("bye")
        assert first.recv(timeout=5) == "echo: bye"
        with pytest.raises(ConnectionClosedOK):
            first.recv(timeout=5)
        assert first.close_code == 1000
        second.close()
        assert second.close_code == 1000


def chat_outcome(evaluate: Callable[[str], object]) -> tuple[object, object]:
    """The example page's chat over its WebSocket: its final status (within 15 s) and the replies."""
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        status = evaluate("document.getElementById('status')?.textContent")
        if status not in (None, "connecting", "open"):
            break
        time.sleep(0.1)
    return status, evaluate("[...document.querySelectorAll('li.reply')].map(li => li.textContent)")


def test_fastapi_websocket_from_chromium(fastapi: RunningServer, tmp_path: Path) -> None:
    with chromium_page(fastapi.url + "/", tmp_path / "profile") as evaluate:
        status, replies = chat_outcome(evaluate)
        dom = evaluate("document.documentElement.outerHTML")
    assert status == "done", (status, replies, fastapi.stderr()[-3000:])
    assert replies == ["echo: alpha", "echo: beta", "echo: bye"]
    assert '<li class="reply">echo: beta</li>' in str(dom)


def test_fastapi_websocket_from_chromium_over_http2(certs: Certs, tmp_path: Path) -> None:
    """Over TLS Chromium speaks HTTP/2 and, since ring3 announces SETTINGS_ENABLE_CONNECT_PROTOCOL, opens
    the page's WebSocket as an extended CONNECT on that connection (RFC 8441): the access log shows it."""
    log = tmp_path / "access.log"
    server = start_ring3(["--app", "main:app", "--app-dir", str(FASTAPI), "--listen", "127.0.0.1:0",
                          "--access-log", str(log), "--tls-cert", str(certs.main.cert),
                          "--tls-key", str(certs.main.key)], tmp_path)
    try:
        url = f"https://localhost:{server.port}/"
        # Loopback only, with a certificate made by this test: Chromium need not check it.
        with chromium_page(url, tmp_path / "profile", "--ignore-certificate-errors",
                           "--host-resolver-rules=MAP localhost 127.0.0.1") as evaluate:
            status, replies = chat_outcome(evaluate)
    finally:
        assert server.stop() == 0, server.stderr()
    assert status == "done", (status, replies, server.stderr()[-3000:])
    assert replies == ["echo: alpha", "echo: beta", "echo: bye"]
    served = log.read_text()
    assert '"GET / HTTP/2.0" 200' in served, served
    assert re.search(r'"CONNECT /\S* HTTP/2.0" 200', served), served


# -- Django: ASGI and WSGI, CSRF form, signed-cookie sessions, static files served by ring3 -------------

DJANGO = EXAMPLES / "django_site"


@pytest.fixture(scope="module")
def django_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`manage.py collectstatic` into a fresh STATIC_ROOT."""
    root = tmp_path_factory.mktemp("django-static")
    result = subprocess.run([sys.executable, str(DJANGO / "manage.py"), "collectstatic", "--noinput"],
                            env={**os.environ, "DJANGO_STATIC_ROOT": str(root)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert (root / "staticfiles.json").is_file()
    return root


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def django(request: pytest.FixtureRequest, django_static: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningServer]]:
    """The site served through mysite.asgi or mysite.wsgi, with ring3 serving STATIC_ROOT at /static."""
    kind = request.param
    server = serve(tmp_path_factory.mktemp(f"django-{kind}"), str(django_static), "--static-mount", "/static",
                   "--app", f"mysite.{kind}:application", "--app-dir", str(DJANGO),
                   env={"DJANGO_STATIC_ROOT": str(django_static)})
    yield kind, server
    server.stop()


def test_django_pages_and_static_files(django: tuple[str, RunningServer], django_static: Path,
                                       protocol: str) -> None:
    kind, server = django
    request_class = {"asgi": "ASGIRequest", "wsgi": "WSGIRequest"}[kind]
    with http_client(server.url, protocol, timeout=5) as client:
        page = expect(client.get("/"), 200, server)
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["x-frame-options"] == "DENY"  # Django's middleware ran
        assert f'<code id="handler">{request_class}</code>' in page.text
        manifest = json.loads((django_static / "staticfiles.json").read_text())["paths"]
        for name, mime in (("site.css", "text/css"), ("logo.svg", "image/svg+xml")):
            url = f"/static/{manifest[name]}"
            assert f'"{url}"' in page.text  # the hashed name collectstatic chose
            asset = expect(client.get(url), 200, server)
            assert asset.content == (django_static / manifest[name]).read_bytes()
            assert asset.headers["content-type"].split(";")[0] == mime
            # ring3's static handler answered, not Django: no middleware headers, a validator of its own.
            assert "x-frame-options" not in asset.headers
            assert "etag" in asset.headers
            revalidated = client.get(url, headers={"If-None-Match": asset.headers["etag"]})
            expect(revalidated, 304, server)
        missing = expect(client.get("/static/missing.css"), 404, server)
        assert "x-frame-options" not in missing.headers
        not_found = expect(client.get("/no-such-page/"), 404, server)
        assert not_found.headers["x-frame-options"] == "DENY"  # Django's 404
        who = expect(client.get("/whoami/", params={"q": "ring 3", "lang": "en"}), 200, server).json()
        assert who == {"handler": request_class, "path": "/whoami/", "script_name": "",
                       "host": f"127.0.0.1:{server.port}", "query": {"q": "ring 3", "lang": "en"},
                       "secure": False}
        # CommonMiddleware's APPEND_SLASH redirect, and a host outside ALLOWED_HOSTS.
        redirect = expect(client.get("/whoami"), 301, server)
        assert redirect.headers["location"] == "/whoami/"
        expect(client.get("/whoami/", headers={"Host": "evil.example"}), 400, server)


def test_django_csrf_form_post(django: tuple[str, RunningServer], protocol: str) -> None:
    _, server = django
    origin = f"http://127.0.0.1:{server.port}"
    with http_client(server.url, protocol, timeout=5) as client:
        form = expect(client.get("/greet/"), 200, server)
        cookie = client.cookies.get("csrftoken")
        assert cookie, form.headers
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        # Without the token: Django's CSRF protection refuses.
        refused = client.post("/greet/", data={"name": "Mallory"}, headers={"Origin": origin})
        expect(refused, 403, server)
        # A form error comes back as the form again, with the error.
        invalid = client.post("/greet/", data={"name": "", "csrfmiddlewaretoken": token.group(1)},
                              headers={"Origin": origin})
        assert "This field is required." in expect(invalid, 400, server).text
        done = client.post("/greet/", data={"name": "Ada Lovelace", "csrfmiddlewaretoken": token.group(1)},
                           headers={"Origin": origin})
        expect(done, 302, server)
        assert done.headers["location"] == "/greet/done/"
        assert "sessionid" in done.cookies  # the signed-cookie session
        result = expect(client.get("/greet/done/"), 200, server)
        assert '<h1 id="greeting">Hello, Ada Lovelace!</h1>' in result.text
        assert '<span id="count">1</span>' in result.text
        # The same session, a second time: its cookie carries the count.
        again = client.post("/greet/", data={"name": "Ada <b>", "csrfmiddlewaretoken": token.group(1)},
                            headers={"Origin": origin}, follow_redirects=True)
        assert "Hello, Ada &lt;b&gt;!" in expect(again, 200, server).text
        assert '<span id="count">2</span>' in again.text
        # A cross-site Origin is refused even with a valid token.
        cross = client.post("/greet/", data={"name": "x", "csrfmiddlewaretoken": token.group(1)},
                            headers={"Origin": "http://evil.example"})
        expect(cross, 403, server)


# -- Flask: WSGI in the thread pool ---------------------------------------------------------------------

FLASK = EXAMPLES / "flask_app"


@pytest.fixture(scope="module")
def flask_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flask-downloads")
    shutil.copytree(FLASK / "downloads", root, dirs_exist_ok=True)
    (root / "big.bin").write_bytes(os.urandom(MIB))
    return root


@pytest.fixture(scope="module")
def flask(flask_downloads: Path, servers: list[RunningServer],
          tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    server = serve(tmp_path_factory.mktemp("flask"), "--app", "app:app", "--app-dir", str(FLASK),
                   "--admin", "127.0.0.1:0", env={"DOWNLOADS_DIR": str(flask_downloads)})
    servers.append(server)
    return server


def test_flask_page_and_json_api(flask: RunningServer, protocol: str) -> None:
    with http_client(flask.url, protocol, timeout=5) as client:
        page = expect(client.get("/"), 200, flask)
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>Hello from Flask</h1>" in page.text
        assert "<li>kettle</li><li>teapot</li><li>mug</li>" in page.text
        items = expect(client.get("/api/items"), 200, flask)
        assert items.headers["content-type"] == "application/json"
        assert items.json()["count"] == 3
        assert [item["name"] for item in items.json()["items"]] == ["kettle", "teapot", "mug"]
        assert expect(client.get("/api/items/2"), 200, flask).json() == {
            "id": 2, "name": "teapot", "price": 18.0}
        expect(client.get("/api/items/99"), 404, flask)
        expect(client.delete("/api/items"), 405, flask)


def test_flask_post_echo(flask: RunningServer, protocol: str) -> None:
    with http_client(flask.url, protocol, timeout=5) as client:
        document = {"name": "ring3", "tags": ["wsgi", "flask"], "nested": {"n": 1}}
        echoed = expect(client.post("/echo", json=document, params={"v": "1"}), 200, flask).json()
        assert echoed["json"] == document and echoed["query"] == {"v": "1"}
        assert echoed["content_type"] == "application/json"
        form = expect(client.post("/echo", data={"a": "1", "b": "zwei drei"}), 200, flask).json()
        assert form["form"] == {"a": "1", "b": "zwei drei"}
        assert form["content_type"] == "application/x-www-form-urlencoded"
        upload = os.urandom(300_000)  # more than one socket read
        multipart = client.post("/echo", data={"title": "upload"}, files={"file": ("f.bin", upload)})
        echoed = expect(multipart, 200, flask).json()
        assert echoed["form"] == {"title": "upload"} and echoed["files"] == {"file": len(upload)}
        big = {"blob": "y" * 500_000}
        response = expect(client.post("/echo", json=big), 200, flask)
        assert response.json()["json"] == big
        assert response.json()["content_length"] == int(response.request.headers["content-length"])


def test_flask_chunked_request_body(flask: RunningServer) -> None:
    """A body without Content-Length (Transfer-Encoding: chunked): Flask reads it only when the server
    says the input ends by itself (wsgi.input_terminated, as gunicorn and others set)."""
    pieces = [b'{"parts": ', b'["one", ', b'"two"]}']

    def body() -> Iterator[bytes]:
        yield from pieces

    response = httpx.post(f"{flask.url}/echo", content=body(), headers={"content-type": "application/json"},
                          timeout=5)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert expect(response, 200, flask).json()["json"] == {"parts": ["one", "two"]}


def test_flask_streamed_generator_response(flask: RunningServer) -> None:
    lines, delay = 5, 0.25
    response, arrivals = timed_chunks(flask, f"/stream?n={lines}&delay={delay}")
    expected = "".join(f"line {index} of {lines} for 127.0.0.1\n" for index in range(lines)).encode()
    check_streamed(response, arrivals, expected, lines, delay)


def test_flask_send_file(flask: RunningServer, flask_downloads: Path, tmp_path: Path, protocol: str) -> None:
    with http_client(flask.url, protocol, timeout=10) as client:
        small = expect(client.get("/download/readme.txt"), 200, flask)
        assert small.content == (FLASK / "downloads" / "readme.txt").read_bytes()
        assert small.headers["content-type"] == "text/plain; charset=utf-8"
        assert small.headers["content-length"] == str(len(small.content))
        attachment = expect(client.get("/download/readme.txt", params={"attachment": "1"}), 200, flask)
        assert attachment.headers["content-disposition"] == "attachment; filename=readme.txt"
        expect(client.get("/download/missing.bin"), 404, flask)
        head = expect(client.head("/download/big.bin"), 200, flask)
        assert head.headers["content-length"] == str(MIB) and head.content == b""
    status, _, body = raw_get(flask, "/download/%2e%2e/app.py")  # dot segments sent as they are
    assert status == 404 and b"flask" not in body
    admin = admin_url(flask)
    before = scrape(admin)
    status, size = curl_download(f"{flask.url}/download/big.bin", tmp_path / "big.bin")
    after = scrape(admin)
    assert status == 200 and size == MIB
    assert (tmp_path / "big.bin").read_bytes() == (flask_downloads / "big.bin").read_bytes()
    # send_file hands the open file to wsgi.file_wrapper: ring3 sends it with sendfile, no copy.
    assert after[ZERO_COPY] - before[ZERO_COPY] == MIB, (before, after)
    assert after[COPIED] - before[COPIED] < 16 * 1024, (before[COPIED], after[COPIED])


def test_flask_serves_concurrent_requests_in_threads(flask: RunningServer) -> None:
    """Slow streamed responses in parallel do not wait for each other: each runs in its own thread."""
    lines, delay, parallel = 3, 0.3, 4
    start = time.monotonic()

    def fetch(_: int) -> tuple[float, bytes]:
        response = httpx.get(f"{flask.url}/stream?n={lines}&delay={delay}", timeout=10)
        expect(response, 200, flask)
        return time.monotonic() - start, response.content

    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(fetch, range(parallel)))
    assert all(body.count(b"\n") == lines for _, body in results)
    serial = parallel * (lines - 1) * delay
    assert max(elapsed for elapsed, _ in results) < serial * 0.6, results


def test_sites_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """examples/sites/ring3.toml as written (its paths are relative to the repository root), on a free
    port."""
    monkeypatch.chdir(EXAMPLES.parent)
    server = start_ring3(["--config", "examples/sites/ring3.toml", "--listen", "127.0.0.1:0",
                          "--access-log", "off"], tmp_path)
    try:
        def get(host: str, path: str, method: str = "GET", **options: Any) -> httpx.Response:
            return httpx.request(method, server.url + path, headers={"host": host}, timeout=10, **options)

        home = get("example.test", "/")
        assert home.status_code == 200 and "<h1>example.test</h1>" in home.text
        assert home.headers["x-content-type-options"] == "nosniff" and "server" not in home.headers
        assert get("example.test", "/old/x").headers["location"] == "/new/"
        hello = get("www.example.test", "/api/hello")
        assert hello.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", hello.headers["x-request-id"])
        order = {"item": "tea", "quantity": 2, "unit_price": 1.5}
        assert get("example.test", "/api/orders", method="POST", json=order).json()["total"] == 3.0
        assert get("example.test", "/api/orders", method="POST", content=b"x" * 17000).status_code == 413
        asset = get("example.test", "/assets/site.css")
        assert asset.text == "body { font-family: sans-serif }\n"
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "nosniff" not in asset.headers.get("x-content-type-options", "")
        assert "single-page app" in get("spa.test", "/any/client/route").text
        assert get("spa.test", "/assets/app.js").text.startswith("document.")
        other = get("elsewhere.test", "/")
        assert (other.status_code, other.text) == (404, "no such site\n")
        statuses: list[int] = []
        while 429 not in statuses and len(statuses) < 60:  # 5/s with a burst of 10: the 11th in 0.2 s,
            # or later on a loaded machine (60 would take 10 s to stay under the rate)
            statuses.append(get("example.test", "/api/orders", method="POST", json=order).status_code)
        assert statuses.count(429) == 1 and statuses[0] == 200
    finally:
        server.stop()


# -- ring3 in front of application servers (the reverse proxy) ----------------------------------------


def test_proxy_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """examples/proxy/ring3.toml as written, in front of two ring3 application servers on its sockets:
    static files, the API balanced over both, the stream, the WebSocket, and one server stopped."""
    monkeypatch.chdir(EXAMPLES.parent)
    sockets = [Path(f"/tmp/ring3-example-app-{n}.sock") for n in (1, 2)]
    apps: list[RunningServer] = []
    proxy: RunningServer | None = None
    try:
        for path in sockets:
            apps.append(start_ring3(["--app", "main:app", "--app-dir", str(FASTAPI), "--listen",
                                     f"unix:{path}", "--access-log", "off"], tmp_path))
        proxy = start_ring3(["--config", "examples/proxy/ring3.toml", "--listen", "127.0.0.1:0",
                             "--access-log", "off"], tmp_path)
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            page = client.get("/")
            assert page.status_code == 200 and "Static files from ring3" in page.text
            for _ in range(6):
                hello = client.get("/api/hello", params={"name": "proxy"})
                assert hello.json() == {"message": "Hello, proxy!", "server": "ring3"}
            order = {"item": "tea", "quantity": 2, "unit_price": 1.5}
            assert client.post("/api/orders", json=order).json()["total"] == 3.0
            assert client.post("/api/orders", content=b"x" * (5 << 20)).status_code == 413
            streamed = client.get("/stream", params={"chunks": 3, "delay": 0.05})
            assert streamed.text == "chunk 0\nchunk 1\nchunk 2\n"
        url = proxy.url.replace("http://", "ws://") + "/ws"
        with ws_connect(url, open_timeout=5, close_timeout=5) as ws:
            ws.send("through the proxy")
            assert ws.recv(timeout=5) == "echo: through the proxy"
        apps[1].stop()  # its health check fails: the other takes everything
        deadline = time.monotonic() + 15
        while "is out" not in proxy.stderr() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ring3-example-app-2.sock is out" in proxy.stderr()
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            assert all(client.get("/api/hello").status_code == 200 for _ in range(10))
    finally:
        for server in (proxy, *apps):
            if server is not None and server.process.poll() is None:
                server.stop()
