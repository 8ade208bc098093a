"""On-the-fly compression of static files: once per file version, in the file cache, by every codec ring3
has (gzip, brotli, zstd), over real sockets; and what stays uncompressed."""

from __future__ import annotations

import gzip
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import brotli
import pytest
import zstandard

from conftest import ResponseReader, RunningServer, http_client

pytestmark = pytest.mark.timeout(60)
PAGE = b"".join(b"<div class='row'><span>item %d</span><a href='/p/%d'>link</a></div>\n" % (i, i * 7)
                for i in range(1500))
DECODE = {"gzip": gzip.decompress, "br": brotli.decompress,
          "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data)}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "page.html").write_bytes(PAGE)
    (root / "app.js").write_bytes(b"function f(x) { return x * 2; }\n" * 300)
    (root / "tiny.txt").write_bytes(b"tiny\n")
    (root / "photo.png").write_bytes(os.urandom(2000) + b"\0" * 20000)
    (root / "pre.css").write_bytes(b"body { margin: 0 }\n" * 500)
    (root / "pre.css.gz").write_bytes(gzip.compress(b"the precompressed one\n"))
    later = time.time() + 5
    os.utime(root / "pre.css.gz", (later, later))
    return root


def ask(sock: socket.socket, reader: ResponseReader, path: str, encoding: str, *extra: str,
        method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    lines = "".join(f"{line}\r\n" for line in extra)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\n{lines}\r\n"
    sock.sendall(head.encode())
    return reader.read(head_only=method == "HEAD")


def until_encoded(server: RunningServer, path: str, encoding: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """Requests on one connection (identical bytes: replays too) until the answer is compressed."""
    deadline = time.monotonic() + 20
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        while True:
            status, headers, body = ask(sock, reader, path, encoding)
            if b"content-encoding" in headers or time.monotonic() > deadline:
                return status, headers, body
            time.sleep(0.05)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_each_codec_compresses_once_and_serves_from_memory(
        tree: Path, ring3_process: Callable[..., RunningServer], encoding: str) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off")
    assert any("compression of static files: br, zstd, gzip" in line for line in server.stdout_lines)
    status, headers, body = until_encoded(server, "/page.html", encoding)
    assert status == 200 and headers[b"content-encoding"] == encoding.encode()
    assert DECODE[encoding](body) == PAGE
    assert len(body) < len(PAGE) / 5
    assert headers[b"vary"] == b"accept-encoding"
    assert headers[b"etag"].endswith(b'-' + encoding.encode() + b'"')
    assert headers[b"content-type"].startswith(b"text/html")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        _, head, _ = ask(sock, reader, "/page.html", encoding, method="HEAD")
        for name in (b"content-length", b"content-encoding", b"etag"):
            assert head[name] == headers[name], name  # HEAD and GET agree
        status, ranged, part = ask(sock, reader, "/page.html", encoding, "Range: bytes=0-99")
        assert (status, part) == (206, body[:100]) and ranged[b"content-encoding"] == encoding.encode()
        etag = headers[b"etag"].decode()
        assert ask(sock, reader, "/page.html", encoding, f"If-None-Match: {etag}")[0] == 304
        status, plain, whole = ask(sock, reader, "/page.html", "identity")
        assert (status, whole) == (200, PAGE) and b"content-encoding" not in plain
        assert plain[b"vary"] == b"accept-encoding"


def test_what_is_not_compressed(tree: Path, ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off")
    until_encoded(server, "/app.js", "gzip")  # the cache and its worker are running
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        for _ in range(6):
            status, headers, _ = ask(sock, reader, "/photo.png", "gzip, br")
            assert status == 200 and b"content-encoding" not in headers and b"vary" not in headers
            status, headers, body = ask(sock, reader, "/tiny.txt", "gzip, br")
            assert status == 200 and body == b"tiny\n" and b"content-encoding" not in headers
            time.sleep(0.05)
        # a precompressed variant wins over compressing again
        _, headers, body = until_encoded(server, "/pre.css", "gzip")
        assert gzip.decompress(body) == b"the precompressed one\n"


def test_compression_off_and_the_budget(tree: Path, ring3_process: Callable[..., RunningServer]) -> None:
    off = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-compress")
    small = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off",
                          "--compress-cache-bytes", "2000")
    for server in (off, small):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            reader = ResponseReader(sock)
            for _ in range(15):
                status, headers, body = ask(sock, reader, "/page.html", "gzip")
                assert (status, body) == (200, PAGE) and b"content-encoding" not in headers
                time.sleep(0.05)
    # within a budget that holds one compressed file: the smaller one is kept
    status, headers, body = until_encoded(small, "/app.js", "gzip")
    assert gzip.decompress(body) == (tree / "app.js").read_bytes()


def test_a_changed_file_is_compressed_again(tree: Path, ring3_process: Callable[..., RunningServer],
                                            protocol: str) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--cache-recheck", "0.1")
    _, first, body = until_encoded(server, "/app.js", "gzip")
    assert gzip.decompress(body) == (tree / "app.js").read_bytes()
    (tree / "app.js").write_bytes(b"const changed = true;\n" * 400)
    deadline = time.monotonic() + 20
    with http_client(server.url, protocol, headers={"accept-encoding": "gzip"}) as client:
        while True:
            answer = client.get("/app.js")
            if answer.headers.get("content-encoding") == "gzip" and answer.content.startswith(b"const"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert answer.content == b"const changed = true;\n" * 400  # httpx decoded it
        assert answer.headers["etag"] != first[b"etag"].decode()


def test_large_compressed_bodies_are_kept_on_disk_and_sent_by_sendfile(
        tree: Path, tmp_path: Path, ring3_process: Callable[..., RunningServer]) -> None:
    """A 3 MiB text file compresses to more than cache_max_file_size: the result lives in an unlinked file
    of compress_dir, open, and leaves by sendfile (zero copy), like any large cached file."""
    import random
    import re

    import httpx

    words = [b"ring3", b"kernel", b"toll", b"request", b"server", b"<li>", b"</li>", b"class='row'"]
    rng = random.Random(7)
    text = b" ".join(rng.choice(words) + b"%d" % rng.randrange(1000) for _ in range(420_000))
    text = text[:3 * 1024 * 1024]
    (tree / "big.txt").write_bytes(text)
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin = f"127.0.0.1:{probe.getsockname()[1]}"
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--admin", admin,
                           "--compress-dir", str(spool), "--compress-encodings", "gzip")
    status, headers, body = until_encoded(server, "/big.txt", "gzip")
    assert status == 200 and gzip.decompress(body) == text and len(body) > 16 * 1024
    held = [os.readlink(f"/proc/{server.process.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{server.process.pid}/fd")]
    assert any(name.startswith(str(spool) + "/ring3-") and name.endswith("(deleted)") for name in held)
    assert list(spool.iterdir()) == []  # unlinked: nothing to clean up

    def zero_copy() -> int:
        text = httpx.get(f"http://{admin}/metrics", timeout=10).text
        found = re.search(r'^ring3_bytes_sent_total\{path="zero_copy"\} (\d+)', text, re.MULTILINE)
        assert found is not None
        return int(found.group(1))

    before = zero_copy()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            status, headers, again = ask(sock, reader, "/big.txt", "gzip")
            assert headers[b"content-encoding"] == b"gzip" and again == body
    assert zero_copy() - before >= 3 * len(body)
