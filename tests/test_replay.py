"""The replay cache: a repeat of the exact bytes of one whole GET is answered without parsing or calling
the handler. These tests hold it to the answer the ordinary path gives, byte for byte (but the Date), and
to everything that may change that answer: the file on disk, the connection's last request, a byte of
difference in the request, a request split across reads or pipelined with another."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import InProcessServer, RunningServer, recv_until_closed
from ring3.events import Request, Response
from ring3.replay import Replay, ReplayCache
from test_ledger import admin_url, scrape

Start = Callable[..., RunningServer]
REPLAYED = "ring3_responses_replayed_total"
HELLO = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: replay-test\r\n\r\n"
DATE = re.compile(rb"\r\ndate: [^\r]+\r\n")


def start(ring3_process: Start, site: Path, *flags: str) -> tuple[RunningServer, str]:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", *flags)
    return server, admin_url(server)


class RawReader:
    """Whole responses as bytes (head and Content-Length body), in the order they arrive."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        sock.settimeout(5)

    def read(self, head_only: bool = False) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        end = self.buffer.index(b"\r\n\r\n") + 4
        match = re.search(rb"\r\ncontent-length: (\d+)\r\n", self.buffer[:end])
        length = 0 if head_only or match is None else int(match.group(1))
        while len(self.buffer) < end + length:
            self._fill()
        response, self.buffer = self.buffer[:end + length], self.buffer[end + length:]
        return response

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise AssertionError(f"connection closed; buffered {self.buffer[:200]!r}")
        self.buffer += chunk


def without_date(response: bytes) -> bytes:
    stripped, count = DATE.subn(b"\r\n", response)
    assert count == 1, response[:300]
    return stripped


def connect(server: RunningServer) -> tuple[socket.socket, RawReader]:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    return sock, RawReader(sock)


def ask(sock: socket.socket, reader: RawReader, request: bytes) -> bytes:
    sock.sendall(request)
    return reader.read(head_only=request.startswith(b"HEAD "))


def test_repeats_are_replayed_byte_for_byte(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, HELLO) for _ in range(6)]
    # 1st: counted towards the file cache; 2nd: from the new cache entry, remembered; 3rd to 6th: replays.
    assert scrape(admin)[REPLAYED] == 4
    assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n") and answers[0].endswith(b"\r\n\r\nhello, world\n")
    assert {without_date(answer) for answer in answers} == {without_date(answers[0])}


def test_kept_open_files_are_replayed_with_sendfile(ring3_process: Start, site: Path) -> None:
    data = os.urandom(200_000)
    (site / "big.bin").write_bytes(data)
    server, admin = start(ring3_process, site)
    request = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
    before = scrape(admin)
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, request) for _ in range(5)]
    after = scrape(admin)
    assert all(answer.endswith(b"\r\n\r\n" + data) for answer in answers)
    assert after[REPLAYED] == 3
    assert after['ring3_bytes_sent_total{path="zero_copy"}'] - before[
        'ring3_bytes_sent_total{path="zero_copy"}'] == 5 * len(data)
    # The descriptor is shared by the replays: opened for the first two requests only (and the directory
    # listed for precompressed variants, once per cache_recheck).
    def delta(kind: str) -> float:
        name = f'ring3_syscalls_total{{kind="{kind}"}}'
        return after[name] - before[name]

    listings = delta("getdents") / 2
    assert 1 <= listings <= 2
    assert delta("open") == 2 + listings


@pytest.mark.parametrize("name", ["hello.txt", "big.bin"])
def test_a_change_on_disk_ends_the_replays_within_a_second(ring3_process: Start, site: Path,
                                                           name: str) -> None:
    target = site / name
    target.write_bytes(b"a" * (50_000 if name == "big.bin" else 10))
    server, admin = start(ring3_process, site)
    request = b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % name.encode()
    sock, reader = connect(server)
    with sock:
        for _ in range(4):
            assert ask(sock, reader, request).endswith(b"\r\n\r\n" + target.read_bytes())
        assert scrape(admin)[REPLAYED] == 2
        replacement = site / (name + ".new")
        replacement.write_bytes(b"b" * (60_000 if name == "big.bin" else 20))
        replacement.rename(target)
        changed_at = time.monotonic()
        while not ask(sock, reader, request).endswith(b"\r\n\r\n" + target.read_bytes()):
            assert time.monotonic() - changed_at < 1.5, "stale after 1.5 s"
            time.sleep(0.05)
        # The new file is cached and replayed in its turn.
        replayed = scrape(admin)[REPLAYED]
        for _ in range(4):
            assert ask(sock, reader, request).endswith(b"\r\n\r\n" + target.read_bytes())
        assert scrape(admin)[REPLAYED] > replayed
        target.unlink()
        deleted_at = time.monotonic()
        while not ask(sock, reader, request).startswith(b"HTTP/1.1 404 "):
            assert time.monotonic() - deleted_at < 1.5, "deleted file still served after 1.5 s"
            time.sleep(0.05)


def test_the_last_request_of_a_connection_still_closes_it(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site, "--max-requests-per-connection", "5")
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, HELLO) for _ in range(5)]
        assert recv_until_closed(sock) == b""
    assert scrape(admin)[REPLAYED] == 2  # the 3rd and 4th; the 5th says close, so it is not a replay
    assert all(b"connection: close" not in answer for answer in answers[:4])
    assert b"\r\nconnection: close\r\n" in answers[4]
    assert without_date(answers[4]).replace(b"connection: close\r\n", b"") == without_date(answers[3])


def test_a_client_that_asks_to_close_is_answered_from_the_cache_on_each_new_connection(
        ring3_process: Start, site: Path) -> None:
    """Connection: close (HTTP/1.0 clients, a connection per request): the same bytes ask the same again,
    so the answer is remembered with its Connection: close and replayed, and the connection still
    closes after each."""
    server, admin = start(ring3_process, site)
    closing = HELLO.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    answers = []
    for _ in range(5):
        sock, reader = connect(server)
        with sock:
            answers.append(ask(sock, reader, closing))
            assert recv_until_closed(sock) == b""
    assert scrape(admin)[REPLAYED] == 3  # the file cache admits it on the second: replays from the third
    assert all(b"\r\nconnection: close\r\n" in answer for answer in answers)
    assert len({without_date(answer) for answer in answers}) == 1
    # the same request kept alive is another request: answered the ordinary way first
    sock, reader = connect(server)
    with sock:
        kept = ask(sock, reader, HELLO)
        assert b"connection: close" not in kept
    assert scrape(admin)[REPLAYED] == 3


def test_a_byte_of_difference_is_a_different_request(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    sock, reader = connect(server)
    with sock:
        for _ in range(3):
            plain = ask(sock, reader, HELLO)
        etag = re.search(rb"\r\netag: ([^\r]+)\r\n", plain)
        assert etag is not None
        head = ask(sock, reader, HELLO.replace(b"GET ", b"HEAD "))
        ranged = ask(sock, reader, HELLO.replace(b"\r\n\r\n", b"\r\nRange: bytes=0-4\r\n\r\n"))
        conditional = HELLO.replace(b"\r\n\r\n", b"\r\nIf-None-Match: %s\r\n\r\n" % etag[1])
        revalidated = ask(sock, reader, conditional)
        other_case = ask(sock, reader, HELLO.replace(b"hello.txt", b"HELLO.txt"))
        closing = ask(sock, reader, HELLO.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert recv_until_closed(sock) == b""
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert ranged.startswith(b"HTTP/1.1 206 ") and ranged.endswith(b"\r\n\r\nhello")
    assert revalidated.startswith(b"HTTP/1.1 304 ")
    assert other_case.startswith(b"HTTP/1.1 404 ")
    assert closing.startswith(b"HTTP/1.1 200 ") and b"\r\nconnection: close\r\n" in closing
    assert scrape(admin)[REPLAYED] == 1  # the third plain GET only


def test_pipelined_and_split_repeats_are_parsed_and_each_answered(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    sock, reader = connect(server)
    with sock:
        for _ in range(3):
            ask(sock, reader, HELLO)
        replayed = scrape(admin)[REPLAYED]
        pipelined = []
        for _ in range(3):  # one read with three requests, again and again: the parser's every time
            sock.sendall(HELLO * 3)
            pipelined += [reader.read() for _ in range(3)]
        sock.sendall(HELLO[:20])
        time.sleep(0.1)
        sock.sendall(HELLO[20:])  # one request over two reads: the parser's
        split = reader.read()
        assert scrape(admin)[REPLAYED] == replayed
        assert without_date(ask(sock, reader, HELLO)) == without_date(split)
        assert scrape(admin)[REPLAYED] == replayed + 1
    assert all(answer.endswith(b"\r\n\r\nhello, world\n") for answer in [*pipelined, split])


def test_http_1_0_keep_alive_is_replayed_with_its_connection_header(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    request = b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, request) for _ in range(4)]
    assert scrape(admin)[REPLAYED] == 2
    assert all(b"\r\nconnection: keep-alive\r\n" in answer for answer in answers)


def test_replays_are_logged_like_any_request(ring3_process: Start, site: Path, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", str(log))
    headers = {"user-agent": "replay-agent/1", "referer": "http://t/from"}
    with httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"{server.url}/hello.txt", headers=headers).status_code == 200
    server.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        assert '"GET /hello.txt HTTP/1.1" 200 13 "http://t/from" "replay-agent/1"' in line


def test_the_replay_cache_can_be_turned_off(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site, "--replay-cache-entries", "0")
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, HELLO) for _ in range(5)]
    assert scrape(admin)[REPLAYED] == 0
    assert {without_date(answer) for answer in answers} == {without_date(answers[0])}


def test_the_cache_is_bounded_by_entries_and_request_length() -> None:
    cache = ReplayCache(max_entries=2, max_request=64)
    request = Request(b"GET", b"/", b"/", b"", "1.1", [], b"t", True)

    def renew() -> Response | None:
        return None

    for key in (b"first", b"second", b"third"):
        cache.store(key, Replay(request, renew, b""))
    assert len(cache) == 2
    assert cache.get(b"first") is None and cache.get(b"third") is not None
    cache.store(b"x" * 65, Replay(request, renew, b""))
    assert cache.get(b"x" * 65) is None and len(cache) == 2


def test_keys_answered_with_one_response_share_its_bytes() -> None:
    cache = ReplayCache(max_entries=8, max_request=4096)
    body = b"x" * 10_000
    response = Response(200, [], b"content-type: text/plain\r\n", body)
    request = Request(b"GET", b"/", b"/", b"", "1.1", [], b"t", True)
    replays = [Replay(request, lambda: response, b"") for _ in range(3)]  # three clients' bytes
    second, next_second = b"date: one\r\n", b"date: two\r\n"
    messages = [cache.message(replay, response, second) for replay in replays]
    assert messages[0] is messages[1] is messages[2] is not None
    head, rest = messages[0].parts
    assert rest is None and head.endswith(b"\r\n\r\n" + body)  # joined once, for all three
    assert b"\r\ncontent-length: 10000\r\n" in head and b"date: one\r\n" in head
    renewed = cache.message(replays[0], response, next_second)
    assert renewed is not None and renewed is not messages[0] and b"date: two\r\n" in renewed.parts[0]
    http10 = cache.message(Replay(request, lambda: response, b"connection: keep-alive\r\n"), response,
                           next_second)
    assert http10 is not None and b"connection: keep-alive\r\n" in http10.parts[0]


def test_a_missing_file_is_replayed_as_404_until_it_appears(ring3_process: Start, site: Path) -> None:
    server, admin = start(ring3_process, site)
    request = b"GET /later.txt HTTP/1.1\r\nHost: t\r\n\r\n"
    sock, reader = connect(server)
    with sock:
        answers = [ask(sock, reader, request) for _ in range(5)]
        assert all(answer.startswith(b"HTTP/1.1 404 ") for answer in answers)
        assert {without_date(answer) for answer in answers} == {without_date(answers[0])}
        # 1st: the open fails and the path is remembered; 2nd: a remembered 404; the rest: replays.
        assert scrape(admin)[REPLAYED] == 3
        (site / "later.txt").write_text("here now\n")
        created_at = time.monotonic()
        while not ask(sock, reader, request).endswith(b"\r\n\r\nhere now\n"):
            assert time.monotonic() - created_at < 1.5, "still 404 after 1.5 s"
            time.sleep(0.05)


def test_a_replay_that_fails_falls_back_to_the_handler(in_process: Callable[..., InProcessServer]) -> None:
    from conftest import exchange
    from ring3.handlers import BodyReader

    calls = []

    def renew() -> Response | None:
        raise RuntimeError("a broken replay")

    def handler(request: Request, body: BodyReader) -> Response:
        calls.append(request.path)
        return Response(200, [], b"", b"fresh", replay=renew)

    server = in_process(handler)
    with server.connect() as sock:
        for _ in range(3):  # the 2nd and 3rd find a replay that raises: the handler answers them
            assert exchange(sock, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")[::2] == (200, b"fresh")
    assert calls == [b"/x"] * 3
