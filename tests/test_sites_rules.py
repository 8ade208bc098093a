"""The rules on sites and locations over real sockets: basic auth (htpasswd files made by htpasswd),
allow/deny, headers, body limits, error pages, rate limits, the per-address connection limit, request ids,
per-site and JSON access logs, and the replay cache kept out of what depends on more than request bytes."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, http_client, recv_until_closed
from sites_kit import htpasswd, request, serve_config, write_app

pytestmark = pytest.mark.timeout(60)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_reads_every_htpasswd_scheme(tmp_path: Path,
                                                ring3_process: Callable[..., RunningServer]) -> None:
    users = tmp_path / "users.htpasswd"
    for user, scheme in [("bee", "-B"), ("sha256", "-2"), ("sha512", "-5"), ("apr", "-m"), ("sha1", "-s")]:
        htpasswd(users, user, f"pw-{user}", scheme)
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = {{ body = "open" }}
          [[site.location]]
          path = "/private/"
          auth = {{ htpasswd = "{users}", realm = "the \\"inner\\" circle" }}
          respond = {{ body = "inside" }}
    """)
    status, headers, _ = request(server, "/private/")
    assert status == 401
    assert headers[b"www-authenticate"] == b'Basic realm="the \\"inner\\" circle", charset="UTF-8"'
    for user in ("bee", "sha256", "sha512", "apr", "sha1"):
        assert request(server, "/private/x", headers=basic(user, f"pw-{user}"))[2] == b"inside", user
        assert request(server, "/private/x", headers=basic(user, "wrong"))[0] == 401, user
        # a second time: answered from the verified-credentials cache, same answer
        assert request(server, "/private/x", headers=basic(user, f"pw-{user}"))[2] == b"inside", user
    assert request(server, "/private/x", headers=basic("nobody", "pw-bee"))[0] == 401
    assert request(server, "/private/x", headers={"Authorization": "Basic !!!"})[0] == 401
    assert request(server, "/private/x", headers={"Authorization": "Bearer abc"})[0] == 401
    assert request(server, "/open")[2] == b"open"


def test_allow_and_deny_by_address_and_network(tmp_path: Path,
                                               ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = { body = "ok" }
        deny = ["127.0.0.9"]
          [[site.location]]
          path = "/net/"
          allow = ["127.0.0.0/30"]
          respond = { body = "net" }
          [[site.location]]
          path = "/nobody/"
          deny = ["all"]
          respond = { body = "never" }
    """)
    assert request(server, "/")[2] == b"ok"
    assert request(server, "/", source="127.0.0.9")[0] == 403  # the site's deny, inherited
    assert request(server, "/net/", source="127.0.0.2")[2] == b"net"
    assert request(server, "/net/", source="127.0.0.5")[0] == 403
    assert request(server, "/nobody/")[0] == 403


def test_response_headers_set_add_remove_also_on_replayed_files(
        site: Path, tmp_path: Path, ring3_process: Callable[..., RunningServer], protocol: str) -> None:
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        root = "{site}"
        [site.headers]
        "strict-transport-security" = "max-age=63072000"
        "-server" = ""
        "content-type" = "text/x-forced"
        "+link" = "</style.css>; rel=preload"
    """)
    with http_client(server.url, protocol) as client:
        for _ in range(4):  # the file enters the cache on its second request; later ones are replayed
            answer = client.get("/hello.txt")
            assert answer.text == "hello, world\n"
            assert answer.headers["strict-transport-security"] == "max-age=63072000"
            assert answer.headers.get_list("content-type") == ["text/x-forced"]
            assert answer.headers["link"] == "</style.css>; rel=preload"
            assert "server" not in answer.headers
        missing = client.get("/missing")  # error responses carry them too
        assert missing.status_code == 404 and "strict-transport-security" in missing.headers


def test_a_location_body_limit_below_and_above_the_server_limit(
        tmp_path: Path, ring3_process: Callable[..., RunningServer], protocol: str) -> None:
    write_app(tmp_path / "apps")
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [limits]
        max_body_size = "64k"
        [app]
        app_dir = "{tmp_path}/apps"
        [[site]]
        hosts = ["*"]
        app = "mysite.asgi:application"
          [[site.location]]
          path = "/small/"
          max_body_size = "1k"
          [[site.location]]
          path = "/upload/"
          max_body_size = "2m"
    """)
    with http_client(server.url, protocol) as client:
        assert client.post("/small/", content=b"x" * 1024).json()["body_bytes"] == 1024
        assert client.post("/small/", content=b"x" * 1025).status_code == 413
        # without a declared length (chunked, or HTTP/2 DATA without content-length): cut at the limit
        assert client.post("/small/", content=iter([b"x" * 600, b"y" * 600])).status_code == 413
        assert client.post("/upload/", content=b"u" * 2_000_000).json()["body_bytes"] == 2_000_000
        # the other locations keep [limits] max_body_size although a location raised the protocols'
        assert client.post("/other", content=b"o" * 65536).json()["body_bytes"] == 65536
        assert client.get("/after").status_code == 200  # the client can go on (a new connection if closed)
    # Refusals of bodies larger than a flow-control window. HTTP/1.1 by curl (with a length, and chunked);
    # HTTP/2 by the h2 library, announcing the length: httpx's HTTP/2 client does not read a response
    # before it has sent its whole body, and curl may lose the 413 when the stream is reset after it.
    if protocol == "HTTP/1.1":
        big = tmp_path / "big.bin"
        big.write_bytes(b"b" * (2 * 1024 * 1024 + 1))
        for path, upload in [("/upload/", f"@{big}"), ("/other", "o" * 65537)]:
            for framing in ([], ["-H", "Transfer-Encoding: chunked"]):
                done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http1.1",
                                       *framing, "--data-binary", upload, server.url + path],
                                      capture_output=True, text=True, timeout=30, check=True)
                assert done.stdout == "413", (path, framing)
        return
    from h2_kit import H2Client

    with H2Client(server.port) as h2:
        for path, length in [("/upload/", 2 * 1024 * 1024 + 1), ("/other", 65537)]:
            stream = h2.request(path, method="POST", headers=[("content-length", str(length))], end=False)
            h2.send_data_raw(stream, b"x" * 1000)
            answer = h2.wait(stream)[0]
            assert answer.headers.get(":status") == "413", (path, answer)


def test_error_pages_replace_ring3s_own_errors(site: Path, tmp_path: Path,
                                               ring3_process: Callable[..., RunningServer]) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "404.html").write_text("<h1>custom not found</h1>\n")
    (pages / "40x.html").write_text("<h1>custom refusal</h1>\n")
    write_app(tmp_path / "apps")
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [app]
        app_dir = "{tmp_path}/apps"
        [[site]]
        hosts = ["*"]
        root = "{site}"
        [site.error_pages]
        404 = "/errors/404.html"
        "401-403" = "/errors/40x.html"
        429 = "https://status.test/"
          [[site.location]]
          path = "/errors/"
          alias = "{pages}/"
          [[site.location]]
          path = "/closed/"
          deny = ["all"]
          [[site.location]]
          path = "/busy/"
          rate_limit = {{ rate = "1/m", key = "location" }}
          respond = {{ body = "once" }}
          [[site.location]]
          path = "/app/"
          app = "mysite.asgi:application"
    """)
    status, headers, body = request(server, "/no/such/file")
    assert (status, body) == (404, b"<h1>custom not found</h1>\n")
    assert headers[b"content-type"].startswith(b"text/html")
    status, _, body = request(server, "/closed/x")
    assert (status, body) == (403, b"<h1>custom refusal</h1>\n")
    assert request(server, "/busy/")[2] == b"once"
    status, headers, _ = request(server, "/busy/")
    assert (status, headers[b"location"]) == (302, b"https://status.test/")
    # HEAD gets the page's head
    status, headers, _ = request(server, "/no/such/file", method="HEAD")
    assert status == 404 and int(headers[b"content-length"]) == len("<h1>custom not found</h1>\n")
    assert request(server, "/hello.txt")[2] == b"hello, world\n"
    # an application's own 404 is its own (FastAPI's JSON): here the app answers every path with 200
    assert request(server, "/app/x")[0] == 200


def test_rate_limit_by_header_and_state_bounded(tmp_path: Path,
                                               ring3_process: Callable[..., RunningServer]) -> None:
    server = serve_config(ring3_process, tmp_path, """
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        respond = { body = "ok" }
        rate_limit = { rate = "1/m", burst = 1, key = "header:X-Api-Key", max_keys = 3 }
    """)
    assert [request(server, "/", headers={"X-Api-Key": "a"})[0] for _ in range(3)] == [200, 200, 429]
    assert request(server, "/", headers={"X-Api-Key": "b"})[0] == 200
    # four more keys push the oldest buckets out (max_keys = 3): key "a" starts afresh
    for key in ("c", "d", "e", "f"):
        assert request(server, "/", headers={"X-Api-Key": key})[0] == 200
    assert request(server, "/", headers={"X-Api-Key": "a"})[0] == 200


def test_rate_limited_static_files_are_never_replayed(site: Path, tmp_path: Path,
                                                      ring3_process: Callable[..., RunningServer]) -> None:
    """The replay cache answers identical request bytes without calling the handler: a rate-limited
    location must stay out of it, or its limit would stop counting."""
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [[site]]
        hosts = ["*"]
        root = "{site}"
        rate_limit = {{ rate = "1/m", burst = 5, key = "location" }}
    """)
    raw = b"GET /hello.txt HTTP/1.1\r\nHost: example.test\r\n\r\n"
    statuses = []
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        for _ in range(8):
            sock.sendall(raw)
            head = sock.recv(65536)
            statuses.append(int(head.split()[1]))
    assert statuses == [200] * 6 + [429] * 2


def test_connections_per_address_are_limited(site: Path, ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--max-connections-per-address", "2")
    held = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(2)]
    for sock in held:  # both served
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection((server.host, server.port), timeout=5) as third:
        third.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until_closed(third) == b""  # closed at accept
    with socket.create_connection((server.host, server.port), timeout=5,
                                  source_address=("127.0.0.2", 0)) as other:
        other.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.recv(65536).startswith(b"HTTP/1.1 200")  # another address has its own share
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # once one closes (the server sees it), a new one is served
        with socket.create_connection((server.host, server.port), timeout=5) as again:
            again.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            if recv_until_closed(again, 1.0).startswith(b"HTTP/1.1 200"):
                break
        assert time.monotonic() < deadline
    for sock in held:
        sock.close()


def test_request_ids_and_per_site_json_logs(tmp_path: Path, ring3_process: Callable[..., RunningServer],
                                             protocol: str) -> None:
    write_app(tmp_path / "apps")
    site_log = tmp_path / "shop.log"
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "{tmp_path}/main.log"
        [app]
        app_dir = "{tmp_path}/apps"
        [[site]]
        hosts = ["shop.test"]
        app = "mysite.asgi:application"
        request_id = true
        access_log = "{site_log}"
        access_log_format = "json"
        [[site]]
        hosts = ["*"]
        respond = {{ body = "main" }}
        request_id = true
    """)
    with http_client(server.url, protocol) as client:
        answer = client.get("/cart", headers={"host": "shop.test"})
        generated = answer.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert answer.json()["request_id"] == generated  # the application saw the same one
        answer = client.get("/cart", headers={"host": "shop.test", "x-request-id": "given-id.42"})
        assert answer.headers["x-request-id"] == "given-id.42"
        assert answer.json()["request_id"] == "given-id.42"
        answer = client.get("/cart", headers={"host": "shop.test", "x-request-id": "bad id;" + "x" * 10})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
        assert client.get("/", headers={"host": "other.test"}).text == "main"
    deadline = time.monotonic() + 5
    while len(site_log.read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [json.loads(line) for line in site_log.read_text().splitlines()]
    assert [r["request_id"] for r in records][:2] == [generated, "given-id.42"]
    first = records[0]
    assert (first["method"], first["uri"], first["host"]) == ("GET", "/cart", "shop.test")
    assert first["status"] == 200
    assert first["protocol"] == ("HTTP/2.0" if protocol == "HTTP/2" else "HTTP/1.1")  # as Combined has it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    while '"GET / HTTP/' not in (tmp_path / "main.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    main = (tmp_path / "main.log").read_text()
    assert '"GET / HTTP/' in main and "/cart" not in main  # each site's lines in its own log
    line = r'"GET / HTTP/[0-9.]+" 200 4 "-" "python-httpx/[^"]+" "[0-9a-f]{32}"\n'
    assert re.search(line, main), main  # the request id, last in a Combined line


def metric(admin: str, name: str) -> int:
    import httpx

    text = httpx.get(f"http://{admin}/metrics", timeout=10).text
    found = re.search(rf"^{name} (\d+)$", text, re.MULTILINE)
    assert found is not None, name
    return int(found.group(1))


def test_static_locations_use_the_file_cache_and_the_replay_cache(
        site: Path, tmp_path: Path, ring3_process: Callable[..., RunningServer]) -> None:
    """A hot file behind sites is answered as a single site answers it: from memory, then by replay;
    a location with allow is answered from the file cache but never replayed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin = f"127.0.0.1:{probe.getsockname()[1]}"
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        admin = "{admin}"
        [[site]]
        hosts = ["*"]
        root = "{site}"
          [[site.location]]
          path = "/sub/"
          alias = "{site}/sub/"
          allow = ["127.0.0.0/8"]
    """)
    raw = b"GET /hello.txt HTTP/1.1\r\nHost: example.test\r\n\r\n"
    guarded = b"GET /sub/index.html HTTP/1.1\r\nHost: example.test\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        for data in (raw, guarded):
            for _ in range(6):
                sock.sendall(data)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            if data is raw:
                replayed = metric(admin, "ring3_responses_replayed_total")
                assert replayed >= 3  # the second request cached the file, the third was a replay
    assert metric(admin, "ring3_responses_replayed_total") == replayed  # none of the guarded ones
    assert metric(admin, "ring3_responses_from_cache_total") >= 4 + 1


BIG_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    page = b"<p>" + b"a page of text, " * 2000 + b"</p>" + b"<!-- %d -->" % len(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": page})
'''


def test_application_compression_and_request_encodings_per_location(
        tmp_path: Path, ring3_process: Callable[..., RunningServer], protocol: str) -> None:
    import gzip

    (tmp_path / "bigapp.py").write_text(BIG_APP)
    server = serve_config(ring3_process, tmp_path, f"""
        [server]
        access_log = "off"
        [app]
        app_dir = "{tmp_path}"
        [[site]]
        hosts = ["*"]
        app = "bigapp:app"
          [[site.location]]
          path = "/squeezed/"
          app = "bigapp:app"
          compress = true
          request_encodings = ["gzip"]
    """)
    with http_client(server.url, protocol) as client:
        plain = client.get("/page", headers={"accept-encoding": "gzip"})  # [app] compress is off
        assert "content-encoding" not in plain.headers and plain.text.startswith("<p>a page")
        squeezed = client.get("/squeezed/page", headers={"accept-encoding": "gzip"})
        assert squeezed.headers["content-encoding"] == "gzip" and squeezed.content == plain.content
        assert int(squeezed.headers.get("content-length", "0") or 0) < len(plain.content) / 5
        # a gzip body: decoded for the application where allowed, 415 elsewhere
        coded = gzip.compress(b"x" * 5000)
        answer = client.post("/squeezed/up", content=coded, headers={"content-encoding": "gzip"})
        assert answer.status_code == 200 and answer.content.endswith(b"<!-- 5000 -->")
        refused = client.post("/up", content=coded, headers={"content-encoding": "gzip"})
        assert refused.status_code == 415 and refused.headers["accept-encoding"] == "identity"
