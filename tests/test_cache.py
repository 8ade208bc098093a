"""The small-file cache: admission, freshness within cache_recheck, and full HTTP semantics from it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import RunningServer
from test_ledger import admin_url, scrape

Start = Callable[..., RunningServer]
FROM_CACHE = "ring3_responses_from_cache_total"


def start(ring3_process: Start, site: Path, *flags: str) -> tuple[RunningServer, str]:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", *flags)
    return server, admin_url(server)


def test_second_request_admits_and_later_ones_hit(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    with httpx.Client() as client:
        bodies = [client.get(f"{server.url}/hello.txt") for _ in range(5)]
    assert {b.text for b in bodies} == {"hello, world\n"}
    assert {b.headers["etag"] for b in bodies} == {bodies[0].headers["etag"]}
    assert all(b.headers["content-type"] == "text/plain; charset=utf-8" for b in bodies)
    # 1st: counted; 2nd: admitted and answered from the new entry; 3rd to 5th: hits.
    assert scrape(admin)[FROM_CACHE] == 4


def test_a_change_on_disk_is_visible_within_a_second(ring3_process: Start, site: Path) -> None:
    server, _ = start(ring3_process, site)
    target = site / "hello.txt"
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{server.url}/hello.txt").text == "hello, world\n"
        target.write_text("changed content, longer than before\n")
        changed_at = time.monotonic()
        while client.get(f"{server.url}/hello.txt").text != "changed content, longer than before\n":
            assert time.monotonic() - changed_at < 1.5, "stale after 1.5 s"
            time.sleep(0.05)
        # Same size, new bytes: the mtime changes, so the entry is dropped too.
        for _ in range(3):
            client.get(f"{server.url}/hello.txt")
        target.write_text("CHANGED CONTENT, LONGER THAN BEFORE\n")
        os.utime(target, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        changed_at = time.monotonic()
        while client.get(f"{server.url}/hello.txt").text != "CHANGED CONTENT, LONGER THAN BEFORE\n":
            assert time.monotonic() - changed_at < 1.5, "stale after 1.5 s"
            time.sleep(0.05)
        target.unlink()
        changed_at = time.monotonic()
        while client.get(f"{server.url}/hello.txt").status_code != 404:
            assert time.monotonic() - changed_at < 1.5, "deleted file still served after 1.5 s"
            time.sleep(0.05)


def test_a_cached_file_swapped_for_a_symlink_out_of_the_root_is_refused(
        ring3_process: Start, site: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret outside the root\n")
    server, _ = start(ring3_process, site, "--cache-recheck", "0.2")
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{server.url}/hello.txt").status_code == 200
        (site / "hello.txt").unlink()
        (site / "hello.txt").symlink_to(outside)
        time.sleep(0.4)
        response = client.get(f"{server.url}/hello.txt")
    assert response.status_code == 403
    assert "secret" not in response.text


def test_conditional_and_range_requests_are_answered_from_the_cache(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    data = (site / "data.bin").read_bytes()
    url = f"{server.url}/data.bin"
    with httpx.Client() as client:
        first = client.get(url)
        client.get(url)  # admitted
        before = scrape(admin)[FROM_CACHE]
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert client.get(url, headers={"if-none-match": etag}).status_code == 304
        assert client.get(url, headers={"if-modified-since": modified}).status_code == 304
        assert client.get(url, headers={"if-match": '"other"'}).status_code == 412
        ranged = client.get(url, headers={"range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
        assert ranged.headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert client.get(url, headers={"range": "bytes=5000-"}).status_code == 416
        multi = client.get(url, headers={"range": "bytes=0-1,-2"})
        assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
        assert data[:2] in multi.content and data[-2:] in multi.content
        stale = client.get(url, headers={"range": "bytes=0-9", "if-range": '"stale"'})
        assert stale.status_code == 200 and stale.content == data
        head = client.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert head.content == b""
        full = client.get(url)
        assert full.content == data and full.headers["etag"] == etag
    assert scrape(admin)[FROM_CACHE] == before + 2  # the HEAD and the last GET


def test_large_files_are_kept_open_and_still_go_out_with_sendfile(ring3_process: Start, site: Path) -> None:
    big = site / "big.bin"
    big.write_bytes(os.urandom(100_000))
    server, admin = start(ring3_process, site)
    before = scrape(admin)
    with httpx.Client() as client:
        for _ in range(4):
            assert client.get(f"{server.url}/big.bin").content == big.read_bytes()
        ranged = client.get(f"{server.url}/big.bin", headers={"range": "bytes=99990-"})
        assert ranged.status_code == 206 and ranged.content == big.read_bytes()[99990:]
    after = scrape(admin)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert after[FROM_CACHE] == 3  # the 2nd request admits the file; the range is answered from it too
    assert delta('ring3_bytes_sent_total{path="zero_copy"}') == 400_000  # the 10-byte range: pread
    # Opened twice (the first request, and the second, which keeps it open); never again. Beside that,
    # its directory is listed (open, getdents x2, close) once per cache_recheck for precompressed variants.
    listings = delta('ring3_syscalls_total{kind="getdents"}') / 2
    assert 1 <= listings <= 2
    assert delta('ring3_syscalls_total{kind="open"}') == 2 + listings
    assert delta('ring3_syscalls_total{kind="readlink"}') == 2


def test_a_kept_open_file_replaced_on_disk_is_seen_within_a_second(ring3_process: Start, site: Path) -> None:
    big = site / "big.bin"
    big.write_bytes(b"a" * 50_000)
    server, _ = start(ring3_process, site)
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{server.url}/big.bin").content == b"a" * 50_000
        replacement = site / "big.bin.new"
        replacement.write_bytes(b"b" * 60_000)
        replacement.rename(big)  # a new inode, as deployments do
        changed_at = time.monotonic()
        while client.get(f"{server.url}/big.bin").content != b"b" * 60_000:
            assert time.monotonic() - changed_at < 1.5, "stale after 1.5 s"
            time.sleep(0.05)


def test_open_file_cache_can_be_turned_off(ring3_process: Start, site: Path) -> None:
    big = site / "big.bin"
    big.write_bytes(os.urandom(100_000))
    server, admin = start(ring3_process, site, "--open-files-max", "0")
    with httpx.Client() as client:
        for _ in range(4):
            assert client.get(f"{server.url}/big.bin").content == big.read_bytes()
    assert scrape(admin)[FROM_CACHE] == 0


def test_cache_can_be_turned_off(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site, "--cache-max-bytes", "0", "--open-files-max", "0")
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"{server.url}/hello.txt").status_code == 200
    assert scrape(admin)[FROM_CACHE] == 0


def test_a_pipelined_batch_is_answered_with_one_send(ring3_process: Start, site: Path) -> None:
    import socket

    from conftest import ResponseReader

    server, admin = start(ring3_process, site)
    with httpx.Client() as client:
        for _ in range(2):
            client.get(f"{server.url}/hello.txt")  # cached from now on
    batch = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" * 16
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        before = scrape(admin)
        sock.sendall(batch)
        reader = ResponseReader(sock)
        bodies = [reader.read()[2] for _ in range(16)]
        after = scrape(admin)
    assert bodies == [b"hello, world\n"] * 16
    sends = after['ring3_syscalls_total{kind="send"}'] - before['ring3_syscalls_total{kind="send"}']
    # One send for the 16 responses (without corking it would be 16), and at most one more for the
    # first scrape's own response, depending on when it was counted.
    assert 1 <= sends <= 2


def test_a_missing_file_created_later_is_served_within_a_second(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{server.url}/later.txt").status_code == 404
        opens = scrape(admin)['ring3_syscalls_total{kind="open"}']
        for _ in range(5):  # remembered as missing: no open() for a second
            assert client.get(f"{server.url}/later.txt").status_code == 404
        assert scrape(admin)['ring3_syscalls_total{kind="open"}'] == opens
        (site / "later.txt").write_text("here now\n")
        created_at = time.monotonic()
        while client.get(f"{server.url}/later.txt").status_code != 200:
            assert time.monotonic() - created_at < 1.5, "still 404 after 1.5 s"
            time.sleep(0.05)


def test_cache_budgets_evict_the_least_recently_used(ring3_process: Start, site: Path) -> None:
    """cache_max_bytes and open_files_max are crossed: old entries go, and kept-open files are closed."""
    for index in range(4):
        (site / f"small{index}.txt").write_bytes(b"%d" % index * 600)
        (site / f"large{index}.bin").write_bytes(os.urandom(40_000))
    server, admin = start(ring3_process, site, "--cache-max-bytes", "1300", "--open-files-max", "2")
    with httpx.Client() as client:
        for index in range(4):  # each admitted on its second request; only two fit each budget
            for _ in range(2):
                assert client.get(f"{server.url}/small{index}.txt").status_code == 200
                assert client.get(f"{server.url}/large{index}.bin").status_code == 200
        before = scrape(admin)[FROM_CACHE]
        for index in (2, 3):  # the most recent two of each kind are still cached
            assert client.get(f"{server.url}/small{index}.txt").content == b"%d" % index * 600
            assert client.get(f"{server.url}/large{index}.bin").status_code == 200
        assert scrape(admin)[FROM_CACHE] == before + 4
        for index in (0, 1):  # the oldest were evicted: served again from disk, not the cache
            assert client.get(f"{server.url}/small{index}.txt").content == b"%d" % index * 600
            assert client.get(f"{server.url}/large{index}.bin").status_code == 200
        assert scrape(admin)[FROM_CACHE] == before + 4
    open_fds = []
    for fd in os.listdir(f"/proc/{server.process.pid}/fd"):
        try:  # a descriptor may close between the listing and the readlink (the client's socket)
            open_fds.append(os.readlink(f"/proc/{server.process.pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    kept_open = [path for path in open_fds if path.endswith(".bin")]
    assert len(kept_open) <= 2  # evicted descriptors were closed


def test_too_many_ranges_get_the_whole_file(ring3_process: Start, site: Path) -> None:
    server, _ = start(ring3_process, site, "--max-ranges", "2")
    data = (site / "data.bin").read_bytes()
    with httpx.Client() as client:
        two = client.get(f"{server.url}/data.bin", headers={"range": "bytes=0-0,5-5"})
        three = client.get(f"{server.url}/data.bin", headers={"range": "bytes=0-0,5-5,9-9"})
    assert two.status_code == 206
    assert three.status_code == 200 and three.content == data


def test_an_empty_file_goes_out_whatever_the_sendfile_threshold(ring3_process: Start, site: Path) -> None:
    import socket

    from conftest import ResponseReader

    (site / "empty.txt").write_bytes(b"")
    server, _ = start(ring3_process, site, "--sendfile-min-size", "0", "--cache-max-bytes", "0",
                      "--open-files-max", "0")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        reader = ResponseReader(sock)
        for _ in range(3):  # on one connection: an empty body must not abort it
            sock.sendall(b"GET /empty.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body = reader.read()
            assert (status, headers[b"content-length"], body) == (200, b"0", b"")
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read()[2] == b"hello, world\n"  # by sendfile, from byte 0
    assert "response aborted" not in server.stderr()
