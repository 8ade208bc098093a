"""End-to-end tests of the static file server: a real `ring3 serve` process, httpx and raw sockets."""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import ResponseReader, RunningServer, exchange, http_client

DATA = bytes(range(256)) * 4  # the site's data.bin
TEN_MIB = 10 * 1024 * 1024
OLD_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"


def client(server: RunningServer, protocol: str = "HTTP/1.1") -> httpx.Client:
    client: httpx.Client = http_client(server.url, protocol)
    return client


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes; a timeout (the server kept the connection open) fails the test."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            unread = b"".join(chunks)[:300]
            raise AssertionError(f"connection not closed within {timeout}s: {unread!r}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# -- plain GET and HEAD -------------------------------------------------------------------------------

def test_get_file_bytes_and_headers(served: RunningServer, site: Path, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/hello.txt")
    assert response.status_code == 200
    assert response.content == (site / "hello.txt").read_bytes()
    headers = response.headers
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(response.content))
    assert "transfer-encoding" not in headers
    assert headers["accept-ranges"] == "bytes"
    etag = headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag), etag  # strong: no W/ prefix, quoted
    last_modified = email.utils.parsedate_to_datetime(headers["last-modified"])
    assert abs(last_modified.timestamp() - (site / "hello.txt").stat().st_mtime) < 2


def test_content_types(served: RunningServer, site: Path, protocol: str) -> None:
    expected = {
        "/index.html": "text/html; charset=utf-8",
        "/style.css": "text/css; charset=utf-8",
        "/hello.txt": "text/plain; charset=utf-8",
        "/data.bin": "application/octet-stream",
    }
    with client(served, protocol) as http:
        for path, content_type in expected.items():
            response = http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type, path
            assert response.content == (site / path.lstrip("/")).read_bytes(), path


def test_binary_file(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/data.bin")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == "1024"


def test_files_have_content_length_never_chunked(served: RunningServer, site: Path) -> None:
    (site / "medium.bin").write_bytes(os.urandom(200_000))  # above the sendfile threshold
    paths = ["/", "/index.html", "/hello.txt", "/data.bin", "/style.css", "/sub/", "/medium.bin"]
    with served.connect() as sock:
        reader = ResponseReader(sock)
        for path in paths:
            for method in ("GET", "HEAD"):
                sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                status, headers, body = reader.read(head_only=method == "HEAD")
                assert status == 200, (method, path)
                assert b"transfer-encoding" not in headers, (method, path, headers)
                assert b"content-length" in headers, (method, path, headers)
                if method == "GET":
                    assert int(headers[b"content-length"]) == len(body)
    assert len((site / "medium.bin").read_bytes()) == 200_000


def test_head_same_headers_no_body(served: RunningServer) -> None:
    with served.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(get("/data.bin"))
        get_status, get_headers, get_body = reader.read()
        # HEAD, then a GET on the same connection: a body leaked after HEAD would corrupt the next read.
        sock.sendall(b"HEAD /data.bin HTTP/1.1\r\nHost: test\r\n\r\n" + get("/hello.txt"))
        head_status, head_headers, head_body = reader.read(head_only=True)
        next_status, _, next_body = reader.read()
    assert get_status == head_status == 200
    assert get_body == DATA
    assert head_body == b""
    assert next_status == 200
    assert next_body == b"hello, world\n"
    assert reader.buffer == b""
    get_headers.pop(b"date")
    head_headers.pop(b"date")
    assert head_headers == get_headers
    assert head_headers[b"content-length"] == b"1024"


def test_head_with_httpx(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        full = http.get("/style.css")
        head = http.head("/style.css")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == full.headers[name], name


def test_date_and_server_headers(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        ok = http.get("/hello.txt")
        missing = http.get("/missing")
    for response in (ok, missing):
        assert response.headers["server"] == "ring3"
        date = email.utils.parsedate_to_datetime(response.headers["date"])
        assert date.tzinfo is not None


# -- directories, redirects, errors -----------------------------------------------------------------

def test_index_for_root_and_subdirectory(served: RunningServer, site: Path, protocol: str) -> None:
    with client(served, protocol) as http:
        root = http.get("/")
        sub = http.get("/sub/")
    assert root.status_code == 200
    assert root.content == (site / "index.html").read_bytes()
    assert root.headers["content-type"] == "text/html; charset=utf-8"
    assert sub.status_code == 200
    assert sub.content == (site / "sub" / "index.html").read_bytes()


def test_directory_without_slash_redirects(served: RunningServer) -> None:
    with served.connect() as sock:
        status, headers, _ = exchange(sock, get("/sub"))
        assert status == 301
        assert headers[b"location"] == b"/sub/"
        status, headers, _ = exchange(sock, get("/sub?a=1"))
        assert status == 301
        assert headers[b"location"] == b"/sub/?a=1"


def test_redirect_followed_by_httpx(served: RunningServer) -> None:
    with httpx.Client(base_url=served.url, timeout=10.0, follow_redirects=True) as http:
        response = http.get("/sub")
    assert response.status_code == 200
    assert response.content == b"<p>sub</p>\n"
    assert [r.status_code for r in response.history] == [301]


def test_missing_is_404(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        assert http.get("/nope.txt").status_code == 404
        assert http.get("/sub/nope.html").status_code == 404
        assert http.get("/hello.txt/").status_code == 404


def test_other_methods_are_405(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        for method in ("POST", "PUT", "DELETE"):
            response = http.request(method, "/hello.txt", content=b"x")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET, HEAD", method
    with served.connect() as sock:
        status, headers, _ = exchange(
            sock, b"DELETE /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n")
    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"


def test_directory_without_index_is_403(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        assert http.get("/empty-dir/").status_code == 403


def test_dotfile_is_403(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/.secret")
    assert response.status_code == 403
    assert b"do not serve" not in response.content


def test_acme_challenge_under_well_known_is_served(served: RunningServer, site: Path, protocol: str) -> None:
    challenge = site / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "t0ken").write_text("t0ken.thumbprint")
    with client(served, protocol) as http:
        assert http.get("/.well-known/acme-challenge/t0ken").text == "t0ken.thumbprint"
        assert http.get("/.secret").status_code == 403


def test_dotfile_served_with_flag(site: Path, ring3_process: Callable[..., RunningServer],
                                  protocol: str) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off", "--dotfiles")
    with client(server, protocol) as http:
        response = http.get("/.secret")
    assert response.status_code == 200
    assert response.content == b"do not serve\n"
    assert server.stop() == 0


def test_options_asterisk(served: RunningServer) -> None:
    with served.connect() as sock:
        status, headers, _ = exchange(sock, b"OPTIONS * HTTP/1.1\r\nHost: test\r\n\r\n")
    assert status == 200
    allowed = {method.strip() for method in headers[b"allow"].split(b",")}
    assert {b"GET", b"HEAD"} <= allowed


# -- conditional requests -----------------------------------------------------------------------------

def test_if_none_match(served: RunningServer) -> None:
    with served.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(get("/hello.txt"))
        _, headers, _ = reader.read()
        etag = headers[b"etag"].decode()
        sock.sendall(get("/hello.txt", f"If-None-Match: {etag}"))
        status, not_modified, body = reader.read()
        assert status == 304
        assert body == b""
        assert not_modified[b"etag"] == etag.encode()
        # The 304 carried no body: the next response on the connection parses cleanly.
        sock.sendall(get("/hello.txt", 'If-None-Match: "other", "tags"'))
        status, _, body = reader.read()
        assert status == 200
        assert body == b"hello, world\n"
        sock.sendall(get("/hello.txt", f'If-None-Match: "x", {etag}'))
        assert reader.read()[0] == 304
        assert reader.buffer == b""


def test_if_none_match_with_httpx(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        etag = http.get("/data.bin").headers["etag"]
        cached = http.get("/data.bin", headers={"If-None-Match": etag})
        stale = http.get("/data.bin", headers={"If-None-Match": '"0-0"'})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    assert stale.status_code == 200
    assert stale.content == DATA


def test_if_modified_since(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        last_modified = http.get("/hello.txt").headers["last-modified"]
        same = http.get("/hello.txt", headers={"If-Modified-Since": last_modified})
        older = http.get("/hello.txt", headers={"If-Modified-Since": OLD_DATE})
    assert same.status_code == 304
    assert same.content == b""
    assert older.status_code == 200
    assert older.content == b"hello, world\n"


def test_if_match_mismatch_is_412(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        etag = http.get("/hello.txt").headers["etag"]
        mismatch = http.get("/hello.txt", headers={"If-Match": '"not-the-etag"'})
        match = http.get("/hello.txt", headers={"If-Match": etag})
    assert mismatch.status_code == 412
    assert b"hello, world" not in mismatch.content
    assert match.status_code == 200
    assert match.content == b"hello, world\n"


def test_if_unmodified_since_older_is_412(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        last_modified = http.get("/hello.txt").headers["last-modified"]
        older = http.get("/hello.txt", headers={"If-Unmodified-Since": OLD_DATE})
        same = http.get("/hello.txt", headers={"If-Unmodified-Since": last_modified})
    assert older.status_code == 412
    assert same.status_code == 200


# -- ranges -------------------------------------------------------------------------------------------

def test_single_range(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/data.bin", headers={"Range": "bytes=10-109"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 10-109/1024"
    assert response.headers["content-length"] == "100"
    assert response.content == DATA[10:110]


def test_single_range_raw(served: RunningServer) -> None:
    with served.connect() as sock:
        status, headers, body = exchange(sock, get("/data.bin", "Range: bytes=0-0"))
    assert status == 206
    assert headers[b"content-range"] == b"bytes 0-0/1024"
    assert body == DATA[:1]


def test_suffix_range(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/data.bin", headers={"Range": "bytes=-100"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 924-1023/1024"
    assert response.content == DATA[-100:]


def test_open_range(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/data.bin", headers={"Range": "bytes=1000-"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 1000-1023/1024"
    assert response.content == DATA[1000:]


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/byteranges body into (headers, content) parts."""
    match = re.fullmatch(r'multipart/byteranges;\s*boundary="?([^";]+)"?', content_type)
    assert match, content_type
    boundary = match.group(1).encode()
    delimiter = b"\r\n--" + boundary
    if body.startswith(b"--" + boundary):
        body = b"\r\n" + body
    preamble, *chunks = body.split(delimiter)
    assert preamble == b"", preamble
    assert chunks, body[:200]
    assert chunks[-1] in (b"--", b"--\r\n"), chunks[-1]
    parts = []
    for chunk in chunks[:-1]:
        assert chunk.startswith(b"\r\n"), chunk[:50]
        head, sep, content = chunk[2:].partition(b"\r\n\r\n")
        assert sep, chunk[:100]
        headers = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            assert colon, line
            headers[name.strip().lower().decode()] = value.strip().decode()
        parts.append((headers, content))
    return parts


def test_multiple_ranges_multipart(served: RunningServer, protocol: str) -> None:
    wanted = [(0, 9), (100, 109), (1000, 1023)]
    spec = ",".join(f"{first}-{last}" for first, last in wanted)
    with client(served, protocol) as http:
        response = http.get("/data.bin", headers={"Range": f"bytes={spec}"})
    assert response.status_code == 206
    assert "content-range" not in response.headers
    assert response.headers["content-length"] == str(len(response.content))
    parts = parse_multipart(response.headers["content-type"], response.content)
    assert len(parts) == len(wanted)
    for (headers, content), (first, last) in zip(parts, wanted, strict=True):
        assert headers["content-range"] == f"bytes {first}-{last}/1024"
        assert headers["content-type"] == "application/octet-stream"
        assert content == DATA[first:last + 1]


def test_multiple_ranges_raw_text(served: RunningServer) -> None:
    with served.connect() as sock:
        status, headers, body = exchange(
            sock, get("/hello.txt", "Range: bytes=0-4, -6"))
    assert status == 206
    parts = parse_multipart(headers[b"content-type"].decode(), body)
    assert [(h["content-range"], c) for h, c in parts] == [
        ("bytes 0-4/13", b"hello"), ("bytes 7-12/13", b"world\n")]
    assert all(h["content-type"] == "text/plain; charset=utf-8" for h, _ in parts)


def test_unsatisfiable_range(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        response = http.get("/data.bin", headers={"Range": "bytes=2000-3000"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1024"
    assert DATA[:64] not in response.content


def test_if_range(served: RunningServer, protocol: str) -> None:
    with client(served, protocol) as http:
        etag = http.get("/data.bin").headers["etag"]
        fresh = http.get("/data.bin", headers={"Range": "bytes=0-9", "If-Range": etag})
        stale = http.get("/data.bin", headers={"Range": "bytes=0-9", "If-Range": '"stale-etag"'})
    assert fresh.status_code == 206
    assert fresh.content == DATA[:10]
    assert fresh.headers["content-range"] == "bytes 0-9/1024"
    assert stale.status_code == 200
    assert stale.content == DATA
    assert "content-range" not in stale.headers


# -- connections --------------------------------------------------------------------------------------

def test_keep_alive_several_requests(served: RunningServer, site: Path) -> None:
    paths = ["/hello.txt", "/data.bin", "/", "/style.css", "/missing", "/hello.txt"]
    with served.connect() as sock:
        reader = ResponseReader(sock)
        for path in paths:
            sock.sendall(get(path))
            status, headers, body = reader.read()
            assert b"connection" not in headers or headers[b"connection"].lower() != b"close"
            if path == "/missing":
                assert status == 404
            else:
                assert status == 200
                file = site / ("index.html" if path == "/" else path.lstrip("/"))
                assert body == file.read_bytes()


def test_pipelining_in_order(served: RunningServer, site: Path) -> None:
    contents = {f"/p{i}.txt": f"pipelined body number {i}\n".encode() * (i + 1) for i in range(10)}
    for path, content in contents.items():
        (site / path.lstrip("/")).write_bytes(content)
    request = b"".join(get(path) for path in contents)
    with served.connect() as sock:
        sock.sendall(request)
        reader = ResponseReader(sock)
        for path, content in contents.items():
            status, _, body = reader.read()
            assert status == 200, path
            assert body == content, path
        assert reader.buffer == b""


def test_http10_closes(served: RunningServer) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        raw = read_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    assert status_line.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), status_line
    assert body == b"hello, world\n"
    assert b"content-length: 13" in head.lower()


def test_http10_keep_alive(served: RunningServer) -> None:
    with served.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200
        assert body == b"hello, world\n"
        assert headers[b"connection"].lower() == b"keep-alive"
        sock.sendall(b"GET /data.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200
        assert body == DATA
        assert headers[b"connection"].lower() == b"keep-alive"
        # Without keep-alive the server answers and closes.
        sock.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        status, headers, body = reader.read()
        assert status == 200
        assert body == b"hello, world\n"
        assert reader.buffer + read_until_closed(sock) == b""


# -- a large file -------------------------------------------------------------------------------------

def test_ten_mib_file_with_httpx(served: RunningServer, site: Path, protocol: str) -> None:
    payload = os.urandom(TEN_MIB)
    (site / "big.bin").write_bytes(payload)
    digest = hashlib.sha256()
    received = 0
    with client(served, protocol) as http, http.stream("GET", "/big.bin") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(TEN_MIB)
        assert "transfer-encoding" not in response.headers
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == TEN_MIB
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_ten_mib_file_range_tail(served: RunningServer, site: Path, protocol: str) -> None:
    payload = os.urandom(TEN_MIB)
    (site / "big.bin").write_bytes(payload)
    with client(served, protocol) as http:
        response = http.get("/big.bin", headers={"Range": f"bytes={TEN_MIB - 70000}-"})
    assert response.status_code == 206
    assert response.content == payload[-70000:]
