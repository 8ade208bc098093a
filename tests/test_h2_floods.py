"""HTTP/2 attacks of recent years against a real ring3 process on loopback, each while a normal client
keeps fetching a page on its own connection.

Each attack runs for at most ATTACK_SECONDS (and a bounded number of frames). The attacker must be cut
off with GOAWAY and the error code its attack earns; the normal client must keep getting its page (its
slowest fetch is reported, and bounded far above what starvation would not cross: a timing never decides
these tests); ring3's memory must stay bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from conftest import RunningServer, start_ring3
from h2_kit import H2Client
from ring3.http2 import frames as f

ATTACK_SECONDS = 2.0
STARVED = 1.0  # a fetch slower than this means the attacker starved the normal client
MEMORY_BOUND_KIB = 64 * 1024
GET = [(":method", "GET"), (":scheme", "http"), (":path", "/index.html"), (":authority", "localhost")]
POST = [(":method", "POST"), (":scheme", "http"), (":path", "/index.html"), (":authority", "localhost")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_bytes(b"<p>" + b"x" * 2000 + b"</p>\n")
    (root / "big.bin").write_bytes(b"y" * (4 * 1024 * 1024))
    process = start_ring3([str(root), "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--send-timeout", "1"], root)
    yield process
    process.stop()


def rss_kib(server: RunningServer) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Attacker:
    """A raw HTTP/2 connection that sends what it is told and watches for the server's GOAWAY."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f.PREFACE + SettingsFrame(0, settings or {}).serialize())
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.goaway: int | None = None
        self.resets: dict[int, int] = {}
        self.statuses: dict[int, str] = {}  # each stream's :status
        self.bodies: dict[int, bytes] = {}
        self._decoder = hpack.Decoder()
        self.closed = False

    def headers(self, stream_id: int, fields: list[tuple[str, str]], flags: tuple[str, ...]) -> bytes:
        return HeadersFrame(stream_id, self.encoder.encode(fields), flags=list(flags)).serialize()

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
        self.read(0.0)
        return not self.closed

    def read(self, timeout: float) -> None:
        self.sock.settimeout(timeout if timeout > 0 else 0.0001)
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    self.closed = True
                    break
                self.buffer += data
        except (TimeoutError, BlockingIOError):
            pass
        except OSError:
            self.closed = True
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
            if isinstance(frame, GoAwayFrame):
                self.goaway = int(frame.error_code)
            elif isinstance(frame, RstStreamFrame):
                self.resets.setdefault(frame.stream_id, int(frame.error_code))  # the first one counts
            elif isinstance(frame, HeadersFrame):  # ring3 never splits a small block
                fields = dict(self._decoder.decode(frame.data))
                self.statuses.setdefault(frame.stream_id, str(fields[":status"]))
            elif isinstance(frame, DataFrame):
                self.bodies[frame.stream_id] = self.bodies.get(frame.stream_id, b"") + frame.data

    def wait_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.read(0.2)

    def close(self) -> None:
        self.sock.close()


class NormalClient(threading.Thread):
    """Fetches /index.html over its own HTTP/2 connection until stopped, timing every fetch."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with H2Client(self.port) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                answer = client.get("/index.html")
                self.latencies.append(time.monotonic() - start)
                if answer.headers.get(":status") != "200" or len(answer.body) != 2008:
                    self.failures.append(f"{answer.headers.get(':status')} {len(answer.body)}")
                time.sleep(0.005)


Attack = Callable[[Attacker], None]


def under_attack(server: RunningServer, attack: Attack, settings: dict[int, int] | None = None) -> Attacker:
    """Run `attack` while a normal client fetches; check the normal client and the memory."""
    before = rss_kib(server)
    normal = NormalClient(server.port)
    normal.start()
    attacker = Attacker(server.port, settings)
    try:
        attack(attacker)
        attacker.wait_closed()
    finally:
        attacker.close()
        time.sleep(0.1)
        normal.stop.set()
        normal.join(10)
    assert not normal.failures, normal.failures
    assert normal.latencies, "the normal client got nothing"
    worst = max(normal.latencies)
    print(f"normal client: {len(normal.latencies)} fetches, worst {worst * 1000:.1f} ms; "
          f"RSS {before} -> {rss_kib(server)} KiB")
    assert worst < STARVED, f"the normal client waited {worst:.2f} s"
    assert rss_kib(server) - before < MEMORY_BOUND_KIB
    return attacker


def repeat(attacker: Attacker, make: Callable[[int], bytes], batch: int = 50, limit: int = 200_000) -> None:
    """Send `make(i)` in batches until the server closes, ATTACK_SECONDS pass or `limit` frames went."""
    deadline = time.monotonic() + ATTACK_SECONDS
    sent = 0
    while sent < limit and time.monotonic() < deadline:
        if not attacker.send(b"".join(make(sent + i) for i in range(batch))):
            return
        sent += batch


def test_rapid_reset_cve_2023_44487(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        repeat(a, lambda i: a.headers(2 * i + 1, GET, ("END_HEADERS", "END_STREAM"))
               + RstStreamFrame(2 * i + 1, f.CANCEL).serialize())
    assert under_attack(server, attack).goaway == f.ENHANCE_YOUR_CALM


def test_continuation_flood(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(HeadersFrame(1, a.encoder.encode(GET)).serialize())
        repeat(a, lambda i: ContinuationFrame(1, b"\x40\x01a\x01b" * 200).serialize(), batch=10)
    assert under_attack(server, attack).goaway == f.ENHANCE_YOUR_CALM


def test_empty_continuation_flood(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(HeadersFrame(1, a.encoder.encode(GET)).serialize())
        repeat(a, lambda i: ContinuationFrame(1, b"").serialize())
    assert under_attack(server, attack).goaway == f.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("make", [
    lambda i: PingFrame(0, b"%08d" % (i % 10 ** 8)).serialize(),
    lambda i: SettingsFrame(0, {f.SETTINGS_MAX_CONCURRENT_STREAMS: 100}).serialize(),
    lambda i: PriorityFrame(1 + 2 * (i % 1000), depends_on=0, stream_weight=16).serialize(),
    lambda i: WindowUpdateFrame(0, 1).serialize(),
], ids=["PING", "SETTINGS", "PRIORITY", "WINDOW_UPDATE"])
def test_control_frame_floods(server: RunningServer, make: Callable[[int], bytes]) -> None:
    def attack(a: Attacker) -> None:
        repeat(a, make)
    assert under_attack(server, attack).goaway == f.ENHANCE_YOUR_CALM


def test_empty_data_flood(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(a.headers(1, POST, ("END_HEADERS",)))
        repeat(a, lambda i: DataFrame(1, b"").serialize())
    assert under_attack(server, attack).goaway == f.ENHANCE_YOUR_CALM


def test_window_update_past_2_31_minus_1(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(WindowUpdateFrame(0, f.MAX_WINDOW).serialize())
    assert under_attack(server, attack).goaway == f.FLOW_CONTROL_ERROR


@pytest.mark.parametrize("block, why", [
    (b"\x3f\xe1\xff\x03", "a dynamic table size update above SETTINGS_HEADER_TABLE_SIZE"),
    (b"\x82\x20", "a dynamic table size update after a field"),
    (b"\xff\x80\x01", "an index past the table"),
])
def test_hpack_misuse_is_a_compression_error(server: RunningServer, block: bytes, why: str) -> None:
    def attack(a: Attacker) -> None:
        a.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, block))
    assert under_attack(server, attack).goaway == f.COMPRESSION_ERROR, why


def test_an_hpack_bomb_gets_431_and_the_connection_serves_on(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(a.headers(1, [*GET, ("x-bomb", "v" * 4000)], ("END_HEADERS", "END_STREAM")))
        # 1,000 one-byte references to that 4 KB entry: 4 MB decoded from 1 KB sent.
        a.send(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 3,
                       a.encoder.encode(GET) + b"\xbe" * 1000))
        a.read(1.0)
        a.send(a.headers(5, GET, ("END_HEADERS", "END_STREAM")))
        a.read(1.0)
        a.closed = True  # done: the connection is still open, which is the point
    attacker = under_attack(server, attack)
    assert attacker.goaway is None
    assert attacker.statuses == {1: "200", 3: "431", 5: "200"}


def test_more_streams_than_allowed_are_refused(server: RunningServer) -> None:
    def attack(a: Attacker) -> None:  # no credit: no answer can end, so every stream stays open
        a.send(b"".join(a.headers(2 * i + 1, GET, ("END_HEADERS", "END_STREAM")) for i in range(130)))
        a.read(0.5)
        a.closed = True
    attacker = under_attack(server, attack, {f.SETTINGS_INITIAL_WINDOW_SIZE: 0})
    assert attacker.resets == {257: f.REFUSED_STREAM, 259: f.REFUSED_STREAM}


def test_a_reader_holding_many_streams_without_credit_is_closed_by_send_timeout(
        server: RunningServer) -> None:
    def attack(a: Attacker) -> None:
        a.send(b"".join(a.headers(2 * i + 1, [*GET[:2], (":path", "/big.bin"), GET[3]],
                                  ("END_HEADERS", "END_STREAM")) for i in range(100)))
        start = time.monotonic()
        a.wait_closed(10)
        assert a.closed and time.monotonic() - start < 5  # --send-timeout 1
    under_attack(server, attack, {f.SETTINGS_INITIAL_WINDOW_SIZE: 0})


@pytest.mark.parametrize("field", [("transfer-encoding", "chunked"), ("connection", "keep-alive"),
                                   ("te", "gzip"), ("upgrade", "h2c"), ("Host", "other")])
def test_smuggling_shaped_requests_are_stream_errors(server: RunningServer, field: tuple[str, str]) -> None:
    def attack(a: Attacker) -> None:
        a.send(a.headers(1, [*POST, field, ("content-length", "5")], ("END_HEADERS",)))
        a.send(DataFrame(1, b"GET /", flags=["END_STREAM"]).serialize())
        a.read(0.5)
        a.closed = True
    attacker = under_attack(server, attack)
    assert attacker.resets == {1: f.PROTOCOL_ERROR}
    assert attacker.goaway is None


def test_a_stalled_request_body_gets_408_and_frees_its_stream(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    while (await receive()).get('more_body'):\n"
        "        pass\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'read'})\n")
    process = start_ring3(["--app", "app:app", "--app-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                           "--access-log", "off", "--lifespan", "off", "--body-timeout", "0.5"], tmp_path)
    try:
        attacker = Attacker(process.port, {f.SETTINGS_MAX_CONCURRENT_STREAMS: 100})
        attacker.send(attacker.headers(1, [*POST, ("content-length", "10")], ("END_HEADERS",)))
        attacker.send(DataFrame(1, b"12345").serialize())  # half of it, then nothing
        start = time.monotonic()
        deadline = start + 5
        while 1 not in attacker.resets and time.monotonic() < deadline:
            attacker.read(0.2)
        assert attacker.statuses.get(1) == "408"
        assert attacker.resets.get(1) == f.NO_ERROR  # after the 408: the stream is given up
        assert 0.4 < time.monotonic() - start < 3
        attacker.send(attacker.headers(3, [*POST, ("content-length", "2")], ("END_HEADERS",)))
        attacker.send(DataFrame(3, b"ok", flags=["END_STREAM"]).serialize())
        attacker.read(1.0)
        assert attacker.goaway is None and attacker.bodies.get(3) == b"read"  # the connection serves on
        attacker.close()
    finally:
        process.stop()
