"""Precompressed variants (FILE.br, FILE.zst, FILE.gz beside FILE): negotiation, the fields and
validators of each representation, ranges and HEAD, freshness, traversal through the variant lookup, and
that a file without variants costs no extra system call. On-the-fly compression is off here (see
test_compress.py), so only the files on disk answer."""

from __future__ import annotations

import gzip
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import brotli
import httpx
import pytest

from conftest import ResponseReader, RunningServer, http_client
from ring3.files.encoding import choose, parse_accept_encoding

PAGE = b"<!doctype html><p>" + b"hello ring3, " * 4000 + b"</p>\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "page.html").write_bytes(PAGE)
    (root / "page.html.gz").write_bytes(gzip.compress(PAGE, 9))
    (root / "page.html.br").write_bytes(brotli.compress(PAGE))
    (root / "only-gzip.css").write_bytes(b"body { color: red }\n" * 100)
    (root / "only-gzip.css.gz").write_bytes(gzip.compress((root / "only-gzip.css").read_bytes()))
    (root / "plain.txt").write_bytes(b"no variants here\n")
    (root / "secret.gz").write_bytes(b"SECRET: only a variant, no plain file\n")
    (tmp_path / "outside.gz").write_bytes(b"OUTSIDE the root\n")
    (root / "linked.txt").write_bytes(b"linked plain\n")
    (root / "linked.txt.gz").symlink_to(tmp_path / "outside.gz")
    (root / "dir.txt").write_bytes(b"dir plain\n")
    (root / "dir.txt.gz").mkdir()
    (root / ".hidden.txt").write_bytes(b"hidden\n")
    (root / ".hidden.txt.gz").write_bytes(b"HIDDEN variant\n")
    later = time.time() + 5  # variants newer than their files (a build step compresses after writing)
    for name in ("page.html.gz", "page.html.br", "only-gzip.css.gz", "secret.gz"):
        os.utime(root / name, (later, later))
    return root


def get(server: RunningServer, path: str, **headers: str) -> tuple[int, dict[bytes, bytes], bytes]:
    method = "HEAD" if headers.pop("method", "") == "HEAD" else "GET"
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        return ResponseReader(sock).read(head_only=method == "HEAD")


def test_accept_encoding_negotiation() -> None:
    both = ("br", "gzip")
    assert choose(b"gzip, deflate, br", both) == "br"  # equal q: the server's preference
    assert choose(b"br;q=0.5, gzip", both) == "gzip"  # the client's q-values come first
    assert choose(b"gzip;q=0", ("gzip",)) is None
    assert choose(b"*", both) == "br"
    assert choose(b"*;q=0.1, br;q=0", both) == "gzip"
    assert choose(b"identity", both) is None
    assert choose(b"identity;q=0", both) is None  # nothing fits: the file as it is (not 406)
    assert choose(b"x-gzip", ("gzip",)) == "gzip"
    assert choose(b"GZIP;Q=1", ("gzip",)) == "gzip"
    assert choose(b"gzip;q=abc", ("gzip",)) is None  # a malformed q refuses rather than guesses
    assert choose(b"gzip;q=2", ("gzip",)) is None
    assert choose(b"zstd, gzip", ("zstd", "gzip")) == "zstd"
    assert choose(b"", both) is None and choose(None, both) is None
    assert parse_accept_encoding(b"gzip;q=0.8, br") == {"gzip": 0.8, "br": 1.0}


def test_variants_are_served_with_their_own_fields(
        tree: Path, ring3_process: Callable[..., RunningServer], protocol: str) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-compress")
    with http_client(server.url, protocol) as client:
        for _ in range(4):  # cold, admitted to the cache, then answered from it (and replayed)
            answer = client.get("/page.html", headers={"accept-encoding": "gzip"})
            assert answer.headers["content-encoding"] == "gzip"
            assert answer.headers["vary"] == "accept-encoding"
            assert answer.content == PAGE  # httpx decoded the gzip file
            assert int(answer.headers["content-length"]) == (tree / "page.html.gz").stat().st_size
            gzip_tag = answer.headers["etag"]
            answer = client.get("/page.html", headers={"accept-encoding": "br, gzip"})
            assert answer.headers["content-encoding"] == "br"
            identity = client.get("/page.html", headers={"accept-encoding": "identity"})
            assert identity.content == PAGE and "content-encoding" not in identity.headers
            assert identity.headers["vary"] == "accept-encoding"
            assert identity.headers["etag"] != gzip_tag and gzip_tag.endswith('-gzip"')
            css = client.get("/only-gzip.css", headers={"accept-encoding": "br, gzip"})
            assert css.headers["content-encoding"] == "gzip"  # the only one it has
            assert css.headers["content-type"].startswith("text/css")
            plain = client.get("/plain.txt", headers={"accept-encoding": "gzip, br"})
            assert "vary" not in plain.headers and "content-encoding" not in plain.headers


def test_ranges_head_and_conditionals_apply_to_the_variant(
        tree: Path, ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-compress")
    encoded = (tree / "page.html.gz").read_bytes()
    for _ in range(3):
        status, headers, body = get(server, "/page.html", accept_encoding="gzip", range="bytes=0-9")
        assert (status, body) == (206, encoded[:10])
        assert headers[b"content-range"] == b"bytes 0-9/%d" % len(encoded)
        assert headers[b"content-encoding"] == b"gzip"
        status, head, _ = get(server, "/page.html", accept_encoding="gzip", method="HEAD")
        _, full, body = get(server, "/page.html", accept_encoding="gzip")
        assert status == 200 and body == encoded
        for name in (b"content-length", b"content-encoding", b"etag", b"vary"):
            assert head[name] == full[name], name  # HEAD and GET agree
        etag = full[b"etag"].decode()
        status, headers, body = get(server, "/page.html", accept_encoding="gzip", if_none_match=etag)
        assert (status, body) == (304, b"") and headers[b"vary"] == b"accept-encoding"
        # the gzip ETag does not validate the identity representation
        assert get(server, "/page.html", if_none_match=etag)[0] == 200


def test_stale_and_late_variants(tree: Path, ring3_process: Callable[..., RunningServer]) -> None:
    (tree / "late.txt").write_bytes(b"late\n" * 100)
    (tree / "old.txt.gz").write_bytes(gzip.compress(b"the old text\n"))
    earlier = time.time() - 100
    os.utime(tree / "old.txt.gz", (earlier, earlier))
    (tree / "old.txt").write_bytes(b"the new text\n")  # changed after it was compressed
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-compress",
                           "--cache-recheck", "0.2")
    for _ in range(3):
        status, headers, body = get(server, "/old.txt", accept_encoding="gzip")
        assert (status, body) == (200, b"the new text\n") and b"content-encoding" not in headers
    for _ in range(3):
        assert b"content-encoding" not in get(server, "/late.txt", accept_encoding="gzip")[1]
    (tree / "late.txt.gz").write_bytes(gzip.compress(b"late\n" * 100))
    later = time.time() + 5
    os.utime(tree / "late.txt.gz", (later, later))
    deadline = time.monotonic() + 10
    while b"content-encoding" not in get(server, "/late.txt", accept_encoding="gzip")[1]:
        assert time.monotonic() < deadline, "a variant added later is served within cache_recheck"
        time.sleep(0.1)
    assert gzip.decompress(get(server, "/late.txt", accept_encoding="gzip")[2]) == b"late\n" * 100


def test_variants_cannot_reach_what_the_file_cannot(tree: Path,
                                                    ring3_process: Callable[..., RunningServer]) -> None:
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--no-compress")
    for _ in range(3):
        # a variant without its plain file is not reachable by the plain name
        assert get(server, "/secret", accept_encoding="gzip")[0] == 404
        # a variant that is a symlink out of the root, or a directory: the plain file is served
        status, headers, body = get(server, "/linked.txt", accept_encoding="gzip")
        assert (status, body) == (200, b"linked plain\n") and b"content-encoding" not in headers
        status, headers, body = get(server, "/dir.txt", accept_encoding="gzip")
        assert (status, body) == (200, b"dir plain\n") and b"content-encoding" not in headers
        # a dotfile stays refused whatever variant lies beside it
        assert get(server, "/.hidden.txt", accept_encoding="gzip")[0] == 403
        for target in ("/../outside", "/%2e%2e/outside", "/page.html/../../outside", "/linked.txt%00"):
            status, _, body = get(server, target, accept_encoding="gzip")
            assert status in (400, 403, 404) and b"OUTSIDE" not in body, target


def test_a_file_without_variants_costs_no_extra_syscall(
        tree: Path, ring3_process: Callable[..., RunningServer]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin = f"127.0.0.1:{probe.getsockname()[1]}"
    server = ring3_process(str(tree), "--listen", "127.0.0.1:0", "--access-log", "off", "--admin",
                           admin, "--cache-recheck", "60", "--replay-cache-entries", "0", "--no-compress")

    def syscalls() -> dict[str, int]:
        text = httpx.get(f"http://{admin}/metrics", timeout=10).text
        found = re.findall(r'ring3_syscalls_total\{kind="(\w+)"\} (\d+)', text)
        return {kind: int(count) for kind, count in found}

    get(server, "/plain.txt", accept_encoding="gzip, br")  # lists the directory once
    get(server, "/plain.txt", accept_encoding="gzip, br")  # enters the cache
    before = syscalls()
    for _ in range(50):
        assert get(server, "/plain.txt", accept_encoding="gzip, br")[2] == b"no variants here\n"
    after = syscalls()
    for kind in ("getdents", "open", "fstat", "readlink", "pread"):
        assert after[kind] == before[kind], kind  # from memory: no listing, no open, no stat
