"""examples/haproxy as written: a real HAProxy in front of two ring3 instances (two workers each), PROXY
protocol v2 to them, health checks on /readyz; load runs while one instance reloads and then the other
stops, and no request fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, start_ring3
from test_ledger import scrape

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "haproxy"
CLIENT = "127.0.0.2"  # the load's source address: what ring3 must log, not HAProxy's 127.0.0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT, 0)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def load(port: int, stop: threading.Event, answers: list[bytes], failures: list[str]) -> None:
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            data = get(port)
        except OSError as exc:
            failures.append(repr(exc))
            continue
        if data.startswith(b"HTTP/1.1 200 ") and b"behind HAProxy" in data:
            answers.append(data)
        else:
            failures.append(repr(data[:80]))


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_haproxy_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert os.path.exists(haproxy), "haproxy is missing: scripts/test installs it"
    monkeypatch.chdir(REPO)
    ports = {name: free_port() for name in ("FRONT", "RING3_A", "RING3_B", "ADMIN_A", "ADMIN_B")}
    logs = {name: tmp_path / f"access-{name}.log" for name in "ab"}
    instances: dict[str, RunningServer] = {}
    balancer: subprocess.Popen[bytes] | None = None
    try:
        for name in "ab":
            upper = name.upper()
            instances[name] = start_ring3([
                "--config", "examples/haproxy/ring3.toml", "--workers", "2",
                "--listen", f"127.0.0.1:{ports['RING3_' + upper]} proxy_protocol",
                "--admin", f"127.0.0.1:{ports['ADMIN_' + upper]}", "--access-log", str(logs[name])], tmp_path)
        env = {**os.environ, **{key: str(port) for key, port in ports.items()}}
        env.update(FRONT=f"127.0.0.1:{ports['FRONT']}", RING3_A=f"127.0.0.1:{ports['RING3_A']}",
                   RING3_B=f"127.0.0.1:{ports['RING3_B']}")
        with (tmp_path / "haproxy.log").open("w") as errors:
            balancer = subprocess.Popen([haproxy, "-f", str(EXAMPLE / "haproxy.cfg"), "-db"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=errors)
        wait_until(lambda: _serves(ports["FRONT"]))
        for _ in range(20):  # round robin: both instances answer once both checks passed
            get(ports["FRONT"])
        wait_until(lambda: all(log.exists() and log.read_text().strip() for log in logs.values()))
        stop, answers, failures = threading.Event(), list[bytes](), list[str]()
        thread = threading.Thread(target=load, args=(ports["FRONT"], stop, answers, failures))
        thread.start()
        try:
            time.sleep(0.5)
            admin_a = f"http://127.0.0.1:{ports['ADMIN_A']}"
            instances["a"].process.send_signal(signal.SIGHUP)  # a reloads its workers under load
            wait_until(lambda: scrape(admin_a)["ring3_generation"] == 2)
            time.sleep(0.5)
            assert instances["b"].stop() == 0  # b drains and stops under load
            served_before = len(answers)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(60)
        assert not failures, failures[:5]
        assert len(answers) > served_before > 20
        for name in "ab":  # the PROXY v2 header's source, not HAProxy's address, in both logs
            clients = {json.loads(line)["client"] for line in logs[name].read_text().splitlines()}
            assert clients == {CLIENT}, (name, clients)
        assert scrape(admin_a)['ring3_reloads_total{result="done"}'] == 1
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(10)
        for server in instances.values():
            if server.process.poll() is None:
                server.stop()


def _serves(port: int) -> bool:
    try:
        return get(port).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def test_the_example_readyz_is_what_haproxy_checks() -> None:
    """The config's health check asks /readyz, the path ring3's admin listener answers."""
    text = (EXAMPLE / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in text and "send-proxy-v2" in text
    assert "proxy_protocol" in (EXAMPLE / "ring3.toml").read_text()
