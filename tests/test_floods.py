"""Floods on loopback against a real `ring3 serve`: slowloris, idle and half-sent connections, the connection
limit, clients that never read, and connection churn.

Every loop is bounded in count and in time, every socket has a timeout (or is non-blocking behind a selector
with a deadline), and the server's own file descriptors (/proc/PID/fd) are the measure of what it holds.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import ResponseReader, RunningServer
from hostile.wire import (
    HELLO,
    HELLO_BODY,
    LOOPBACK,
    connect,
    fetch_hello,
    open_fds,
    read_until_eof,
    wait_until,
)
from ring3.events import Request, RequestRejected
from ring3.http1.parser import H1Parser

Start = Callable[..., RunningServer]
FD_SLACK = 2  # what a server may legitimately keep open after a flood (nothing, in practice)


def start(ring3_process: Start, site: Path, *flags: str) -> RunningServer:
    return ring3_process(str(site), "--listen", f"{LOOPBACK}:0", "--access-log", "off", *flags)


def raise_fd_limit(needed: int) -> None:
    """Let this process (and the servers it starts afterwards) hold `needed` descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == resource.RLIM_INFINITY or soft >= needed, f"RLIMIT_NOFILE {soft} < {needed}"


def settled_fds(pid: int) -> int:
    """The server's descriptor count once it has stopped changing (after a warm-up request)."""
    previous = -1
    for _ in range(50):
        count = open_fds(pid)
        if count == previous:
            return count
        previous = count
        time.sleep(0.05)
    return previous


@contextmanager
def many_connections(port: int, count: int, timeout: float = 10.0) -> Iterator[list[socket.socket]]:
    """`count` non-blocking connections, all established within `timeout`; closed on exit."""
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            socks.append(sock)
            code = sock.connect_ex((LOOPBACK, port))
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code, code)
            selector.register(sock, selectors.EVENT_WRITE)
        pending = len(socks)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, f"{pending} of {count} connections not established in {timeout} s"
            for key, _ in selector.select(min(left, 0.5)):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                assert ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                selector.unregister(ready)
                pending -= 1
        yield socks
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def heard_from(socks: list[socket.socket]) -> list[socket.socket]:
    """The non-blocking sockets on which the server sent something or closed, right now."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        return [key.fileobj for key, _ in selector.select(0) if isinstance(key.fileobj, socket.socket)]


# -- slowloris --------------------------------------------------------------------------------------------

DRIP = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Drip: "
DRIPPERS = 1000
DRIP_SECONDS = 4


def test_a_thousand_dripping_connections_do_not_starve_a_normal_client(ring3_process: Start,
                                                                         site: Path) -> None:
    raise_fd_limit(DRIPPERS * 2 + 512)
    # The header timeout is longer than the test: the drippers are legitimate until then, and held.
    server = start(ring3_process, site, "--max-connections", str(DRIPPERS * 2), "--header-timeout", "60")
    pid = server.process.pid
    fetch_hello(server.port)
    baseline = settled_fds(pid)
    latencies: list[float] = []
    with many_connections(server.port, DRIPPERS) as drippers:
        started = time.monotonic()
        for second in range(DRIP_SECONDS):
            for sock in drippers:  # one header byte per connection per second
                assert sock.send(DRIP[second:second + 1]) == 1
            time.sleep(0.3)  # in the middle of the drip second: a normal client comes along
            status, body, took = fetch_hello(server.port, timeout=5.0)
            assert (status, body) == (200, HELLO_BODY)
            latencies.append(took)
            pause = started + second + 1 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        # The server really held every dripper (nothing refused, nothing answered, nothing closed).
        assert open_fds(pid) >= baseline + DRIPPERS
        assert heard_from(drippers) == []
    assert max(latencies) < 1.0, latencies
    assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=10)
    assert server.process.poll() is None


# -- timeouts on many connections at once -----------------------------------------------------------------


def test_idle_and_half_sent_connections_are_closed_at_their_timeouts(ring3_process: Start,
                                                                      site: Path) -> None:
    timeout = 0.5
    server = start(ring3_process, site, "--header-timeout", str(timeout), "--keepalive-timeout", str(timeout),
                   "--body-timeout", str(timeout))
    pid = server.process.pid
    fetch_hello(server.port)
    baseline = settled_fds(pid)
    # (socket, group, when its timeout clock started on our side)
    watched: list[tuple[socket.socket, str, float]] = []
    try:
        for _ in range(100):  # nothing sent at all
            watched.append((connect(server.port), "idle", time.monotonic()))
        for _ in range(100):  # half a head, never finished
            sock = connect(server.port)
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n")
            watched.append((sock, "half-head", time.monotonic()))
        # The server's clock for these starts when it has read the request: after our send, and before
        # our read of its answer returns (which a busy machine may delay by a tenth of a second).
        for _ in range(100):  # served, then idle on keep-alive
            sock = connect(server.port)
            sent = time.monotonic()
            sock.sendall(HELLO)
            assert ResponseReader(sock).read()[0] == 200
            watched.append((sock, "keep-alive", sent))
        for _ in range(50):  # a body that stops arriving (the static handler answers 405 first)
            sock = connect(server.port)
            sent = time.monotonic()
            sock.sendall(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
            assert ResponseReader(sock).read()[0] == 405
            watched.append((sock, "half-body", sent))
        closed_after: dict[str, list[float]] = {}
        for sock, group, since in watched:
            rest, closed = read_until_eof(sock, timeout=max(0.1, since + timeout + 3.0 - time.monotonic()))
            assert closed, f"{group} connection still open"
            closed_after.setdefault(group, []).append(time.monotonic() - since)
            if group == "half-head":
                assert rest.startswith(b"HTTP/1.1 408 "), rest[:100]
            else:
                assert rest == b"", (group, rest[:100])
    finally:
        for sock, _, _ in watched:
            sock.close()
    for group, delays in closed_after.items():
        # Not before the timeout (less a little for the two clocks), not long after it.
        assert min(delays) >= timeout - 0.05, (group, min(delays))
        assert max(delays) < timeout + 2.5, (group, max(delays))
    assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=5)


# -- the connection limit ---------------------------------------------------------------------------------


def test_max_connections_pauses_accepting_and_recovers(ring3_process: Start, site: Path) -> None:
    limit, extra = 50, 10
    server = start(ring3_process, site, "--max-connections", str(limit))
    pid = server.process.pid
    fetch_hello(server.port)
    baseline = settled_fds(pid)
    held = [connect(server.port) for _ in range(limit)]
    waiting: list[socket.socket] = []
    try:
        for sock in held:  # each one accepted and served
            sock.sendall(HELLO)
            assert ResponseReader(sock).read()[0] == 200
        for _ in range(extra):  # the kernel completes these handshakes; ring3 must not accept them
            sock = connect(server.port)
            sock.sendall(HELLO)
            waiting.append(sock)
        time.sleep(0.7)
        assert heard_from(waiting) == [], "answered over the connection limit"
        assert open_fds(pid) <= baseline + limit + FD_SLACK
        assert server.process.poll() is None
        for sock in held[:extra]:  # room for exactly the waiting ones
            sock.close()
        for sock in waiting:
            status, _, body = ResponseReader(sock, timeout=5.0).read()
            assert (status, body) == (200, HELLO_BODY)
    finally:
        for sock in held + waiting:
            sock.close()
    assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=5)
    assert fetch_hello(server.port)[:2] == (200, HELLO_BODY)


def test_the_open_files_limit_is_raised_to_reach_max_connections(ring3_process: Start, site: Path) -> None:
    connections = 1200
    raise_fd_limit(connections + 100)  # this process's own clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # what ring3 inherits: far too few
    try:
        server = start(ring3_process, site, "--max-connections", "2000", "--open-files-max", "100")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = (Path("/proc") / str(server.process.pid) / "limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert int(line.split()[3]) == min(2000 + 100 + 64, hard), line
    held: list[socket.socket] = []
    try:
        for _ in range(connections):  # each served, and still open: 1200 descriptors in ring3
            sock = connect(server.port)
            held.append(sock)
            sock.sendall(HELLO)
            assert ResponseReader(sock).read()[:3:2] == (200, HELLO_BODY)
    finally:
        for sock in held:
            sock.close()


# -- clients that never read ------------------------------------------------------------------------------


def test_clients_that_never_read_are_dropped_at_the_send_timeout(ring3_process: Start, site: Path) -> None:
    size = 64 * 1024 * 1024  # far more than the kernel buffers on both sides can hold
    with (site / "big.bin").open("wb") as big:
        big.truncate(size)  # sparse: costs no disk
    send_timeout = 0.5
    server = start(ring3_process, site, "--send-timeout", str(send_timeout))
    pid = server.process.pid
    fetch_hello(server.port)
    baseline = settled_fds(pid)
    stalled: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5.0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((LOOPBACK, server.port))
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            stalled.append(sock)
        requested = time.monotonic()
        # Meanwhile the server is not stuck on them.
        status, body, took = fetch_hello(server.port)
        assert (status, body) == (200, HELLO_BODY) and took < 1.0
        assert open_fds(pid) >= baseline + len(stalled)
        assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=send_timeout + 5)
        dropped_after = time.monotonic() - requested
        assert dropped_after >= send_timeout - 0.05
        for sock in stalled:  # the client sees a cut-off response, then the close
            received, closed = read_until_eof(sock, timeout=10)
            assert closed
            assert received.startswith(b"HTTP/1.1 200 ")
            assert len(received) < size
    finally:
        for sock in stalled:
            sock.close()
    assert server.process.poll() is None


# -- pipelining floods ------------------------------------------------------------------------------------

PIPELINED = 20_000


def test_a_long_pipeline_read_in_large_pieces_is_not_one_long_head() -> None:
    """Reads of a pipeline start and end in the middle of heads; the complete requests in a read are not
    part of the head still open at its end."""
    data = HELLO * 2000
    for size in (65536, 20000, 4096):
        parser = H1Parser()
        events = [e for i in range(0, len(data), size) for e in parser.receive_data(data[i:i + size])]
        rejected = [e for e in events if isinstance(e, RequestRejected)]
        assert rejected == [], (size, rejected)
        assert sum(isinstance(e, Request) for e in events) == 2000, size


def test_twenty_thousand_pipelined_requests_are_all_answered(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site, "--max-requests-per-connection", str(PIPELINED))
    with connect(server.port) as sock:
        writer_error: list[BaseException] = []

        def write() -> None:
            try:
                sock.sendall(HELLO * PIPELINED)  # 740 KB of requests while the answers are read
            except OSError as exc:
                writer_error.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        reader = ResponseReader(sock, timeout=5.0)
        answered = 0
        try:
            for answered in range(1, PIPELINED + 1):
                status, headers, body = reader.read()
                assert (status, body) == (200, HELLO_BODY)
                assert headers.get(b"connection") != b"close" or answered == PIPELINED, (
                    f"Connection: close on answer {answered} of {PIPELINED}")
        finally:
            sock.shutdown(socket.SHUT_RDWR)
            writer.join(10)
    assert answered == PIPELINED and not writer_error, (answered, writer_error)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_pipelining_client_that_never_reads_costs_bounded_memory(ring3_process: Start,
                                                                   site: Path) -> None:
    send_timeout = 0.5
    # No per-connection request cap: the connection must end because its answers are not taken.
    server = start(ring3_process, site, "--send-timeout", str(send_timeout),
                   "--max-requests-per-connection", "100000000")
    pid = server.process.pid
    fetch_hello(server.port)
    baseline, rss_before = settled_fds(pid), rss_kib(pid)
    flood = HELLO * 2000  # 70 KB of requests per write, answers never read
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5.0)
    sock.connect((LOOPBACK, server.port))
    sock.setblocking(False)
    sent, dropped, latencies = 0, False, []
    started = time.monotonic()
    try:
        while time.monotonic() - started < 3.0 and not dropped:
            try:
                sent += sock.send(flood)
            except BlockingIOError:  # ring3 stopped reading: its answers are not being taken
                time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
            if len(latencies) < 3 and time.monotonic() - started > 0.2 * (len(latencies) + 1):
                status, _, took = fetch_hello(server.port)
                assert status == 200
                latencies.append(took)
        assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=send_timeout + 5), (
            f"the flooding connection was not dropped ({sent} bytes sent)")
    finally:
        sock.close()
    assert latencies and max(latencies) < 1.0, latencies
    # Reading paused while its answers piled up: it took no more than the socket buffers hold, and
    # memory stayed flat.
    assert 0 < sent < 64 * 1024 * 1024, sent
    assert rss_kib(pid) - rss_before < 32 * 1024, (rss_before, rss_kib(pid))
    assert fetch_hello(server.port)[:2] == (200, HELLO_BODY)


# -- churn ------------------------------------------------------------------------------------------------

CHURN = 10_000


def test_ten_thousand_connects_and_disconnects_leak_no_descriptor(ring3_process: Start, site: Path) -> None:
    server = start(ring3_process, site)
    pid = server.process.pid
    fetch_hello(server.port)
    baseline = settled_fds(pid)
    errors_before = len(server.stderr())
    address = (LOOPBACK, server.port)
    reset = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
    started = time.monotonic()
    for number in range(CHURN):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            kind = number % 4
            if kind == 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            sock.connect(address)
            if kind == 1:
                sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHo")  # half a head
            elif kind == 3:
                sock.sendall(HELLO)  # a whole request whose answer nobody reads
        finally:
            sock.close()
        assert time.monotonic() - started < 40, f"only {number} connections in 40 s"
    assert wait_until(lambda: open_fds(pid) <= baseline + FD_SLACK, timeout=10), (
        f"server holds {open_fds(pid)} descriptors, {baseline} before the churn")
    assert server.process.poll() is None
    assert fetch_hello(server.port)[:2] == (200, HELLO_BODY)
    assert "Traceback" not in server.stderr()[errors_before:]
