"""The master and its workers, over real sockets: reload under load, TLS sessions shared by workers,
the binary upgrade (USR2), a lifespan per worker, WebSockets told 1001 on a reload, a reload that fails
because the application does, and what HUP does without a master."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from conftest import RunningServer, start_ring3
from test_ledger import admin_url, scrape
from tls_kit import Certs, tls_connect, tls_flags

Start = Callable[..., RunningServer]
LARGE = 24 * 1024 * 1024


def generation(admin: str) -> int:
    return int(scrape(admin)["ring3_generation"])


def reload_and_wait(server: RunningServer, admin: str, timeout: float = 30.0) -> int:
    """HUP the master and wait for the next generation to serve (its old workers then drain)."""
    before = generation(admin)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = generation(admin)
        if now > before:
            return now
        time.sleep(0.05)
    raise AssertionError(f"no reload within {timeout}s: {server.stderr()[-2000:]}")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


# -- load -----------------------------------------------------------------------------------------

@dataclass
class Tally:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    reuse_retries: int = 0  # a kept-alive connection closed by a draining worker as the request went out


REQUEST = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
ANSWER_END = b"hello, world\n"


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(ANSWER_END):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def keep_alive_load(port: int, stop: threading.Event, tally: Tally, limit: float = 90.0) -> None:
    """Requests on one kept-alive connection after another. A request that meets a connection the server
    closed (idle, as a worker drains) before any byte of an answer is sent again on a new connection, as
    every HTTP client does; anything else is a failure."""
    deadline = time.monotonic() + limit
    sock: socket.socket | None = None
    while not stop.is_set() and time.monotonic() < deadline:
        fresh = sock is None
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(REQUEST)
            data = _answer(sock)
        except OSError as exc:
            data, error = b"", repr(exc)
        else:
            error = "closed before an answer"
        if data.startswith(b"HTTP/1.1 200 ") and data.endswith(ANSWER_END):
            tally.ok += 1
            if b"connection: close" in data.lower() and sock is not None:
                sock.close()
                sock = None
            continue
        if sock is not None:
            sock.close()
            sock = None
        if not fresh and not data:
            tally.reuse_retries += 1
            continue
        tally.failures.append(f"keep-alive: {error} {data[:60]!r}")
    if sock is not None:
        sock.close()


def new_connection_load(port: int, stop: threading.Event, tally: Tally, limit: float = 90.0) -> None:
    """A new connection for every request: a refused or reset one is a failure."""
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(REQUEST)
                data = _answer(sock)
        except OSError as exc:
            tally.failures.append(f"new connection: {exc!r}")
            continue
        if data.startswith(b"HTTP/1.1 200 ") and data.endswith(ANSWER_END):
            tally.ok += 1
        else:
            tally.failures.append(f"new connection: {data[:60]!r}")


def slow_download(port: int, results: list[int], seconds: float = 4.0) -> None:
    """A large file read slowly, so that it spans several reloads."""
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /large.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        pause = seconds / (LARGE / (256 * 1024))
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(pause)
    results.append(got)


def test_ten_reloads_under_load_lose_nothing(ring3_process: Start, site: Path) -> None:
    """HUP ten times while keep-alive and new-connection clients run and large files go out slowly: no
    request fails, no connection is refused, every download completes."""
    (site / "large.bin").write_bytes(os.urandom(LARGE))
    server = ring3_process(str(site), "--workers", "2", "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", "--shutdown-grace", "30")
    admin = admin_url(server)
    whole = len(_head_of_large(server)) + LARGE
    stop, tally, downloads = threading.Event(), Tally(), list[int]()
    threads = [threading.Thread(target=keep_alive_load, args=(server.port, stop, tally)),
               threading.Thread(target=new_connection_load, args=(server.port, stop, tally))]
    threads += [threading.Thread(target=slow_download, args=(server.port, downloads)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(10):
            reload_and_wait(server, admin)
    finally:
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not tally.failures, tally.failures[:5]
    # A draining worker waits a moment for the next request of a kept-alive connection and answers it
    # with close: no request meets a connection closed under it.
    assert tally.reuse_retries == 0
    assert tally.ok > 100
    assert downloads == [whole] * 3, (downloads, whole)
    metrics = scrape(admin)
    assert metrics["ring3_generation"] == 11
    assert metrics['ring3_reloads_total{result="done"}'] == 10
    assert metrics['ring3_workers{state="ready"}'] == 2
    # The old workers' counters stay in the sums once they are gone.
    assert metrics['ring3_requests_total{status="200"}'] >= tally.ok
    assert server.stop() == 0


def _head_of_large(server: RunningServer) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"HEAD /large.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


# -- TLS sessions ---------------------------------------------------------------------------------

def test_tls_sessions_resume_on_any_worker(certs: Certs, site: Path, ring3_process: Start) -> None:
    """The master hands every worker the same ticket keys: a session one worker issued resumes on the
    other."""
    server = ring3_process(str(site), "--workers", "2", "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0", *tls_flags(certs))
    admin = admin_url(server)
    context = certs.client_context(minimum_version=ssl.TLSVersion.TLSv1_3)
    with tls_connect(server.port, context) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _answer(sock).endswith(ANSWER_END)  # TLS 1.3 tickets arrive after the handshake
        session = sock.session
    reused: list[bool] = []
    lock = threading.Lock()

    def resume() -> None:
        with tls_connect(server.port, context, session=session) as sock:
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _answer(sock).endswith(ANSWER_END)
            with lock:
                reused.append(sock.session_reused)
            time.sleep(0.2)  # held open, so that the other worker takes the next connections

    for _ in range(5):
        batch = [threading.Thread(target=resume) for _ in range(4)]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join(30)
        accepted = [v for k, v in scrape(admin).items() if k.startswith("ring3_worker_connections_accepted")
                    and "master" not in k]
        if len(accepted) == 2 and min(accepted) > 0:
            break
    assert len(accepted) == 2 and min(accepted) > 0, accepted  # both workers took connections
    assert reused and all(reused), reused
    assert scrape(admin)['ring3_tls_handshakes_total{kind="resumed"}'] == len(reused)


# -- the binary upgrade ---------------------------------------------------------------------------

def test_usr2_starts_a_new_master_on_the_same_sockets(site: Path, tmp_path: Path) -> None:
    """USR2: a new master starts from the program on disk with the old one's listening sockets; once its
    workers are ready the old master stops (status 0); requests made all along succeed."""
    server = start_ring3([str(site), "--workers", "2", "--listen", "127.0.0.1:0", "--access-log", "off",
                          "--admin", "127.0.0.1:0"], tmp_path)
    admin = admin_url(server)
    old_workers = children(server.process.pid)
    stop, tally = threading.Event(), Tally()
    load = threading.Thread(target=new_connection_load, args=(server.port, stop, tally))
    load.start()
    new_master = None
    try:
        server.process.send_signal(signal.SIGUSR2)
        assert server.process.wait(30) == 0
        assert httpx.get(admin + "/readyz", timeout=5).text == "ready\n"  # the new master's, same socket
        time.sleep(0.5)
    finally:
        stop.set()
        load.join(30)
    try:
        new_master = next((pid for pid in _ring3_pids() if pid != server.process.pid
                           and pid not in old_workers and children(pid)), None)
        assert new_master is not None, _ring3_pids()
        assert not tally.failures, tally.failures[:5]
        assert tally.ok > 20
        assert httpx.get(f"{server.url}/hello.txt", timeout=5).text == "hello, world\n"
        assert not (old_workers & set(_ring3_pids()))  # the old workers are gone
        assert "upgraded: the new master serves" in server.stderr()
    finally:
        if new_master is not None:
            os.kill(new_master, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and Path(f"/proc/{new_master}").exists():
                time.sleep(0.1)
        server.stop()


def _ring3_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"-m\0ring3\0serve" in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


# -- applications under workers -------------------------------------------------------------------

APP = '''
import os

LOG = os.environ["RING3_TEST_LOG"]
if os.path.exists(os.environ["RING3_TEST_FAIL"]):
    raise RuntimeError("this version of the application is broken")


def note(text):
    with open(LOG, "a") as log:
        log.write(f"{text} {os.getpid()}\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                note("start")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                note("stop")
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    else:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
'''


@pytest.fixture
def app_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               ring3_process: Start) -> Callable[..., tuple[RunningServer, Path, Path]]:
    def start(*flags: str) -> tuple[RunningServer, Path, Path]:
        (tmp_path / "workers_app.py").write_text(APP)
        log, fail = tmp_path / "lifespan.log", tmp_path / "broken"
        monkeypatch.setenv("RING3_TEST_LOG", str(log))
        monkeypatch.setenv("RING3_TEST_FAIL", str(fail))
        server = ring3_process("--app", "workers_app:app", "--app-dir", str(tmp_path), "--listen",
                               "127.0.0.1:0", "--access-log", "off", "--admin", "127.0.0.1:0", *flags)
        return server, log, fail
    return start


def _lines(log: Path, word: str) -> set[int]:
    return {int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(word)}


def test_each_worker_runs_the_lifespan_of_its_own(app_server: Callable[..., tuple[RunningServer, Path, Path]]
                                                  ) -> None:
    server, log, _ = app_server("--workers", "2")
    workers = children(server.process.pid)
    assert len(workers) == 2
    assert _lines(log, "start") == workers  # not the master: it never imports the application
    answered = {int(httpx.get(server.url, timeout=5).text) for _ in range(5)}
    assert answered <= workers
    assert server.stop() == 0
    assert _lines(log, "stop") == workers


def test_a_reload_tells_websockets_1001_and_restarts_the_application(
        app_server: Callable[..., tuple[RunningServer, Path, Path]]) -> None:
    server, log, _ = app_server("--master")  # one worker, with a master: reload needs one
    admin = admin_url(server)
    first = children(server.process.pid)
    with ws_connect(server.url.replace("http", "ws") + "/ws", open_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        reload_and_wait(server, admin)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
    second = children(server.process.pid) - first
    deadline = time.monotonic() + 10
    while children(server.process.pid) & first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not children(server.process.pid) & first  # the old worker is gone
    assert int(httpx.get(server.url, timeout=5).text) in second
    assert _lines(log, "start") == first | second and _lines(log, "stop") == first


def test_a_reload_whose_application_fails_leaves_the_old_workers_serving(
        app_server: Callable[..., tuple[RunningServer, Path, Path]]) -> None:
    server, _, broken = app_server("--workers", "2")
    admin = admin_url(server)
    workers = children(server.process.pid)
    broken.write_text("")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while scrape(admin)['ring3_reloads_total{result="failed"}'] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    metrics = scrape(admin)
    assert metrics['ring3_reloads_total{result="failed"}'] == 1
    assert metrics["ring3_generation"] == 1
    assert children(server.process.pid) == workers
    assert int(httpx.get(server.url, timeout=5).text) in workers
    assert "reload failed; the old workers serve on" in server.stderr()
    assert "this version of the application is broken" in server.stderr()
    broken.unlink()
    reload_and_wait(server, admin)  # mended, the next reload goes through
    assert server.stop() == 0


def test_without_a_master_hup_is_logged_and_changes_nothing(site: Path, ring3_process: Start) -> None:
    server = ring3_process(str(site), "--listen", "127.0.0.1:0", "--access-log", "off")
    server.process.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/hello.txt", timeout=5).text == "hello, world\n"
    assert server.process.poll() is None
    assert "reloading needs the master process" in server.stderr()
    assert server.stop() == 0


def test_readyz_says_starting_until_the_application_is_up(tmp_path: Path, site: Path,
                                                          ring3_process: Start) -> None:
    """Alone, the admin listener opens before the lifespan startup: /healthz is 200 at once, /readyz 503
    until the listeners accept."""
    (tmp_path / "slow_app.py").write_text('''
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.sleep(1.5)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
''')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin = f"127.0.0.1:{probe.getsockname()[1]}"
    process = subprocess.Popen([sys.executable, "-m", "ring3", "serve", "--app", "slow_app:app", "--app-dir",
                                str(tmp_path), "--listen", "127.0.0.1:0", "--admin", admin],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        states = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not states or states[-1] != 200):
            try:
                ready = httpx.get(f"http://{admin}/readyz", timeout=2)
                alive = httpx.get(f"http://{admin}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            assert alive.status_code == 200
            states.append(ready.status_code)
            time.sleep(0.05)
        assert 503 in states and states[-1] == 200, states
    finally:
        process.terminate()
        assert process.wait(15) == 0


def test_a_stop_during_a_reload_abandons_it_cleanly(
        app_server: Callable[..., tuple[RunningServer, Path, Path]]) -> None:
    """TERM while a reload's new workers start: they are stopped with the old ones, the reload is not
    called failed, and the exit is clean."""
    server, _, _ = app_server("--workers", "2")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "started (generation 2)" not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stop() == 0
    errors = server.stderr()
    assert "reload failed" not in errors and "[ERROR]" not in errors, errors[-2000:]
    assert "reload abandoned: the master is stopping" in errors or "reloaded: generation 2" in errors


def test_scrapes_at_the_same_time_each_get_every_worker(site: Path, ring3_process: Start) -> None:
    """Each scrape's question to a worker has its own number: two at once both get both workers."""
    server = ring3_process(str(site), "--workers", "2", "--listen", "127.0.0.1:0", "--access-log", "off",
                           "--admin", "127.0.0.1:0")
    admin = admin_url(server)
    pages: list[str] = []

    def scrape_page() -> None:
        pages.append(httpx.get(admin + "/metrics", timeout=10).text)

    for _ in range(5):
        threads = [threading.Thread(target=scrape_page) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert len(pages) == 20
    for text in pages:
        assert 'ring3_worker_requests_total{worker="1"}' in text
        assert 'ring3_worker_requests_total{worker="2"}' in text
